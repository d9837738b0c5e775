"""The run lifecycle loses no work: settings are checked before anything is created, a failed run does not burn its
name, `--resume` refuses result-changing settings without touching config.yaml, a second process is locked out, a
torn history line and a full disk are handled, and checkpoints come between evaluations when asked."""

import json
import os
import subprocess
import sys

import pytest
import torch

from cli_inprocess import run_cli
from cliptune.config import load_config
from cliptune.errors import CliptuneError, UsageError
from cliptune.train import checkpoint as ckpt
from cliptune.train.history import History
from cliptune.train.lock import RunLock
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

FAST = ["--set", "train.batch_size=8", "--set", "eval.report=false", "--set", "eval.before=false", "-q"]


def _flat(text: str) -> str:
    """Without whitespace (the console wraps long lines)."""
    return "".join(text.split())


def _train(monkeypatch, capsys, tmp_path, data, name, *extra):
    return run_cli(monkeypatch, capsys, "train", "--data", data, "--model", "tiny-clip", "--name", name,
                   "--output-dir", tmp_path, *FAST, *extra)


# ---- 4. the config is checked before anything is created ----------------------------------------------------------
@pytest.mark.parametrize("setting, named", [
    ("train.grad_clip=-1", "train.grad_clip"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.max_steps=-3", "train.max_steps"),
    ("train.early_stop_patience=-1", "train.early_stop_patience"),
    ("train.lr=-0.1", "train.lr"),
    ("train.batch_size=0", "train.batch_size"),
    ("train.log_every=0", "train.log_every"),
    ("loss.params.init_scal=5", "did you mean 'init_scale'"),
    ("train.early_stop_metric=R@10", "train.early_stop_metric='R@10'"),
])
def test_bad_settings_exit_2_naming_the_key_and_leave_no_run_dir(tmp_path, shapes_csv, monkeypatch, capsys,
                                                                setting, named):
    import cliptune.models.registry as registry

    monkeypatch.setattr(registry, "load_model", lambda *a, **k: pytest.fail("a model was built"))
    code, _, err = _train(monkeypatch, capsys, tmp_path, shapes_csv, "bad", "--set", "loss.type=siglip",
                          "--set", setting)
    assert code == 2, err[-2000:]
    assert _flat(named) in _flat(err), err
    assert not (tmp_path / "bad").exists()


# ---- 5. nothing burns a run ---------------------------------------------------------------------------------------
def test_bad_data_exits_2_naming_the_file_and_leaves_no_run_dir(tmp_path, monkeypatch, capsys):
    """The data is read (for the recipe choice) before the run directory is created."""
    missing = tmp_path / "missing.csv"
    missing.write_text("image_path,label\nnowhere.png,1\n")  # no caption column: refused while loading
    code, _, err = _train(monkeypatch, capsys, tmp_path, missing, "never")
    assert code == 2 and str(missing) in _flat(err) and "caption" in err, err
    assert not (tmp_path / "never").exists()


def test_a_run_that_failed_before_its_first_checkpoint_can_be_rerun_or_resumed(tmp_path, shapes_csv, monkeypatch,
                                                                              capsys):
    bad_model = tmp_path / "no-such-model"  # a missing model fails once the run directory exists
    code, _, err = _train(monkeypatch, capsys, tmp_path, shapes_csv, "burned", "--model", bad_model)
    assert code == 2 and (tmp_path / "burned" / "config.yaml").is_file(), err
    code, _, err = _train(monkeypatch, capsys, tmp_path, shapes_csv, "burned", "--set", "train.max_steps=2")
    assert code == 0, err[-2000:]
    assert json.loads((tmp_path / "burned" / "metrics.json").read_text())["train"]["steps"] == 2

    code, _, err = _train(monkeypatch, capsys, tmp_path, shapes_csv, "again", "--model", bad_model)
    assert code == 2
    config = tmp_path / "again" / "config.yaml"
    config.write_text(config.read_text().replace(str(bad_model), "tiny-clip"))  # the user fixes the model
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", tmp_path / "again", "--set",
                           "train.max_steps=2", "-q")
    assert code == 0, err[-2000:]
    assert _flat("from step 0") in _flat(err)


def test_resume_refuses_result_changing_settings_and_keeps_config(tmp_path, shapes_csv, monkeypatch, capsys):
    code, _, err = _train(monkeypatch, capsys, tmp_path, shapes_csv, "r", "--set", "train.max_steps=4",
                          "--set", "train.stop_at_step=2")
    assert code == 0, err[-2000:]
    config = (tmp_path / "r" / "config.yaml").read_text()
    for args, named in ((["--set", "train.lr=0.5"], "train.lr"),
                        (["--data", tmp_path / "nonexistent.csv"], "data.path"),
                        (["--set", "train.batch_size=4", "--set", "train.seed=3"], "train.seed")):
        code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", tmp_path / "r", *args, "-q")
        assert code == 2 and _flat(named) in _flat(err), err[-2000:]
        assert (tmp_path / "r" / "config.yaml").read_text() == config
    assert "train.batch_size" in _flat(err)  # every refused setting is listed
    code, _, err = run_cli(monkeypatch, capsys, "train", "--resume", tmp_path / "r", "--set",
                           "train.stop_at_step=null", "--set", "train.max_steps=6", "--set", "train.log_every=1",
                           "-q")
    assert code == 0, err[-2000:]
    saved = load_config(tmp_path / "r" / "config.yaml")
    assert saved.train.max_steps == 6 and saved.train.stop_at_step is None
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["train"]["steps"] == 6


# ---- 6. interruptions and file-system trouble ---------------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_second_process_is_locked_out_and_a_stale_lock_is_taken_over(tmp_path):
    lock = tmp_path / "run" / "train.lock"
    with RunLock(tmp_path / "run"):
        with pytest.raises(UsageError, match=f"process {os.getpid()}"):
            RunLock(tmp_path / "run").acquire()
    assert not lock.exists()
    import socket

    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with RunLock(tmp_path / "run") as taken:
        assert json.loads(lock.read_text())["pid"] == os.getpid() and taken.held
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "0"}))
    with RunLock(tmp_path / "run") as taken:  # the pid was reused by a process started later: stale
        assert taken.held


def test_a_torn_last_history_line_is_dropped(tmp_path):
    history = History(tmp_path)
    history.jsonl.write_text('{"step": 1, "event": "train"}\n{"step": 2, "event": "tra')
    assert history.entries() == [{"step": 1, "event": "train"}]
    history.truncate_after(5)
    assert history.jsonl.read_text() == '{"step": 1, "event": "train"}\n'
    history.jsonl.write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
    with pytest.raises(CliptuneError, match="line 2"):
        history.entries()


class CrashAt:
    """A crash after step `step` was logged (its checkpoint is older)."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, ctx, state, out):
        if state.step == self.step:
            raise RuntimeError("simulated crash")


def test_resume_after_a_torn_line_and_tensorboard_purges_redone_steps(tmp_path, shapes_csv):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=tb", "train.max_steps=6", "train.eval_every=2", "train.log_every=1",
                             "train.batch_size=8", "eval.report=false", "eval.before=false"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    with pytest.raises(RuntimeError, match="simulated"):
        train_run(cfg, run, progress=False, callbacks=[CrashAt(5)])
    with open(run.path / "history.jsonl", "a") as fh:
        fh.write('{"step": 6, "event": "tr')  # killed mid-write
    train_run(cfg, run, resume=True, progress=False)
    steps = [json.loads(line)["step"] for line in (run.path / "history.jsonl").read_text().splitlines()
             if json.loads(line)["event"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    purges = [event.step for path in sorted((run.path / "tensorboard").iterdir())
              for event in EventFileLoader(str(path)).Load()
              if event.HasField("session_log") and event.session_log.status == event.session_log.START]
    assert purges == [5]  # readers drop the first attempt's step 5 (logged after the step-4 checkpoint)


def test_disk_full_keeps_the_previous_checkpoint_and_removes_the_temp(tmp_path, shapes_csv, monkeypatch):
    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=full", "train.max_steps=4", "train.eval_every=2", "train.batch_size=8",
                             "eval.report=false", "eval.before=false"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    real_save = torch.save

    def full(obj, f, *args, **kwargs):
        if ckpt.last_step(run.checkpoints) is not None:  # the second checkpoint hits a full disk
            raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CliptuneError) as err:
        train_run(cfg, run, progress=False)
    message = str(err.value)
    assert "\n" not in message and "step_0000004" in message and "previous checkpoint" in message
    assert os.readlink(run.checkpoints / "last") == "step_0000002"
    assert not [p.name for p in run.checkpoints.iterdir() if ".tmp" in p.name]


def test_save_every_epoch_with_any_eval_cadence_and_after_resume(tmp_path, shapes_csv):
    from cliptune.train.rebuild import load_run_data

    base = [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}", "train.name=save",
            "train.epochs=2", "train.batch_size=8", "train.save_every_epoch=true", "eval.report=false",
            "eval.before=false"]
    per_epoch = len(load_run_data(load_config(None, base)).split("train")) // 8
    sets = base + [f"train.eval_every={per_epoch + 1}"]  # no evaluation at an epoch end
    cfg = load_config(None, sets + [f"train.stop_at_step={per_epoch + 1}"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=False)
    assert json.loads((run.checkpoints / "epoch_1" / "state.json").read_text())["step"] == per_epoch
    resumed = train_run(load_config(None, sets), run, resume=True, progress=False)
    assert resumed.steps == 2 * per_epoch
    assert json.loads((run.checkpoints / "epoch_2" / "state.json").read_text())["step"] == 2 * per_epoch


def test_save_every_steps_writes_between_evaluations(tmp_path, shapes_csv):
    cfg = load_config(None, [f"data.path={shapes_csv}", "model.spec=tiny-clip", f"train.output_dir={tmp_path}",
                             "train.name=steps", "train.max_steps=8", "train.eval_every=100", "train.batch_size=8",
                             "train.save_every_steps=3", "train.stop_at_step=7", "eval.report=false",
                             "eval.before=false"])
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    seen = []

    class Watch:
        def on_step_end(self, ctx, state, out):
            seen.append(ckpt.last_step(ctx.checkpoints))

    train_run(cfg, run, progress=False, callbacks=[Watch()])
    assert seen == [None, None, 3, 3, 3, 6, 6]
    assert not (run.checkpoints / "best").exists()  # periodic saves are not evaluations
