"""Model spec string → DualEncoder.

Grammar: `<name>` (`lite`, `tiny-clip`), `<prefix>:<argument>` (`hf:openai/clip-vit-base-patch32`, `hf:/models/clip`,
`openclip:ViT-B-32/laion2b_s34b_b79k`), or a path: an exported model (a directory with `cliptune.json`), a run
directory (its `model/` is loaded) or a directory another backend recognises (e.g. a `save_pretrained` folder).

Backends register themselves when their module is imported: a spec builder under its name or prefix, a loader under
the `backend` its `save()` writes into `cliptune.json`, and optionally a directory kind. Modules are imported only
when a model is loaded, so the CLI starts without importing torch models. A new backend is one file plus one line
in `BACKEND_MODULES`.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cliptune.errors import ModelLoadError
from cliptune.utils.registry import Registry

if TYPE_CHECKING:
    from cliptune.models.base import DualEncoder

EXPORT_META = "cliptune.json"
RUN_MODEL_DIR = "model"

# Modules that register backends; a missing one means that backend is not part of this installation.
BACKEND_MODULES = (
    "cliptune.models.hf",
    "cliptune.models.tiny_clip",
    "cliptune.models.lite",
    "cliptune.models.openclip",
    "cliptune.models.composed",
)

# Every spec name the grammar defines, for messages when its backend is absent from this installation.
PLANNED_SPECS = {
    "lite": "EfficientNet-Lite0 + MiniLM (the default model)",
    "tiny-clip": "a small random transformers CLIP for tests",
    "hf": "transformers CLIP/SigLIP, e.g. hf:/path/to/clip-vit-base-patch32",
    "openclip": "open_clip models, e.g. openclip:ViT-B-32/<tag or local .pt/.safetensors>",
    "composed": "an image backbone + a Hugging Face text model, e.g. composed:<image backbone>+<hf text model>",
}

SpecBuilder = Callable[..., "DualEncoder"]  # (argument: str | None, **kw) -> DualEncoder
ExportLoader = Callable[..., "DualEncoder"]  # (directory: Path, meta: dict, **kw) -> DualEncoder


@dataclass(frozen=True)
class DirectoryKind:
    """A directory layout some backend can load without a `cliptune.json` (e.g. a transformers checkpoint)."""

    matches: Callable[[Path], bool]
    load: Callable[..., "DualEncoder"]  # (directory: Path, **kw) -> DualEncoder


SPECS: Registry[SpecBuilder] = Registry("model spec")
BACKENDS: Registry[ExportLoader] = Registry("model backend")
DIRECTORY_KINDS: Registry[DirectoryKind] = Registry("model directory kind")


_BROKEN: dict[str, ImportError] = {}  # backend module → why it failed to import (shown when its spec is asked for)


def _import_backends() -> None:
    for name in BACKEND_MODULES:
        if name in _BROKEN:
            continue
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:  # the module exists but needs something missing: keep the reason, not a crash
                _BROKEN[name] = err
        except ImportError as err:
            _BROKEN[name] = err


# ---- exported-model metadata ----------------------------------------------------------------------------------------
def write_export_meta(directory: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write `cliptune.json` last and atomically, so a half-written export is never taken for a complete one."""
    if "backend" not in meta:
        raise ValueError("export metadata needs a 'backend'")
    directory = Path(directory)
    fd, tmp = tempfile.mkstemp(prefix=f".{EXPORT_META}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(meta, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, directory / EXPORT_META)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return directory / EXPORT_META


def read_export_meta(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / EXPORT_META
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path}: unreadable model metadata ({err})") from err
    if not isinstance(meta, dict) or not isinstance(meta.get("backend"), str):
        raise ModelLoadError(f"{path}: model metadata must be a JSON object with a 'backend' name")
    return meta


# ---- resolution -----------------------------------------------------------------------------------------------------
def _unavailable(name: str) -> ModelLoadError:
    module = f"cliptune.models.{name.replace('-', '_')}"
    reason = f" (importing {module} failed: {_BROKEN[module]})" if module in _BROKEN else ""
    return ModelLoadError(
        f"model backend {name!r} ({PLANNED_SPECS[name]}) is not installed in this version of cliptune{reason}; "
        f"available: {', '.join(SPECS.names())}, or a model directory"
    )


def _load_directory(directory: Path, **kw) -> "DualEncoder":
    if (directory / EXPORT_META).is_file():
        meta = read_export_meta(directory)
        backend = meta["backend"]
        if backend not in BACKENDS:
            if backend in PLANNED_SPECS:
                raise _unavailable(backend)
            raise ModelLoadError(f"{directory}: exported by unknown backend {backend!r}; known: {BACKENDS.names()}")
        return BACKENDS.get(backend)(directory, meta, **kw)
    if (directory / RUN_MODEL_DIR / EXPORT_META).is_file():
        return _load_directory(directory / RUN_MODEL_DIR, **kw)
    for name in DIRECTORY_KINDS.names():
        kind = DIRECTORY_KINDS.get(name)
        if kind.matches(directory):
            return kind.load(directory, **kw)
    raise ModelLoadError(
        f"{directory}: not a model directory: expected {EXPORT_META} (an exported model), "
        f"{RUN_MODEL_DIR}/{EXPORT_META} (a run directory) or a Hugging Face CLIP/SigLIP save_pretrained folder"
    )


def load_model(spec: str | os.PathLike, **kw) -> "DualEncoder":
    """Resolve a model spec (see module doc) to a DualEncoder; keyword arguments go to the backend's builder."""
    spec = os.fspath(spec)
    if not spec.strip():
        raise ModelLoadError("empty model spec")
    _import_backends()
    name, sep, argument = spec.partition(":")
    if name in SPECS:
        model = SPECS.get(name)(argument if sep else None, **kw)
    elif name in PLANNED_SPECS:
        raise _unavailable(name)
    elif Path(spec).expanduser().is_dir():
        model = _load_directory(Path(spec).expanduser(), **kw)
    elif Path(spec).expanduser().exists():
        raise ModelLoadError(
            f"{spec}: a model spec must be a name or a directory; for a weights file use a backend prefix "
            f"(e.g. openclip:<arch>/{spec})"
        )
    else:
        raise ModelLoadError(
            f"unknown model {spec!r}: not a known name ({', '.join(SPECS.names())}), not a '<prefix>:' spec "
            f"({', '.join(sorted(set(SPECS.names()) | set(PLANNED_SPECS)))}) and no such directory. "
            f"For a Hugging Face model use hf:<local directory>"
        )
    model.spec = spec
    return model


def known_specs() -> list[str]:
    """Names and prefixes a spec can start with in this installation (for help texts)."""
    _import_backends()
    return SPECS.names()


__all__ = [
    "BACKENDS",
    "BACKEND_MODULES",
    "DIRECTORY_KINDS",
    "DirectoryKind",
    "EXPORT_META",
    "SPECS",
    "known_specs",
    "load_model",
    "read_export_meta",
    "write_export_meta",
]
