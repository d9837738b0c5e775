"""Non-finite losses: each skips its update and is counted; K in a row stop the run with a checkpoint."""

import json

import pytest
import torch

from cliptune.config import load_config
from cliptune.errors import CliptuneError
from cliptune.objectives.infonce import InfoNCE
from cliptune.objectives.registry import OBJECTIVES
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

CALLS = {"n": 0}


class NaNOnCalls(InfoNCE):
    """InfoNCE that returns NaN on the calls listed in `bad` (or always, with bad='all')."""

    def __init__(self, bad="2,3"):
        super().__init__()
        self.bad = bad

    def forward(self, image_emb, text_emb, logit_scale, logit_bias=None, batch=None):
        CALLS["n"] += 1
        out = super().forward(image_emb, text_emb, logit_scale, logit_bias, batch)
        if self.bad == "all" or str(CALLS["n"]) in self.bad.split(","):
            out["loss"] = out["loss"] * float("nan")
        return out


if "test_nan_on_calls" not in OBJECTIVES:
    OBJECTIVES.register("test_nan_on_calls")(NaNOnCalls)


def _run(tmp_path, shapes_csv, name, bad):
    CALLS["n"] = 0
    cfg = load_config(None, [f"data.path={shapes_csv}", f"train.output_dir={tmp_path}", f"train.name={name}",
                             "model.spec=tiny-clip", "train.max_steps=6", "train.batch_size=16",
                             "loss.type=test_nan_on_calls", f"loss.params={{bad: '{bad}'}}", "train.max_bad_steps=3"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    return run, lambda: train_run(cfg, run, progress=False)


def test_isolated_nan_steps_are_skipped_and_counted(tmp_path, shapes_csv):
    run, go = _run(tmp_path, shapes_csv, "some", "2,3")
    result = go()
    assert result.steps == 6
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    skipped = [h for h in history if h["event"] == "skipped_step"]
    assert [h["step"] for h in skipped] == [2, 3]
    from cliptune.models.weights import load_state_dict_file

    weights = load_state_dict_file(run.checkpoints / "last" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nan_in_a_row_stops_with_checkpoint(tmp_path, shapes_csv):
    run, go = _run(tmp_path, shapes_csv, "all", "all")
    with pytest.raises(CliptuneError, match="3 steps in a row"):
        go()
    assert (run.checkpoints / "last" / "model.safetensors").is_file()
