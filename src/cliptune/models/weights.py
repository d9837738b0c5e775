"""Weights in and out without running code from a file: safetensors, or pickles restricted to tensors.

A `.pt` file is a pickle, and unpickling can call any function the file names. `torch.load(weights_only=True)` only
rebuilds tensors and plain containers, so a file that needs anything else is refused instead of executed.
Writes go to a temporary file in the target directory and are renamed into place, so a crash at any moment leaves
either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Callable

import torch

from cliptune.errors import ModelLoadError
from cliptune.utils.atomic import write_atomic

StateDict = dict[str, torch.Tensor]


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({err})") from err


def _blocked_reason(err: Exception) -> str:
    """The line of torch's message that names what the file wanted to call (e.g. `GLOBAL posix.system`)."""
    for line in str(err).splitlines():
        if "GLOBAL" in line or "Unsupported" in line:
            return f" ({line.strip().rstrip('.')})"
    return ""


def _load_pickle(path: Path) -> StateDict:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelLoadError(
            f"{path}: refused to load: the file holds Python objects other than tensors, and unpickling them could "
            f"run code{_blocked_reason(err)}. Convert it to .safetensors where it was made and trusted"
        ) from err
    except (RuntimeError, OSError, EOFError) as err:
        raise ModelLoadError(f"{path}: not a readable PyTorch weights file ({err})") from err
    # Training checkpoints (open_clip, Lightning) wrap the weights next to epoch counters and optimiser state.
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path}: expected a mapping of parameter names to tensors, got {type(obj).__name__}")
    return dict(obj)


LOADERS: dict[str, Callable[[Path], StateDict]] = {
    ".safetensors": _load_safetensors,
    ".pt": _load_pickle,
    ".pth": _load_pickle,
    ".bin": _load_pickle,
    ".ckpt": _load_pickle,
}


def load_state_dict_file(path: str | os.PathLike) -> StateDict:
    """Read a weights file onto the CPU; refuses pickles that would need to run code."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights file not found")
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise ModelLoadError(f"{path}: unknown weights format; expected one of {', '.join(sorted(LOADERS))}")
    return loader(path)


def _unshared(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Give every tensor its own contiguous CPU storage: safetensors refuses tensors that alias each other.

    Every name is kept (tied weights are written twice), so `load_state_dict(strict=True)` still finds them all.
    """
    out: StateDict = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {name!r} is a {type(tensor).__name__}, not a tensor")
        t = tensor.detach().to("cpu").contiguous()
        storage = t.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key in seen or storage.nbytes() != t.nbytes:  # aliased, or a view into a larger buffer
            t = t.clone()
        elif t.numel() > 0:
            seen.add(key)
        out[name] = t
    return out


def save_safetensors_atomic(
    state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write `state_dict` as safetensors at `path` so that readers only ever see a complete file (with the
    permissions a plain write would give, like every other atomic write)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _unshared(state_dict)
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
