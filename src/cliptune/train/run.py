"""`cliptune train` as a library call: check the settings, resolve the run directory (new, reused after a failed
start, or resumed), load data and model (train/rebuild.py), fit, WiSE-FT, write metrics.json."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cliptune.config import Config, load_config
from cliptune.errors import UsageError
from cliptune.utils.atomic import write_json_atomic, write_text_atomic
from cliptune.train.checks import check_config
from cliptune.train.lock import RunLock
from cliptune.train.metrics_file import metrics_payload
from cliptune.train.rebuild import build_model, load_run_data, model_kwargs  # noqa: F401  (model_kwargs re-exported)
from cliptune.train.resume_check import check_resume
from cliptune.train.rundir import RunDir
from cliptune.train.trainer import Trainer, TrainResult


def resolve_run(config_path: str | None, overrides: list[str], resume: str | None) -> tuple[Config, RunDir]:
    """The config and run directory of `cliptune train`, every setting checked before anything is created."""
    if resume:
        return _resume_config(Path(resume), overrides)
    cfg = load_config(config_path, overrides)
    check_config(cfg)
    # Under torchrun every process resolves the same directory; only rank 0 insists that it is new.
    other_rank = int(os.environ.get("RANK", "0")) != 0
    if other_rank and not cfg.train.name:
        raise UsageError("with several processes, give the run a name (--name) so every rank writes to the same one")
    return cfg, RunDir.create(cfg.train.output_dir, cfg.train.name, exist_ok=other_rank)


def _resume_config(path: Path, overrides: list[str]) -> tuple[Config, RunDir]:
    """The run's saved config with the allowed `--set` changes; config.yaml is rewritten only once the resumed run
    has loaded its data (train_run), never for a refused resume."""
    run = RunDir(path)
    if not run.config_file.is_file():
        raise UsageError(f"--resume {path}: no config.yaml there; is it a cliptune run directory?")
    saved = load_config(run.config_file)
    cfg = load_config(run.config_file, overrides)
    check_resume(saved, cfg, path)
    check_config(cfg)
    return cfg, run


def train_run(cfg: Config, run: RunDir, resume: bool = False, progress: bool = True, console=None,
              callbacks: list | tuple = (), wise_plot=None, data=None, before_fit=None) -> TrainResult:
    """Load the run's data and model, fit, then WiSE-FT and metrics.json; holds the run directory's lock.

    `callbacks` observe (or stop) the loop (train/callbacks/base.py); `wise_plot` draws wise/wise.png when
    train.wise_ft is on (the report package's plotter: training does not import the report). report.html is the
    caller's to write (`report.html.write_report`), as `cliptune train` does. `data` is the run's data when the
    caller has read it already (`load_run_data(cfg)`); `before_fit(model, data)` runs on rank 0 once the model and
    data are loaded, before anything is trained (`cliptune train` prints its plan and time estimate there)."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(run.path) if is_main else contextlib.nullcontext():
        return _train_run(cfg, run, resume, progress, console, callbacks, wise_plot, is_main, data, before_fit)


def _train_run(cfg: Config, run: RunDir, resume: bool, progress: bool, console, callbacks, wise_plot,
               is_main: bool, data=None, before_fit=None) -> TrainResult:
    from cliptune.data.skipped import write_run_skipped

    if not cfg.data.path:
        raise UsageError("no training data: set data.path in the config or pass --data")
    if is_main and not resume:
        write_text_atomic(run.config_file, cfg.to_yaml())
    d = cfg.data
    if d.streaming and not (d.val_path or d.test_path):
        _say(console, "[yellow]data.streaming without data.val_path or data.test_path: nothing to evaluate "
                      "on, so no before/after metrics and no early stopping[/]")
    data = load_run_data(cfg) if data is None else data
    if is_main and resume:  # accepted and its data loads: the allowed changes become the run's config
        write_text_atomic(run.config_file, cfg.to_yaml())
    if is_main:
        write_run_skipped(run.path, data.skipped, console)  # now, so a run that stops early still lists them
    model = build_model(cfg)
    if is_main and before_fit is not None:
        before_fit(model, data)
    trainer = Trainer(cfg, model, data, run, progress=progress, console=console, callbacks=callbacks)
    result = trainer.fit(resume=resume)
    skipped = write_run_skipped(run.path, data.skipped + result.extra.get("skipped", [])) if is_main else 0
    if trainer.wise_base is not None and result.after is not None and cfg.train.task != "match":
        _wise_ft(cfg, trainer.wise_base, model, data, run, result, progress, console, wise_plot)
    if result.after is not None and is_main and cfg.train.task != "match":
        _probe_and_gains(cfg, data, result, progress, console)
    if result.after is not None and is_main:
        payload = metrics_payload(cfg, result, skipped, run.model_dir)
        for warning in payload.get("warnings", []):
            _say(console, f"[yellow]warning:[/] {warning}")
        write_json_atomic(run.metrics_file, payload)
    return result


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)


def _probe_and_gains(cfg: Config, data, result: TrainResult, progress: bool, console) -> None:
    """The probe (train/probe.py) on the run's splits when eval.probe asks for it, then the paired bootstrap
    intervals of every gain the kept test ranks allow (train/gains.py)."""
    from cliptune.train.gains import gains_block

    ranks = dict(result.test_ranks)
    if cfg.eval.probe and cfg.data.streaming:
        _say(console, "probe skipped: a streamed run has no indexed training split to fit heads on")
    elif cfg.eval.probe:
        import sys

        from cliptune.train.callbacks.progress import is_terminal
        from cliptune.train.probe import fit_probe

        _say(console, "probe: fitting the heads of the towers as loaded, on cached features …")
        probe = fit_probe(cfg, data, progress=progress and is_terminal(sys.stderr))  # bars on a terminal only
        result.probe, result.probe_info = probe.test.metrics, probe.block()
        ranks["probe"] = probe.test.ranks
        _say(console, f"probe: {probe.wall_s:.1f} s (features {probe.features_s:.1f} s), heads of epoch "
                      f"{probe.best_epoch} of {probe.settings.epochs}")
    if result.before is not None and "before" not in ranks:
        _say(console, "gains over `before` left out: a resumed run keeps before's metrics, not its per-query ranks")
    result.gains = gains_block(ranks, seed=cfg.train.seed)


def _wise_ft(cfg: Config, base_state, model, data, run: RunDir, result: TrainResult, progress: bool, console,
             plot) -> None:
    """WiSE-FT (Wortsman et al. 2022): choose α on the validation split; writes run/wise/ (model, wise.json, plot)."""
    from cliptune.train.wise import load_records, run_wise_ft

    t = cfg.train
    val = data.split(cfg.data.val_split)
    if not val:
        raise UsageError(f"train.wise_ft needs a {cfg.data.val_split!r} split to choose α on; {data.source} has none")
    general = load_records(t.wise_general, t.wise_general_split) if t.wise_general else None
    payload = run_wise_ft(base_state, model, val, general, alphas=t.wise_alphas, rule=t.wise_rule,
                          out_dir=run.path / "wise", progress=progress, plot=plot)
    result.extra["wise"] = payload
    if console is not None:
        console.print(f"WiSE-FT: chose α={payload['chosen']['alpha']} → {run.path / 'wise' / 'model'}")
