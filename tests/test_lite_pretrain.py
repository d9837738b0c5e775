"""`lite`'s shipped aligned heads: how they are fitted, written with their hash, checked when loaded, and
that `lite-random` and other head shapes keep random heads."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from cli_inprocess import run_cli
from cliptune.errors import ModelLoadError
from cliptune.models import lite_heads
from cliptune.models.registry import load_model


@pytest.fixture(scope="module")
def lite_random():
    return load_model("lite-random", image_size=64, context_length=16)


def _synthetic_pairs(n: int, seed: int):
    """Image and text features that share a 16-d latent through different random linear maps, plus noise."""
    from cliptune.pretrain.features import PairFeatures

    g = torch.Generator().manual_seed(seed)
    maps = torch.Generator().manual_seed(99)
    a, b = torch.randn(16, 1280, generator=maps), torch.randn(16, 384, generator=maps)
    z = torch.randn(n, 16, generator=g)
    image = z @ a + 0.1 * torch.randn(n, 1280, generator=g)
    text = z @ b + 0.1 * torch.randn(n, 384, generator=g)
    return PairFeatures(image=image, text=text, text_to_image=torch.arange(n), captions=[str(i) for i in range(n)])


def test_fit_heads_aligns_held_out_pairs(lite_random):
    from cliptune.pretrain.fit import HeadRecipe, fit_heads, heldout_metrics

    model = load_model("lite-random", image_size=64, context_length=16)
    train, held = _synthetic_pairs(600, 0), _synthetic_pairs(100, 1)
    before = heldout_metrics(model, held)["t2i"]["R@1"]
    fitted = fit_heads(model, train, HeadRecipe(epochs=15, batch_size=128))
    after = heldout_metrics(model, held)["t2i"]["R@1"]
    assert before < 0.1 and after > 0.6, (before, after)
    assert fitted["losses"][-1] < fitted["losses"][0]


def _pretrain(monkeypatch, capsys, data, out, *extra):
    code, stdout, stderr = run_cli(monkeypatch, capsys, "pretrain-lite", "--data", data, "--epochs", "3",
                                   "--held-out", "0.25", "--out", out, "--name", "heads", "-q", *extra)
    assert code == 0, stderr
    return json.loads((out / "heads.json").read_text())


def test_pretrain_lite_writes_heads_with_their_hash_and_lite_loads_them(monkeypatch, capsys, shapes_csv, tmp_path):
    card = _pretrain(monkeypatch, capsys, shapes_csv, tmp_path / "pre")
    weights = tmp_path / "pre" / "heads.safetensors"
    assert card["sha256"] == lite_heads.sha256_file(weights)
    assert card["command"].startswith("cliptune pretrain-lite --data")
    assert card["heldout"]["images"] == 16 and 0 <= card["heldout"]["t2i"]["R@1"] <= 1
    assert card["train"]["images"] == 48 and card["data"][0]["path"] == str(shapes_csv)
    monkeypatch.setattr(lite_heads, "PRETRAINED_DIR", tmp_path / "pre")
    monkeypatch.setattr("cliptune.models.lite.SHIPPED_HEADS", "heads")
    model = load_model("lite", image_size=64)
    from safetensors.torch import load_file

    shipped = load_file(str(weights))
    assert torch.equal(model.image_tower.proj.state_dict()["1.weight"], shipped["image.proj.1.weight"])
    assert torch.equal(model.text_tower.proj.state_dict()["1.weight"], shipped["text.proj.1.weight"])
    assert torch.equal(model.logit_scale.detach(), shipped["logit_scale"])


def test_a_changed_heads_file_is_refused(monkeypatch, tmp_path):
    shutil.copytree(lite_heads.PRETRAINED_DIR, tmp_path / "pre")
    weights = tmp_path / "pre" / "lite0-heads.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    monkeypatch.setattr(lite_heads, "PRETRAINED_DIR", tmp_path / "pre")
    with pytest.raises(ModelLoadError, match=r"lite0-heads.safetensors: sha256 .* does not match"):
        load_model("lite", image_size=64)
    weights.unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        load_model("lite", image_size=64)


def test_lite_has_the_shipped_heads_and_lite_random_does_not(lite_random):
    card = lite_heads.read_card("lite0-heads")
    shipped = lite_heads.load_heads(card)
    model = load_model("lite", image_size=64, context_length=16)
    assert model.embed_dim == card.embed_dim
    for key, value in model.image_tower.proj.state_dict().items():
        assert torch.equal(value, shipped[lite_heads.IMAGE_PREFIX + key])
        assert not torch.equal(lite_random.image_tower.proj.state_dict()[key], value)
    assert torch.equal(model.logit_scale.detach(), shipped["logit_scale"])


def test_another_head_shape_starts_random_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="cliptune.models.lite"):
        model = load_model("lite", image_size=64, embed_dim=64)
    assert model.embed_dim == 64 and "heads start random" in caplog.text


def test_fine_tuned_lite_export_reloads(tmp_path):
    model = load_model("lite", image_size=64, context_length=16)
    with torch.no_grad():
        model.image_tower.proj[1].weight.add_(0.01)  # as a fine-tuning step would
    model.save(tmp_path / "m")
    again = load_model(str(tmp_path / "m"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key


def test_pretrain_lite_fits_heads_for_a_larger_tower(monkeypatch, capsys, shapes_csv, tmp_path):
    card = _pretrain(monkeypatch, capsys, shapes_csv, tmp_path / "pre", "--tower", "b1")
    assert card["arch"]["tower"] == "efficientnet-lite1" and card["spec"]["tower"] == "b1"
    assert card["image_size"] == 240


@pytest.mark.parametrize("variant,net", [("b1", "efficientnet-lite1"), ("b2", "efficientnet-lite2")])
def test_larger_towers_ship_their_own_heads(variant, net):
    from cliptune.models.lite import VARIANTS

    card = lite_heads.read_card(VARIANTS.get(variant).heads)
    assert card.tower == net
    record = json.loads((lite_heads.PRETRAINED_DIR / f"{card.name}.json").read_text())
    assert record["image_size"] == VARIANTS.get(variant).image_size and record["spec"]["tower"] == variant
    shipped = lite_heads.load_heads(card)
    model = load_model(f"lite:{variant}", image_size=64, context_length=16)
    assert model.spec == f"lite:{variant}"
    for key, value in model.image_tower.proj.state_dict().items():
        assert torch.equal(value, shipped[lite_heads.IMAGE_PREFIX + key])
    assert torch.equal(model.logit_scale.detach(), shipped["logit_scale"])


def test_towers_are_named_and_one_without_heads_says_so(monkeypatch, tmp_path):
    from cliptune.models.lite import VARIANTS

    assert [VARIANTS.get(v).image_size for v in ("b0", "b1", "b2")] == [224, 240, 260]
    with pytest.raises(ModelLoadError, match="unknown lite image tower 'b9'"):
        load_model("lite-random:b9")
    with pytest.raises(ModelLoadError, match="were fitted for efficientnet-lite0, not efficientnet-lite1"):
        _swap_heads(monkeypatch, tmp_path, "lite0-heads", "lite1-heads")
        load_model("lite:b1")
    monkeypatch.setattr(lite_heads, "PRETRAINED_DIR", tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no aligned heads ship for lite:b1"):
        load_model("lite:b1")


def _swap_heads(monkeypatch, tmp_path, source: str, target: str) -> None:
    """A package folder where `target`'s heads are a copy of `source`'s (fitted for another tower)."""
    folder = tmp_path / "swapped"
    shutil.copytree(lite_heads.PRETRAINED_DIR, folder)
    record = json.loads((folder / f"{source}.json").read_text())
    (folder / f"{target}.json").write_text(json.dumps({**record, "file": f"{target}.safetensors"}))
    shutil.copy(folder / f"{source}.safetensors", folder / f"{target}.safetensors")
    monkeypatch.setattr(lite_heads, "PRETRAINED_DIR", folder)


def test_a_larger_tower_has_its_own_cache_key_and_reloads_from_its_export(tmp_path):
    from cliptune.models.freeze import plan_freeze
    from cliptune.train.feature_cache import FeatureCache

    small = load_model("lite", image_size=64, context_length=16)
    larger = load_model("lite:b1", image_size=64, context_length=16)
    keys = [FeatureCache(m, plan_freeze(m, "both"), tmp_path / "cache")._key("image", "same inputs")
            for m in (small, larger)]
    assert keys[0] != keys[1]
    larger.save(tmp_path / "m")
    again = load_model(str(tmp_path / "m"))
    assert again.arch["variant"] == "b1" and again.image_tower.n_blocks == larger.image_tower.n_blocks
    for key, value in larger.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
