"""Augmentation: deterministic per (seed, epoch, image), off unless enabled, no flip for left/right captions,
applied to PIL images before any model transform."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cliptune.config import AugmentCfg, load_config
from cliptune.data.augment import ImageAugment, TextAugment, crop_box, rotate_inside
from cliptune.data.datasets import ImageFiles
from cliptune.data.records import Record
from cliptune.data.seeds import sample_generator


def picture(width=64, height=48) -> Image.Image:
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = (255, 0, 0)  # left half red, right half blue
    pixels[:, width // 2:] = (0, 0, 255)
    return Image.fromarray(pixels)


def g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


def test_config_section_and_which_sides_change():
    cfg = load_config(None, ["augment.enabled=true"]).augment
    assert cfg.enabled_for("image") and not cfg.enabled_for("text")
    assert not AugmentCfg().enabled_for("image") and not AugmentCfg().enabled_for("text")
    text = AugmentCfg(enabled=True, templates=["a photo of {}"], crop_scale=None, color_jitter=0, hflip=0)
    assert text.enabled_for("text") and not text.enabled_for("image")
    with pytest.raises(ValueError):
        AugmentCfg().enabled_for("audio")


def test_disabled_augmentation_is_the_identity():
    image = picture()
    assert ImageAugment.from_cfg(AugmentCfg())(image, "x", g(0)) is image
    assert TextAugment.from_cfg(AugmentCfg(templates=["a photo of {}"]))("a cat", g(0)) == "a cat"


def test_image_augmentation_is_deterministic_per_generator():
    cfg = AugmentCfg(enabled=True, color_jitter=0.4, hue=0.1, rotate=10, crop_scale=(0.5, 1.0))
    augment = ImageAugment.from_cfg(cfg, size=32)
    image = picture()
    outs = [augment(image, "a thing", g(s)) for s in (1, 1, 2)]
    assert outs[0].size == (32, 32) and outs[0].mode == "RGB"
    assert same(outs[0], outs[1]) and not same(outs[0], outs[2])
    assert ImageAugment.from_cfg(cfg)(image, "a thing", g(1)).size != (32, 32)  # no size: the crop's own pixels


def test_flip_is_skipped_when_a_caption_says_left_or_right():
    augment = ImageAugment.from_cfg(AugmentCfg(enabled=True, hflip=1.0, crop_scale=None, color_jitter=0))
    image = picture()
    flipped = augment(image, "a red and a blue band", g(0))
    assert flipped.getpixel((0, 0)) == (0, 0, 255)
    for caption in ("red on the Left", "the right one", ["fine", "turn left here"]):
        assert same(augment(image, caption, g(0)), image)


def test_crop_box_stays_inside_and_rotation_has_no_fill_corners():
    for seed in range(50):
        left, top, w, h = crop_box(64, 48, (0.08, 1.0), (3 / 4, 4 / 3), g(seed))
        assert 0 <= left and 0 <= top and left + w <= 64 and top + h <= 48 and w > 0 and h > 0
    white = Image.new("RGB", (80, 60), (255, 255, 255))
    rotated = rotate_inside(white, 12)
    assert rotated.size[0] < 80 and np.asarray(rotated).min() >= 250  # no black corners crept in


def test_text_augmentation_templates_and_word_dropout():
    augment = TextAugment.from_cfg(AugmentCfg(enabled=True, templates=["a photo of {}", "art of {}"],
                                              template_prob=1.0, word_dropout=0.5))
    outs = [augment("a small red cat on a mat", g(s)) for s in range(20)]
    assert all(o.startswith(("a photo of ", "art of ")) for o in outs)
    assert len(set(outs)) > 5 and augment("one", g(3)).endswith("one")  # a single word is never dropped
    assert outs[0] == augment("a small red cat on a mat", g(0))


def test_image_files_applies_augmentation_per_index_and_epoch(tmp_path):
    records = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        picture(40 + i, 30).save(path)
        records.append(Record(image=str(path), captions=[f"c{i}"]))
    augment = ImageAugment.from_cfg(AugmentCfg(enabled=True, crop_scale=(0.3, 0.6)), size=16)
    to_tensor = lambda im: torch.from_numpy(np.array(im))  # noqa: E731
    files = ImageFiles(records, to_tensor, augment=augment, captions=["c0", "c1", "c2"], seed=5, epoch=0)
    first = [files[i] for i in range(3)]
    assert torch.equal(files[2], first[2]) and first[0].shape == (16, 16, 3)  # order does not matter
    expected = to_tensor(augment(Image.open(records[1].image).convert("RGB"), "c1", sample_generator(5, 0, 1)))
    assert torch.equal(first[1], expected)
    files.set_epoch(1)
    assert not torch.equal(files[0], first[0])
    assert ImageFiles(records, to_tensor)[0].shape == (30, 40, 3)  # without augmentation: the image as it is
