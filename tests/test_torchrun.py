"""`torchrun --nproc_per_node 2 -m cliptune train` runs end to end on CPU (gloo) and resumes with one process."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def _run_group(cmd, env, timeout):
    """Run a command in its own process group; on timeout the whole group (torchrun and its workers) is killed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s:\n{err[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.mark.timeout(300)
def test_torchrun_two_processes_then_resume_on_one(shapes_csv, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    common = ["train", "--data", str(shapes_csv), "--model", "tiny-clip", "--output-dir", str(tmp_path),
              "--name", "ddp", "-q", "--set", "train.max_steps=8", "--set", "train.batch_size=8",
              "--set", "train.eval_every=4", "--set", "train.log_every=1", "--set", "eval.report=false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = _run_group([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "cliptune", *common,
                      "--set", "train.stop_at_step=4"], env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "ddp"
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    train_steps = [h["step"] for h in history if h["event"] == "train"]
    assert train_steps and train_steps == sorted(set(train_steps)), "only rank 0 logs, once per step"
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 4
    # resume the same run with a different world size (one process)
    res = subprocess.run([sys.executable, "-m", "cliptune", "train", "--resume", str(run), "-q",
                          "--set", "train.stop_at_step=null"], capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 8


@pytest.mark.timeout(300)
def test_torchrun_streams_shards_with_two_processes(shapes_csv, tmp_path):
    """Streamed, resampled shards under torchrun: each rank reads batch_size / 2 samples a step from its own
    readers; the run completes, evaluates on separate data and writes metrics once."""
    from cliptune.data.load import load_dataset
    from cliptune.data.to_wds import write_shards

    splits = write_shards(load_dataset(shapes_csv), tmp_path / "shards", shard_size=8).splits
    pattern = {split: str(tmp_path / "shards" / info.pattern) for split, info in splits.items()}
    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    res = _run_group([str(torchrun), "--nproc_per_node", "2", "--master_port", str(port), "-m", "cliptune", "train",
                      "--data", pattern["train"], "--streaming", "--test-data", pattern["test"],
                      "--model", "tiny-clip", "--output-dir", str(tmp_path), "--name", "stream", "-q",
                      "--set", "data.resampled=true", "--set", "data.epoch_length=32", "--set", "train.epochs=2",
                      "--set", "train.batch_size=8", "--set", "train.log_every=1", "--set", "eval.report=false"],
                     env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    metrics = json.loads((tmp_path / "stream" / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 8 and metrics["n_images"] == len(load_dataset(pattern["test"]).records)
    history = [json.loads(line) for line in (tmp_path / "stream" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h["event"] == "train"] == list(range(1, 9))
