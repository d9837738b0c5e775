"""Interruptions through the real CLI: SIGTERM and Ctrl-C finish the step, checkpoint and print the resume command
(exit 143 / 130), and the resumed run ends with the weights of an uninterrupted one; a SIGKILL before the first
checkpoint leaves a run that `--resume` starts from step 0. Output to a pipe is plain timestamped lines."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from history_helpers import train_steps

from cliptune.config import load_config
from cliptune.models.weights import load_state_dict_file
from cliptune.train import checkpoint as ckpt
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

SETTINGS = ["train.max_steps=16", "train.eval_every=100", "train.batch_size=8", "train.log_every=2",
            "train.warmup_steps=2", "train.lr=1e-3", "eval.before=false", "eval.report=false"]


def _start(tmp_path, shapes_csv, name, *extra) -> subprocess.Popen:
    sets = [a for s in SETTINGS for a in ("--set", s)]
    return subprocess.Popen([sys.executable, "-m", "cliptune", "train", "--recipe", "none", "--data", str(shapes_csv),
                             "--model", "tiny-clip", "--name", name, "--output-dir", str(tmp_path / "runs"), *sets,
                             *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _signal_after(proc: subprocess.Popen, history: Path, step: int, sig: int) -> tuple[int, str]:
    """Send `sig` once `step` is logged; the exit code and stderr."""
    deadline = time.time() + 240
    try:
        while not any(s >= step for s in train_steps(history)):
            if proc.poll() is not None:
                pytest.fail(f"training ended (rc {proc.returncode}) before step {step}: {proc.stderr.read()[-2000:]}")
            if time.time() > deadline:
                pytest.fail(f"step {step} not reached in time")
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        return proc.returncode, err
    finally:
        proc.kill()
        proc.wait(timeout=30)


@pytest.mark.timeout(400)
def test_sigterm_checkpoints_prints_the_resume_command_and_resumes_exactly(tmp_path, shapes_csv):
    run_dir = tmp_path / "runs" / "term"
    rc, err = _signal_after(_start(tmp_path, shapes_csv, "term"), run_dir / "history.jsonl", 4, signal.SIGTERM)
    assert rc == 143, err[-2000:]
    assert f"cliptune train --resume {run_dir}" in "".join(err.split("\n")), err[-2000:]
    saved = ckpt.last_step(run_dir / "checkpoints")
    assert saved is not None and 4 <= saved < 16, err[-2000:]
    assert not (run_dir / "checkpoints" / "best").exists()  # an interruption is not an evaluation
    lines = [line for line in err.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d step \d+/16 ", line)]
    assert lines and "training:" not in err, err[-2000:]  # not a TTY: plain timestamped lines, no progress bar

    resumed = subprocess.run([sys.executable, "-m", "cliptune", "train", "--resume", str(run_dir), "-q"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = resumed.stderr.strip().splitlines()[-1]
    assert summary.startswith(f"steps {saved + 1}-16 in ") and "(this process)" in summary, resumed.stderr
    assert "best step 16" in summary and "no early stop" in summary, summary

    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=whole", *SETTINGS])
    whole = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, whole, progress=False)
    a = load_state_dict_file(run_dir / "checkpoints" / "last" / "model.safetensors")
    b = load_state_dict_file(whole.checkpoints / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.timeout(300)
def test_ctrl_c_exits_130_with_a_checkpoint(tmp_path, shapes_csv):
    run_dir = tmp_path / "runs" / "int"
    rc, err = _signal_after(_start(tmp_path, shapes_csv, "int", "-q"), run_dir / "history.jsonl", 2, signal.SIGINT)
    assert rc == 130, err[-2000:]
    assert "SIGINT" in err and ckpt.last_step(run_dir / "checkpoints") is not None
    assert not (run_dir / "train.lock").exists()


@pytest.mark.timeout(400)
def test_sigkill_before_the_first_checkpoint_then_resume(tmp_path, shapes_csv):
    run_dir = tmp_path / "runs" / "early"
    _signal_after(_start(tmp_path, shapes_csv, "early", "-q"), run_dir / "history.jsonl", 2, signal.SIGKILL)
    assert ckpt.last_step(run_dir / "checkpoints") is None
    assert RunDir(run_dir).unstarted()  # its name is not burned: `train --name early` would start it afresh
    resumed = subprocess.run([sys.executable, "-m", "cliptune", "train", "--resume", str(run_dir), "-q"],
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "from step 0" in " ".join(resumed.stderr.split())
    assert train_steps(run_dir / "history.jsonl") == list(range(2, 17, 2))
    assert json.loads((run_dir / "metrics.json").read_text())["train"]["steps"] == 16
