"""Zero-shot `lite` on the emoji data (never seen in pre-training), next to random heads and fine-tuned runs.

For each model: text→image and image→text retrieval on the emoji test split exactly as `cliptune demo` splits it
(data/emoji/emoji.csv, seeded 80/10/10 by image), and zero-shot classification accuracy of the same test images
with their CLDR group (9 classes) or subgroup (65 classes) as the class (Unicode's emoji-test.txt; the images it
does not list, newer than Debian's unicode-data, are left out), with the default prompt template
("a photo of a {}."). The image tower is frozen in every model compared, so its pooled features are computed
once through the feature cache and each model applies its own heads. Nothing here is tuned on these numbers.

    cliptune data build emoji
    nice -n 5 python benchmarks/lite_zeroshot.py [--tuned runs/demo]     # writes benchmarks/lite_zeroshot.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EMOJI_CSV = ROOT / "data" / "emoji" / "emoji.csv"
LEVELS = ("group", "subgroup")


def classification(model, image_emb, records, level: str) -> dict:
    """Top-1/top-5 accuracy with `level` as the class, over the test images emoji-test.txt lists."""
    import torch

    from cliptune.data.builders.emoji_classes import file_classes, read_emoji_test
    from cliptune.eval.zeroshot import topk_accuracy, zeroshot_logits
    from cliptune.inference.templates import resolve_templates
    from cliptune.inference.zeroshot import class_embeddings

    classes = file_classes([Path(r.image).name for r in records], level, read_emoji_test())
    keep = [i for i, r in enumerate(records) if Path(r.image).name in classes]
    names = sorted(set(classes.values()))
    labels = torch.tensor([names.index(classes[Path(records[i].image).name]) for i in keep])
    with torch.inference_mode():
        protos = class_embeddings(model, names, resolve_templates("simple"))
    logits = zeroshot_logits(image_emb[keep], protos, scale=float(model.scale().detach()))
    counts = torch.bincount(labels, minlength=len(names))
    hits = torch.bincount(labels[logits.argmax(dim=1) == labels], minlength=len(names))
    per_class = (hits[counts > 0].float() / counts[counts > 0]).mean()
    return {**topk_accuracy(logits, labels, (1, 5)), "mean_per_class_top1": float(per_class),
            "n_images": len(keep), "n_classes": len(names), "chance_top1": 1 / len(names),
            "majority_top1": float(counts.max()) / len(keep)}


def measure(spec: str, records) -> dict:
    from cliptune.eval.retrieval import retrieval_metrics
    from cliptune.inference.evaluate import embed_split
    from cliptune.models.freeze import plan_freeze
    from cliptune.models.registry import load_model
    from cliptune.train.feature_cache import FeatureCache, default_cache_dir

    started = time.perf_counter()
    model = load_model(spec)
    cache = FeatureCache(model, plan_freeze(model, "both"), default_cache_dir(), progress=False)
    image_emb, text_emb, captions = embed_split(model, records, cache=cache, progress=False)
    out = {"model": spec, "retrieval": retrieval_metrics(image_emb, text_emb, captions.text_to_image)}
    for level in LEVELS:
        out[f"classify_{level}"] = classification(model, image_emb, records, level)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tuned", action="append", default=[], help="fine-tuned run directories to add")
    parser.add_argument("--out", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    from cliptune.data.load import load_dataset

    records = load_dataset(EMOJI_CSV).split("test")
    results = {"machine": machine_info(), "data": str(EMOJI_CSV), "split": "test", "n_images": len(records),
               "templates": "simple", "models": [measure(spec, records)
                                                 for spec in ["lite-random", "lite", *args.tuned]]}
    rows = [[m["model"], m["retrieval"]["t2i"]["R@1"], m["retrieval"]["t2i"]["R@10"], m["retrieval"]["t2i"]["mAP"],
             m["retrieval"]["i2t"]["R@1"], m["classify_group"]["top1"], m["classify_group"]["mean_per_class_top1"],
             m["classify_subgroup"]["top1"], m["classify_subgroup"]["mean_per_class_top1"]]
            for m in results["models"]]
    print_table(["model", "t2i R@1", "t2i R@10", "t2i mAP", "i2t R@1", "group top1", "group per-class",
                 "subgroup top1", "subgroup per-class"], rows)
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
