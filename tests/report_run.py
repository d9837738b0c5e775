"""A small trained run directory shared by the report tests (trained once per test session)."""

from __future__ import annotations

from pathlib import Path

from conftest import make_shapes_csv

_CACHE: dict[str, Path] = {}

TRAIN = ["model.spec=tiny-clip", "train.epochs=2", "train.batch_size=16", "train.lr=2e-3", "train.warmup_steps=2",
         "train.log_every=1", "train.seed=0", "data.split_ratios=[0.6,0.2,0.2]"]


def trained_run(tmp_path_factory) -> Path:
    """tiny-clip, 2 epochs on generated shapes: config.yaml, history.jsonl, metrics.json with before/after, model/."""
    if "run" not in _CACHE:
        from cliptune.config import load_config
        from cliptune.train.run import train_run
        from cliptune.train.rundir import RunDir

        root = tmp_path_factory.mktemp("report-run")
        data = make_shapes_csv(root / "shapes")
        cfg = load_config(None, [*TRAIN, f"data.path={data}", f"train.output_dir={root / 'runs'}",
                                 "train.name=shapes"])
        run = RunDir.create(cfg.train.output_dir, cfg.train.name)
        train_run(cfg, run, progress=False)
        _CACHE["run"] = run.path
    return _CACHE["run"]


def written_report(tmp_path_factory, n_queries: int = 4) -> Path:
    """report.html of the shared run, written once per session."""
    if "report" not in _CACHE:
        from cliptune.report.html import write_report

        _CACHE["report"] = write_report(trained_run(tmp_path_factory), n_queries=n_queries)
    return _CACHE["report"]
