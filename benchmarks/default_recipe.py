"""`cliptune train --data data/emoji/emoji.csv` with no other flags, as a new user runs it: wall time from an empty
feature cache (feature extraction included), peak memory, the plan's estimate against the real wall time, and the
three-way result on the emoji test split (before = zero-shot `lite`, probe = its heads re-fitted on the frozen
towers, after = the automatic recipe), with the paired 95% bootstrap interval of after − probe.

Targets (not assertions; printed as met / missed): wall ≤ 600 s on 2 cores, after − probe ≥ +3 points of t2i R@1.

    cliptune data build emoji
    python benchmarks/default_recipe.py [--data data/emoji/emoji.csv] [--extra --set train.epochs=6 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import load_average, machine_info, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WALL_TARGET_S = 600
GAIN_TARGET = 0.03


def run_train(data: Path, out_dir: Path, extra: list[str]) -> tuple[float, float, Path]:
    """The CLI in a child process with a fresh feature cache: wall seconds, peak RSS (GB), the run directory."""
    env = {**os.environ, "CLIPTUNE_CACHE": str(out_dir / "cache")}
    cmd = [sys.executable, "-m", "cliptune", "train", "--data", str(data), "--output-dir", str(out_dir / "runs"),
           "--name", "default", "-q", *extra]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True)
    wall = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return wall, peak_gb, out_dir / "runs" / "default"


def summarise(run: Path, wall: float, peak_gb: float) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    plan = json.loads((run / "plan.json").read_text())
    blocks = {name: {d: {m: metrics[name][d][m] for m in ("R@1", "R@10", "mAP")} for d in ("t2i", "i2t")}
              for name in ("before", "probe", "after") if name in metrics}
    gain = metrics.get("gains", {}).get("after-probe", {}).get("t2i", {}).get("R@1")
    return {"recipe": plan["plan"]["recipe"], "plan": plan["plan"], "estimate_s": plan["estimate"]["total_s"],
            "wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2), "n_test_images": metrics["n_images"],
            "steps": metrics["train"]["steps"], "best_step": metrics["train"]["best_step"],
            "probe_wall_s": metrics.get("probe", {}).get("wall_s"), "metrics": blocks,
            "after_minus_probe_t2i_R@1": gain,
            "targets": {"wall_le_600s": wall <= WALL_TARGET_S,
                        "after_minus_probe_t2i_R@1_ge_3pts": gain is not None and gain["delta"] >= GAIN_TARGET}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "emoji" / "emoji.csv")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `cliptune train` arguments")
    args = parser.parse_args()
    info = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        wall, peak, run = run_train(args.data, Path(tmp), args.extra)
        result = summarise(run, wall, peak)
    result.update(machine=info, load_average_at_end=load_average(), command_extra=args.extra)
    rows = [[name, *(result["metrics"][name][d][m] for d in ("t2i", "i2t") for m in ("R@1", "R@10", "mAP"))]
            for name in result["metrics"]]
    print_table(["", "t2i R@1", "t2i R@10", "t2i mAP", "i2t R@1", "i2t R@10", "i2t mAP"], rows)
    print(f"recipe {result['recipe']}: wall {result['wall_s']} s (estimate {result['estimate_s']:.0f} s), "
          f"peak RSS {result['peak_rss_gb']} GB; after − probe t2i R@1: {result['after_minus_probe_t2i_R@1']}")
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in result["targets"].items()))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
