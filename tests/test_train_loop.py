"""The loop's shape and its contracts: short functions, a callback protocol a caller can observe and stop a run
through, and typed objectives that declare what they need instead of calling back into the trainer."""

import ast
from pathlib import Path

import pytest
import torch

from cliptune.config import load_config
from cliptune.errors import UsageError
from cliptune.objectives import build_objective
from cliptune.objectives.batch import Capabilities, Objective, TrainBatch, capabilities_of, embed_negatives
from cliptune.train.callbacks.base import Callback
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

SRC = Path(__file__).resolve().parents[1] / "src" / "cliptune"


def _functions(root: Path):
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node, node.end_lineno - node.lineno + 1


def test_no_function_in_src_is_over_80_lines():
    long = [f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({size} lines)" for p, n, size in _functions(SRC) if size > 80]
    assert not long, long


def test_fit_and_the_loop_fit_on_a_screen():
    sizes = {n.name: size for p, n, size in _functions(SRC / "train") if p.name == "trainer.py"}
    assert sizes["fit"] <= 60 and sizes["run_loop"] <= 60, sizes
    step = {n.name: size for p, n, size in _functions(SRC / "train") if p.name == "step.py"}
    assert step["train_step"] <= 60, step


def test_objectives_never_call_back_into_the_trainer():
    """No objective reads a callable out of its batch; hard negatives arrive embedded."""
    for path in (SRC / "objectives").glob("*.py"):
        assert "encode_text" not in path.read_text(encoding="utf-8") or path.name == "batch.py", path


def test_declared_capabilities():
    assert capabilities_of(build_objective("infonce")) == Capabilities()
    assert capabilities_of(build_objective("hard_negatives", num_negatives=2)).mined_negatives
    assert not capabilities_of(build_objective("hard_negatives", num_negatives=0)).mined_negatives
    assert capabilities_of(build_objective("match")) == Capabilities(labels=True, adds_parameters=True)
    assert capabilities_of(build_objective("siglip")).adds_parameters
    assert capabilities_of(torch.nn.MSELoss()) == Capabilities()  # a plain module declares nothing
    assert isinstance(build_objective("triplet"), Objective)


def test_hard_negatives_take_embedded_negatives_as_input():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(4, 8, generator=gen), dim=-1)
    table = torch.nn.functional.normalize(torch.randn(10, 8, generator=gen), dim=-1)
    negatives = torch.tensor([[5, 6], [7, -1], [-1, -1], [8, 9]])
    objective = build_objective("hard_negatives", num_negatives=2)
    batch = TrainBatch(negatives=negatives, negative_emb=embed_negatives(negatives, lambda idx: table[idx]))
    typed = objective(img, txt, torch.tensor(10.0), batch=batch)["loss"]
    legacy = objective(img, txt, torch.tensor(10.0), batch={"negatives": negatives,
                                                            "encode_text": lambda idx: table[idx]})["loss"]
    assert torch.equal(typed, legacy)
    assert typed > build_objective("infonce")(img, txt, torch.tensor(10.0))["loss"]
    with pytest.raises(UsageError, match="negative_emb"):
        objective(img, txt, torch.tensor(10.0), batch=TrainBatch(negatives=negatives))


class Observer(Callback):
    """What a recipe search does: watch evaluations and prune a trial."""

    def __init__(self, stop_after: int):
        self.stop_after = stop_after
        self.evaluations = []
        self.steps = []

    def on_step_end(self, ctx, state, out):
        self.steps.append(state.step)

    def on_evaluate(self, ctx, state, evaluation):
        self.evaluations.append((evaluation.step, evaluation.score))
        if len(self.evaluations) >= self.stop_after:
            state.should_stop = True


def test_a_callback_observes_evaluations_and_stops_the_run(tmp_path, shapes_csv):
    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=observed", "train.max_steps=12", "train.eval_every=2",
                             "train.batch_size=8", "eval.report=false", "eval.before=false"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    observer = Observer(stop_after=2)
    result = train_run(cfg, run, progress=False, callbacks=[observer])
    assert [s for s, _ in observer.evaluations] == [2, 4]
    assert all(0 <= score <= 1 for _, score in observer.evaluations)
    assert observer.steps == [1, 2, 3, 4] and result.steps == 4


def test_off_a_terminal_the_log_is_timestamped_lines(tmp_path, shapes_csv, capsys):
    import re

    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=lines", "train.max_steps=4", "train.eval_every=2", "train.log_every=2",
                             "train.batch_size=8", "eval.report=false", "eval.before=false"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=True)
    err = capsys.readouterr().err  # pytest's capture is not a terminal
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step "
    assert len(re.findall(stamp + r"[24]/4  loss \d", err, re.M)) == 2, err
    assert len(re.findall(stamp + r"[24]/4  eval on val: mean_R@10 \d", err, re.M)) == 2, err
    assert "training:" not in err  # no progress bar redrawn with carriage returns


def test_a_library_warning_raised_every_step_is_shown_once_per_run(tmp_path, shapes_csv, monkeypatch):
    """Python shows a warning once per place (the "default" action); nothing in the loop may reset that registry
    per step, or a deprecation inside a library call would be printed at every step."""
    import warnings

    from cliptune.objectives.infonce import InfoNCE

    forward = InfoNCE.forward

    def warning_forward(self, *args, **kwargs):
        warnings.warn("this argument will be removed", FutureWarning)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(InfoNCE, "forward", warning_forward)
    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=warned", "train.max_steps=8", "train.batch_size=8", "eval.report=false",
                             "eval.before=false", "eval.probe=false"])  # the probe is a loop of its own
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        result = train_run(cfg, run, progress=False)
    assert result.steps == 8
    assert sum("will be removed" in str(w.message) for w in seen) == 1
