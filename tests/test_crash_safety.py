"""Crash safety of real training runs: a SIGKILL at a random step loses nothing that `--resume` cannot recover, and a
checkpoint write refused by the file system leaves the previous checkpoint intact and says so."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from history_helpers import train_steps

from cliptune.config import load_config
from cliptune.errors import CliptuneError
from cliptune.train import checkpoint as ckpt

MAX_STEPS = 40
TRAIN_SETTINGS = ["train.max_steps=40", "train.eval_every=5", "train.batch_size=16", "train.log_every=1",
                  "train.warmup_steps=2", "train.lr=1e-3", "data.split_ratios=[0.6,0.2,0.2]", "eval.before=false",
                  "eval.report=false"]


def _cliptune(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cliptune", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _leftovers(run_dir: Path) -> list[str]:
    """Temporary files or directories of atomic writes (`.step_N.tmp-PID`, `.last.lnk-PID`, `*.tmp`)."""
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if ".tmp" in p.name or ".lnk-" in p.name)


@pytest.mark.timeout(300)  # two CLI processes: ~30 s on an idle 2-core machine
def test_sigkill_at_a_random_step_then_resume(tmp_path, shapes_csv):
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 10_000))
    kill_after = random.Random(seed).randint(8, 30)
    why = f"(CRASH_SEED={seed}: kill once step {kill_after} is logged)"
    run_dir = tmp_path / "runs" / "crash"
    sets = [a for s in TRAIN_SETTINGS for a in ("--set", s)]
    proc = _cliptune("train", "--data", shapes_csv, "--model", "tiny-clip", "--name", "crash",
                     "--output-dir", tmp_path / "runs", *sets, "-q")
    deadline = time.time() + 240
    try:
        while not any(s >= kill_after for s in train_steps(run_dir / "history.jsonl")):
            if proc.poll() is not None:
                pytest.fail(f"training ended (rc {proc.returncode}) before step {kill_after} {why}: "
                            f"{proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"step {kill_after} not reached in time {why}")
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed_at = max(train_steps(run_dir / "history.jsonl"))
    assert killed_at < MAX_STEPS, f"the run finished before it was killed {why}"
    saved = ckpt.last_step(run_dir / "checkpoints")
    assert saved is not None and saved % 5 == 0 and saved <= killed_at, why

    resumed = _cliptune("train", "--resume", run_dir, "-q")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, f"{why}\n{err[-3000:]}"
    assert "resumed from" in err and f"at step {saved}" in err, err[-2000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["steps"] == MAX_STEPS, why
    steps = train_steps(run_dir / "history.jsonl")
    assert steps[-1] == MAX_STEPS and set(steps) == set(range(1, MAX_STEPS + 1)), why

    from cliptune.models.registry import load_model

    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "last", load_model("tiny-clip"), restore_rng=False)
    assert state["step"] == MAX_STEPS and state["total_steps"] == MAX_STEPS, why
    assert (run_dir / "checkpoints" / "best" / "state.json").is_file(), why
    assert not _leftovers(run_dir), f"{_leftovers(run_dir)} {why}"


# ---- a checkpoint write the file system refuses, through the real trainer ----------------------------------------
def _denied(path) -> PermissionError:
    return PermissionError(13, "Permission denied", str(path))


def _deny_files(monkeypatch, checkpoints: Path):
    """Writing a file inside the new checkpoint is refused (e.g. a quota or an ACL on the volume)."""
    real = ckpt.save_safetensors_atomic

    def save(state, path, *args, **kwargs):
        if Path(path).parent.parent == checkpoints and ckpt.last_step(checkpoints) is not None:
            raise _denied(path)
        return real(state, path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_safetensors_atomic", save)


def _deny_directory(monkeypatch, checkpoints: Path):
    """The checkpoints directory became read-only: creating the next checkpoint's temp directory is refused
    (as root a chmod does not stop writes, so the refusal is simulated where the OS would raise it)."""
    real = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self.parent == checkpoints and ckpt.last_step(checkpoints) is not None:
            raise _denied(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)


@pytest.mark.parametrize("deny", [
    pytest.param(_deny_files, id="file-write-denied"),
    pytest.param(_deny_directory, id="read-only-dir"),
])
def test_refused_checkpoint_write_keeps_the_previous_one(tmp_path, shapes_csv, monkeypatch, deny):
    from cliptune.train.run import train_run
    from cliptune.train.rundir import RunDir

    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=denied", *TRAIN_SETTINGS, "train.max_steps=4", "train.eval_every=2"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    deny(monkeypatch, run.checkpoints)
    refused = r"could not write checkpoint .*step_0000004.*previous checkpoint is intact"
    with pytest.raises(CliptuneError, match=refused):
        train_run(cfg, run, progress=False)
    monkeypatch.undo()
    assert os.readlink(run.checkpoints / "last") == "step_0000002"
    from cliptune.models.registry import load_model

    model = load_model("tiny-clip")
    state = ckpt.load_checkpoint(run.checkpoints / "last", model, restore_rng=False)
    assert state["step"] == 2
    init = load_model("tiny-clip").state_dict()
    key = next(k for k in init if k.endswith("patch_embedding.weight"))
    assert not torch.equal(model.state_dict()[key], init[key]), "step 2 holds trained weights"
    assert not _leftovers(run.path), _leftovers(run.path)
