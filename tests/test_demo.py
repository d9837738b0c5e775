"""The demo recipe resolves to a valid config; the quick demo runs end to end (slow: real weights, real data)."""

import json
import subprocess
import sys

import pytest

from cliptune.demo import demo_config


def test_demo_configs_resolve(tmp_path):
    full = demo_config(False, "data/emoji/emoji.csv", str(tmp_path), "demo", [])
    quick = demo_config(True, "data/emoji/emoji.csv", str(tmp_path), "demo-quick", ["train.epochs=2"])
    assert full.model.spec == quick.model.spec == "lite"
    assert full.model.image_size == 224 and quick.model.image_size == 128
    assert quick.train.epochs == 2 and full.train.epochs > quick.train.epochs
    assert full.model.unfreeze_last_n.text == quick.model.unfreeze_last_n.text == 1


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cliptune", "demo", "--quick", "-q",
                          "--data-dir", str(tmp_path / "emoji"),
                          "--output-dir", str(tmp_path / "runs")], capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "demo-quick" / "metrics.json").read_text())
    assert metrics["after"]["t2i"]["R@1"] > metrics["before"]["t2i"]["R@1"]
    assert metrics["n_images"] > 300
