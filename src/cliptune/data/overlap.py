"""Training images that are also in the evaluation data given separately (`--val-data`, `--test-data`).

`validate` flags one image in two splits of one dataset; data given as its own spec escapes that check, so
`train --data a.csv --test-data a.csv` would test on what it trained on. Before training, every separately given
evaluation set is compared with the training images: the same file (path) or the same picture (identical bytes;
only files of equal size are hashed). Overlap is a loud warning listing the count and examples, not an error:
evaluating on training data can be deliberate (a sanity check), but never unnoticed. Streamed training data is
not indexed, so there only shared shard files are found.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from cliptune.data.images import read_image_bytes
from cliptune.data.records import Record
from cliptune.data.tar_members import SHARDS, is_member_ref, split_ref

log = logging.getLogger(__name__)

THREADS = min(16, 4 * (os.cpu_count() or 1))
EXAMPLES = 3


@dataclass
class Overlap:
    """Evaluation images of one split that are training images too: (evaluation image, training image) pairs."""

    split: str
    spec: str
    n_images: int
    same_path: list[tuple[str, str]] = field(default_factory=list)
    same_content: list[tuple[str, str]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.same_path) + len(self.same_content)

    def message(self) -> str:
        pairs = self.same_path + self.same_content
        shown = "; ".join(a if a == b else f"{a} = {b}" for a, b in pairs[:EXAMPLES])
        return (f"{self.count} of {self.n_images} {self.split} images ({self.spec}) are training images too "
                f"({len(self.same_path)} the same file, {len(self.same_content)} the same picture under another "
                f"path), e.g. {shown}; {self.split} metrics on them measure memory, not generalisation: remove them "
                "from one side")


def find_overlap(train: Sequence[Record], evaluation: Sequence[Record], split: str, spec: str) -> Overlap:
    """Which `evaluation` images are `train` images by path or by content."""
    found = Overlap(split, spec, len({r.image for r in evaluation}))
    train_images = {r.image for r in train}
    rest = sorted({r.image for r in evaluation} - train_images)
    found.same_path = [(image, image) for image in sorted({r.image for r in evaluation} & train_images)]
    by_size: dict[int, list[str]] = defaultdict(list)
    for image, size in _sizes(sorted(train_images)):
        by_size[size].append(image)
    candidates = [(image, size) for image, size in _sizes(rest) if size in by_size]
    if candidates:
        wanted = {size for _, size in candidates}
        train_digests = _digests([image for size in wanted for image in by_size[size]])
        owner = {digest: image for image, digest in train_digests.items() if digest is not None}
        for image, digest in _digests([image for image, _ in candidates]).items():
            if digest is not None and digest in owner:
                found.same_content.append((image, owner[digest]))
    return found


def shared_shards(train_shards: Iterable[str], evaluation: Sequence[Record], split: str, spec: str) -> Overlap:
    """For streamed training data: evaluation images read from one of the training shards."""
    shards = set(train_shards)
    same = sorted({r.image for r in evaluation if (split_ref(r.image) or ("",))[0] in shards})
    return Overlap(split, spec, len({r.image for r in evaluation}), same_path=[(image, image) for image in same])


def warn(overlap: Overlap) -> None:
    if overlap.count:
        log.warning("WARNING: %s", overlap.message())


def _sizes(images: Sequence[str]) -> list[tuple[str, int]]:
    out = []
    for image in images:
        try:
            out.append((image, _size(image)))
        except (OSError, KeyError):
            continue  # unreadable images are the loader's business, reported there
    return out


def _size(image: str) -> int:
    if is_member_ref(image):
        shard, member = split_ref(image)  # type: ignore[misc]
        return SHARDS.members(shard)[member][1]
    return os.path.getsize(image)


def _digest(image: str) -> str | None:
    try:
        return hashlib.blake2b(read_image_bytes(image), digest_size=16).hexdigest()
    except OSError:
        return None


def _digests(images: list[str]) -> dict[str, str | None]:
    if len(images) <= 1:
        return {image: _digest(image) for image in images}
    with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="overlap") as pool:
        return dict(zip(images, pool.map(_digest, images)))


__all__ = ["Overlap", "find_overlap", "shared_shards", "warn"]
