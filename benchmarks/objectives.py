"""Which objective retrieves best on the same budget? `infonce`, `siglip`, `triplet` and `hard_negatives` fine-tune
the same model with the same data, schedule and seed; each is scored on the emoji test split.

    OMP_NUM_THREADS=1 python benchmarks/objectives.py [--quick] [--data data/emoji/emoji.csv] [--only siglip ...]

Model: `lite` (EfficientNet-Lite0 + MiniLM) at 128 px with both towers frozen and new linear heads, so only the
heads (and the logit scale/bias the objective uses) train. The frozen tower outputs are computed once and cached on
disk ($CLIPTUNE_CACHE or ~/.cache/cliptune); every run after the first reads them. Budget: 15 epochs (3 with
`--quick`), batch 128, lr 1e-3, 20 warm-up steps, seed 0. Splits are 80/10/10 by image, seeded. As in `cliptune
train`, the checkpoint with the best val mean R@10 (checked after every epoch) is the one scored on the test split;
the last checkpoint (end of the budget) is scored too (`last_step`), since on this small set the heads can overfit
well before the last epoch.

Objectives and their parameters are in OBJECTIVES below; anything that departs from the shared budget for one
objective is written next to it (`note`) and into the JSON. The runs go one after the other in this process
(library API: load_config + RunDir + train_run), each in a temporary output directory that is deleted afterwards.
Wall time is the whole `train_run` call (data loading, model build, feature cache, training, evaluations, export).
On a small shared machine set OMP_NUM_THREADS=1: with more threads than free cores, torch's thread pool spins.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

from machine import load_average, machine_info, print_table

from cliptune.config import load_config
from cliptune.train.rundir import RunDir
from cliptune.train.run import build_model, train_run

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT / "data" / "emoji" / "emoji.csv"
DEFAULT_OUT = Path(__file__).with_name("objectives.json")
MACHINE_NOTE = "2 CPU cores, shared"

BASE = {
    "model": {"spec": "lite", "image_size": 128, "freeze": "both", "head": "linear"},
    "train": {"epochs": 15, "batch_size": 128, "lr": 1e-3, "warmup_steps": 20, "seed": 0},
    "eval": {"split": "test", "report": False, "before": False},
}
QUICK_EPOCHS = 3

# name -> loss section, extra overrides (same budget; only objective-specific knobs) and why they are there
OBJECTIVES: dict[str, dict] = {
    "infonce": {"loss": {"type": "infonce"}},
    "siglip": {"loss": {"type": "siglip"}},
    "triplet": {"loss": {"type": "triplet", "params": {"mining": "semi-hard", "margin": 0.2}}},
    "hard_negatives": {"loss": {"type": "hard_negatives",
                                "params": {"num_negatives": 4, "strategy": "semantic", "refresh_epochs": 2}}},
}
METRICS = ("R@1", "R@5", "R@10", "mAP")


def _merge(base: dict, extra: dict) -> dict:
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def run_config(name: str, data: Path, output_dir: Path, epochs: int):
    spec = OBJECTIVES[name]
    tree = _merge(BASE, {"loss": spec["loss"], **spec.get("overrides", {})})
    tree = _merge(tree, {"data": {"path": str(data)},
                         "train": {"epochs": epochs, "output_dir": str(output_dir), "name": name}})
    return load_config(None, [], base=tree)


def _history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def last_step_test(cfg, run: RunDir) -> dict:
    """Test metrics of the *last* checkpoint (end of the budget), next to the trainer's best-on-val one."""
    from cliptune.data.load import load_dataset
    from cliptune.inference.evaluate import evaluate_records
    from cliptune.models.freeze import apply_freeze, plan_from_config
    from cliptune.objectives import attach_objective, build_objective
    from cliptune.train.checkpoint import load_checkpoint
    from cliptune.train.feature_cache import FeatureCache, default_cache_dir

    d = cfg.data
    test = load_dataset(d.path, format=d.format, image_root=d.image_root, split_ratios=d.split_ratios,
                        seed=d.split_seed).split(d.test_split)
    model = build_model(cfg)
    plan = plan_from_config(model, cfg.model)
    apply_freeze(model, plan)
    attach_objective(build_objective(cfg.loss.type, **cfg.loss.params), model)  # siglip's logit_bias
    load_checkpoint(run.checkpoints / "last", model, restore_rng=False)
    cache = FeatureCache(model, plan, default_cache_dir(), progress=False)
    return evaluate_records(model, test, cache=cache, progress=False, batch_size=cfg.eval.batch_size,
                            chunk_size=cfg.eval.chunk_size)


def run_one(name: str, data: Path, output_dir: Path, epochs: int) -> dict:
    cfg = run_config(name, data, output_dir, epochs)
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    t0 = time.perf_counter()
    result = train_run(cfg, run, progress=False)
    wall = time.perf_counter() - t0
    after = result.after
    history = _history(run.path)
    train_events = [e for e in history if e.get("event") == "train"]
    val_events = [e for e in history if e.get("event") == "eval" and e.get("split") == cfg.data.val_split]
    best_val = next((e for e in val_events if e["step"] == result.best_step), None)
    out = {
        "loss": cfg.loss.model_dump(),
        "t2i": {m: round(after["t2i"][m], 4) for m in METRICS},
        "i2t": {m: round(after["i2t"][m], 4) for m in METRICS},
        "n_test_images": after["n_images"], "n_test_texts": after["n_texts"],
        "wall_s": round(wall, 1), "trainer_wall_s": round(result.wall_s, 1),
        "steps": result.steps, "best_step": result.best_step,
        "best_val_mean_R@10": round(best_val[cfg.train.early_stop_metric], 4) if best_val else None,
        "loss_first": round(train_events[0]["loss"], 4) if train_events else None,
        "loss_last": round(train_events[-1]["loss"], 4) if train_events else None,
        "logit_scale_last": round(train_events[-1]["logit_scale"], 3) if train_events else None,
    }
    last = last_step_test(cfg, run)
    out["last_step"] = {"t2i": {m: round(last["t2i"][m], 4) for m in METRICS},
                        "i2t": {m: round(last["i2t"][m], 4) for m in METRICS}}
    out["val_mean_R@10_per_epoch"] = [round(e[cfg.train.early_stop_metric], 4) for e in val_events]
    mining = [{k: v for k, v in e.items() if k not in ("event",)} for e in history if e.get("event") == "mining"]
    if mining:
        out["mining"] = mining
    if OBJECTIVES[name].get("note"):
        out["note"] = OBJECTIVES[name]["note"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image–caption data (default: emoji CSV)")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_EPOCHS} epochs instead of 15")
    parser.add_argument("--only", nargs="+", choices=list(OBJECTIVES), help="run these objectives only")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON to write (default: {DEFAULT_OUT.name} for a full run; --quick writes none)")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data} not found: build it with `cliptune data build emoji data/emoji`")
    out_path = args.out if args.out is not None else (None if args.quick else DEFAULT_OUT)
    epochs = QUICK_EPOCHS if args.quick else BASE["train"]["epochs"]
    names = args.only or list(OBJECTIVES)

    machine = {"note": MACHINE_NOTE, **machine_info()}
    shared = run_config(names[0], args.data, Path("<tmp>"), epochs)
    config = {"model": {"spec": shared.model.spec, **shared.model.model_dump(exclude_defaults=True)},
              "train": {k: getattr(shared.train, k) for k in ("epochs", "batch_size", "lr", "head_lr",
                                                                "weight_decay", "warmup_steps", "min_lr_ratio",
                                                                "grad_clip", "seed", "early_stop_metric",
                                                                "feature_cache")},
              "data": {"path": str(args.data), "split_ratios": list(shared.data.split_ratios),
                       "split_seed": shared.data.split_seed},
              "eval": {"split": shared.eval.split, "report": shared.eval.report, "before": shared.eval.before},
              "selection": "results t2i/i2t: checkpoint with the best val mean_R@10 (evaluated every epoch), "
                           "as cliptune train reports it; last_step: the final checkpoint"}
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="cliptune-objectives-") as tmp:
        for name in names:
            print(f"[{time.strftime('%H:%M:%S')}] {name} …", flush=True)
            results[name] = run_one(name, args.data, Path(tmp), epochs)
            r = results[name]
            print(f"    t2i R@1 {r['t2i']['R@1']:.4f}  i2t R@1 {r['i2t']['R@1']:.4f}  {r['wall_s']:.0f} s "
                  f"(best step {r['best_step']}/{r['steps']})", flush=True)
    machine["load_average_at_end"] = load_average()

    print()
    headers = ["objective"] + [f"t2i {m}" for m in METRICS] + [f"i2t {m}" for m in METRICS] + ["wall s"]
    print_table(headers, [[n] + [results[n]["t2i"][m] for m in METRICS] + [results[n]["i2t"][m] for m in METRICS]
                          + [results[n]["wall_s"]] for n in names])
    print(f"\ntest metrics of the last checkpoint (step {results[names[0]]['steps']}, end of the budget):")
    print_table(headers[:-1], [[n] + [results[n]["last_step"]["t2i"][m] for m in METRICS]
                               + [results[n]["last_step"]["i2t"][m] for m in METRICS] for n in names])
    print(f"load average {machine['load_average_at_start']} → {machine['load_average_at_end']}")
    if out_path is None:
        return
    payload = {
        "command": " ".join([f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"] * ("OMP_NUM_THREADS" in os.environ)
                            + [shlex.quote(a) for a in ["python", *sys.argv]]),
        "machine": machine,
        "quick": args.quick,
        "config": config,
        "objectives": {n: OBJECTIVES[n] for n in names},
        "tweaks": {n: OBJECTIVES[n]["note"] for n in names if OBJECTIVES[n].get("note")}
        or "none: every objective trains with the shared budget above (same lr, schedule, epochs, batch, seed); "
           "only its own loss.params differ",
        "results": results,
    }
    out_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
