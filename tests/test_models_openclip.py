"""The open_clip backend: cut towers equal open_clip's own encoders, exports load in open_clip and back, offline tags
fail fast with the local-file alternative."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json
import subprocess
import sys

import pytest
import torch
from zoo_helpers import CAPTIONS, pixels, register_openclip_configs

from cliptune.errors import ModelLoadError
from cliptune.models.registry import load_model
from cliptune.models.weights import load_state_dict_file

ARCHS = ["cliptune-tiny-ViT", "cliptune-tiny-RN", "cliptune-tiny-sigmoid", "zoo-timm-map", "zoo-timm-rn",
         "zoo-attnpool"]


@pytest.fixture(scope="module", autouse=True)
def _configs(tmp_path_factory):
    register_openclip_configs(tmp_path_factory.mktemp("openclip_configs"))


@pytest.mark.parametrize("arch", ARCHS)
def test_cut_towers_equal_open_clip_encoders_for_every_k(arch):
    model = load_model(f"openclip:{arch}")
    clip = model.clip_model
    px = pixels(model, 3)
    tokens = model.tokenize(CAPTIONS[:3])
    with torch.no_grad():
        ref_image = clip.encode_image(px, normalize=True)
        ref_text = clip.encode_text(tokens["input_ids"], normalize=True)
        assert torch.equal(model.encode_image(px), ref_image)
        assert torch.equal(model.encode_text(tokens), ref_text)
        for side, inputs, ref in (("image", {"pixel_values": px}, ref_image), ("text", tokens, ref_text)):
            tower = model.tower(side)
            assert tower.n_blocks >= 2
            for k in range(tower.n_blocks + 1):
                features = tower.prefix(inputs, k)
                assert all(v.shape[0] == 3 for v in features.values()), "features must be batch-first"
                assert torch.equal(torch.nn.functional.normalize(tower.suffix(features, k), dim=-1), ref), (side, k)
            with pytest.raises(ValueError):
                tower.prefix(inputs, tower.n_blocks + 1)


def test_every_parameter_belongs_to_one_tower_part():
    """stem + blocks + heads + logit scale/bias cover the model, so freezing and optimiser groups miss nothing."""
    model = load_model("openclip:zoo-timm-map")
    covered = {id(model.logit_scale), id(model.logit_bias)}
    for side in ("image", "text"):
        tower = model.tower(side)
        for module in tower.stem_modules() + tower.trunk_blocks() + tower.head_modules():
            covered |= {id(p) for p in module.parameters()}
    missing = [n for n, p in model.named_parameters() if id(p) not in covered]
    assert missing == []


@pytest.mark.parametrize("arch", ["cliptune-tiny-ViT", "cliptune-tiny-sigmoid"])
def test_export_loads_in_open_clip_and_back(tmp_path, arch):
    import open_clip

    model = load_model(f"openclip:{arch}")
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        for p in model.image_tower.parameters():
            p.add_(0.01)
    model.save(tmp_path / "export")
    assert json.loads((tmp_path / "export" / "cliptune.json").read_text())["backend"] == "openclip"
    px, tokens = pixels(model), model.tokenize(CAPTIONS[:4])
    with torch.no_grad():
        image, text = model.encode_image(px), model.encode_text(tokens)

        reloaded = load_model(str(tmp_path / "export"))
        assert torch.equal(reloaded.encode_image(px), image) and torch.equal(reloaded.encode_text(tokens), text)
        assert float(reloaded.logit_scale) == pytest.approx(3.0)
        if model.logit_bias is not None:
            assert float(reloaded.logit_bias) == pytest.approx(-10.0)

        weights = tmp_path / "export" / "open_clip_model.safetensors"
        clip, _, _ = open_clip.create_model_and_transforms(arch, pretrained=str(weights))
        clip.eval()
        assert torch.equal(clip.encode_image(px, normalize=True), image)
        assert torch.equal(clip.encode_text(tokens["input_ids"], normalize=True), text)
        assert float(clip.logit_scale) == pytest.approx(3.0)

        from_dir, _, _ = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'export'}")
        from_dir.eval()
        assert torch.equal(from_dir.encode_image(px, normalize=True), image)

        from_file = load_model(f"openclip:{arch}/{weights}")
        assert torch.equal(from_file.encode_text(tokens), text)


def test_local_pt_checkpoint_is_read_without_unpickling_code(tmp_path):
    """open_clip training checkpoints ({'state_dict': {'module.…'}}) load through the restricted loader."""
    model = load_model("openclip:cliptune-tiny-ViT")
    state = {f"module.{k}": v for k, v in model.clip_model.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "epoch_3.pt")
    loaded = load_model(f"openclip:cliptune-tiny-ViT/{tmp_path / 'epoch_3.pt'}")
    px = pixels(model)
    with torch.no_grad():
        assert torch.equal(loaded.encode_image(px), model.encode_image(px))


def test_offline_tag_fails_fast_naming_the_local_file_alternative():
    with pytest.raises(ModelLoadError) as err:
        load_model("openclip:ViT-B-32/laion2b_s34b_b79k")
    message = str(err.value)
    assert "not reachable" in message and "openclip:ViT-B-32//path/to/open_clip_model.safetensors" in message
    with pytest.raises(ModelLoadError, match="neither a pretrained tag"):
        load_model("openclip:ViT-B-32/no_such_tag")
    with pytest.raises(ModelLoadError, match="unknown open_clip architecture"):
        load_model("openclip:NoSuchArch")
    with pytest.raises(ModelLoadError, match="not found"):
        load_model("openclip:ViT-B-32/missing.safetensors")


_SAVE_RANDOM_BUILD = """
import sys
from cliptune.models.registry import load_model
from cliptune.models.weights import save_safetensors_atomic
save_safetensors_atomic(load_model(sys.argv[1]).clip_model.state_dict(), sys.argv[2])
"""


def test_random_architecture_is_the_same_model_in_every_process(tmp_path):
    """Like tiny-clip and lite, a random openclip:<arch> is seeded (an index built with it stays searchable), and
    building it leaves the caller's RNG where it was."""
    spec = "openclip:cliptune-tiny-ViT"
    for name in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _SAVE_RANDOM_BUILD, spec, str(tmp_path / f"{name}.safetensors")],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = (load_state_dict_file(tmp_path / f"{name}.safetensors") for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    torch.manual_seed(123)
    before = torch.get_rng_state()
    here = load_model(spec).clip_model.state_dict()
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(here[k], a[k]) for k in a)
