"""The emoji dataset builder: readable CLDR captions, real renders from Noto Color Emoji, idempotent output."""

from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from cliptune.data.builders import emoji as emoji_module
from cliptune.data.builders.emoji import NOTO_COLOR_EMOJI, Renderer, build_emoji, caption, filename
from cliptune.data.load import load_dataset
from cliptune.errors import CliptuneError

needs_font = pytest.mark.skipif(not NOTO_COLOR_EMOJI.is_file(), reason="fonts-noto-color-emoji is not installed")


@pytest.mark.parametrize("emoji,expected", [
    ("\U0001F603", "grinning face with big eyes"),
    ("\U0001F1EB\U0001F1F7", "flag: france"),
    ("\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F", "flag: england"),
    ("\U0001F44B\U0001F3FD", "waving hand: medium skin tone"),
    ("#\ufe0f\u20e3", "keycap: #"),
    ("\U0001F468\u200d\U0001F9B0", "man: red hair"),
    ("\U0001F468\U0001F3FF\u200d\U0001F9B2", "man: dark skin tone, bald"),
    ("\U0001F469\u200d\u2764\ufe0f\u200d\U0001F48B\u200d\U0001F468", "kiss: woman, man"),
    ("\U0001F468\u200d\U0001F469\u200d\U0001F467", "family: man, woman, girl"),
    ("\U0001F91D\U0001F3FB", "handshake: light skin tone"),
    ("\U0001F44E", "thumbs down"),
    ("\U0001F45E", "man's shoe"),
    ("\U0001F48B", "kiss mark"),
])
def test_captions_are_plain_cldr_names(emoji, expected):
    assert caption(emoji) == expected


def test_filenames_are_codepoints():
    assert filename("\U0001F600") == "1f600.png"
    assert filename("\U0001F44B\U0001F3FD") == "1f44b-1f3fd.png"


@needs_font
def test_glyphs_the_font_lacks_are_skipped():
    render = Renderer(NOTO_COLOR_EMOJI, size=16)
    assert render("\U0001F600") is not None
    assert render("\U0010FFFD") is None  # no glyph: blank
    assert render("\U0001F1FD\U0001F1FD") is None  # unassigned region: the font's "unknown flag"
    assert render("\U0001F600\u200d\U0001F600") is None  # not a sequence: falls apart into two glyphs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji") / "set"
    return out, build_emoji(out, size=32, limit=20, progress=False)


@needs_font
def test_build_writes_images_and_csv(built):
    out, path = built
    assert path == out / "emoji.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) == 20
    assert [r["image_path"] for r in rows] == sorted((r["image_path"] for r in rows),
                                                     key=lambda n: [int(h, 16) for h in n[:-4].split("-")])
    assert rows[0] == {"image_path": "0023-fe0f-20e3.png", "caption": "keycap: #"}
    for row in rows:
        assert row["caption"] and row["caption"] == row["caption"].lower() and "_" not in row["caption"]
        with Image.open(out / row["image_path"]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
            assert im.getpixel((0, 0)) == (255, 255, 255)  # white margin
            assert len(im.getcolors(32 * 32)) > 2  # a picture, not a blank tile
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders left behind


@needs_font
def test_build_is_idempotent_and_force_rebuilds(built):
    out, path = built
    stamp = path.stat().st_mtime_ns
    assert build_emoji(out, size=32, limit=20, progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    assert build_emoji(out, size=24, limit=3, progress=False, force=True) == path
    assert len(path.read_text(encoding="utf-8").splitlines()) == 4
    with Image.open(out / "0023-fe0f-20e3.png") as im:
        assert im.size == (24, 24)


@needs_font
def test_build_loads_as_a_dataset(tmp_path):
    path = build_emoji(tmp_path / "e", size=16, limit=10, progress=False)
    data = load_dataset(path)
    assert len(data.records) == 10 and not data.skipped
    assert all(len(r.captions) == 1 for r in data.records)


def test_build_refuses_to_replace_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(CliptuneError, match="not an emoji build"):
        build_emoji(tmp_path, limit=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_identical_pictures_are_one_image_with_every_caption(tmp_path, monkeypatch):
    """Noto draws the flags of France and Clipperton Island alike: one picture file carries both captions, so
    the two can never land in different splits."""
    from cliptune.data.load import load_dataset
    from cliptune.data.validate import validate_dataset

    subset = ["\U0001F1E8\U0001F1F5", "\U0001F1E9\U0001F1EA", "\U0001F1EB\U0001F1F7", "\U0001F600"]
    monkeypatch.setattr(emoji_module, "candidates", lambda: list(subset))
    path = build_emoji(tmp_path / "emoji", size=32, progress=False)
    rows = path.read_text().splitlines()[1:]
    assert rows == ["1f1e8-1f1f5.png,flag: clipperton island", "1f1e9-1f1ea.png,flag: germany",
                    "1f1e8-1f1f5.png,flag: france", "1f600.png,grinning face"]
    assert sorted(p.name for p in (tmp_path / "emoji").glob("*.png")) == ["1f1e8-1f1f5.png", "1f1e9-1f1ea.png",
                                                                         "1f600.png"]
    info = json.loads((tmp_path / "emoji" / "emoji.json").read_text())
    assert info["images"] == 3 and info["same_picture"] == [["flag: clipperton island", "flag: france"]]
    records = load_dataset(path, split_ratios=(0.5, 0.25, 0.25)).records
    assert sorted(len(r.captions) for r in records) == [1, 1, 2]
    checks = {i.check for i in validate_dataset(path).issues}
    assert not checks & {"duplicate_images", "content_in_two_splits", "image_in_two_splits"}
