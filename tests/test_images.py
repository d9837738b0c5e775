"""Image loading: every kind of file a user may have either becomes upright 8-bit RGB or a DataError naming it."""

from __future__ import annotations

import contextlib
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliptune.data.images import MAX_PIXELS, check_image, load_image
from cliptune.errors import DataError

RED, BLUE = (255, 0, 0), (0, 0, 255)


def close(pixel, expected, tol=12):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, expected))


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims `width` x `height` but holds no pixels: what a decompression bomb looks like to open()."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "bmp", "gif"])
def test_plain_formats_load_as_rgb(tmp_path, suffix):
    path = tmp_path / f"x.{suffix}"
    Image.new("RGB", (12, 8), RED).save(path)
    im = load_image(path)
    assert im.mode == "RGB" and im.size == (12, 8)
    assert close(im.getpixel((5, 4)), RED, tol=40)
    assert check_image(path) is None


def test_alpha_is_composited_on_white(tmp_path):
    path = tmp_path / "icon.png"
    im = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    im.putpixel((1, 1), (255, 0, 0, 255))
    im.save(path)
    out = load_image(path)
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == RED


def test_palette_with_transparency_and_plain_palette(tmp_path):
    transparent = tmp_path / "t.png"
    im = Image.new("P", (4, 4), 0)
    im.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    im.putpixel((2, 2), 1)
    im.save(transparent, transparency=0)
    out = load_image(transparent)
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((2, 2)) == (0, 255, 0)

    plain = tmp_path / "p.png"
    Image.new("RGB", (4, 4), BLUE).convert("P").save(plain)
    assert load_image(plain).getpixel((1, 1)) == BLUE


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 32768], [65535, 16384]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_image(path))
    assert out.shape == (2, 2, 3)
    assert out[0, 0, 0] == 0 and out[1, 0, 0] == 255
    assert abs(int(out[0, 1, 0]) - 128) <= 1 and abs(int(out[1, 1, 0]) - 64) <= 1


def test_cmyk_jpeg_and_grayscale(tmp_path):
    cmyk = tmp_path / "print.jpg"
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(cmyk, quality=95)  # pure cyan ink
    out = load_image(cmyk)
    assert out.mode == "RGB" and close(out.getpixel((4, 4)), (0, 255, 255))

    grey = tmp_path / "grey.png"
    Image.new("L", (5, 5), 90).save(grey)
    assert load_image(grey).getpixel((2, 2)) == (90, 90, 90)

    grey_alpha = tmp_path / "la.png"
    Image.new("LA", (5, 5), (0, 0)).save(grey_alpha)
    assert load_image(grey_alpha).getpixel((2, 2)) == (255, 255, 255)


def test_exif_rotated_photo_loads_upright(tmp_path):
    # Stored sideways: left half red, right half blue; orientation 6 says "turn 90 degrees clockwise to view".
    stored = Image.new("RGB", (40, 20), RED)
    stored.paste(Image.new("RGB", (20, 20), BLUE), (20, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.size == (20, 40)  # portrait once upright
    assert close(out.getpixel((10, 5)), RED) and close(out.getpixel((10, 35)), BLUE)


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), BLUE).save(path)
    assert load_image(path).getpixel((0, 0)) == BLUE
    assert check_image(path) is None


@pytest.mark.parametrize("side", [12_000, 20_000])  # over our limit; over Pillow's own (twice ours)
def test_decompression_bomb_is_refused(tmp_path, side):
    assert side * side > MAX_PIXELS
    path = png_header_only(tmp_path / "bomb.png", side, side)
    pillow_warns = side * side <= 2 * MAX_PIXELS  # between the limits Pillow only warns; we refuse

    def expect_warning():
        return pytest.warns(Image.DecompressionBombWarning) if pillow_warns else contextlib.nullcontext()

    with expect_warning(), pytest.raises(DataError) as err:
        load_image(path)
    assert str(path) in str(err.value) and "pixel" in str(err.value)
    assert err.value.file == str(path)
    with expect_warning():
        assert "pixel" in check_image(path)


def test_truncated_jpeg_not_an_image_and_missing_file(tmp_path):
    rng = np.random.default_rng(0)
    good = tmp_path / "good.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good, quality=90)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    missing = tmp_path / "gone.png"

    for path, words in [(truncated, "truncated"), (text, "not an image"), (missing, "not found")]:
        with pytest.raises(DataError) as err:
            load_image(path)
        assert words in str(err.value) and err.value.file == str(path)
        assert words in check_image(path)
    assert check_image(good) is None


def test_truncated_png_fails_the_cheap_check(tmp_path):
    rng = np.random.default_rng(1)
    good = tmp_path / "good.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:-200])
    assert check_image(cut) is not None
    with pytest.raises(DataError):
        load_image(cut)


def test_inspect_reports_upright_size_and_problems_from_bytes(tmp_path):
    from cliptune.data.images import inspect_image, load_image_bytes

    stored = Image.new("RGB", (40, 20), RED)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated: 20 wide, 40 high
    path = tmp_path / "phone.jpg"
    stored.save(path, exif=exif, quality=95)
    assert inspect_image(str(path)) == (None, (20, 40))
    assert inspect_image(path.read_bytes()) == (None, (20, 40))
    assert load_image_bytes(path.read_bytes(), "shard.tar#k.jpg").size == (20, 40)
    reason, size = inspect_image(path.read_bytes()[:300])
    assert "truncated" in reason and size is None
    assert "not an image" in inspect_image(b"plain text")[0]
    with pytest.raises(DataError) as err:
        load_image_bytes(b"plain text", "shard.tar#k.jpg")
    assert err.value.file == "shard.tar#k.jpg"


def test_decode_error_in_a_dataloader_worker_reads_as_the_worker_raised_it(tmp_path):
    """Only the traceback text crosses from a worker; the error the user sees is the worker's own message."""
    import torch

    from cliptune.data.datasets import ImageFiles
    from cliptune.data.records import Record
    from cliptune.errors import DataError

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    dataset = ImageFiles([Record(image=str(broken), captions=["x"], sources=[("pairs.csv", 7)])],
                         lambda image: torch.zeros(1))
    with pytest.raises(DataError) as err:
        list(torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=1))
    assert str(err.value).startswith(f"pairs.csv, row 7: image {broken}")
    assert "Traceback" not in str(err.value) and "\n" not in str(err.value)
