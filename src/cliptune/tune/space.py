"""What `cliptune tune` searches: each dimension is one typed definition that suggests a value through Optuna and
turns it into `--set`-style overrides of the base recipe.

  unfreeze_image  model.unfreeze_last_n.image  int 0..2 (capped by the image tower's trunk blocks)
  unfreeze_text   model.unfreeze_last_n.text   int 0..2 (capped by the text tower's blocks)
  lr              train.lr                     log-uniform 1e-5..3e-4 (trainable tower blocks)
  head_lr         train.head_lr                log-uniform 1e-4..3e-3 (projection heads, logit scale)
  loss            loss.type                    infonce | siglip
  augment         augment.enabled              false | true (not on a CPU: see below)
  epochs          train.epochs                 int 4..15
  image_tower     model.spec                   the embedded image towers with shipped heads (lite, lite:b1,
                                               lite:b2), when the base model is one of them
  image_size      model.image_size             native (each tower's own) and two smaller sizes (224 → native/192/
                                               160); absent when the backend has a fixed input size

Every searched trial freezes both towers except their last `unfreeze_*` blocks (`model.freeze=both`), so the two
counts mean what they say whatever the recipe's own freeze setting; the base recipe's trial runs it untouched.
On a CPU the space has no augmentation: augmented images cannot be cached, so such a trial runs the image tower live
at every step — many times the cached recipe's time (a 20-minute emoji search spent half its budget on one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Union

from cliptune.config import Config

SIDES = ("image", "text")
MAX_UNFROZEN = 2
SIZE_FRACTIONS = (1.0, 6 / 7, 5 / 7)  # 224 → 224, 192, 160
FIXED_OVERRIDES = ("model.freeze=both", "model.preset=null", "model.vision_layers_frozen=null")


@dataclass(frozen=True)
class IntDim:
    name: str
    key: str
    low: int
    high: int

    def suggest(self, trial) -> int:
        return trial.suggest_int(self.name, self.low, self.high)

    def clamp(self, value: Any) -> int:
        return min(self.high, max(self.low, int(value)))

    def describe(self) -> dict:
        return {"key": self.key, "kind": "int", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class LogFloatDim:
    name: str
    key: str
    low: float
    high: float

    def suggest(self, trial) -> float:
        return trial.suggest_float(self.name, self.low, self.high, log=True)

    def clamp(self, value: Any) -> float:
        return min(self.high, max(self.low, float(value)))

    def describe(self) -> dict:
        return {"key": self.key, "kind": "log-uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class ChoiceDim:
    name: str
    key: str
    choices: tuple

    def suggest(self, trial) -> Any:
        return trial.suggest_categorical(self.name, list(self.choices))

    def clamp(self, value: Any) -> Any:
        return value if value in self.choices else self.choices[0]

    def describe(self) -> dict:
        return {"key": self.key, "kind": "choice", "choices": list(self.choices)}


Dimension = Union[IntDim, LogFloatDim, ChoiceDim]


@dataclass(frozen=True)
class ModelFacts:
    """What the space needs to know of the base model: blocks per tower and the input sizes it can take."""

    n_blocks: dict[str, int]
    native_image_size: int
    resizable: bool  # the backend builds its image transform for any model.image_size
    live_images_fast: bool = True  # training on a GPU: a live (augmented) image tower is affordable
    towers: tuple[str, ...] = ()  # model specs that differ from the base only in the image tower (base first)


@dataclass(frozen=True)
class SearchSpace:
    dims: tuple[Dimension, ...]

    def suggest(self, trial) -> dict[str, Any]:
        return {dim.name: dim.suggest(trial) for dim in self.dims}

    def overrides(self, params: dict[str, Any], base: Config) -> list[str]:
        """The `--set` assignments of one trial, in the space's order."""
        out = list(FIXED_OVERRIDES)
        for dim in self.dims:
            value = params[dim.name]
            out.append(f"{dim.key}={_yaml_scalar(value)}")
            if dim.key == "loss.type" and value != base.loss.type:
                out.append("loss.params={}")  # the recipe's loss parameters belong to its own loss
        return out

    def base_params(self, base: Config, facts: ModelFacts) -> dict[str, Any]:
        """The base recipe's point in the space (values outside a range are clamped to it), enqueued as trial 0."""
        return {dim.name: dim.clamp(BASE_VALUES[dim.name](base, facts)) for dim in self.dims}

    def describe(self) -> dict[str, dict]:
        return {dim.name: dim.describe() for dim in self.dims}


def _yaml_scalar(value: Any) -> str:
    """A value as `--set` reads it back (YAML): true/false, null for "the model's own"."""
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def _unfrozen(side: str) -> Callable[[Config, ModelFacts], int]:
    def value(cfg: Config, facts: ModelFacts) -> int:
        frozen = cfg.model.freeze in (side, "both")
        return getattr(cfg.model.unfreeze_last_n, side) if frozen else facts.n_blocks[side]
    return value


# How the base recipe's value of each dimension is read from its config (a registry: one line per dimension).
BASE_VALUES: dict[str, Callable[[Config, ModelFacts], Any]] = {
    "unfreeze_image": _unfrozen("image"),
    "unfreeze_text": _unfrozen("text"),
    "lr": lambda cfg, facts: cfg.train.lr,
    "head_lr": lambda cfg, facts: cfg.train.head_lr or cfg.train.lr,
    "loss": lambda cfg, facts: cfg.loss.type,
    "augment": lambda cfg, facts: cfg.augment.enabled,
    "epochs": lambda cfg, facts: cfg.train.epochs,
    "image_tower": lambda cfg, facts: cfg.model.spec,
    "image_size": lambda cfg, facts: None if cfg.model.image_size == facts.native_image_size else cfg.model.image_size,
}


def image_sizes(native: int) -> tuple[int | None, ...]:
    """None (each tower's native size) and smaller ones, multiples of 8 (what strided convolutions and patch grids
    like)."""
    smaller = [max(32, int(round(native * f / 8)) * 8) for f in SIZE_FRACTIONS[1:]]
    return (None, *dict.fromkeys(s for s in smaller if s < native))


def default_space(facts: ModelFacts) -> SearchSpace:
    """The documented space (module docstring), capped by the model's blocks and input sizes."""
    dims: list[Dimension] = [IntDim(f"unfreeze_{side}", f"model.unfreeze_last_n.{side}", 0,
                                    min(MAX_UNFROZEN, facts.n_blocks[side])) for side in SIDES]
    dims += [LogFloatDim("lr", "train.lr", 1e-5, 3e-4), LogFloatDim("head_lr", "train.head_lr", 1e-4, 3e-3),
             ChoiceDim("loss", "loss.type", ("infonce", "siglip"))]
    if facts.live_images_fast:
        dims.append(ChoiceDim("augment", "augment.enabled", (False, True)))
    dims.append(IntDim("epochs", "train.epochs", 4, 15))
    if len(facts.towers) > 1:
        dims.append(ChoiceDim("image_tower", "model.spec", tuple(facts.towers)))
    if facts.resizable:
        dims.append(ChoiceDim("image_size", "model.image_size", image_sizes(facts.native_image_size)))
    return SearchSpace(tuple(dims))


def model_facts(base: Config) -> ModelFacts:
    """Build the base model at its native size to read its blocks and input size, and once more at the next smaller
    size to learn whether the backend takes `model.image_size` at all (tiny-clip and hf: checkpoints do not)."""
    from cliptune.train.rebuild import build_model

    from cliptune.recipes.situation import device_kind

    model = build_model(_with_image_size(base, None))
    native = int(model.image_size)
    return ModelFacts(n_blocks={side: model.tower(side).n_blocks for side in SIDES}, native_image_size=native,
                      resizable=_builds_at(base, image_sizes(native)[-1]),
                      live_images_fast=device_kind(base.train.device)[0] != "cpu",
                      towers=tower_alternatives(base.model.spec))


def tower_alternatives(spec: str) -> tuple[str, ...]:
    """`spec` and the specs that swap only its image tower for another embedded one with shipped heads."""
    from cliptune.models.lite import shipped_tower_specs

    siblings = shipped_tower_specs()
    return (spec, *(s for s in siblings if s != spec)) if spec in siblings else ()


def _with_image_size(cfg: Config, size: int | None) -> Config:
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"image_size": size})})


def _builds_at(base: Config, size: int) -> bool:
    from cliptune.errors import CliptuneError
    from cliptune.train.rebuild import build_model

    try:
        return int(build_model(_with_image_size(base, size)).image_size) == size
    except (CliptuneError, TypeError, ValueError):
        return False
