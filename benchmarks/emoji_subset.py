"""A fixed, seeded subset of the emoji dataset (data/emoji/emoji.csv, 72 px Noto emoji with CLDR names) with
explicit splits, written both as cliptune reads it (one CSV, `split` column) and as open_clip_train reads it (a
train-only CSV of absolute paths), so every trainer in a benchmark sees exactly the same images and captions."""

from __future__ import annotations

import csv
import random
from pathlib import Path

EMOJI_CSV = Path(__file__).resolve().parents[1] / "data" / "emoji" / "emoji.csv"


def write_emoji_subset(out_dir: Path, n_train: int, n_val: int, n_test: int, seed: int = 0) -> dict[str, Path]:
    if not EMOJI_CSV.is_file():
        raise SystemExit(f"{EMOJI_CSV} not found: build it first with `cliptune data build emoji data/emoji`")
    with open(EMOJI_CSV, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    need = n_train + n_val + n_test
    if need > len(rows):
        raise SystemExit(f"asked for {need} emoji, {EMOJI_CSV} has {len(rows)}")
    random.Random(seed).shuffle(rows)
    root = EMOJI_CSV.parent
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    chosen = [{"image_path": str((root / r["image_path"]).resolve()), "caption": r["caption"], "split": s}
              for r, s in zip(rows, splits)]
    paths = {"all": out_dir / "emoji_subset.csv", "train": out_dir / "emoji_train.csv"}
    with open(paths["all"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption", "split"])
        writer.writeheader()
        writer.writerows(chosen)
    with open(paths["train"], "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["filepath", "title"])
        writer.writeheader()
        writer.writerows({"filepath": r["image_path"], "title": r["caption"]} for r in chosen if r["split"] == "train")
    return paths
