"""`Tower.pool_prefix(prefix(x, k), k)` is `prefix(x, 0)`: the probe pools a run's cut-point cache into k = 0
features instead of a second pass over the inputs, so the two must agree for every cut."""

from __future__ import annotations

import pytest
import torch

from cliptune.models.base import Tower
from cliptune.train.probe_features import has_pool_prefix


@pytest.fixture(scope="module")
def lite():
    from cliptune.models.registry import load_model

    model = load_model("lite-random", image_size=64, context_length=16)
    return model.eval()


@pytest.mark.parametrize("k", [1, 2, 5, 17])
def test_efficientnet_pool_prefix_equals_whole_prefix(lite, k):
    tower = lite.image_tower
    assert 0 < k <= tower.n_blocks
    x = {"pixel_values": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(k))}
    with torch.no_grad():
        cut = tower.prefix(x, k)
        assert "hidden" in cut  # really a cut-point map, not already pooled
        pooled = tower.pool_prefix(cut, k)
        whole = tower.prefix(x, 0)
    assert set(pooled) == set(whole) == {"pooled"}
    torch.testing.assert_close(pooled["pooled"], whole["pooled"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_minilm_pool_prefix_equals_whole_prefix(lite, k):
    tower = lite.text_tower
    tokens = lite.tokenize(["a red circle", "a much longer caption about a blue square on dark ground", "x"])
    with torch.no_grad():
        cut = tower.prefix(tokens, k)
        pooled = tower.pool_prefix(cut, k)
        whole = tower.prefix(tokens, 0)
    assert set(pooled) == set(whole) == {"pooled"}
    torch.testing.assert_close(pooled["pooled"], whole["pooled"], rtol=1e-4, atol=1e-5)


def test_pool_prefix_at_zero_is_identity_and_unsupported_towers_say_none(lite):
    feats = {"pooled": torch.ones(2, 4)}
    assert lite.image_tower.pool_prefix(feats, 0) is feats
    assert has_pool_prefix(lite.image_tower) and has_pool_prefix(lite.text_tower)

    class Plain(Tower):  # a backend that does not implement it
        def trunk_blocks(self):
            return []

        def head_modules(self):
            return []

        def prefix(self, inputs, k):
            return inputs

        def suffix(self, features, k):
            return features["x"]

    assert Plain().pool_prefix(feats, 3) is None and not has_pool_prefix(Plain())


def test_probe_features_pool_the_run_cache_and_equal_a_fresh_whole_tower_pass(lite, shapes_csv):
    """A run that trains the top of both towers cached their cut-point maps; the probe pools those (no second pass
    over the images) and gets the k = 0 features a whole-tower pass gives."""
    from cliptune.config import load_config
    from cliptune.data.load import load_dataset
    from cliptune.train.probe_features import ProbeFeatures

    records = load_dataset(str(shapes_csv)).records[:6]
    model_cfg = {"spec": "lite-random", "freeze": "both"}
    at_cut = load_config(None, [], base={"model": {**model_cfg, "unfreeze_last_n": {"image": 2, "text": 1}}})
    whole = load_config(None, [], base={"model": model_cfg})
    pooled_source = ProbeFeatures(lite, at_cut)
    assert pooled_source.source["image"].startswith("run cache at k=2")
    assert pooled_source.source["text"].startswith("run cache at k=1")
    assert ProbeFeatures(lite, whole).source == {"image": "k=0 cache", "text": "k=0 cache"}
    got, want = pooled_source.split(records), ProbeFeatures(lite, whole).split(records)
    for side in ("image", "text"):
        torch.testing.assert_close(getattr(got, side)["pooled"], getattr(want, side)["pooled"], rtol=1e-4, atol=1e-5)
