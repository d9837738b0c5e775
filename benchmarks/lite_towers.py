"""The embedded image towers side by side on the emoji data: `lite` (EfficientNet-Lite0, 224 px), `lite:b1` (Lite1,
240 px) and `lite:b2` (Lite2, 260 px), each with its own shipped heads.

For each tower, in one process after another on the same machine:
- zero-shot on the emoji test split (never seen in pre-training): t2i/i2t retrieval and CLDR group / subgroup
  classification accuracy, exactly as benchmarks/lite_zeroshot.py measures it;
- `cliptune train --data data/emoji/emoji.csv --model <spec>` with no other flags (the automatic recipe) from an empty
  feature cache, as benchmarks/default_recipe.py runs it: wall time, peak memory, and before / probe / after on the
  test split with the paired 95% bootstrap interval of after − probe.
The default tower should be the most accurate one whose automatic recipe stays within 600 s on 2 cores.

    cliptune data build emoji
    python benchmarks/lite_towers.py [--towers lite lite:b1 lite:b2]     # writes benchmarks/lite_towers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_recipe import WALL_TARGET_S, run_train, summarise  # noqa: E402
from lite_zeroshot import EMOJI_CSV, measure  # noqa: E402
from machine import load_average, machine_info, print_table  # noqa: E402


def one_tower(spec: str, data: Path, records) -> dict:
    """Zero-shot, then the automatic recipe from an empty cache (each in its own temporary cache)."""
    import os

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CLIPTUNE_CACHE"] = str(Path(tmp) / "zs-cache")
        zero_shot = measure(spec, records)
        wall, peak, run = run_train(data, Path(tmp), ["--model", spec])
        trained = summarise(run, wall, peak)
    return {"model": spec, "zero_shot": zero_shot, "default_recipe": trained}


def row(result: dict) -> list:
    zs, tr = result["zero_shot"], result["default_recipe"]
    m = tr["metrics"]
    gain = tr["after_minus_probe_t2i_R@1"]
    return [result["model"], zs["retrieval"]["t2i"]["R@1"], zs["classify_group"]["mean_per_class_top1"],
            m["probe"]["t2i"]["R@1"], m["after"]["t2i"]["R@1"], m["after"]["t2i"]["mAP"],
            f"{gain['delta']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}]", tr["wall_s"], tr["peak_rss_gb"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=EMOJI_CSV)
    parser.add_argument("--towers", nargs="+", default=["lite", "lite:b1", "lite:b2"])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    from cliptune.data.load import load_dataset

    info = machine_info()
    records = load_dataset(args.data).split("test")
    results = [one_tower(spec, args.data, records) for spec in args.towers]
    within = [r for r in results if r["default_recipe"]["wall_s"] <= WALL_TARGET_S]
    best = max(within, key=lambda r: r["default_recipe"]["metrics"]["after"]["t2i"]["R@1"], default=None)
    out = {"machine": info, "load_average_at_end": load_average(), "data": str(args.data),
           "n_test_images": len(records), "wall_target_s": WALL_TARGET_S, "towers": results,
           "best_within_wall_target": best and best["model"]}
    print_table(["tower", "zero-shot t2i R@1", "zero-shot group (per-class)", "probe t2i R@1", "after t2i R@1",
                 "after t2i mAP", "after − probe [95%]", "wall s", "peak GB"], [row(r) for r in results])
    print(f"most accurate within {WALL_TARGET_S} s: {out['best_within_wall_target']}")
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
