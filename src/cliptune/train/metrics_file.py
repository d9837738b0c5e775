"""metrics.json, the run's result (DESIGN.md contract): the `after` evaluation at the top level, `before`/`probe`/
`after` blocks, the `gains` between them with bootstrap intervals, provenance, skipped-sample count and a `train`
summary."""

from __future__ import annotations

from cliptune.config import Config


def metrics_record(metrics: dict, *, model: str, data: str, split: str, skipped: int = 0) -> dict:
    """One evaluation in the metrics.json shape: t2i/i2t blocks, counts, provenance."""
    return {"t2i": metrics["t2i"], "i2t": metrics["i2t"], "n_images": metrics["n_images"],
            "n_texts": metrics["n_texts"], "model": model, "data": data, "split": split, "skipped_samples": skipped}


def metrics_payload(cfg: Config, result, skipped: int, model_dir) -> dict:
    """metrics.json of a finished run (`result` is its TrainResult, with `after` set; a match run's tuned threshold
    and validation metrics are read from the exported model in `model_dir`)."""
    common = dict(model=cfg.model.spec, data=str(cfg.data.path), split=cfg.eval.split, skipped=skipped)
    if cfg.train.task == "match":
        from cliptune.train.match import match_run_record

        payload = match_run_record(model_dir, result.after, result.before, model=common["model"],
                                   data=common["data"], split=common["split"], skipped_samples=common["skipped"])
    else:
        payload = metrics_record(result.after, **common)
        payload["after"] = metrics_record(result.after, **common)
        if result.before is not None:
            payload["before"] = metrics_record(result.before, **common)
        if getattr(result, "probe", None) is not None:
            # the record shape of before/after, plus the probe's settings, selection and wall time
            payload["probe"] = metrics_record(result.probe, **common) | (result.probe_info or {})
        if getattr(result, "gains", None):
            payload["gains"] = result.gains
    payload["train"] = {"steps": result.steps, "best_step": result.best_step, "stopped_early": result.stopped_early,
                        "wall_s": round(result.wall_s, 2), "run_dir": str(result.run_dir)}
    return payload
