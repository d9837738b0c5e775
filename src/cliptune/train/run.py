"""`cliptune train` as a library call: resolve the run directory, load data and model, fit, write metrics.json.

This is the only training module that touches the model registry; `trainer.py` sees nothing but the DualEncoder.
"""

from __future__ import annotations

import os
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
          "context_length": m.context_length, "head_batch_norm": m.head_batch_norm, "attention_pool": m.attention_pool}
    return {k: v for k, v in kw.items() if v is not None}


def build_model(cfg: Config):
    from cliptune.models.registry import load_model

    kwargs = model_kwargs(cfg)
    try:
        model = load_model(cfg.model.spec, **kwargs)
    except TypeError as err:
        raise UsageError(f"model {cfg.model.spec!r} does not take the options {sorted(kwargs)} ({err}); leave "
                         f"model.embed_dim/head/head_batch_norm/attention_pool/image_size/context_length unset "
                         f"for it") from None
    if cfg.model.lora is not None:  # before the freeze plan, so the plan sees the adapters
        from cliptune.models.lora import apply_lora

        apply_lora(model, cfg.model.lora)
    return model


def resolve_run(config_path: str | None, overrides: list[str], resume: str | None) -> tuple[Config, RunDir]:
    if resume:
        run = RunDir(Path(resume))
        if not run.config_file.is_file():
            raise UsageError(f"--resume {resume}: no config.yaml there; is it a cliptune run directory?")
        if not run.has_checkpoint():
            raise UsageError(f"--resume {resume}: no checkpoint in {run.checkpoints} to resume from")
        return load_config(run.config_file, overrides), run
    cfg = load_config(config_path, overrides)
    # Under torchrun every process resolves the same directory; only rank 0 insists that it is new.
    other_rank = int(os.environ.get("RANK", "0")) != 0
    if other_rank and not cfg.train.name:
        raise UsageError("with several processes, give the run a name (--name) so every rank writes to the same one")
    return cfg, RunDir.create(cfg.train.output_dir, cfg.train.name, exist_ok=other_rank)


def train_run(cfg: Config, run: RunDir, resume: bool = False, progress: bool = True, console=None) -> TrainResult:
    from cliptune.data.eval_sets import with_eval_sets
    from cliptune.data.load import load_dataset
    from cliptune.data.skipped import write_run_skipped

    if not cfg.data.path:
        raise UsageError("no training data: set data.path in the config or pass --data")
    is_main = int(os.environ.get("RANK", "0")) == 0
    if is_main:
        run.config_file.write_text(cfg.to_yaml(), encoding="utf-8")
    d = cfg.data
    group = cfg.train.task != "match"
    if d.streaming:  # the shards are streamed by the trainer, never indexed; evaluation reads its own data
        if not (d.val_path or d.test_path):
            _say(console, "[yellow]data.streaming without data.val_path or data.test_path: nothing to evaluate "
                          "on, so no before/after metrics and no early stopping[/]")
        data = with_eval_sets(None, d, group=group)
    else:
        data = load_dataset(d.path, format=d.format, image_root=d.image_root, on_bad_sample=d.on_bad_sample,
                            split_ratios=d.split_ratios, seed=d.split_seed, group=group,
                            format_options={"image_key": d.wds_image_key, "caption_key": d.wds_caption_key})
        data = with_eval_sets(data, d, group=group)
    if is_main:
        write_run_skipped(run.path, data.skipped, console)  # now, so a run that stops early still lists them
    model = build_model(cfg)
    trainer = Trainer(cfg, model, data, run, progress=progress, console=console)
    result = trainer.fit(resume=resume)
    skipped = write_run_skipped(run.path, data.skipped + result.extra.get("skipped", [])) if is_main else 0
    if trainer.wise_base is not None and result.after is not None and cfg.train.task != "match":
        _wise_ft(cfg, trainer.wise_base, model, data, run, result, progress, console)
    if result.after is not None and is_main:
        common = dict(model=cfg.model.spec, data=str(d.path), split=cfg.eval.split, skipped=skipped)
        if cfg.train.task == "match":
            from cliptune.train.match import match_run_record

            payload = match_run_record(run.model_dir, result.after, result.before, model=common["model"],
                                       data=common["data"], split=common["split"], skipped_samples=common["skipped"])
            for warning in payload.get("warnings", []):
                _say(console, f"[yellow]warning:[/] {warning}")
        else:
            payload = metrics_record(result.after, **common)
            payload["after"] = metrics_record(result.after, **common)
            if result.before is not None:
                payload["before"] = metrics_record(result.before, **common)
        payload["train"] = {"steps": result.steps, "best_step": result.best_step,
                            "stopped_early": result.stopped_early, "wall_s": round(result.wall_s, 2),
                            "run_dir": str(run.path)}
        write_json_atomic(run.metrics_file, payload)
    if is_main and result.after is not None and cfg.eval.report:
        from cliptune.report.html import write_report

        report = write_report(run.path, model=model, data=data, progress=progress)
        if console is not None:
            console.print(f"report: {report}")
    return result


def _say(console, text: str) -> None:
    if console is not None:
        console.print(text)


def _wise_ft(cfg: Config, base_state, model, data, run: RunDir, result: TrainResult, progress: bool, console) -> None:
    """WiSE-FT (Wortsman et al. 2022): choose α on the validation split; writes run/wise/ (model, wise.json, plot)."""
    from cliptune.train.wise import load_records, run_wise_ft

    t = cfg.train
    val = data.split(cfg.data.val_split)
    if not val:
        raise UsageError(f"train.wise_ft needs a {cfg.data.val_split!r} split to choose α on; {data.source} has none")
    general = load_records(t.wise_general, t.wise_general_split) if t.wise_general else None
    payload = run_wise_ft(base_state, model, val, general, alphas=t.wise_alphas, rule=t.wise_rule,
                          out_dir=run.path / "wise", progress=progress)
    result.extra["wise"] = payload
    if console is not None:
        console.print(f"WiSE-FT: chose α={payload['chosen']['alpha']} → {run.path / 'wise' / 'model'}")
