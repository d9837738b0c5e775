"""Training augmentation on PIL images and caption strings, before any model's own transform or tokenizer.

Working on the decoded picture (not on a backend's tensors) makes one augmentation serve every backend: the
model's eval transform then resizes and normalises as it always does. Order: small rotation (cropped to the
rotated content, so no fill corners), random resized crop, horizontal flip, colour jitter. A flip is skipped
when a caption says left or right, since mirroring would make it false.

Everything random comes from the `torch.Generator` passed in; `seeds.sample_generator(seed, epoch, index)` gives
each image its own, so results do not depend on worker count or order. Augmentation is for training only:
evaluation, validation and the feature cache never call it (`AugmentCfg.enabled_for(side)` says which side
changes between epochs and so must not be cached).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageEnhance

from cliptune.config import AugmentCfg

MENTIONS_SIDE = re.compile(r"\b(left|right)", re.IGNORECASE)
RESAMPLE = Image.Resampling.BICUBIC


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, high: int) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(0, max(1, high), (), generator=g))


def mentions_side(caption: str | Sequence[str] | None) -> bool:
    if caption is None:
        return False
    captions = [caption] if isinstance(caption, str) else caption
    return any(MENTIONS_SIDE.search(c) for c in captions)


@dataclass
class ImageAugment:
    """`augment(image, caption, generator) -> image`; an inactive one returns the image untouched."""

    crop_scale: tuple[float, float] | None = None
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.0
    hue: float = 0.0
    hflip: float = 0.0
    rotate: float = 0.0
    size: int | None = None  # output side of the crop (the model's input size); None keeps the crop's pixels
    active: bool = True

    @classmethod
    def from_cfg(cls, cfg: AugmentCfg, size: int | None = None) -> "ImageAugment":
        return cls(crop_scale=cfg.crop_scale, crop_ratio=tuple(cfg.crop_ratio), color_jitter=cfg.color_jitter,
                   hue=cfg.hue, hflip=cfg.hflip, rotate=cfg.rotate, size=size, active=cfg.enabled_for("image"))

    def __call__(self, image: Image.Image, caption: str | Sequence[str] | None = None,
                 generator: torch.Generator | None = None) -> Image.Image:
        if not self.active:
            return image
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self.rotate > 0:
            image = rotate_inside(image, _uniform(g, -self.rotate, self.rotate))
        if self.crop_scale is not None:
            image = self._crop(image, g)
        if self.hflip > 0 and _uniform(g, 0, 1) < self.hflip and not mentions_side(caption):
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if self.color_jitter > 0 or self.hue > 0:
            image = self._jitter(image, g)
        return image

    def _crop(self, image: Image.Image, g: torch.Generator) -> Image.Image:
        left, top, w, h = crop_box(image.width, image.height, self.crop_scale, self.crop_ratio, g)
        box = (left, top, left + w, top + h)
        if self.size is not None:
            return image.resize((self.size, self.size), RESAMPLE, box=box)
        return image.crop(box)

    def _jitter(self, image: Image.Image, g: torch.Generator) -> Image.Image:
        s = self.color_jitter
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            factor = _uniform(g, max(0.0, 1 - s), 1 + s)
            if s > 0:
                image = enhancer(image).enhance(factor)
        if self.hue > 0:
            image = shift_hue(image, _uniform(g, -self.hue, self.hue))
        return image


def crop_box(width: int, height: int, scale: tuple[float, float], ratio: tuple[float, float],
             g: torch.Generator) -> tuple[int, int, int, int]:
    """(left, top, w, h) of a random crop covering `scale` of the area at an aspect ratio in `ratio`, drawn as
    torchvision's RandomResizedCrop does (10 tries, then the largest centred crop within the ratio range)."""
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(g, scale[0], scale[1])
        aspect = math.exp(_uniform(g, log_low, log_high))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(g, width - w + 1), _randint(g, height - h + 1), w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, max(1, w), max(1, h)


def rotate_inside(image: Image.Image, degrees: float) -> Image.Image:
    """Rotate by `degrees` and keep the largest upright rectangle that holds only picture (no fill corners)."""
    if abs(degrees) < 1e-6:
        return image
    w, h = image.size
    inner_w, inner_h = _largest_inner_rect(w, h, math.radians(degrees))
    rotated = image.rotate(degrees, resample=RESAMPLE, expand=False)
    inner_w, inner_h = max(1, int(inner_w)), max(1, int(inner_h))
    left, top = (w - inner_w) // 2, (h - inner_h) // 2
    return rotated.crop((left, top, left + inner_w, top + inner_h))


def _largest_inner_rect(w: int, h: int, angle: float) -> tuple[float, float]:
    """Width and height of the largest axis-aligned rectangle inside a w×h rectangle rotated by `angle`."""
    long_side, short_side = (w, h) if w >= h else (h, w)
    sin_a, cos_a = abs(math.sin(angle)), abs(math.cos(angle))
    if short_side <= 2 * sin_a * cos_a * long_side or abs(sin_a - cos_a) < 1e-10:
        x = 0.5 * short_side
        return (x / sin_a, x / cos_a) if w >= h else (x / cos_a, x / sin_a)
    cos_2a = cos_a * cos_a - sin_a * sin_a
    return (w * cos_a - h * sin_a) / cos_2a, (h * cos_a - w * sin_a) / cos_2a


def shift_hue(image: Image.Image, turn: float) -> Image.Image:
    """Rotate the hue by `turn` of a full circle (-0.5 .. 0.5)."""
    hsv = np.array(image.convert("HSV"))
    hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(round(turn * 255))) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


@dataclass
class TextAugment:
    """`augment(caption, generator) -> caption`: word dropout, then an optional template around the result."""

    templates: tuple[str, ...] = ()
    template_prob: float = 0.0
    word_dropout: float = 0.0
    active: bool = True

    @classmethod
    def from_cfg(cls, cfg: AugmentCfg) -> "TextAugment":
        return cls(templates=tuple(cfg.templates), template_prob=cfg.template_prob, word_dropout=cfg.word_dropout,
                   active=cfg.enabled_for("text"))

    def __call__(self, caption: str, generator: torch.Generator | None = None) -> str:
        if not self.active:
            return caption
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        if self.word_dropout > 0:
            words = caption.split()
            if len(words) > 1:
                keep = [w for w in words if _uniform(g, 0, 1) >= self.word_dropout]
                caption = " ".join(keep) if keep else words[_randint(g, len(words))]
        if self.templates and _uniform(g, 0, 1) < self.template_prob:
            caption = self.templates[_randint(g, len(self.templates))].replace("{}", caption)
        return caption
