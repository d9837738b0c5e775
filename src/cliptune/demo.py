"""`cliptune demo`: the main job on the embedded default — build the emoji data, fine-tune `lite`, show the gain.

The defaults are chosen for a 2-core CPU: the pretrained image trunk is frozen and its features are computed once
and cached (on disk, so a second run skips it), and the text tower trains only its last layer on cached
activations from the layer below, so each step runs one transformer layer and the projection heads.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.config import load_config
from cliptune.report.table import comparison_table
from cliptune.train.rundir import RunDir
from cliptune.train.run import train_run

DEMO_CONFIG = {
    # EfficientNet-Lite0 stays frozen at its native 224 px (its pooled features are computed once and cached);
    # MiniLM's last layer and both projection heads train. Checkpoints are chosen on validation mAP: validation R@10
    # peaks in the first epochs while R@1 and mAP still improve (see docs/demo.md).
    "model": {"spec": "lite", "embed_dim": 256, "head": "linear", "image_size": 224, "context_length": 32,
              "freeze": "both", "unfreeze_last_n": {"image": 0, "text": 1}},
    "loss": {"type": "infonce"},
    "train": {"epochs": 15, "batch_size": 128, "lr": 1e-4, "head_lr": 1e-3, "weight_decay": 0.1,
              "warmup_steps": 20, "early_stop_patience": 5, "early_stop_metric": "mean_mAP", "log_every": 5},
    "eval": {"split": "test"},
}

# --quick: the same recipe on 128 px images (a quarter of the image cost) and fewer epochs.
QUICK_OVERRIDES = {
    "model": {"image_size": 128},
    "train": {"epochs": 8, "early_stop_patience": 3},
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
    if cfg.eval.report and result.after is not None:
        from cliptune.report.html import write_report

        console.print(f"report: {write_report(run.path, progress=progress)}")
    out.print(comparison_table(result.after, result.before, title=f"{cfg.model.spec} on the emoji test split "
                                                                  f"({result.after['n_images']} images)"))
    console.print(f"{result.steps} steps, {result.wall_s:.0f} s. Run directory: [bold]{run.path}[/] "
                  f"(metrics.json, history.csv, model/)")
    return result
