"""Which projection head to ship for `lite`: linear vs MLP, measured on the held-out part of the pre-training data.

Both heads are fitted exactly as `cliptune pretrain-lite` does (same data, split, cached features, recipe) and
compared on held-out text→image / image→text retrieval. The emoji data plays no part in this choice.

    nice -n 5 python benchmarks/lite_heads_choice.py   # writes benchmarks/lite_heads_choice.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, print_table  # noqa: E402

DATA = ["data/openclipart/openclipart.csv", "data/icons/icons.csv"]
CANDIDATES = {"linear-256": {"head": "linear", "embed_dim": 256, "head_hidden": None},
              "mlp-256 (hidden 1024)": {"head": "mlp", "embed_dim": 256, "head_hidden": 1024}}
EPOCHS = (30, 60)


def main() -> None:
    import torch

    from cliptune.models.registry import load_model
    from cliptune.pretrain.features import extract, load_records
    from cliptune.pretrain.fit import HeadRecipe, fit_heads, heldout_metrics
    from cliptune.pretrain.run import PretrainSpec
    from cliptune.train.feature_cache import default_cache_dir

    results = {"machine": machine_info(), "data": DATA, "runs": []}
    spec = PretrainSpec(data=DATA)
    train, held = load_records(DATA, spec.held_out, spec.split_seed, spec.max_images)
    rows = []
    for label, arch in CANDIDATES.items():
        for epochs in EPOCHS:
            torch.manual_seed(0)
            model = load_model("lite-random", **arch)
            tr = extract(model, train, default_cache_dir(), False)
            ho = extract(model, held, default_cache_dir(), False)
            fitted = fit_heads(model, tr, HeadRecipe(epochs=epochs))
            m = heldout_metrics(model, ho)
            results["runs"].append({"head": label, "epochs": epochs, "seconds": fitted["seconds"], "heldout": m})
            rows.append([label, epochs, m["t2i"]["R@1"], m["t2i"]["R@10"], m["t2i"]["mAP"], m["i2t"]["R@1"],
                         fitted["seconds"]])
    print_table(["head", "epochs", "t2i R@1", "t2i R@10", "t2i mAP", "i2t R@1", "fit s"], rows)
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
