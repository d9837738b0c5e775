"""A budgeted `cliptune tune` on the emoji data: is the budget honoured, and what does the search buy over the base
recipe? Runs the search through the library (as the command does) and records the search's wall time against the
budget, every trial (state, val metric, wall time, settings), the winner and its before/after on the test split.

    python benchmarks/tune_emoji.py --data data/emoji/emoji.csv --budget 20m [--recipe NAME] [--config base.yaml]
        [--out benchmarks/tune_emoji.json] [--runs /tmp/tune-bench]
    python benchmarks/tune_emoji.py --resume /tmp/tune-bench/tune-<time>     # finish a search a kill stopped

The base is resolved as `cliptune tune` resolves it: the recipe `train` would choose (or --recipe), under --config.
The search's wall time counts the trials only (the budget's scope); the set-up before them and the winner's test
evaluation after them are recorded apart.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import load_average, machine_info, print_table  # noqa: E402

from cliptune.tune.leaderboard import settings_text  # noqa: E402
from cliptune.tune.search import run_tune  # noqa: E402
from cliptune.tune.setup import command_settings, create_tune_dir  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/emoji/emoji.csv")
    parser.add_argument("--budget", default="20m")
    parser.add_argument("--config", default=None)
    parser.add_argument("--recipe", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", default="/tmp/tune-bench")
    parser.add_argument("--out", default="benchmarks/tune_emoji.json")
    parser.add_argument("--resume", type=Path, default=None,
                        help="finish a search that a kill or crash stopped (its tune directory), as `--resume` does")
    args = parser.parse_args()
    t0 = time.monotonic()
    settings, tune_dir = _resumed(args.resume) if args.resume else _new(args)
    spent_before = settings.spent_s
    setup_s = time.monotonic() - t0
    result = run_tune(settings, tune_dir)
    total_s = time.monotonic() - t0
    search_s = json.loads((tune_dir / "tune.json").read_text())["spent_s"]
    metrics = json.loads((tune_dir / "metrics.json").read_text())
    trials = [{"number": e.number, "state": e.state, "val": e.value, "last_reported": e.last_reported,
               "wall_s": e.wall_s, "settings": settings_text(e.params), "base_recipe": e.base_recipe, "note": e.note}
              for e in sorted(result.entries, key=lambda e: e.number)]
    payload = {"machine": machine_info(), "recipe": settings.recipe, "load_average_at_end": load_average(),
               "data": args.data,
               "budget": settings.budget, "budget_s": settings.budget_s, "setup_s": round(setup_s, 1),
               "search_s": round(search_s, 1), "overrun_pct": round(100 * (search_s / settings.budget_s - 1), 1),
               "final_evaluation_s": round(total_s - setup_s - (search_s - spent_before), 1),
               "resumed_after_s": spent_before if args.resume else None, "metric": settings.metric,
               "trials": trials, "winner": result.winner, "tune_dir": str(tune_dir),
               "test": {name: _main(metrics[name]) for name in ("before", "probe", "after") if name in metrics},
               "gains_after_minus_probe": metrics.get("gains", {}).get("after-probe")}
    print_table(["#", "state", "val", "wall s", "settings"],
                [[t["number"], t["state"], t["val"] if t["val"] is not None else t["last_reported"],
                  t["wall_s"], t["settings"]] for t in trials])
    print(f"budget {settings.budget_s:.0f} s, search {search_s:.0f} s ({payload['overrun_pct']:+.1f}%), set-up "
          f"{setup_s:.0f} s, winner's test evaluation {payload['final_evaluation_s']:.0f} s")
    print(f"winner trial {result.winner} on test: " + "; ".join(f"{k} {v}" for k, v in payload["test"].items()))
    Path(args.out).write_text(json.dumps(payload, indent=2) + "\n")


def _new(args):
    settings, _, reason = command_settings(args.config, [f"data.path={args.data}"], args.recipe, args.budget,
                                           args.seed, None, None)
    print(f"base: recipe {settings.recipe} ({reason})")
    return settings, create_tune_dir(args.runs, time.strftime("tune-%Y%m%d-%H%M%S"))


def _resumed(tune_dir: Path):
    from cliptune.tune.settings import TuneSettings

    settings = TuneSettings.load(tune_dir)
    print(f"resuming {tune_dir}: {settings.spent_s:.0f} s of {settings.budget_s:.0f} s spent")
    return settings, tune_dir


def _main(record: dict) -> dict:
    return {f"{d}/{k}": round(record[d][k], 4) for d in ("t2i", "i2t") for k in ("R@1", "R@10", "mAP")}


if __name__ == "__main__":
    main()
