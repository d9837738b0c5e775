"""Reading an `openclip:` spec argument: which architecture, and weights from a tag, a local file or a folder.

Spellings accepted, all resolved against `open_clip.list_models()`:
- architecture names as open_clip writes them (`ViT-B-32`) or as OpenAI's `clip` package does (`ViT-B/32`,
  `ViT-B/16`, `ViT-L/14@336px`); like open_clip, `/` inside a name becomes `-`.
- `<arch>/<tag>`: a pretrained tag; `<arch>/<weights file>`: a relative path, or an absolute one written either
  `<arch>//abs/w.pt` or `<arch>/abs/w.pt` (the absolute reading is used when no such relative path exists).
- a bare path to a weights file (`/abs/ViT-B-32.safetensors`): the architecture comes from an
  `open_clip_config.json` beside it, or from the file name.
A path that does not exist is reported as a missing path, never as an unknown architecture or hub name.

QuickGELU: OpenAI's weights (and some others, e.g. LAION-400M ViT-B-32) were trained with QuickGELU, which the plain
configs (`ViT-B-32`) do not use; open_clip names the matching configs `<arch>-quickgelu`. A tag that needs it is
built from that config, as open_clip's own tags under `<arch>-quickgelu` are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

from cliptune.errors import ModelLoadError
from cliptune.models.weights import LOADERS

# OpenAI `clip` package names that open_clip's '/' → '-' rule does not map to one of its configs.
ALIASES = {"ViT-L/14@336px": "ViT-L-14-336"}
QUICKGELU_SUFFIX = "-quickgelu"
CONFIG_FILE = "open_clip_config.json"


@dataclass(frozen=True)
class ArchAndRest:
    arch: str  # an open_clip model name, as in `open_clip.list_models()`
    rest: str  # what followed `<arch>/`: empty, a tag, or a weights path


def canonical_arch(name: str, known: Collection[str]) -> str | None:
    """open_clip's name for `name` (aliases and `/` spellings allowed), or None if it names no architecture."""
    name = ALIASES.get(name, name).replace("/", "-")
    return name if name in known else None


def split_arch(argument: str, known: Collection[str]) -> ArchAndRest | None:
    """The longest leading part of `argument` that names an architecture, and what follows its `/`."""
    cuts = sorted({len(argument), *(i for i, ch in enumerate(argument) if ch == "/")}, reverse=True)
    for cut in cuts:
        arch = canonical_arch(argument[:cut], known)
        if arch:
            return ArchAndRest(arch, argument[cut + 1:])
    return None


def looks_like_path(value: str) -> bool:
    """Written as a path rather than a name: rooted, relative to here, or ending in a weights suffix."""
    return value.startswith(("/", "~", "./", "../")) or Path(value).suffix.lower() in LOADERS


def weights_path(rest: str) -> Path | None:
    """The file `<arch>/<rest>` names: `rest` as written, else `/rest` (an absolute path without a doubled slash)."""
    candidates = [Path(rest).expanduser()]
    if not rest.startswith(("/", "~", ".")):
        candidates.append(Path("/" + rest))
    return next((path for path in candidates if path.is_file()), None)


def missing_path(value: str) -> ModelLoadError:
    """A path that is not there (both readings of `<arch>/<rest>` are named), not a name open_clip lacks."""
    tried = [os.path.expanduser(value)]
    if not value.startswith(("/", "~", ".")):
        tried.append("/" + value)
    return ModelLoadError(f"{value}: local weights file or folder not found (looked for {' and '.join(tried)}); "
                          f"check the path")


def arch_of_weights_file(path: Path, known: Collection[str]) -> str | None:
    """The architecture a bare weights file names (`ViT-B-32.safetensors`, as OpenAI names its downloads)."""
    return canonical_arch(path.name[: -len(path.suffix)] if path.suffix else path.name, known)


def quickgelu_arch(arch: str, known: Collection[str]) -> str:
    """open_clip's QuickGELU config for `arch` (`ViT-B-32` → `ViT-B-32-quickgelu`), or `arch` where none exists."""
    if arch.endswith(QUICKGELU_SUFFIX):
        return arch
    candidate = arch + QUICKGELU_SUFFIX
    return candidate if candidate in known else arch
