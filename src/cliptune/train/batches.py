"""Where the trainer's batches come from: an indexed dataset (map-style) or WebDataset shards read as a stream.

Both sources hand the loop the same thing: per optimiser step, `accum_steps` micro-batches, each flagged with
whether it ends the epoch. The loop never asks which source it has.

* `IndexedBatches`: records in memory; batch order and caption draws derive from (seed, epoch) alone, so any step
  can be reached directly. Rows are known by index, which is what the feature cache, hard-negative mining and the
  match task need.
* `StreamedBatches`: `WebDatasetStream` through a DataLoader. Nothing is indexed, so there are no row indices: both
  towers run live (frozen prefixes too) and index-based features (mining, the match task) are refused. An epoch
  is one pass over the shards, or `epoch_length` samples when resampled. A resumed run replays the stream of its
  epoch up to the checkpoint (read and decoded, not trained on): the stream is seeded by (seed, epoch, reader), so
  it continues with exactly the batches the interrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch
from torch.utils.data import DataLoader

from cliptune.data.datasets import CaptionIndex, ImageFiles
from cliptune.data.records import Record
from cliptune.data.sampling import epoch_caption_keys, no_duplicate_batches
from cliptune.data.streaming import raise_stream_error
from cliptune.errors import UsageError
from cliptune.train.distributed import DistContext


@dataclass
class MicroBatch:
    """The pairs of one forward pass. `pixels` are this rank's rows only; indices and `captions` cover `rows`."""

    rows: int  # pairs the loss sees, over all ranks
    per_rank: bool  # False: the indices are the global batch and each rank encodes its shard of them
    image_index: torch.Tensor | None = None  # indexed: dataset rows (feature cache, mined negatives, match pairs)
    caption_index: torch.Tensor | None = None  # indexed: the caption each image shows
    captions: list[str] | None = None  # streamed: this rank's caption texts, augmented by the stream
    pixels: torch.Tensor | None = None  # images when the image tower runs live

    def local(self, dctx: DistContext) -> "MicroBatch":
        """The rows this rank encodes."""
        if self.per_rank:
            return self
        def shard(t):
            return dctx.shard(t) if t is not None else None

        return MicroBatch(self.rows, True, shard(self.image_index), shard(self.caption_index), self.captions,
                          self.pixels)

    def take(self, positions: torch.Tensor) -> "MicroBatch":
        """A subset of this rank's rows (GradCache encodes a batch a few rows at a time)."""
        def pick(t):
            return t[positions] if t is not None else None

        captions = [self.captions[int(p)] for p in positions] if self.captions is not None else None
        return MicroBatch(len(positions), True, pick(self.image_index), pick(self.caption_index), captions,
                          pick(self.pixels))


Step = tuple[list[MicroBatch], bool]  # one optimiser step's micro-batches, and whether the epoch ends with it


def epoch_batches(n_images: int, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Shuffled image indices for one epoch, in full batches (a contrastive batch's size sets its negatives)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n_images, generator=gen)
    n_full = n_images // batch_size
    if n_full == 0:
        return [order]
    return [order[i * batch_size:(i + 1) * batch_size] for i in range(n_full)]


def epoch_caption_draws(n_images: int, seed: int, epoch: int) -> torch.Tensor:
    """Which caption each image shows this epoch (one draw per image per epoch; evaluation uses all of them)."""
    gen = torch.Generator().manual_seed(seed * 7_919 + epoch + 1)
    return torch.randint(0, 1 << 30, (n_images,), generator=gen)


class IndexedBatches:
    """Batches of an in-memory training split (see the module docstring)."""

    def __init__(self, train: list[Record], captions: CaptionIndex, *, batch_size: int, accum_steps: int, seed: int,
                 no_duplicates: bool, image_dataset: Callable[[int, list[str]], ImageFiles] | None,
                 num_workers: int, pin_memory: bool, dctx: DistContext):
        self.train = train
        self.captions = captions
        self.batch_size = min(batch_size, len(train))
        self.accum_steps = accum_steps
        self.seed = seed
        self.no_duplicates = no_duplicates
        self.image_dataset = image_dataset  # None: images come from the feature cache
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.dctx = dctx
        self.steps_per_epoch: int | None = max(1, len(train) // self.batch_size) // accum_steps or 1
        self.skipped_count = 0  # bad rows were left out (and counted) when the data was loaded

    def skipped_samples(self) -> list:
        return []  # listed in Dataset.skipped when the data was loaded

    def plan(self, epoch: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        """This epoch's batches of image indices and the caption index each image shows."""
        draws = epoch_caption_draws(len(self.train), self.seed, epoch)
        shown = [self.captions.caption_for(i, int(draws[i])) for i in range(len(self.train))]
        if self.no_duplicates:  # a repeated image or caption in a batch is a false negative
            image_keys = [r.image for r in self.train]
            batches = [torch.tensor(b) for b in no_duplicate_batches(
                image_keys, epoch_caption_keys(self.captions.texts, shown), self.batch_size, self.seed, epoch)]
        else:
            batches = epoch_batches(len(self.train), self.batch_size, self.seed, epoch)
        return batches, torch.tensor(shown)

    def epoch(self, epoch: int, skip_steps: int) -> Iterator[Step]:
        batches, shown = self.plan(epoch)
        spe, accum = self.steps_per_epoch, self.accum_steps
        batches = batches[skip_steps * accum: spe * accum]
        pixels = None
        if self.image_dataset is not None:
            dataset = self.image_dataset(epoch, [self.captions.texts[int(c)] for c in shown])
            loader = DataLoader(dataset, batch_sampler=[self.dctx.shard(b).tolist() for b in batches],
                                num_workers=self.num_workers, pin_memory=self.pin_memory)
            pixels = iter(loader)
        for first in range(0, len(batches), accum):
            group = [MicroBatch(len(index), False, image_index=index, caption_index=shown[index],
                                pixels=next(pixels) if pixels is not None else None)
                     for index in batches[first:first + accum]]
            yield group, skip_steps + first // accum + 1 == spe


class StreamedBatches:
    """Batches of a `WebDatasetStream` (see the module docstring); the stream yields this rank's rows."""

    def __init__(self, stream, *, accum_steps: int, num_workers: int, pin_memory: bool, dctx: DistContext):
        self.stream = stream
        self.accum_steps = accum_steps
        self.world = dctx.world_size
        self.loader = DataLoader(stream, batch_size=None, num_workers=num_workers, pin_memory=pin_memory)
        self.steps_per_epoch = (max(1, len(stream) // accum_steps)
                                if stream.resampled and stream.epoch_length is not None else None)

    @property
    def skipped_count(self) -> int:
        return self.stream.skipped_count

    def skipped_samples(self) -> list:
        return self.stream.skipped_samples()

    def epoch(self, epoch: int, skip_steps: int) -> Iterator[Step]:
        self.stream.set_epoch(epoch)  # a new DataLoader iterator (fresh workers) per epoch picks it up
        batches = (self._micro_batch(batch) for batch in self.loader)
        groups = _groups(batches, self.accum_steps)
        if self.steps_per_epoch is not None:
            groups = islice(groups, self.steps_per_epoch)
        for _ in islice(groups, skip_steps):  # replay up to the checkpoint
            pass
        yield from _with_last(groups)

    def _micro_batch(self, batch: dict) -> MicroBatch:
        raise_stream_error(batch)
        pixels = batch["image"]
        return MicroBatch(len(batch["caption"]) * self.world, True, captions=list(batch["caption"]), pixels=pixels)


def _groups(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive full groups of `size` (a short last group is dropped, as a partial batch is)."""
    iterator = iter(items)
    while True:
        group = list(islice(iterator, size))
        if len(group) < size:
            return
        yield group


def _with_last(items: Iterable) -> Iterator[tuple]:
    """(item, is_last) pairs, looking one item ahead."""
    iterator = iter(items)
    try:
        previous = next(iterator)
    except StopIteration:
        return
    for item in iterator:
        yield previous, False
        previous = item
    yield previous, True


def check_streamable(*, task: str, mines: bool, max_train_images: int | None, resampled: bool,
                     epoch_length: int | None, max_steps: int | None, batch_size: int, world_size: int) -> None:
    """Refuse what streamed training cannot do, saying what to do instead."""
    if task == "match":
        raise UsageError("data.streaming: the match task needs indexed pairs; set data.streaming=false")
    if mines:
        raise UsageError("data.streaming: hard-negative mining embeds the whole training set and looks rows up by "
                         "index; use it with data.streaming=false")
    if max_train_images is not None:
        raise UsageError("data.streaming: data.max_train_images needs an index; bound the epoch with "
                         "data.resampled=true and data.epoch_length, or the run with train.max_steps")
    if resampled and epoch_length is None and max_steps is None:
        raise UsageError("data.resampled streams never end: set data.epoch_length (samples per epoch) or "
                         "train.max_steps")
    if not resampled and max_steps is None:
        raise UsageError("data.streaming: a pass over the shards has no length known in advance, so the schedule "
                         "cannot be planned; set train.max_steps, or data.resampled=true with data.epoch_length")
    if world_size > 1 and not resampled:
        raise UsageError("data.streaming with several processes needs data.resampled=true: a plain pass can give "
                         "ranks different numbers of batches, which stalls them at the end of an epoch")
    if batch_size % world_size:
        raise UsageError(f"train.batch_size={batch_size} must be a multiple of the {world_size} processes when "
                         f"streaming (each rank reads batch_size / processes samples per step)")
