"""Which model a command uses when none is named: $CLIPTUNE_MODEL (set once for a shell or a service), else the
model an existing index was built with (the only one whose queries make sense against it), else the default."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

MODEL_ENV = "CLIPTUNE_MODEL"
DEFAULT_MODEL = "lite"


def resolve_model_spec(given: Optional[str], index_dir: Optional[str | os.PathLike] = None) -> str:
    """--model, else $CLIPTUNE_MODEL, else the index's own model, else the default model."""
    if given:
        return given
    if os.environ.get(MODEL_ENV, "").strip():
        return os.environ[MODEL_ENV].strip()
    if index_dir is not None and (Path(index_dir) / "index.json").is_file():
        from cliptune.search.index import open_index

        return open_index(index_dir).model_spec
    return DEFAULT_MODEL


__all__ = ["DEFAULT_MODEL", "MODEL_ENV", "resolve_model_spec"]
