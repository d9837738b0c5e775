"""Model spec strings: names, prefixes and paths resolve; hub ids fail fast offline; absent backends say so."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import json
import time

import pytest
import torch

from cliptune.errors import ModelLoadError, UsageError
from cliptune.models.registry import SPECS, known_specs, load_model


def test_tiny_clip_is_deterministic_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = load_model("tiny-clip"), load_model("tiny-clip")
    assert torch.equal(torch.get_rng_state(), before)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    c = load_model("tiny-clip", seed=7)
    assert not torch.equal(sa["image_tower.head.weight"], c.state_dict()["image_tower.head.weight"])
    assert a.spec == "tiny-clip" and a.describe()["embed_dim"] == 32
    assert a.text_tower.embeddings.token_embedding.num_embeddings == len(a.tokenizer) == 49408


def test_tiny_clip_stays_tiny():
    """Speed is measured in benchmarks, not asserted here; the shape is what keeps it fast."""
    model = load_model("tiny-clip")
    assert model.describe()["params"] < 4_000_000  # ~3.4 M, 3.2 M of them the 49,408-token embedding
    assert (model.image_size, model.context_length, model.image_tower.n_blocks, model.text_tower.n_blocks) == (
        64, 32, 2, 2)
    with torch.no_grad():
        out = model.encode_image(torch.randn(32, 3, 64, 64))
        assert out.shape == (32, 32)
        assert model.encode_text(model.tokenize(["a caption"] * 32)).shape == (32, 32)


@pytest.mark.parametrize("offline_env", [True, False])
def test_hub_id_fails_fast_offline(monkeypatch, offline_env):
    if not offline_env:  # no declaration: the bounded reachability probe must still fail quickly
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model("hf:openai/clip-vit-base-patch32")
    assert time.perf_counter() - start < 3
    message = str(info.value)
    assert "no model hub is reachable" in message
    assert "hf:/path/to/clip-vit-base-patch32" in message and "save_pretrained" in message
    assert info.value.exit_code == 2


def test_missing_local_directory_is_not_treated_as_hub_id(tmp_path):
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_model(f"hf:{tmp_path}/nope")
    with pytest.raises(UsageError, match="needs a directory"):
        load_model("hf:")


def test_every_reserved_backend_is_installed():
    """The backends the spec grammar names are all part of this installation (none answers "not installed")."""
    assert {"lite", "tiny-clip", "hf", "openclip", "composed"} <= set(known_specs())
    assert callable(SPECS.get("lite"))



def test_unknown_specs_and_directories(tmp_path):
    with pytest.raises(ModelLoadError, match="unknown model 'no-such-model'"):
        load_model("no-such-model")
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model(str(tmp_path))
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="openclip:"):
        load_model(str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelLoadError, match="not a file|save_pretrained directory"):
        load_model(f"hf:{tmp_path / 'w.safetensors'}")
    export = tmp_path / "exported"
    export.mkdir()
    (export / "cliptune.json").write_text(json.dumps({"backend": "martian"}))
    with pytest.raises(ModelLoadError, match="unknown backend 'martian'"):
        load_model(str(export))
    (export / "cliptune.json").write_text("{")
    with pytest.raises(ModelLoadError, match="cliptune.json"):
        load_model(str(export))


def test_run_directory_and_export_paths(tmp_path):
    model = load_model("tiny-clip")
    run = tmp_path / "runs" / "demo"
    model.save(run / "model")
    for spec in (run, run / "model"):
        loaded = load_model(spec)
        assert loaded.spec == str(spec)
        assert torch.equal(loaded.logit_scale, model.logit_scale)
