"""`cliptune train` as a library call: resolve the run directory, load data and model, fit, write metrics.json.

This is the only training module that touches the model registry; `trainer.py` sees nothing but the DualEncoder.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.config import Config, load_config
from cliptune.errors import UsageError
from cliptune.report.table import metrics_record, write_json_atomic
from cliptune.train.rundir import RunDir
from cliptune.train.trainer import Trainer, TrainResult


def model_kwargs(cfg: Config) -> dict:
    """Architecture options for backends that build heads (lite, composed); None means the backend's default."""
    m = cfg.model
    kw = {"embed_dim": m.embed_dim, "head": m.head, "head_hidden": m.head_hidden, "image_size": m.image_size,
          "context_length": m.context_length}
    return {k: v for k, v in kw.items() if v is not None}


def build_model(cfg: Config):
    from cliptune.models.registry import load_model

    kwargs = model_kwargs(cfg)
    try:
        return load_model(cfg.model.spec, **kwargs)
    except TypeError as err:
        raise UsageError(f"model {cfg.model.spec!r} does not take the options {sorted(kwargs)} ({err}); "
                         f"leave model.embed_dim/head/image_size/context_length unset for it") from None


def resolve_run(config_path: str | None, overrides: list[str], resume: str | None) -> tuple[Config, RunDir]:
    if resume:
        run = RunDir(Path(resume))
        if not run.config_file.is_file():
            raise UsageError(f"--resume {resume}: no config.yaml there; is it a cliptune run directory?")
        if not run.has_checkpoint():
            raise UsageError(f"--resume {resume}: no checkpoint in {run.checkpoints} to resume from")
        return load_config(run.config_file, overrides), run
    cfg = load_config(config_path, overrides)
    return cfg, RunDir.create(cfg.train.output_dir, cfg.train.name)


def train_run(cfg: Config, run: RunDir, resume: bool = False, progress: bool = True, console=None) -> TrainResult:
    from cliptune.data.load import load_dataset
    if not cfg.data.path:
        raise UsageError("no training data: set data.path in the config or pass --data")
    run.config_file.write_text(cfg.to_yaml(), encoding="utf-8")
    d = cfg.data
    data = load_dataset(d.path, format=d.format, image_root=d.image_root, on_bad_sample=d.on_bad_sample,
                        split_ratios=d.split_ratios, seed=d.split_seed)
    if data.skipped and console is not None:
        console.print(f"[yellow]skipped {len(data.skipped)} bad samples[/] (first: {data.skipped[0]})")
    model = build_model(cfg)
    result = Trainer(cfg, model, data, run, progress=progress, console=console).fit(resume=resume)
    if result.after is not None:
        common = dict(model=cfg.model.spec, data=str(d.path), split=cfg.eval.split, skipped=len(data.skipped))
        payload = metrics_record(result.after, **common)
        payload["after"] = metrics_record(result.after, **common)
        if result.before is not None:
            payload["before"] = metrics_record(result.before, **common)
        payload["train"] = {"steps": result.steps, "best_step": result.best_step,
                            "stopped_early": result.stopped_early, "wall_s": round(result.wall_s, 2),
                            "run_dir": str(run.path)}
        write_json_atomic(run.metrics_file, payload)
    return result
