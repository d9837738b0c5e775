"""`openclip:` specs: OpenAI's weights get QuickGELU as in open_clip, OpenAI-style names, absolute paths without a
doubled slash, and mistyped paths reported as missing paths."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json

import pytest
import torch
from cli_inprocess import run_cli
from zoo_helpers import CAPTIONS, pixels

from cliptune.errors import ModelLoadError
from cliptune.models.openclip_spec import ArchAndRest, split_arch
from cliptune.models.registry import load_model

TINY = {"embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
# A tag like OpenAI's (trained with QuickGELU) and one like LAION-2B's (GELU) for the tiny architecture.
FAKE_TAGS = {"zoo-qg": {"openai": {"quick_gelu": True, "hf_hub": "nobody/zoo-qg-openai/"},
                        "gelu_run": {"hf_hub": "nobody/zoo-qg-gelu/"}}}


@pytest.fixture(scope="module")
def native(tmp_path_factory):
    """open_clip's own `zoo-qg-quickgelu` model, and its weights saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    configs = tmp_path_factory.mktemp("qg_configs")
    (configs / "zoo-qg.json").write_text(json.dumps(TINY))
    (configs / "zoo-qg-quickgelu.json").write_text(json.dumps({**TINY, "quick_gelu": True}))
    open_clip.add_model_config(configs)
    torch.manual_seed(5)
    model, _, _ = open_clip.create_model_and_transforms("zoo-qg-quickgelu", pretrained=None, output_dict=True)
    path = tmp_path_factory.mktemp("weights") / "w.safetensors"
    save_file(model.state_dict(), str(path))
    return model.eval(), path


@pytest.fixture
def fake_tags(monkeypatch, native):
    """Tags for the tiny architecture, with the 'openai' one already in the local cache."""
    import open_clip.pretrained as pretrained

    from cliptune.models import openclip as backend

    real_cfg, real_tags = pretrained.get_pretrained_cfg, pretrained.list_pretrained_tags_by_model
    monkeypatch.setattr(pretrained, "get_pretrained_cfg",
                        lambda arch, tag: dict(FAKE_TAGS.get(arch, {}).get(tag, {})) or real_cfg(arch, tag))
    monkeypatch.setattr(pretrained, "list_pretrained_tags_by_model",
                        lambda arch: list(FAKE_TAGS[arch]) if arch in FAKE_TAGS else real_tags(arch))
    monkeypatch.setattr(backend, "_cached_tag_file", lambda cfg: str(native[1]) if cfg.get("quick_gelu") else None)


def _same_as_native(model, native_model) -> float:
    """Largest difference between our embeddings and open_clip's own forward."""
    px = pixels(model)
    ids = model.tokenize(CAPTIONS[:4])["input_ids"]
    with torch.no_grad():
        return max(float((model.encode_image(px) - native_model.encode_image(px, normalize=True)).abs().max()),
                   float((model.encode_text({"input_ids": ids}) - native_model.encode_text(ids, normalize=True))
                         .abs().max()))


# ---- QuickGELU for OpenAI's weights ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, arch", [("openclip:ViT-B-32/openai", "ViT-B-32-quickgelu"),
                                        ("openclip:ViT-B/32/openai", "ViT-B-32-quickgelu"),
                                        ("openclip:ViT-B/16/openai", "ViT-B-16-quickgelu")])
def test_offline_openai_tag_hint_names_the_quickgelu_architecture(spec, arch):
    with pytest.raises(ModelLoadError) as err:
        load_model(spec)
    assert f"openclip:{arch}//path/to/open_clip_model.safetensors" in str(err.value)
    assert "QuickGELU" in str(err.value)


def test_offline_gelu_tag_hint_keeps_the_plain_architecture():
    with pytest.raises(ModelLoadError) as err:
        load_model("openclip:ViT-B-32/laion2b_s34b_b79k")
    assert "openclip:ViT-B-32//path/to/open_clip_model.safetensors" in str(err.value)
    assert "quickgelu" not in str(err.value).lower()


def test_quickgelu_tag_is_built_from_the_quickgelu_config_and_matches_open_clip_exactly(native, fake_tags):
    model = load_model("openclip:zoo-qg/openai")
    assert model.arch == "zoo-qg-quickgelu" and model.model_cfg["quick_gelu"] is True
    assert _same_as_native(model, native[0]) == 0.0


def test_local_file_on_the_gelu_config_warns_and_differs(native, fake_tags):
    """The mistake the hint prevents: the same weights in the GELU config are measurably off, and we say so."""
    with pytest.warns(UserWarning, match="openclip:zoo-qg-quickgelu/<file>"):
        model = load_model(f"openclip:zoo-qg/{native[1]}")
    assert model.model_cfg.get("quick_gelu", False) is False
    assert _same_as_native(model, native[0]) > 1e-4


# ---- spellings ------------------------------------------------------------------------------------------------------
def test_openai_style_names_and_paths_split_into_architecture_and_rest():
    import open_clip

    known = open_clip.list_models()
    assert split_arch("ViT-B/32/openai", known) == ArchAndRest("ViT-B-32", "openai")
    assert split_arch("ViT-B/16", known) == ArchAndRest("ViT-B-16", "")
    assert split_arch("ViT-L/14@336px/openai", known) == ArchAndRest("ViT-L-14-336", "openai")
    assert split_arch("ViT-B-32-quickgelu//abs/w.pt", known) == ArchAndRest("ViT-B-32-quickgelu", "/abs/w.pt")
    assert split_arch("ViT-B-32/abs/w.pt", known) == ArchAndRest("ViT-B-32", "abs/w.pt")
    assert split_arch("/abs/w.pt", known) is None and split_arch("NoSuchNet/x", known) is None


def test_absolute_weights_paths_load_with_or_without_a_doubled_slash(native, tmp_path):
    path = str(native[1])
    assert path.startswith("/")
    for spec in (f"openclip:zoo-qg-quickgelu{path}", f"openclip:zoo-qg-quickgelu/{path}"):
        assert _same_as_native(load_model(spec), native[0]) == 0.0, spec
    named = tmp_path / "zoo-qg-quickgelu.safetensors"  # a bare file named after its architecture
    named.write_bytes(native[1].read_bytes())
    assert _same_as_native(load_model(f"openclip:{named}"), native[0]) == 0.0
    export = tmp_path / "export"
    load_model(f"openclip:{named}").save(export)  # a bare file with open_clip_config.json beside it
    assert _same_as_native(load_model(f"openclip:{export / 'open_clip_model.safetensors'}"), native[0]) == 0.0


def test_unnamed_bare_weights_file_asks_for_the_architecture(native):
    with pytest.raises(ModelLoadError, match=r"Name it: openclip:<arch>/"):
        load_model(f"openclip:{native[1]}")


# ---- mistyped paths -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("template", ["{d}/typo.safetensors", "zoo-qg-quickgelu/{d}/typo.pt",
                                      "zoo-qg-quickgelu{d}/typo.pt", "zoo-qg-quickgelu/no-such-dir/w",
                                      "./no-such-export", "~/no-such-export", "typo.safetensors"])
def test_mistyped_local_path_is_reported_as_a_missing_path(native, tmp_path, template):
    spec = "openclip:" + template.format(d=tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_model(spec)
    message = str(err.value)
    assert "not found" in message and ("typo" in message or "no-such" in message)
    assert "architecture" not in message and "hub" not in message


def test_ambiguous_missing_path_names_both_readings():
    with pytest.raises(ModelLoadError) as err:
        load_model("openclip:no-such-dir/export")  # a relative path, or an architecture and a tag
    assert "no-such-dir/export: local weights file or folder not found" in str(err.value)
    assert "unknown open_clip architecture 'no-such-dir'" in str(err.value)
    with pytest.raises(ModelLoadError, match="unknown open_clip architecture 'ViT-B-23'"):
        load_model("openclip:ViT-B-23/openai")


def test_mistyped_path_exits_2_through_the_cli(tmp_path, shapes_csv, monkeypatch, capsys):
    missing = tmp_path / "ViT-B-32-typo.safetensors"
    code, out, err = run_cli(monkeypatch, capsys, "eval", "--model", f"openclip:{missing}", "--data", shapes_csv, "-q")
    text = "".join((out + err).split())  # rich wraps long lines (even inside paths)
    assert code == 2 and "".join(str(missing).split()) in text and "notfound" in text
