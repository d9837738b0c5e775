"""Zero-shot classification: prompt ensembling and top-k accuracy (cross-checked with scikit-learn),
template files, `cliptune classify`, `cliptune eval zeroshot`, and `cliptune eval` still doing retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cli_inprocess import run_cli
from conftest import COLORS, draw_shape
from cliptune.errors import DataError, UsageError
from cliptune.eval.zeroshot import (class_embeddings_from_templates, per_class_accuracy, topk_accuracy,
                                    zeroshot_logits)
from cliptune.inference.templates import TEMPLATE_SETS, read_template_file, resolve_templates

CLASSES = {"red_square": ("red", "square"), "blue_circle": ("blue", "circle"), "green_triangle": ("green", "triangle"),
           "yellow_cross": ("yellow", "cross")}


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    for c, (folder, (color, shape)) in enumerate(CLASSES.items()):
        (root / folder).mkdir()
        for i in range(3):
            draw_shape(root / folder / f"{i}.png", COLORS[color], shape, seed=10 * c + i)
    (root / "red_square" / "notes.txt").write_text("not an image")  # ignored
    (root / ".hidden").mkdir()  # ignored
    return root


@pytest.fixture(scope="module")
def tiny():
    from cliptune.models.registry import load_model

    return load_model("tiny-clip")


# ---- pure functions -------------------------------------------------------------------------------------------------
def test_prompt_ensemble_is_renormalised_mean_of_normalised_embeddings():
    torch.manual_seed(0)
    C, T, d = 3, 4, 8
    emb = torch.randn(C, T, d) * torch.rand(C, T, 1) * 5  # unnormalised, different norms
    expected = F.normalize(F.normalize(emb, dim=-1).mean(dim=1), dim=-1)
    torch.testing.assert_close(class_embeddings_from_templates(emb), expected)
    torch.testing.assert_close(class_embeddings_from_templates(emb.reshape(C * T, d), n_templates=T), expected)

    names, templates = ["a", "b", "c"], ["x {}", "y {}", "z {}", "w {}"]
    table = {f"{t.split()[0]} {n}": emb[c, j] for c, n in enumerate(names) for j, t in enumerate(templates)}
    calls = []

    def encode(prompts):
        calls.append(len(prompts))
        return torch.stack([table[p] for p in prompts])

    got = class_embeddings_from_templates(encode, classnames=names, templates=templates)
    torch.testing.assert_close(got, expected)
    assert calls == [T] * C  # one call per class: memory stays at T x d
    assert torch.allclose(got.norm(dim=-1), torch.ones(C))
    with pytest.raises(ValueError, match="multiple"):
        class_embeddings_from_templates(emb.reshape(C * T, d), n_templates=5)


def test_topk_accuracy_matches_sklearn():
    from sklearn.metrics import recall_score, top_k_accuracy_score

    torch.manual_seed(1)
    logits = torch.randn(200, 10)
    labels = torch.randint(0, 10, (200,))
    ours = topk_accuracy(logits, labels, ks=(1, 3, 5))
    for k in (1, 3, 5):
        expected = top_k_accuracy_score(labels.numpy(), logits.numpy(), k=k, labels=list(range(10)))
        assert ours[f"top{k}"] == pytest.approx(expected)
    # per-class top-1 accuracy is the recall of each class
    expected = recall_score(labels.numpy(), logits.argmax(dim=1).numpy(), labels=list(range(10)), average=None)
    for c, (acc, n) in enumerate(per_class_accuracy(logits, labels)):
        assert n == int((labels == c).sum()) and acc == pytest.approx(expected[c])


def test_topk_accuracy_ties_are_pessimistic_and_k_beyond_classes_is_one():
    logits = torch.zeros(4, 3)  # a collapsed model: every class scores the same
    assert topk_accuracy(logits, [0, 1, 2, 0], ks=(1, 2, 5)) == {"top1": 0.0, "top2": 0.0, "top5": 1.0}
    with pytest.raises(ValueError):
        topk_accuracy(logits, [0, 1, 3, 0])


def test_zeroshot_logits_are_scaled_cosines():
    image = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    classes = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    got = zeroshot_logits(image, classes, scale=10.0)
    torch.testing.assert_close(got, torch.tensor([[10.0, 10 / 2 ** 0.5], [0.0, 10 / 2 ** 0.5]]))


# ---- templates ------------------------------------------------------------------------------------------------------
def test_template_sets_and_files(tmp_path):
    imagenet = resolve_templates("imagenet")
    assert len(imagenet) == 80 == len(set(imagenet)) and all("{}" in t for t in imagenet)
    assert resolve_templates("simple") == ["a photo of a {}."]
    assert set(TEMPLATE_SETS.names()) >= {"simple", "imagenet"}
    good = tmp_path / "good.txt"
    good.write_text("# my templates\n\na sketch of a {}.\n  an icon of {} \n")
    assert resolve_templates(good) == ["a sketch of a {}.", "an icon of {}"]
    bad = tmp_path / "bad.txt"
    bad.write_text("a photo of a {}.\n\nno placeholder here\n")
    with pytest.raises(DataError) as err:
        read_template_file(bad)
    assert err.value.file == str(bad) and err.value.row == 3 and "line 3" in str(err.value)
    with pytest.raises(UsageError, match="not a template set"):
        resolve_templates("no-such-set")


def test_bad_template_file_exits_2_naming_file_and_line(monkeypatch, capsys, class_folders, tmp_path):
    bad = tmp_path / "prompts.txt"
    bad.write_text("a photo of a {}.\nmissing the slot\n")
    code, _, err = run_cli(monkeypatch, capsys, "classify", "--model", "tiny-clip", class_folders / "red_square",
                           "--labels", "a,b", "--templates", bad)
    assert code == 2 and "prompts.txt" in err and "line 2" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "zeroshot", "--model", "tiny-clip", "--data", class_folders,
                           "--templates", bad)
    assert code == 2 and "prompts.txt" in err and "line 2" in err


# ---- with a model ---------------------------------------------------------------------------------------------------
def test_classify_returns_probabilities(tiny, class_folders):
    from cliptune.inference.zeroshot import classify

    images = sorted(class_folders.glob("*/*.png"))
    probs = classify(tiny, images, ["red square", "blue circle", "green triangle"], templates="imagenet7")
    assert probs.shape == (len(images), 3)
    assert bool(((probs >= 0) & (probs <= 1)).all())
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(len(images)))


def test_eval_zeroshot_accuracy_matches_manual_computation(monkeypatch, capsys, tiny, class_folders, tmp_path):
    from cliptune.inference.zeroshot import classify

    out_file = tmp_path / "zs.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", "zeroshot", "--model", "tiny-clip", "--data",
                                class_folders, "--per-class", "--out", out_file, "-q")
    assert code == 0, err
    result = json.loads(out_file.read_text())
    names = sorted(CLASSES)
    assert [row["class"] for row in result["per_class"]] == [n.replace("_", " ") for n in names]
    assert [row["folder"] for row in result["per_class"]] == names
    assert result["n_images"] == 12 and result["n_classes"] == 4
    assert "top-1 accuracy" in stdout and "yellow cross" in stdout  # --per-class table

    images = [class_folders / folder / f"{i}.png" for folder in names for i in range(3)]
    labels = torch.tensor([c for c in range(4) for _ in range(3)])
    probs = classify(tiny, images, [n.replace("_", " ") for n in names])
    ranks = (probs >= probs.gather(1, labels[:, None])).sum(dim=1)
    assert result["top1"] == pytest.approx(float((ranks <= 1).float().mean()))
    assert result["top5"] == 1.0  # 4 classes: trivially in the top 5
    for c, row in enumerate(result["per_class"]):
        assert row["n_images"] == 3
        assert row["top1"] == pytest.approx(float((ranks[labels == c] <= 1).float().mean()))
    assert 0.0 <= result["top1"] <= 1.0 and 0.0 <= result["mean_per_class_top1"] <= 1.0


def test_classify_cli_json_sorted_by_probability(monkeypatch, capsys, class_folders):
    code, stdout, err = run_cli(monkeypatch, capsys, "classify", "--model", "tiny-clip",
                                class_folders / "red_square" / "0.png", class_folders / "blue_circle",
                                "--labels", "red square, blue circle,car", "--json", "-q")
    assert code == 0, err
    results = json.loads(stdout)
    assert [Path(r["image"]).name for r in results] == ["0.png", "0.png", "1.png", "2.png"]
    for r in results:
        probs = [p["probability"] for p in r["predictions"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1.0, abs=1e-5)
        assert {p["label"] for p in r["predictions"]} == {"red square", "blue circle", "car"}
    code, _, err = run_cli(monkeypatch, capsys, "classify", "--model", "tiny-clip",
                           class_folders / "red_square" / "0.png", "--labels", "cat,,dog")
    assert code == 2 and "empty" in err
    code, _, err = run_cli(monkeypatch, capsys, "classify", "--model", "tiny-clip", class_folders / "nope.png",
                           "--labels", "cat,dog")
    assert code == 2 and "nope.png" in err


# ---- `cliptune eval` is a group now: retrieval must keep working ---------------------------------------------------
def test_eval_group_keeps_retrieval(monkeypatch, capsys, shapes_csv, tmp_path):
    out_file = tmp_path / "m.json"
    code, stdout, err = run_cli(monkeypatch, capsys, "eval", "--model", "tiny-clip", "--data", shapes_csv,
                                "--split", "test", "--out", out_file, "-q")
    assert code == 0, err
    metrics = json.loads(out_file.read_text())
    assert metrics["split"] == "test" and metrics["model"] == "tiny-clip"
    assert set(metrics["t2i"]) >= {"R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR", "median_rank"}
    assert "R@10" in stdout

    code, _, err = run_cli(monkeypatch, capsys, "eval", "--data", shapes_csv)
    assert code == 2 and "--model" in err
    code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", "tiny-clip", "zeroshot", "--data", shapes_csv)
    assert code == 2 and "before 'zeroshot'" in err
    code, stdout, _ = run_cli(monkeypatch, capsys, "eval", "--help")
    assert code == 0 and "zeroshot" in stdout and "--split" in stdout


def test_class_folder_errors(tmp_path):
    from cliptune.inference.class_folders import classname, read_class_folders

    assert classname("golden__retriever") == "golden retriever"
    with pytest.raises(DataError, match="no class folders"):
        read_class_folders(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(DataError, match="no images"):
        read_class_folders(tmp_path)
