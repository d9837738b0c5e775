"""WebDataset shards as a stream: an `IterableDataset` of training batches for data too big to index.

Per epoch, on every rank and in every DataLoader worker: the shard list is shuffled with the same seed
(`seed`, `epoch`), split between the `world_size × num_workers` readers, read sequentially, shuffled through a
buffer of raw samples (compressed bytes, so a large buffer is cheap), decoded, augmented, transformed and batched
(`NoDuplicateBatcher` when `no_duplicates`). Use it with `DataLoader(stream, batch_size=None, num_workers=W)` and
call `stream.set_epoch(epoch)` before each epoch (without `persistent_workers`, which would keep the old epoch).

What is guaranteed about duplicates:

* Default (`resampled=False`): one epoch reads every sample of every shard exactly once across all ranks and
  workers. With at least as many shards as readers each reader takes whole shards (shard `i` of the shuffled list
  goes to reader `i mod readers`); with fewer shards every reader reads all of them and keeps every `readers`-th
  sample. The only samples an epoch does not yield are bad ones skipped under `on_bad_sample="skip"` (counted)
  and, with `drop_last`, those of a reader's last partial batch and the duplicates `NoDuplicateBatcher` leaves out
  (counted in `dropped`). Readers can end with different numbers of batches when shards differ in size, which
  stalls DDP at the end of an epoch: use equal-size shards (as `cliptune data to-wds` writes) or resampling.
* `resampled=True`: each reader draws shards with replacement from its own seeded generator and never runs out;
  `epoch_length` samples (over all ranks) make an epoch, every reader yielding the same number of batches. A sample
  may then occur several times in an epoch and on several readers; no exactly-once guarantee holds.
* In both modes, with `no_duplicates` no batch holds two samples with the same image bytes or the same caption
  text (whitespace and case aside), so duplicates never become false negatives within a batch. Batches are formed
  per reader, so this holds per batch on each rank, not across ranks of a global batch.

Each batch is a dict: `image` (stacked tensors when `transform` gives tensors, else a list of PIL images),
`caption` (list of str), `key` (`shard#key`), `label` (list), `skipped` (bad samples skipped since the previous
batch on this reader, as "file, row key: reason" strings) and `dropped` (duplicates left out since the previous
batch). In a DataLoader worker, a bad sample under `on_bad_sample="error"` ends the reader with one
last batch `{"error": {"reason", "file", "row"}}` (a worker cannot raise a `DataError` intact to its parent);
`raise_stream_error` raises it again where the batches are consumed. Skips after a reader's last batch have no
batch to ride on: every skip is also logged and added to a `SkipLog` shared with the DataLoader's workers, so
`stream.skipped_samples()` is the full list (distinct: a sample skipped in every epoch is one sample) and
`stream.skipped_count` its length, for skipped.csv and the run summary. A shard that does not read to its
end-of-archive marker is one bad sample named by the key where reading stopped (see `data/tar_integrity.py`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch.utils.data import IterableDataset, get_worker_info

from cliptune.data.images import load_image_bytes
from cliptune.data.records import BadSample
from cliptune.data.sampling import NoDuplicateBatcher, caption_key
from cliptune.data.seeds import sample_generator, stable_seed
from cliptune.data.skipped import SkipLog
from cliptune.data.tar_integrity import DAMAGE_KIND, TarWalk
from cliptune.data.wds import SampleLayout, expand_shards, group_members, missing_image
from cliptune.errors import DataError, UsageError

log = logging.getLogger(__name__)


@dataclass
class RawSample:
    shard: str
    key: str
    members: dict[str, bytes]

    @property
    def ref(self) -> str:
        return f"{self.shard}#{self.key}"


@dataclass
class Sample:
    key: str  # shard#key
    image: Any  # transformed image (tensor) or PIL image
    caption: str
    captions: list[str]
    label: Any
    digest: str  # of the image bytes
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Reader:
    """Which of the `readers` (rank × worker) this is."""

    index: int
    count: int
    rank: int
    world: int
    worker: int
    workers: int


class WebDatasetStream(IterableDataset):
    """Batches from WebDataset shards (see the module docstring for the guarantees)."""

    def __init__(self, shards: str | Sequence[str], *, batch_size: int,
                 transform: Callable | None = None, image_augment: Callable | None = None,
                 text_augment: Callable | None = None, image_key: str | None = None, caption_key: str | None = None,
                 shuffle_shards: bool = True, shuffle_buffer: int = 1000, resampled: bool = False,
                 epoch_length: int | None = None, num_workers: int = 0, seed: int = 0,
                 on_bad_sample: str = "error", no_duplicates: bool = True, drop_last: bool = True,
                 rank: int | None = None, world_size: int | None = None, max_pending: int | None = None):
        super().__init__()
        self.shards = list(shards) if not isinstance(shards, (str, os.PathLike)) else expand_shards(shards)
        if not self.shards:
            raise DataError("no shards", file=str(shards))
        if batch_size < 1:
            raise UsageError(f"batch size must be positive, got {batch_size}")
        if on_bad_sample not in ("error", "skip"):
            raise UsageError(f"unknown on-bad-sample policy {on_bad_sample!r}; use error or skip")
        if epoch_length is not None and not resampled:
            raise UsageError("epoch_length needs resampled=True (a plain pass over the shards ends by itself)")
        self.layout = SampleLayout.parse(image_key, caption_key)
        self.batch_size = batch_size
        self.transform = transform
        self.image_augment = image_augment
        self.text_augment = text_augment
        self.shuffle_shards = shuffle_shards
        self.shuffle_buffer = shuffle_buffer
        self.resampled = resampled
        self.epoch_length = epoch_length
        self.num_workers = num_workers
        self.seed = seed
        self.on_bad_sample = on_bad_sample
        self.no_duplicates = no_duplicates
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.max_pending = max_pending
        self.epoch = 0
        self._skips = SkipLog()  # shared with forked or spawned DataLoader workers

    @property
    def skipped_count(self) -> int:
        """Distinct bad samples skipped so far by every reader of this stream (workers included): a sample met in
        several epochs counts once."""
        return len(self._skips.samples())

    def skipped_samples(self) -> list[BadSample]:
        """Every distinct bad sample skipped so far, by every reader (for skipped.csv)."""
        return self._skips.samples()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    # ---- sizes ----------------------------------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self.rank is not None and self.world_size is not None:
            return self.rank, self.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def batches_per_worker(self) -> int | None:
        """Batches each reader yields per epoch in resampled mode with an epoch length (rounded up, as open_clip
        does), None when the epoch is one pass over the shards."""
        if self.epoch_length is None:
            return None
        _, world = self._world()
        workers = max(1, self.num_workers)
        per_rank = -(-self.epoch_length // (world * self.batch_size))
        return -(-per_rank // workers)

    def __len__(self) -> int:
        """Batches per rank per epoch; only known with `resampled` and `epoch_length`."""
        per_worker = self.batches_per_worker()
        if per_worker is None:
            raise TypeError("a pass over the shards has no length known in advance; set resampled=True and "
                            "epoch_length for a fixed number of batches")
        return per_worker * max(1, self.num_workers)

    # ---- the pipeline ---------------------------------------------------------------------------------------------
    def reader(self) -> Reader:
        rank, world = self._world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.epoch_length is not None and workers != max(1, self.num_workers):
            raise UsageError(f"the stream was built for num_workers={self.num_workers} but the DataLoader runs "
                             f"{workers}; pass the same number so every epoch has {len(self)} batches")
        return Reader(rank * workers + worker, world * workers, rank, world, worker, workers)

    def __iter__(self) -> Iterator[dict]:
        if get_worker_info() is None:
            yield from self._batches()
            return
        try:  # in a DataLoader worker only the text of an exception reaches the parent: send the error as a batch
            yield from self._batches()
        except DataError as err:
            yield {"error": {"reason": err.reason, "file": err.file, "row": err.row}}

    def _batches(self) -> Iterator[dict]:
        reader = self.reader()
        rng = random.Random(stable_seed(self.seed, self.epoch, reader.index, "reader"))
        skipped: list[str] = []
        samples = self._samples(reader, rng, skipped)
        if self.no_duplicates:
            batcher = NoDuplicateBatcher(self.batch_size, keys=lambda s: (s.digest, caption_key(s.caption)),
                                         max_pending=self.max_pending, drop_last=self.drop_last)
        else:
            batcher = None
        batches = batcher(samples) if batcher is not None else _plain_batches(samples, self.batch_size,
                                                                              self.drop_last)
        quota = self.batches_per_worker()
        dropped_before = 0
        for n, batch in enumerate(batches):
            if quota is not None and n >= quota:
                break
            dropped = (batcher.dropped - dropped_before) if batcher is not None else 0
            dropped_before += dropped
            yield self._collate(batch, skipped, dropped)
            skipped.clear()  # the same list the sample reader appends to

    def samples(self, reader: Reader | None = None) -> Iterator[Sample]:
        """Decoded samples of one reader, in the order they would be batched (for inspection and tests)."""
        reader = reader or self.reader()
        rng = random.Random(stable_seed(self.seed, self.epoch, reader.index, "reader"))
        return self._samples(reader, rng, [])

    def _samples(self, reader: Reader, rng: random.Random, skipped: list[str]) -> Iterator[Sample]:
        raw = self._raw(reader, rng)
        if self.shuffle_buffer > 1:
            raw = _shuffle(raw, self.shuffle_buffer, rng)
        for item in raw:
            if isinstance(item, BadSample):
                self._bad(item, skipped)
                continue
            sample = self._decode(item, rng)
            if isinstance(sample, BadSample):
                self._bad(sample, skipped)
            else:
                yield sample

    def _bad(self, bad: BadSample, skipped: list[str]) -> None:
        if self.on_bad_sample == "error":
            raise DataError(bad.reason, file=bad.file, row=bad.row)
        log.warning("skipped bad sample: %s", bad)
        skipped.append(str(bad))
        self._skips.add(bad)

    def _shard_order(self) -> list[str]:
        shards = list(self.shards)
        if self.shuffle_shards:
            random.Random(stable_seed(self.seed, self.epoch, "shards")).shuffle(shards)
        return shards

    def _raw(self, reader: Reader, rng: random.Random) -> Iterator[RawSample | BadSample]:
        if self.resampled:
            while True:  # with replacement, this reader's own draws
                yield from self._read_shard(rng.choice(self.shards))
        shards = self._shard_order()
        if len(shards) >= reader.count:
            for shard in shards[reader.index::reader.count]:
                yield from self._read_shard(shard)
            return
        position = 0  # fewer shards than readers: everyone reads everything and keeps every count-th sample
        for shard in shards:
            for item in self._read_shard(shard):
                if position % reader.count == reader.index:
                    yield item
                position += 1

    def _read_shard(self, shard: str) -> Iterator[RawSample | BadSample]:
        """Samples of one shard in order; the one a damaged shard cuts into is held back and reported with the
        damage (members of a sample are adjacent in a stream, so it is always the last one read)."""
        wanted = set(self.layout.image_exts) | self.layout.caption_exts
        walk = TarWalk(shard, want=lambda name: _ext(name) in wanted)  # other members are listed, not read
        held: RawSample | None = None
        try:
            for key, group in group_members((m.name, data or b"") for m, data in walk):
                if held is not None:
                    yield held
                held = RawSample(shard, key, group)  # type: ignore[arg-type]
        except OSError as e:
            yield BadSample(shard, "(start)", f"cannot read shard: {e.strerror or e}")
            return
        if walk.damage is not None:
            yield BadSample(shard, walk.damage.row, walk.damage.reason, kind=DAMAGE_KIND)
        elif held is not None:
            yield held

    def _decode(self, raw: RawSample, rng: random.Random) -> Sample | BadSample:
        ext = self.layout.image_ext(raw.members)
        if ext is None:
            return BadSample(raw.shard, raw.key, missing_image(self.layout, raw.key, raw.members))
        captions, meta, problem = self.layout.captions(raw.key, raw.members)
        if problem is None:
            captions = [c.strip() for c in captions]  # type: ignore[union-attr]
            if not all(captions):
                problem = "empty caption"
        if problem is not None:
            return BadSample(raw.shard, raw.key, problem)
        data = raw.members[ext]
        try:
            image = load_image_bytes(data, f"{raw.shard}#{raw.key}.{ext}")
        except DataError as err:
            return BadSample(raw.shard, raw.key, err.reason)
        caption = rng.choice(captions)  # type: ignore[arg-type]
        generator = sample_generator(self.seed, self.epoch, raw.ref)
        if self.text_augment is not None:
            caption = self.text_augment(caption, generator)
        if self.image_augment is not None:
            image = self.image_augment(image, caption, generator)
        if self.transform is not None:
            image = self.transform(image)
        return Sample(key=raw.ref, image=image, caption=caption, captions=captions,  # type: ignore[arg-type]
                      label=meta.get("label"), digest=hashlib.blake2b(data, digest_size=16).hexdigest(),
                      meta=meta)

    @staticmethod
    def _collate(batch: list[Sample], skipped: list[str], dropped: int) -> dict:
        images = [s.image for s in batch]
        if images and all(isinstance(im, torch.Tensor) for im in images):
            images = torch.stack(images)
        return {"image": images, "caption": [s.caption for s in batch], "key": [s.key for s in batch],
                "label": [s.label for s in batch], "skipped": list(skipped), "dropped": dropped}


def raise_stream_error(batch: dict) -> None:
    """A DataLoader worker cannot raise `DataError` intact (only its text crosses processes): the stream sends
    the error as a batch and it is raised here, in the training process, naming its shard and key."""
    error = batch.get("error")
    if error is not None:
        raise DataError(error["reason"], file=error["file"], row=error["row"])


def _ext(name: str) -> str:
    return name.rpartition("/")[2].partition(".")[2].lower()


def _shuffle(items: Iterator, size: int, rng: random.Random) -> Iterator:
    """Reservoir-style shuffle buffer: fill `size` items, then emit a random one for each that arrives."""
    buffer: list = []
    for item in items:
        if isinstance(item, BadSample):  # problems are reported where they are found, not shuffled
            yield item
            continue
        if len(buffer) < size:
            buffer.append(item)
            continue
        j = rng.randrange(len(buffer))
        yield buffer[j]
        buffer[j] = item
    rng.shuffle(buffer)
    yield from buffer


def _plain_batches(samples: Iterator[Sample], batch_size: int, drop_last: bool) -> Iterator[list[Sample]]:
    batch: list[Sample] = []
    for sample in samples:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch and not drop_last:
        yield batch
