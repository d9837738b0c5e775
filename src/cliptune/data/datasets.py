"""Torch datasets over records: images decoded and transformed on demand, captions flattened with their image index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import Dataset as TorchDataset

from cliptune.data.records import Record


class ImageFiles(TorchDataset):
    """Item i = transform(augment(loader(records[i].image))); decode errors name the file and the row it came from.

    `loader` defaults to `load_image` (a `DecodeCache` is a drop-in); `augment` (training only) gets item i's
    caption for the epoch (`captions[i]`, for the left/right flip rule) and `sample_generator(seed, epoch, i)`,
    so its draws are the same whatever the worker count; call `set_epoch` (or build one per epoch) to vary them.
    """

    def __init__(self, records: list[Record], transform: Callable, *, loader: Callable | None = None,
                 augment: Callable | None = None, captions: Sequence[str] | None = None, seed: int = 0,
                 epoch: int = 0):
        self.records = records
        self.transform = transform
        self.loader = loader
        self.augment = augment
        self.captions = captions
        self.seed = seed
        self.epoch = epoch

    def set_epoch(self, epoch: int, captions: Sequence[str] | None = None) -> None:
        self.epoch = epoch
        if captions is not None:
            self.captions = captions

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> torch.Tensor:
        from cliptune.data.images import load_image
        from cliptune.errors import DataError

        rec = self.records[index]
        try:
            image = (self.loader or load_image)(rec.image)
        except DataError as err:
            file, row = rec.sources[0] if rec.sources else (rec.image, None)
            raise DataError(f"image {rec.image}: {err.reason}", file=file, row=row) from None
        if self.augment is not None:
            from cliptune.data.seeds import sample_generator

            caption = self.captions[index] if self.captions is not None else rec.captions
            image = self.augment(image, caption, sample_generator(self.seed, self.epoch, index))
        return self.transform(image)


@dataclass
class CaptionIndex:
    """All captions of a list of records, flattened, with the image each belongs to (for evaluation and caching)."""

    texts: list[str]
    text_to_image: torch.Tensor  # [M] long
    first_caption: list[int]  # per image, index of its first caption in `texts`
    n_captions: list[int]

    @classmethod
    def from_records(cls, records: list[Record]) -> "CaptionIndex":
        texts, owner, first, counts = [], [], [], []
        for i, rec in enumerate(records):
            first.append(len(texts))
            counts.append(len(rec.captions))
            texts.extend(rec.captions)
            owner.extend([i] * len(rec.captions))
        return cls(texts, torch.tensor(owner, dtype=torch.long), first, counts)

    def caption_for(self, image_index: int, draw: int) -> int:
        """The `draw`-th caption of an image (modulo its caption count): one caption per image per epoch."""
        return self.first_caption[image_index] + draw % self.n_captions[image_index]
