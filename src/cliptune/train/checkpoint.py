"""Crash-safe checkpoints: a kill at any moment leaves the last good checkpoint intact.

A checkpoint is a directory `checkpoints/step_NNNNNNN/` holding
  model.safetensors   — the dual encoder's weights (safetensors: loading cannot run code),
  optimizer.pt        — optimizer + scheduler + RNG state (tensors and plain containers only, read with weights_only),
  state.json          — step, epoch, best metric, early-stopping counter.
It is written under a temporary name, fsynced, then renamed into place; `last` and `best` are symbolic links switched
with an atomic `os.replace`, so readers always see either the old or the new checkpoint, never a half-written one.
A kill between creating a temporary (`.step_N.tmp-PID`, `.last.lnk-PID`) and renaming it leaves it behind; the next
save removes such leftovers.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from pathlib import Path

import torch

from cliptune.errors import CliptuneError
from cliptune.models.weights import load_state_dict_file, save_safetensors_atomic
from cliptune.utils.atomic import fsync_dir


_LINK_TEMP = re.compile(r"\.[^/]+\.lnk-\d+")
"""A temporary link of `_point` (`.last.lnk-PID`): one left behind was never renamed into place."""


def _write_file_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2]}
    # Dropout and drop-connect on a GPU draw from the CUDA generators, not the CPU one. Saved only once CUDA is in
    # use: before that nothing has drawn from them, and the seed alone reproduces their state.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def save_checkpoint(ckpt_root: Path, model: torch.nn.Module, optimizer, scheduler, state: dict,
                    links: tuple[str, ...] = ("last",), keep: tuple[str, ...] = ("last", "best"),
                    scaler: torch.amp.GradScaler | None = None) -> Path:
    """Write checkpoint `step_N` atomically, point `links` at it, and prune directories no link refers to.

    An enabled fp16 `scaler` is saved too: its loss scale (and growth tracker) decide which steps overflow, so a
    resumed run needs them to continue exactly."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{int(state['step']):07d}"
    final = ckpt_root / name
    if not final.exists():
        tmp = ckpt_root / f".{name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            save_safetensors_atomic(model.state_dict(), tmp / "model.safetensors")
            blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}
            if scaler is not None and scaler.is_enabled():
                blob["scaler"] = scaler.state_dict()
            torch.save(blob, tmp / "optimizer.pt")
            with open(tmp / "optimizer.pt", "rb+") as fh:
                os.fsync(fh.fileno())
            _write_file_synced(tmp / "state.json", json.dumps(state, indent=2).encode())
            fsync_dir(tmp)
            os.replace(tmp, final)
            fsync_dir(ckpt_root)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
            shutil.rmtree(tmp, ignore_errors=True)
            raise CliptuneError(f"could not write checkpoint {final} ({_reason(err)}); the previous checkpoint is "
                                f"intact and the partial write was removed") from err
    try:
        for link in links:
            _point(ckpt_root / link, name)
    except OSError as err:
        raise CliptuneError(f"could not point {ckpt_root}/{{{','.join(links)}}} at {final} ({err}); "
                            f"the previous checkpoint is intact") from err
    _prune(ckpt_root, keep)
    return final


def _reason(err: BaseException) -> str:
    """One line saying why a write failed ("no space left on device" for a full disk, however it was raised)."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC or "file write failed" in str(err):
        return "no space left on device"
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _point(link: Path, target: str) -> None:
    tmp = link.with_name(f".{link.name}.lnk-{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _prune(ckpt_root: Path, keep: tuple[str, ...]) -> None:
    """Drop checkpoints no link refers to and the temporaries of writes that were killed before their rename (a save
    has one writer: the run's main process; ours are renamed by now)."""
    referenced = {os.readlink(ckpt_root / name) for name in keep if (ckpt_root / name).is_symlink()}
    for child in ckpt_root.iterdir():
        is_step = child.is_dir() and not child.is_symlink() and child.name.startswith("step_")
        if is_step and child.name not in referenced:
            shutil.rmtree(child, ignore_errors=True)
        elif child.name.startswith(".step_") and ".tmp-" in child.name:
            shutil.rmtree(child, ignore_errors=True)
        elif child.is_symlink() and _LINK_TEMP.fullmatch(child.name):
            child.unlink(missing_ok=True)


def save_epoch_link(ckpt_root: Path, epoch: int, step: int) -> None:
    """Keep a per-epoch checkpoint as a real copy (hard links where possible) so pruning never removes it."""
    src = ckpt_root / f"step_{step:07d}"
    dst = ckpt_root / f"epoch_{epoch}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link)


def last_step(ckpt_root: Path) -> int | None:
    state = ckpt_root / "last" / "state.json"
    return json.loads(state.read_text())["step"] if state.is_file() else None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer=None, scheduler=None,
                    restore_rng: bool = True, scaler: torch.amp.GradScaler | None = None) -> dict:
    path = path.resolve()
    if not (path / "state.json").is_file():
        raise CliptuneError(f"no checkpoint at {path} (expected state.json, model.safetensors, optimizer.pt)")
    model.load_state_dict(load_state_dict_file(path / "model.safetensors"))
    if optimizer is not None or scheduler is not None or restore_rng:
        blob = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        if optimizer is not None:
            optimizer.load_state_dict(blob["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(blob["scheduler"])
        if restore_rng:
            set_rng_state(blob["rng"])
        if scaler is not None and scaler.is_enabled() and "scaler" in blob:
            scaler.load_state_dict(blob["scaler"])
    return json.loads((path / "state.json").read_text())
