"""Pre-training data builders: captions from clip-art metadata and icon names, framing, and the emoji overlap check."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from cliptune.data.builders import icons, openclipart
from cliptune.data.builders.emoji_overlap import EmojiFingerprints
from cliptune.data.builders.framing import frame_square, pixel_hash
from cliptune.data.builders.picture_set import write_picture_set

SVG = """<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:cc="http://web.resource.org/cc/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <metadata><rdf:RDF><cc:Work rdf:about="">
  <dc:title>{title}</dc:title><dc:description>{description}</dc:description>
  <dc:subject><rdf:Bag><rdf:li>hash</rdf:li><rdf:li>dog</rdf:li><rdf:li>animal</rdf:li></rdf:Bag></dc:subject>
  <dc:creator><cc:Agent><dc:title>Benji Park</dc:title></cc:Agent></dc:creator>
 </cc:Work></rdf:RDF></metadata></svg>"""


def _write_svg(path: Path, title: str, description: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SVG.format(title=title, description=description), encoding="utf-8")
    return path


def test_clipart_captions_from_metadata(tmp_path):
    svg = _write_svg(tmp_path / "animals" / "dogs" / "bored_dog_benji_park_01.svg", "Bored dog",
                     "A dog that is bored. Drawn in 2005")
    meta = openclipart.read_meta(svg)
    assert (meta.title, meta.author) == ("Bored dog", "Benji Park")
    caps = openclipart.captions_for(Path("animals/dogs/bored_dog_benji_park_01.png"), meta, Counter())
    assert caps == ["bored dog", "a dog that is bored", "dog, animal, dogs, animals"]


def test_shared_titles_fall_back_to_file_name_words_without_the_author(tmp_path):
    svg = _write_svg(tmp_path / "az-lizard_benji_park_01.svg", "Clipart collection")
    meta = openclipart.read_meta(svg)
    caps = openclipart.captions_for(Path("animals/az-lizard_benji_park_01.png"), meta,
                                    Counter({"clipart collection": 50}))
    assert caps[0] == "az lizard"
    assert openclipart.stem_words("star_32pt05step", "") == "star"
    assert openclipart.stem_words("arrow04_2", "") == "arrow"


def test_icon_names_become_words():
    assert icons.name_words("face-smile-big-symbolic") == "face smile big"
    assert icons.name_words("x-office-document") == "office document"
    assert icons.icon_name(Path("face-smile-symbolic.symbolic.png")) == "face-smile-symbolic"


def test_icons_one_size_per_name_and_no_emoji_icons(tmp_path):
    theme = tmp_path / "Theme"
    for folder, name in [("16x16/status", "user-trash.png"), ("48x48/status", "user-trash.png"),
                         ("512x512/status", "user-trash.png"), ("48x48/categories", "emoji-food-symbolic.png")]:
        (theme / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGBA", (8, 8), (0, 0, 0, 255)).save(theme / folder / name)
    found = icons.collect(theme)
    assert [(p.relative_to(theme).as_posix(), c[0]) for p, c in found] == [("48x48/status/user-trash.png",
                                                                             "user trash")]


def test_frame_square_centres_the_ink_on_white():
    image = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (50, 25, 150, 75))
    framed = frame_square(image, 64)
    assert framed.size == (64, 64) and framed.mode == "RGB"
    assert framed.getpixel((0, 0)) == (255, 255, 255)
    assert framed.getpixel((32, 32))[0] > 200 and framed.getpixel((32, 32))[1] < 50


def _emoji_build(root: Path) -> Path:
    """A fake emoji build: two coloured glyph-like pictures with a CSV, as `cliptune data build emoji` writes."""
    root.mkdir(parents=True)
    for name, color in [("1f534.png", (220, 20, 20)), ("1f7e6.png", (20, 20, 220))]:
        im = Image.new("RGB", (72, 72), (255, 255, 255))
        im.paste(color, (10, 30, 62, 60))
        im.paste((0, 0, 0), (20, 10, 30, 30))
        im.save(root / name)
    with (root / "emoji.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["image_path", "caption"], ["1f534.png", "red"], ["1f7e6.png", "blue"]])
    return root


def test_overlap_check_drops_copies_reencodings_and_rescales_of_emoji_images(tmp_path):
    emoji = EmojiFingerprints(_emoji_build(tmp_path / "emoji"))
    src = tmp_path / "src"
    src.mkdir()
    original = Image.open(tmp_path / "emoji" / "1f534.png").convert("RGB")
    (src / "copy.png").write_bytes((tmp_path / "emoji" / "1f534.png").read_bytes())
    original.convert("RGBA").save(src / "reencoded.png")
    original.resize((300, 300), Image.Resampling.BICUBIC).save(src / "rescaled.png")
    other = Image.new("RGB", (90, 90), (255, 255, 255))
    other.paste((0, 160, 0), (5, 5, 40, 85))
    other.save(src / "other.png")
    items = [(src / n, [n.split(".")[0]]) for n in ("copy.png", "reencoded.png", "rescaled.png", "other.png")]
    csv_path = write_picture_set(items, tmp_path / "out", "set", src, emoji, 64, {"source": "test"}, progress=False)
    with csv_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["caption"] for r in rows] == ["other"]
    report = json.loads((tmp_path / "out" / "set.json").read_text())["emoji_overlap"]
    assert report["same_file"] == ["copy.png"]
    assert sorted(report["same_pixels"] + report["near_duplicate"]) == ["reencoded.png", "rescaled.png"]
    assert report["checked"] == 4 and report["emoji_images"] == 2


def test_identical_pictures_are_merged_with_their_captions(tmp_path):
    emoji = EmojiFingerprints(_emoji_build(tmp_path / "emoji"))
    src = tmp_path / "src"
    src.mkdir()
    im = Image.new("RGB", (50, 50), (255, 255, 255))
    im.paste((0, 0, 0), (10, 10, 40, 20))
    im.save(src / "a.png")
    im.save(src / "b.png")
    csv_path = write_picture_set([(src / "a.png", ["bar"]), (src / "b.png", ["black bar", "bar"])],
                                 tmp_path / "out", "set", src, emoji, 32, {}, progress=False)
    with csv_path.open() as fh:
        rows = [(r["image_path"], r["caption"]) for r in csv.DictReader(fh)]
    assert rows == [("a.png", "bar"), ("a.png", "black bar")]
    assert pixel_hash(Image.open(tmp_path / "out" / "a.png")) == pixel_hash(frame_square(im, 32))


@pytest.mark.skipif(not openclipart.ROOT.joinpath("svg").is_dir(), reason="openclipart-svg is not installed")
def test_installed_clipart_has_captions_for_most_drawings():
    found = openclipart.collect(limit=200)
    assert len(found) >= 150 and all(caps and all(c.strip() for c in caps) for _, caps in found)
