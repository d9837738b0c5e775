"""One pre-training run: data → frozen-tower features (cached) → heads fitted → measured on held-out → written."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cliptune.pretrain.fit import HeadRecipe, fit_heads, heldout_metrics


@dataclass(frozen=True)
class PretrainSpec:
    """The data and head shape of a run (the optimiser settings are HeadRecipe's)."""

    data: list[str]
    head: str = "linear"
    embed_dim: int = 256
    head_hidden: int | None = None
    epochs: int = 30
    held_out: float = 0.03
    max_images: int | None = 2200  # per data set; the CPU cost is one EfficientNet pass per image
    split_seed: int = 0
    tower: str = "b0"  # which embedded image tower (lite.VARIANTS) the heads are fitted for


def _data_record(paths: list[str]) -> list[dict]:
    """Each data set's build info (packages, counts, emoji overlap check) as recorded by its builder."""
    out = []
    for path in paths:
        info = Path(path).with_suffix(".json")
        entry = {"path": path}
        if info.is_file():
            entry["build"] = json.loads(info.read_text(encoding="utf-8"))
        out.append(entry)
    return out


def run_pretrain(spec: PretrainSpec, out_dir: Path, name: str, command: str, progress: bool = True,
                 log=print, cache_dir: Path | None = None) -> dict:
    """Fit lite's heads on `spec.data` and write them to `out_dir`; returns the written record."""
    import torch

    from cliptune.models.lite import VARIANTS
    from cliptune.models.registry import load_model
    from cliptune.pretrain.features import extract, load_records
    from cliptune.pretrain.ship import write_heads
    from cliptune.train.feature_cache import default_cache_dir

    torch.manual_seed(spec.split_seed)
    model = load_model(f"lite-random:{spec.tower}", embed_dim=spec.embed_dim, head=spec.head,
                       head_hidden=spec.head_hidden)
    train, held = load_records(spec.data, spec.held_out, spec.split_seed, spec.max_images)
    log(f"pre-training the heads of {model.spec} ({VARIANTS.get(spec.tower).net}, {model.image_size} px) "
        f"on {len(train)} images ({len(held)} held out)")
    cache = default_cache_dir() if cache_dir is None else cache_dir
    train_feats = extract(model, train, cache, progress, "(train)")
    held_feats = extract(model, held, cache, progress, "(held out)")
    recipe = HeadRecipe(epochs=spec.epochs)
    fitted = fit_heads(model, train_feats, recipe, log=log if progress else None)
    metrics = heldout_metrics(model, held_feats)
    record = {"arch": {"tower": VARIANTS.get(spec.tower).net, "text": "all-MiniLM-L6-v2", "embed_dim": spec.embed_dim,
                       "head": spec.head, "head_hidden": spec.head_hidden,
                       "logit_scale": float(model.scale().detach())},
              "spec": asdict(spec), "recipe": recipe.as_dict(), "command": command,
              "train": {"images": train_feats.n_images, "captions": len(train_feats.captions), **fitted},
              "heldout": {"images": held_feats.n_images, "captions": len(held_feats.captions), **metrics},
              "data": _data_record(spec.data), "image_size": model.image_size}
    write_heads(model, out_dir, name, record)
    return record
