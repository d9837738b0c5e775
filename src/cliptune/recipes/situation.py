"""What the automatic recipe choice looks at: the device, the model family and the amount of training data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliptune.recipes.catalog import DeviceKind

# spec name (before the first ':') → family; a path is a fine-tuned or exported model, treated as pretrained.
FAMILIES = {"lite": "lite", "lite-random": "lite", "hf": "pretrained", "openclip": "pretrained",
            "composed": "composed", "tiny-clip": "pretrained"}


@dataclass(frozen=True)
class Situation:
    device: DeviceKind
    n_devices: int  # processes that will train (torchrun's WORLD_SIZE), or GPUs visible
    family: str
    n_pairs: int  # training pairs (image, caption) in the train split

    def describe(self) -> str:
        where = "CPU" if self.device == "cpu" else f"{self.n_devices} GPU{'s' if self.n_devices > 1 else ''}"
        return f"{where}, {self.family} model, {self.n_pairs:,} training pairs"


def model_family(spec: str) -> str:
    name = spec.partition(":")[0]
    if name in FAMILIES:
        return FAMILIES[name]
    return "pretrained" if Path(spec).expanduser().exists() else name


def device_kind(device: str) -> tuple[DeviceKind, int]:
    """`train.device` resolved as the trainer will ("auto": CUDA when present), with the number of GPUs in use."""
    import os

    from cliptune.train.precision import resolve_device

    resolved = resolve_device(device)
    if resolved.type != "cuda":
        return "cpu", 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return ("multi-gpu", world) if world > 1 else ("gpu", 1)


def count_pairs(records) -> int:
    return sum(len(r.captions) for r in records)
