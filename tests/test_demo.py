"""The demo recipe resolves to a valid config; the quick demo runs end to end (slow: real weights, real data)."""

import json
import subprocess
import sys

import pytest

from cliptune.demo import demo_config
from cliptune.recipes import get_recipe


def test_demo_takes_the_recipe_train_would_choose(tmp_path, shapes_csv):
    """The demo is `cliptune train --data` with a named recipe: the automatic CPU choice, or cpu-quick."""
    full = demo_config(False, str(shapes_csv), str(tmp_path), "demo", [])
    quick = demo_config(True, str(shapes_csv), str(tmp_path), "demo-quick", ["train.epochs=2"])
    assert full.choice.recipe.name == "cpu-fast" and quick.choice.recipe.name == "cpu-quick"
    assert full.cfg.model.spec == quick.cfg.model.spec == "lite"
    assert full.cfg.model.image_size is None and quick.cfg.model.image_size == 128  # None: lite's native 224
    recipe = get_recipe("cpu-fast").config
    assert quick.cfg.train.epochs == 2 and full.cfg.train.epochs == recipe["train"]["epochs"]  # --set wins
    assert full.cfg.model.unfreeze_last_n.image == recipe["model"]["unfreeze_last_n"]["image"]
    assert quick.cfg.model.unfreeze_last_n.image == 0
    assert full.cfg.eval.split == "test" and not (tmp_path / "demo").exists()  # nothing created


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cliptune", "demo", "--quick", "-q",
                          "--data-dir", str(tmp_path / "emoji"),
                          "--output-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "demo-quick" / "metrics.json").read_text())
    assert metrics["after"]["t2i"]["R@1"] > metrics["before"]["t2i"]["R@1"]
    assert metrics["n_images"] > 300
