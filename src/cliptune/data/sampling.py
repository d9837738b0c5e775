"""Batches in which no image and no caption text occurs twice.

In a contrastive batch every other pair is a negative. Two copies of one picture, or two images that share the
caption "a photo of a dog", are then negatives that are really positives: the loss pushes apart what should be
close. Keeping duplicates out of a batch removes those false negatives at the source, for any loss.

`no_duplicate_batches` (map-style, one epoch at a time) places the most-duplicated items first, one per batch in
turn, then fills the batches with the rest in a seeded random order. Every batch is full and duplicate-free as
long as no key occurs in more items than there are batches; the items left over are those that did not fit
(`n % batch_size` of them, as with `drop_last`, plus, in adversarial data, the copies of a key beyond one per
batch). They are a different random set each epoch, so nothing is left out for good unless a key has more copies
than there are batches (then only that many copies can be used per epoch).

`NoDuplicateBatcher` does the same for a stream: an item that would repeat a key in the batch being filled waits
(in arrival order) for the next batch, and batches are always full. When more than `max_pending` items wait (a
stream that is mostly one caption), the oldest waiting item is left out and counted in `dropped`, as are, with
`drop_last`, the items that fill no full batch at the end of the stream.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


def caption_key(text: str) -> str:
    """Captions that differ only in case or spacing are the same caption to a text encoder's eye."""
    return " ".join(text.lower().split())


def epoch_rng(seed: int, epoch: int) -> random.Random:
    return random.Random(seed * 1_000_003 + epoch * 7_919 + 17)


def no_duplicate_batches(image_keys: Sequence[Hashable], caption_keys: Sequence[Hashable], batch_size: int,
                         seed: int = 0, epoch: int = 0) -> list[list[int]]:
    """Full batches of indices into `image_keys`/`caption_keys` (one entry per image: its identity, e.g. path or
    content hash, and the caption chosen for it this epoch) with no repeated key in any batch.

    Deterministic given (seed, epoch); `n // batch_size` batches (at least one when n > 0); see the module
    docstring for which items are left over.
    """
    n = len(image_keys)
    if len(caption_keys) != n:
        raise ValueError(f"{n} image keys but {len(caption_keys)} caption keys")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    if n == 0:
        return []
    batch_size = min(batch_size, n)
    n_batches = n // batch_size
    rng = epoch_rng(seed, epoch)
    order = list(range(n))
    rng.shuffle(order)
    image_count, caption_count = Counter(image_keys), Counter(caption_keys)
    # most-constrained first: an item's rank is how many items share one of its keys (stable: ties stay random)
    order.sort(key=lambda i: -max(image_count[image_keys[i]], caption_count[caption_keys[i]]))

    batches: list[list[int]] = [[] for _ in range(n_batches)]
    used: list[tuple[set, set]] = [(set(), set()) for _ in range(n_batches)]
    cursor = rng.randrange(n_batches)
    for i in order:
        image, caption = image_keys[i], caption_keys[i]
        for probe in range(n_batches):
            b = (cursor + probe) % n_batches
            images, captions = used[b]
            if len(batches[b]) < batch_size and image not in images and caption not in captions:
                batches[b].append(i)
                images.add(image)
                captions.add(caption)
                cursor = (b + 1) % n_batches
                break
    for batch in batches:  # constrained items went in first; do not let them sit at fixed positions
        rng.shuffle(batch)
    rng.shuffle(batches)
    return batches


def has_duplicates(batch: Sequence[int], *key_lists: Sequence[Hashable]) -> bool:
    """Whether any of the key lists repeats a key within `batch` (for checks and tests)."""
    return any(len({keys[i] for i in batch}) < len(batch) for keys in key_lists)


class _Batch(Generic[T]):
    def __init__(self, keys: Callable[[T], tuple[Hashable, ...]]):
        self.keys = keys
        self.items: list[T] = []
        self.seen: list[set] = []

    def fits(self, item: T) -> bool:
        return all(k not in seen for k, seen in zip(self.keys(item), self.seen))

    def add(self, item: T) -> None:
        keys = self.keys(item)
        if not self.seen:
            self.seen = [set() for _ in keys]
        for k, seen in zip(keys, self.seen):
            seen.add(k)
        self.items.append(item)


class NoDuplicateBatcher(Generic[T]):
    """Group a stream of items into full batches without repeated keys (see the module docstring).

    `keys(item)` gives the item's keys (e.g. image hash, caption key); two items conflict when they share any.
    `dropped` counts the items left out (waiting items beyond `max_pending`, and at the end of the stream those
    that fill no full batch, when `drop_last`).
    """

    def __init__(self, batch_size: int, keys: Callable[[T], tuple[Hashable, ...]], max_pending: int | None = None,
                 drop_last: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.keys = keys
        self.max_pending = max_pending if max_pending is not None else 4 * batch_size
        self.drop_last = drop_last
        self.dropped = 0

    def _refill(self, pending: list[T]) -> tuple[_Batch, list[T]]:
        """A new batch, taking waiting items first (oldest first); those that still conflict keep waiting."""
        batch, waiting = _Batch(self.keys), []
        for item in pending:
            if len(batch.items) < self.batch_size and batch.fits(item):
                batch.add(item)
            else:
                waiting.append(item)
        return batch, waiting

    def __call__(self, items: Iterable[T]) -> Iterator[list[T]]:
        batch, pending = _Batch(self.keys), []
        for item in items:
            if batch.fits(item):
                batch.add(item)
            else:
                pending.append(item)
                if len(pending) > self.max_pending:  # a key the stream keeps repeating: let its oldest copy go
                    pending.pop(0)
                    self.dropped += 1
            if len(batch.items) == self.batch_size:
                yield batch.items
                batch, pending = self._refill(pending)
        while pending:  # the stream ended with items waiting: batches of them while they fill one
            if len(batch.items) == self.batch_size:
                yield batch.items
                batch, pending = self._refill(pending)
                continue
            if self.drop_last:
                self.dropped += len(pending)
                break
            yield batch.items
            batch, pending = self._refill(pending)
        if len(batch.items) == self.batch_size or (batch.items and not self.drop_last):
            yield batch.items
        elif batch.items:
            self.dropped += len(batch.items)


def epoch_caption_keys(texts: Sequence[str], caption_of_image: Sequence[int]) -> list[str]:
    """`caption_key` of the caption each image shows this epoch (`caption_of_image[i]` indexes `texts`)."""
    return [caption_key(texts[int(c)]) for c in caption_of_image]


def image_content_keys(images: Sequence[str], threads: int = 8) -> list[str]:
    """A hash of each image file's bytes, so copies under different names count as the same image."""
    from concurrent.futures import ThreadPoolExecutor

    from cliptune.data.images import read_image_bytes

    def digest(image: str) -> str:
        try:
            return hashlib.blake2b(read_image_bytes(image), digest_size=16).hexdigest()
        except OSError:
            return f"unreadable:{image}"  # load_image reports it when the batch is built

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return list(pool.map(digest, images, chunksize=64))
