"""Named freezing strategies (`model.preset`), each one a set of the same settings `model.freeze` & co. give.

vision-freeze: the first 6 blocks of the image tower frozen, the rest of both towers trains (a middle ground that
    keeps low-level visual features and adapts the rest);
mixfreeze: both backbones frozen, only projection heads (and the logit scale) train, LiT-style (Zhai et al. 2022),
    the cheapest option and the one the feature cache makes fastest;
unfreeze: everything trains, including a backend's default-frozen tower (e.g. `composed`'s text encoder).

Without a preset the settings come from `model.freeze`, `model.unfreeze_last_n`, `model.vision_layers_frozen`, with
the backend's `default_freeze` added (composed: text). A preset replaces `freeze`/`vision_layers_frozen` and the
backend default; `unfreeze_last_n` and `freeze_heads` still apply on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliptune.errors import UsageError
from cliptune.utils.registry import Registry

SIDES = ("image", "text")


@dataclass(frozen=True)
class FreezeSettings:
    freeze: str = "none"  # none | image | text | both
    vision_layers_frozen: int | None = None  # when set, decides the image tower: its first N blocks are frozen


PRESETS: Registry[FreezeSettings] = Registry("freeze preset")
PRESETS.register("vision-freeze")(FreezeSettings(vision_layers_frozen=6))
PRESETS.register("mixfreeze")(FreezeSettings(freeze="both"))
PRESETS.register("unfreeze")(FreezeSettings())


def union(a: str, b: str) -> str:
    """Freeze settings combined: the sides either of them freezes."""
    sides = {s for s in SIDES if a in (s, "both") or b in (s, "both")}
    return "both" if len(sides) == 2 else (sides.pop() if sides else "none")


def resolve(preset: str | None, freeze: str = "none", vision_layers_frozen: int | None = None,
            backend_default: str = "none") -> FreezeSettings:
    """The effective freeze settings; a preset may not be combined with the settings it decides."""
    if preset is None:
        return FreezeSettings(freeze=union(freeze, backend_default), vision_layers_frozen=vision_layers_frozen)
    if freeze != "none" or vision_layers_frozen is not None:
        raise UsageError(f"model.preset={preset} decides the freezing; leave model.freeze and "
                         f"model.vision_layers_frozen unset (got freeze={freeze}, "
                         f"vision_layers_frozen={vision_layers_frozen})")
    return PRESETS.get(preset)
