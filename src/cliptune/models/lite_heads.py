"""The aligned projection heads that ship inside the package for `lite`, loaded with their sha256 checked.

`models/pretrained/<name>.safetensors` holds the two heads and the logit scale; `<name>.json` next to it records
the file's sha256, the head architecture, the data recipe, the exact command that made them and their held-out
metrics. Loading refuses a file whose hash differs from the record, so a damaged or swapped file never passes for
the published heads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cliptune.errors import ModelLoadError

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
IMAGE_PREFIX, TEXT_PREFIX, SCALE_KEY = "image.proj.", "text.proj.", "logit_scale"


@dataclass(frozen=True)
class HeadsCard:
    """What the record says about a shipped heads file."""

    name: str
    sha256: str
    embed_dim: int
    head: str
    head_hidden: int | None
    tower: str

    @property
    def weights(self) -> Path:
        return PRETRAINED_DIR / f"{self.name}.safetensors"


def read_card(name: str) -> HeadsCard:
    path = PRETRAINED_DIR / f"{name}.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        arch = meta["arch"]
        return HeadsCard(name=name, sha256=meta["sha256"], embed_dim=int(arch["embed_dim"]), head=arch["head"],
                         head_hidden=arch.get("head_hidden"), tower=arch.get("tower", "efficientnet-lite0"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{path}: unreadable record of the shipped heads ({err}); reinstall cliptune") from None


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_heads(card: HeadsCard) -> dict[str, torch.Tensor]:
    """The heads' tensors, after checking the file's sha256 against the record."""
    from safetensors.torch import load_file

    path = card.weights
    if not path.is_file():
        raise ModelLoadError(f"{path}: the shipped heads of lite are missing; reinstall cliptune, or use "
                             "`lite-random` for random heads")
    actual = sha256_file(path)
    if actual != card.sha256:
        raise ModelLoadError(f"{path}: sha256 {actual} does not match the recorded {card.sha256} "
                             f"({path.with_suffix('.json')}); the file is damaged or was replaced. Reinstall "
                             "cliptune, rebuild the heads with `cliptune pretrain-lite`, or use `lite-random`")
    return load_file(str(path))


def heads_state(image_proj: torch.nn.Module, text_proj: torch.nn.Module,
                logit_scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors a heads file holds, under the names `apply_heads` expects."""
    state = {f"{IMAGE_PREFIX}{k}": v for k, v in image_proj.state_dict().items()}
    state.update({f"{TEXT_PREFIX}{k}": v for k, v in text_proj.state_dict().items()})
    state[SCALE_KEY] = logit_scale.detach().reshape(())
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def apply_heads(image_proj: torch.nn.Module, text_proj: torch.nn.Module, logit_scale: torch.nn.Parameter,
                state: dict[str, torch.Tensor]) -> None:
    """Load heads tensors into the two projection modules and the (log) logit scale; strict on names."""
    image = {k[len(IMAGE_PREFIX):]: v for k, v in state.items() if k.startswith(IMAGE_PREFIX)}
    text = {k[len(TEXT_PREFIX):]: v for k, v in state.items() if k.startswith(TEXT_PREFIX)}
    try:
        image_proj.load_state_dict(image)
        text_proj.load_state_dict(text)
    except RuntimeError as err:
        raise ModelLoadError(f"shipped heads do not fit the model's heads: {err}") from None
    with torch.no_grad():
        logit_scale.copy_(state[SCALE_KEY].reshape(()))
