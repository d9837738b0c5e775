"""LoRA (Hu et al. 2021) on the trunk blocks of any backend, through peft, merged back into the weights for export.

`apply_lora(model, cfg)` injects low-rank adapters into the attention projections of every tower's trunk blocks
(`DEFAULT_TARGETS`, by the class of the attention module: transformers CLIP/SigLIP/BERT, open_clip, timm,
`nn.MultiheadAttention`) or into the modules named by `cfg.targets`. Afterwards the freeze plan (`models/freeze.py`)
sees the adapters: base weights are frozen, only adapters, heads and the logit scale train, and a tower without any
adapter (a CNN without targets) is frozen whole and served from the feature cache.

`merge_lora(model)` folds every adapter into its base weight (W + BA·α/r) and puts the plain module back, so an
export is the backend's ordinary format that any open_clip/transformers/timm user can load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from cliptune.errors import UsageError
from cliptune.models.base import DualEncoder
from cliptune.utils.registry import Registry

SIDES = ("image", "text")

# Attention module class (top-level package + class name) → the submodules inside it that get adapters
# ("" = the module itself; peft adapts nn.MultiheadAttention as a whole, in_proj and out_proj).
DEFAULT_TARGETS: Registry[tuple[str, ...]] = Registry("LoRA target family")
for _cls in ("CLIPAttention", "SiglipAttention"):
    DEFAULT_TARGETS.register(f"transformers.{_cls}")(("q_proj", "k_proj", "v_proj", "out_proj"))
for _cls in ("BertAttention", "RobertaAttention", "XLMRobertaAttention", "CamembertAttention"):
    DEFAULT_TARGETS.register(f"transformers.{_cls}")(("self.query", "self.key", "self.value", "output.dense"))
DEFAULT_TARGETS.register("timm.Attention")(("qkv", "proj"))
DEFAULT_TARGETS.register("open_clip.Attention")(("out_proj",))  # its q/k/v is a bare in_proj_weight parameter
DEFAULT_TARGETS.register("torch.MultiheadAttention")(("",))


@dataclass
class LoraSettings:
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] | dict[str, list[str]] | None = None  # module-name suffixes; per tower with a dict
    adapted: dict[str, list[str]] = field(default_factory=dict)  # filled by apply_lora: tower → module names


def _family(module: nn.Module) -> str:
    return f"{type(module).__module__.split('.')[0]}.{type(module).__name__}"


def _block_members(tower) -> set[int]:
    return {id(m) for block in tower.trunk_blocks() for m in block.modules()}


def target_names(tower, targets: list[str] | None) -> list[str]:
    """Names (relative to the tower) of the modules inside its trunk blocks that get adapters."""
    inside = _block_members(tower)
    names: list[str] = []
    modules = dict(tower.named_modules())
    for name, module in modules.items():
        if id(module) not in inside:
            continue
        if targets is not None:
            if any(name == t or name.endswith("." + t) for t in targets):
                names.append(name)
        elif _family(module) in DEFAULT_TARGETS:
            for child in DEFAULT_TARGETS.get(_family(module)):
                full = f"{name}.{child}" if child else name
                if full in modules:
                    names.append(full)
    return names


def _settings(cfg: Any) -> LoraSettings:
    if isinstance(cfg, LoraSettings):
        return cfg
    data = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
    return LoraSettings(**{k: v for k, v in data.items() if k in ("r", "alpha", "dropout", "targets")})


def apply_lora(model: DualEncoder, cfg: Any) -> LoraSettings:
    """Inject adapters into both towers' trunk blocks; returns the settings with the adapted module names."""
    from peft import LoraConfig, inject_adapter_in_model

    settings = _settings(cfg)
    if settings.r <= 0:
        raise UsageError(f"model.lora.r must be positive, got {settings.r}")
    for side in SIDES:
        targets = settings.targets.get(side) if isinstance(settings.targets, dict) else settings.targets
        if isinstance(settings.targets, dict) and targets is None:
            continue  # a per-tower dict without this tower: no adapters here
        tower = model.tower(side)
        names = target_names(tower, targets)
        if not names:
            continue
        config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                            target_modules=names, bias="none")
        inject_adapter_in_model(config, tower)
        settings.adapted[side] = names
    if not settings.adapted:
        raise UsageError(f"model.lora: no module to adapt in {model.spec!r} "
                         f"(targets={settings.targets!r}; the default targets are attention projections)")
    for side in SIDES:  # peft leaves a config behind; the tower is not a peft model
        tower = model.tower(side)
        if "peft_config" in tower.__dict__:
            del tower.__dict__["peft_config"]
    return settings


def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weights and restore the plain modules; returns how many were merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuners = {name for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)}
    outermost = [n for n in tuners if not any(n.startswith(t + ".") for t in tuners)]
    for name in outermost:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = getattr(parent, child)
        if hasattr(layer, "unload_and_optionally_merge_module"):  # nn.MultiheadAttention's special unloading
            plain = layer.unload_and_optionally_merge_module(merge=True, safe_merge=True, adapter_names=None)
        else:
            layer.merge(safe_merge=True)
            plain = layer.get_base_layer()
        setattr(parent, child, plain)
    return len(outermost)


def export_model(model: DualEncoder, directory) -> None:
    """Merge adapters (if any) and write the backend's native export."""
    merge_lora(model)
    model.save(directory)


__all__ = ["DEFAULT_TARGETS", "LoraSettings", "apply_lora", "export_model", "merge_lora", "target_names"]
