"""Decode cache: the model's transform gives the same tensor from the cache as from the file; entries follow the
file, the size and the resampling; damaged entries are recomputed; shard members work too."""

from __future__ import annotations

import io
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from cliptune.data.datasets import ImageFiles
from cliptune.data.decode_cache import DecodeCache, resized_size
from cliptune.data.images import load_image
from cliptune.data.records import Record
from cliptune.data.tar_members import member_ref
from cliptune.errors import DataError


def photo(path, width, height, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), np.uint8)).save(path)
    return path


def model_transform(size):
    """What `lite` and CLIP-style backends do at eval: shorter side to `size` (bicubic), centre crop."""
    return T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size), T.ToTensor()])


@pytest.mark.parametrize("width,height", [(97, 61), (40, 130), (50, 50), (20, 15)])  # landscape, portrait, up
def test_cached_image_gives_the_models_own_pixels(tmp_path, width, height):
    path = photo(tmp_path / "x.jpg", width, height)
    cache = DecodeCache(tmp_path / "cache", size=32)
    first, second = cache(str(path)), cache(str(path))
    assert (cache.misses, cache.hits) == (1, 1)
    assert min(first.size) == 32 and first.size == resized_size(width, height, 32)
    assert np.array_equal(np.asarray(first), np.asarray(second))
    transform = model_transform(32)
    assert torch.equal(transform(second), transform(load_image(path)))


def test_entries_follow_file_size_and_resampling(tmp_path):
    path = photo(tmp_path / "x.png", 64, 48)
    cache = DecodeCache(tmp_path / "cache", size=16)
    cache(str(path))
    assert cache.entry(str(path)) != DecodeCache(tmp_path / "cache", size=24).entry(str(path))
    assert cache.entry(str(path)) != DecodeCache(tmp_path / "cache", size=16, resample="bilinear").entry(str(path))
    photo(path, 64, 48, seed=1)
    os.utime(path, ns=(1, 1))  # a rewritten file (new mtime) is a new entry
    before = cache.misses
    assert np.array_equal(np.asarray(cache(str(path))), np.asarray(cache.resize(load_image(path))))
    assert cache.misses == before + 1


def test_damaged_entry_is_recomputed_and_errors_name_the_file(tmp_path):
    path = photo(tmp_path / "x.png", 30, 30)
    cache = DecodeCache(tmp_path / "cache", size=8)
    good = np.asarray(cache(str(path)))
    cache.entry(str(path)).write_bytes(b"garbage")
    assert np.array_equal(np.asarray(cache(str(path))), good)
    with pytest.raises(DataError) as err:
        cache(str(tmp_path / "gone.png"))
    assert err.value.file == str(tmp_path / "gone.png")
    assert not list((tmp_path / "cache").rglob(".*tmp*"))  # atomic writes leave no temp files


def test_works_for_shard_members_and_inside_image_files(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 20), (1, 2, 3)).save(buffer, format="PNG")
    shard = tmp_path / "s.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo("k.png")
        info.size = len(buffer.getvalue())
        tar.addfile(info, io.BytesIO(buffer.getvalue()))
    cache = DecodeCache(tmp_path / "cache", size=10)
    assert cache(member_ref(shard, "k.png")).size == (20, 10)

    records = [Record(image=str(photo(tmp_path / f"{i}.png", 50, 40, seed=i)), captions=["c"]) for i in range(3)]
    transform = model_transform(16)
    cached = ImageFiles(records, transform, loader=DecodeCache(tmp_path / "c2", size=16))
    plain = ImageFiles(records, transform)
    assert all(torch.equal(cached[i], plain[i]) for i in range(3))
