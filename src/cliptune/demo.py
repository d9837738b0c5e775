"""`cliptune demo`: the main job on the embedded default — build the emoji data, fine-tune `lite`, show the gain.

The defaults are chosen for a 2-core CPU. Both pretrained trunks are frozen except their top blocks, and the
activations at that freeze boundary are computed once and cached, so each step runs only the top blocks and the
projection heads. Images are small (emoji are 72 px), so the EfficientNet input is reduced accordingly.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.config import load_config
from cliptune.report.table import comparison_table
from cliptune.train.rundir import RunDir
from cliptune.train.run import train_run

DEMO_CONFIG = {
    "model": {"spec": "lite", "embed_dim": 256, "head": "mlp", "image_size": 128, "context_length": 32,
              "freeze": "both", "unfreeze_last_n": {"image": 2, "text": 1}},
    "loss": {"type": "infonce"},
    "train": {"epochs": 30, "batch_size": 128, "lr": 2e-4, "head_lr": 1e-3, "weight_decay": 0.05,
              "warmup_steps": 30, "early_stop_patience": 6, "log_every": 5},
    "eval": {"split": "test"},
}

QUICK_OVERRIDES = {
    "train": {"epochs": 10, "early_stop_patience": 3},
}


def _merge(base: dict, extra: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def demo_config(quick: bool, data_path: str, output_dir: str, name: str, overrides: list[str]):
    base = _merge(DEMO_CONFIG, QUICK_OVERRIDES) if quick else DEMO_CONFIG
    base = _merge(base, {"data": {"path": data_path}, "train": {"output_dir": output_dir, "name": name}})
    return load_config(None, overrides, base=base)


def _free_name(output_dir: Path, stem: str) -> str:
    name, i = stem, 1
    while (output_dir / name).exists():
        i += 1
        name = f"{stem}-{i}"
    return name


def run_demo(quick: bool, data_dir: Path, output_dir: Path, overrides: list[str], progress: bool, console, out):
    from cliptune.data.builders.emoji import build_emoji

    csv_path = data_dir / "emoji.csv"
    if not csv_path.is_file():
        console.print(f"building the emoji dataset in {data_dir} (once) …")
    csv_path = build_emoji(data_dir, progress=progress)
    name = _free_name(output_dir, "demo-quick" if quick else "demo")
    cfg = demo_config(quick, str(csv_path), str(output_dir), name, overrides)
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    console.print(f"fine-tuning [bold]{cfg.model.spec}[/] on {csv_path} → [bold]{run.path}[/]")
    result = train_run(cfg, run, progress=progress, console=console)
    out.print(comparison_table(result.after, result.before, title=f"{cfg.model.spec} on the emoji test split "
                                                                  f"({result.after['n_images']} images)"))
    console.print(f"{result.steps} steps, {result.wall_s:.0f} s. Run directory: [bold]{run.path}[/] "
                  f"(metrics.json, history.csv, model/)")
    return result
