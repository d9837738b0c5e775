"""`lite` is useful before any training: search, classification and WiSE-FT's zero-shot end, on a few rendered
emoji (never part of its pre-training data). Thresholds are far above chance, fixed before measuring."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from cli_inprocess import run_cli
from cliptune.data.builders.emoji import NOTO_COLOR_EMOJI

pytestmark = pytest.mark.skipif(not NOTO_COLOR_EMOJI.is_file(), reason="fonts-noto-color-emoji is not installed")

# Five emoji from each of six CLDR groups, with their CLDR names.
GROUPS = {
    "smileys and emotion": {"\U0001F600": "grinning face", "\U0001F602": "face with tears of joy",
                            "\U0001F621": "enraged face", "\U0001F634": "sleeping face", "\u2764\ufe0f": "red heart"},
    "animals and nature": {"\U0001F436": "dog face", "\U0001F431": "cat face", "\U0001F434": "horse face",
                           "\U0001F333": "deciduous tree", "\U0001F33B": "sunflower"},
    "food and drink": {"\U0001F355": "pizza", "\U0001F34C": "banana", "\U0001F354": "hamburger",
                       "\U0001F34E": "red apple", "\u2615": "hot beverage"},
    "travel and places": {"\U0001F697": "automobile", "\U0001F680": "rocket", "\U0001F3E0": "house",
                          "\u2708\ufe0f": "airplane", "\u26f0\ufe0f": "mountain"},
    "activities": {"\u26bd": "soccer ball", "\U0001F3C0": "basketball", "\U0001F381": "wrapped gift",
                   "\U0001F388": "balloon", "\U0001F3BE": "tennis"},
    "flags": {"\U0001F1EB\U0001F1F7": "flag: france", "\U0001F1EF\U0001F1F5": "flag: japan",
              "\U0001F1FA\U0001F1F8": "flag: united states", "\U0001F1E9\U0001F1EA": "flag: germany",
              "\U0001F1E7\U0001F1F7": "flag: brazil"},
}


@pytest.fixture(scope="module")
def emoji_sets(tmp_path_factory):
    """Class folders (group/<name>.png) and a CSV of the same 30 pictures with their CLDR names as captions."""
    from cliptune.data.builders.emoji import Renderer

    root = tmp_path_factory.mktemp("emoji")
    render = Renderer(NOTO_COLOR_EMOJI, 72)
    rows = []
    for group, members in GROUPS.items():
        (root / "classes" / group.replace(" ", "_")).mkdir(parents=True)
        for e, name in members.items():
            image = render(e)
            assert image is not None, name
            path = root / "classes" / group.replace(" ", "_") / f"{name.replace(':', '').replace(' ', '_')}.png"
            image.save(path)
            rows.append({"image_path": str(path), "caption": name})
    with (root / "pairs.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def test_index_and_search_find_the_red_heart_without_training(emoji_sets, monkeypatch, capsys):
    idx = emoji_sets / "idx"
    code, _, err = run_cli(monkeypatch, capsys, "index", "--model", "lite", "--images", emoji_sets / "classes",
                           "--out", idx, "-q")
    assert code == 0, err
    code, stdout, err = run_cli(monkeypatch, capsys, "search", "--index", idx, "red heart", "-k", "5", "--json")
    assert code == 0, err
    hits = [hit["path"] for hit in json.loads(stdout[stdout.index("{"):])["hits"]]
    assert any(path.endswith("/red_heart.png") for path in hits), hits


def test_zero_shot_retrieval_of_all_thirty_names_is_far_above_chance(emoji_sets, monkeypatch, capsys):
    out = emoji_sets / "metrics.json"
    for spec in ("lite", "lite-random"):
        code, _, err = run_cli(monkeypatch, capsys, "eval", "--model", spec, "--data", emoji_sets / "pairs.csv",
                               "--split", "all", "--out", out, "-q")
        assert code == 0, err
        r5 = json.loads(out.read_text())["t2i"]["R@5"]
        if spec == "lite":
            assert r5 >= 0.5, r5  # chance: 5/30
        else:
            assert r5 <= 0.4, r5  # random heads stay near chance


def test_classify_on_emoji_class_folders_beats_chance_widely(emoji_sets, monkeypatch, capsys):
    out = emoji_sets / "zeroshot.json"
    code, _, err = run_cli(monkeypatch, capsys, "eval", "zeroshot", "--model", "lite", "--data",
                           emoji_sets / "classes", "--out", out, "-q")
    assert code == 0, err
    result = json.loads(out.read_text())
    assert result["n_classes"] == 6 and result["n_images"] == 30
    assert result["top1"] >= 2.5 / 6, result["top1"]  # chance: 1/6

    labels = ",".join(GROUPS)
    images = sorted((emoji_sets / "classes").rglob("*.png"))
    code, stdout, err = run_cli(monkeypatch, capsys, "classify", *images, "--model", "lite",
                                "--labels", labels, "--top", "1", "--json", "-q")
    assert code == 0, err
    results = json.loads(stdout[stdout.index("["):])
    right = sum(r["predictions"][0]["label"].replace(" ", "_") in r["image"] for r in results)
    assert len(results) == 30 and right / 30 == pytest.approx(result["top1"])


def test_wise_interpolates_from_the_zero_shot_end(emoji_sets, monkeypatch, capsys, tmp_path):
    sets = ["--set", "model.freeze=both", "--set", "model.image_size=96", "--set", "train.max_steps=4",
            "--set", "train.batch_size=8", "--set", "data.split_ratios=[0.2,0.8,0.0]", "--set", "eval.before=false",
            "--set", "eval.report=false"]
    code, _, err = run_cli(monkeypatch, capsys, "train", "--data", emoji_sets / "pairs.csv", "--model", "lite",
                           "--name", "tuned", "--output-dir", tmp_path, "-q", *sets)
    assert code == 0, err
    code, _, err = run_cli(monkeypatch, capsys, "wise", "--tuned", tmp_path / "tuned", "--alphas", "0",
                           "--metric", "t2i/R@5", "-q")
    assert code == 0, err
    wise = json.loads((tmp_path / "tuned" / "wise" / "wise.json").read_text())
    assert wise["base"] == "lite" and [row["alpha"] for row in wise["alphas"]] == [0]
    assert wise["alphas"][0]["target"] >= 0.5, wise["alphas"]  # 24 validation images: chance R@5 is 5/24

    from safetensors.torch import load_file

    from cliptune.models import lite_heads

    shipped = lite_heads.load_heads(lite_heads.read_card("lite0-heads"))
    base_end = load_file(str(tmp_path / "tuned" / "wise" / "model" / "model.safetensors"))
    for key in ("image_tower.proj.1.weight", "text_tower.proj.1.weight"):
        side = "image" if key.startswith("image") else "text"
        assert torch.equal(base_end[key], shipped[f"{side}.proj.1.weight"]), key
