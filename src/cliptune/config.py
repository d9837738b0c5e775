"""One typed configuration for a run: model / data / loss / train / eval sections, from YAML or JSON plus overrides.

Overrides use dotted paths (`--set train.lr=1e-4 --set model.freeze=image`); values are parsed as YAML scalars so
numbers, booleans, lists and null work as users expect. The fully resolved config is saved in the run directory, so a
run can always be reproduced from its own `config.yaml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cliptune.errors import UsageError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PerTower(_Section):
    image: int = 0
    text: int = 0


class ModelCfg(_Section):
    spec: str = "lite"
    embed_dim: int | None = None  # backend default (lite: 256); backends with a pretrained projection refuse it
    head: Literal["linear", "mlp"] | None = None
    head_hidden: int | None = None
    image_size: int | None = None  # backend default when None
    context_length: int | None = None
    freeze: Literal["none", "image", "text", "both"] = "none"
    unfreeze_last_n: PerTower = Field(default_factory=PerTower)

    @field_validator("unfreeze_last_n", mode="before")
    @classmethod
    def _both_towers(cls, v: Any) -> Any:
        return {"image": v, "text": v} if isinstance(v, int) else v


class DataCfg(_Section):
    path: str | None = None
    format: str | None = None
    image_root: str | None = None
    on_bad_sample: Literal["error", "skip"] = "error"
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    num_workers: int = 0
    max_train_images: int | None = None


class LossCfg(_Section):
    type: str = "infonce"
    params: dict[str, Any] = Field(default_factory=dict)


class TrainCfg(_Section):
    epochs: int = 10
    max_steps: int | None = None
    stop_at_step: int | None = None  # stop here, resumably, as if interrupted (the schedule still spans max_steps)
    batch_size: int = 64
    lr: float = 1e-4
    head_lr: float | None = None  # heads and logit scale; defaults to lr
    weight_decay: float = 0.1
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    accum_steps: int = 1
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = None  # steps; None = once per epoch
    early_stop_patience: int | None = None  # evaluations without improvement
    early_stop_metric: str = "mean_R@10"
    save_every_epoch: bool = False
    feature_cache: bool = True
    log_every: int = 10
    output_dir: str = "runs"
    name: str | None = None


class EvalCfg(_Section):
    split: str = "test"
    batch_size: int = 128
    before: bool = True
    chunk_size: int = 1024


class Config(_Section):
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    train: TrainCfg = Field(default_factory=TrainCfg)
    eval: EvalCfg = Field(default_factory=EvalCfg)

    def to_yaml(self) -> str:
        return yaml.safe_dump(json.loads(self.model_dump_json()), sort_keys=False)


def _apply_override(tree: dict, assignment: str) -> None:
    if "=" not in assignment:
        raise UsageError(f"--set expects key.path=value, got {assignment!r}")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"--set {key}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None


def read_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping with sections model/data/loss/train/eval")
    return data


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict | None = None) -> Config:
    """Defaults ← `base` ← file ← `--set` overrides, validated into a Config; errors name the offending key."""
    tree: dict = json.loads(json.dumps(base or {}))
    if path is not None:
        _deep_update(tree, read_config_file(path))
    for assignment in overrides or []:
        _apply_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as err:
        lines = [f"  {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()]
        where = f" in {path}" if path else ""
        raise UsageError(f"invalid configuration{where}:\n" + "\n".join(lines)) from None


def _deep_update(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _deep_update(dst[key], value)
        else:
            dst[key] = value
