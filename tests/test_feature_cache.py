"""The frozen-prefix feature cache: exact, reused, and invalidated when what it depends on changes."""

import torch

from cliptune.data.load import load_dataset
from cliptune.inference.evaluate import embed_split
from cliptune.models.freeze import apply_freeze, plan_freeze
from cliptune.models.registry import load_model
from cliptune.train.feature_cache import FeatureCache


def _setup(shapes_csv, tmp_path):
    model = load_model("tiny-clip").eval()
    plan = plan_freeze(model, "both", {"image": 1, "text": 1})
    apply_freeze(model, plan)
    records = load_dataset(shapes_csv).records[:12]
    return model, plan, records, FeatureCache(model, plan, tmp_path / "fc", progress=False)


def test_cached_embeddings_equal_live_ones(shapes_csv, tmp_path):
    model, plan, records, cache = _setup(shapes_csv, tmp_path)
    img_c, txt_c, _ = embed_split(model, records, cache=cache, progress=False)
    img_l, txt_l, _ = embed_split(model, records, cache=None, progress=False)
    torch.testing.assert_close(img_c, img_l, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt_c, txt_l, atol=1e-5, rtol=1e-5)


def test_reused_from_disk_and_invalidated(shapes_csv, tmp_path):
    model, plan, records, cache = _setup(shapes_csv, tmp_path)
    cache.images(records)
    files = sorted((tmp_path / "fc").glob("*.safetensors"))
    assert len(files) == 1
    before_mtime = files[0].stat().st_mtime_ns
    cache.images(records)  # second call: read, not rewritten
    assert sorted((tmp_path / "fc").glob("*.safetensors")) == files
    assert files[0].stat().st_mtime_ns == before_mtime

    # a changed input file → a new entry
    from PIL import Image

    Image.new("RGB", (64, 64), (1, 2, 3)).save(records[0].image)
    cache.images(records)
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 2

    # changed frozen weights → a new entry
    with torch.no_grad():
        model.image_tower.trunk_blocks()[0].parameters().__next__().add_(0.01)
    FeatureCache(model, plan, tmp_path / "fc", progress=False).images(records)
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 3


def test_only_frozen_sides_are_cached(shapes_csv, tmp_path):
    model = load_model("tiny-clip")
    plan = plan_freeze(model, "image")
    cache = FeatureCache(model, plan, tmp_path / "fc", progress=False)
    assert cache.covers("image") and not cache.covers("text")


def test_shard_members_are_keyed_by_their_shard(shapes_csv, tmp_path):
    """Images read in place from a tar (`shard.tar#key.png`) get a key from the shard's size and mtime, so
    rewriting the shard invalidates the cached features."""
    import os

    from cliptune.data.to_wds import write_shards

    model, plan, _, cache = _setup(shapes_csv, tmp_path)
    write_shards(load_dataset(shapes_csv), tmp_path / "shards", shard_size=1000)
    shard = sorted((tmp_path / "shards").glob("*.tar"))[0]
    records = load_dataset(shard).records[:6]
    assert all("#" in r.image for r in records)
    cache.images(records)
    cache.images(records)
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 1
    stat = shard.stat()
    os.utime(shard, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the shard was rewritten
    cache.images(records)
    assert len(list((tmp_path / "fc").glob("*.safetensors"))) == 2
