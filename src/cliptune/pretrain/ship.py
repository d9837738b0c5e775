"""Write fitted heads as a package file plus its record (sha256, architecture, recipe, data, command, metrics)."""

from __future__ import annotations

import json
from pathlib import Path

from cliptune.models.lite_heads import heads_state, sha256_file
from cliptune.utils.atomic import write_text_atomic


def write_heads(model, out_dir: Path, name: str, record: dict) -> Path:
    """`<name>.safetensors` (heads + logit scale) and `<name>.json` (its sha256 and `record`); returns the json."""
    from cliptune.models.weights import save_safetensors_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / f"{name}.safetensors"
    save_safetensors_atomic(heads_state(model.image_tower.proj, model.text_tower.proj, model.logit_scale), weights)
    card = {"sha256": sha256_file(weights), "file": weights.name, **record}
    path = out_dir / f"{name}.json"
    write_text_atomic(path, json.dumps(card, indent=1, sort_keys=True) + "\n")
    return path
