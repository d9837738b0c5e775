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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cliptune.errors import UsageError
from cliptune.task_defaults import apply_task_defaults


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class PerTower(_Section):
    image: int = Field(0, ge=0)
    text: int = Field(0, ge=0)


class LoraCfg(_Section):
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: list[str] | dict[str, list[str]] | None = None  # module-name suffixes (per tower with a dict)


class ModelCfg(_Section):
    spec: str = "lite"
    # backend default (lite: 256); backends with a pretrained projection refuse it
    embed_dim: int | None = Field(None, ge=1)
    head: Literal["linear", "mlp"] | None = None
    head_hidden: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=1)  # backend default when None
    context_length: int | None = Field(None, ge=1)
    freeze: Literal["none", "image", "text", "both"] = "none"
    unfreeze_last_n: PerTower = Field(default_factory=PerTower)
    preset: Literal["vision-freeze", "mixfreeze", "unfreeze"] | None = None  # see models/presets.py
    vision_layers_frozen: int | None = Field(None, ge=0)  # freeze exactly the first N image blocks
    freeze_heads: bool = False  # projection heads frozen too
    head_batch_norm: bool | None = None  # mlp head with BatchNorm (composed)
    attention_pool: bool | None = None  # attention pooling of the image feature map (composed)
    lora: LoraCfg | None = None  # LoRA adapters on the towers' attention layers (models/lora.py)

    @field_validator("unfreeze_last_n", mode="before")
    @classmethod
    def _both_towers(cls, v: Any) -> Any:
        return {"image": v, "text": v} if isinstance(v, int) else v


class DataCfg(_Section):
    path: str | None = None
    format: str | None = None
    image_root: str | None = None
    on_bad_sample: Literal["error", "skip"] = "error"
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test shares, each >= 0
    split_seed: int = 0
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    # separate evaluation data (any data spec, every record of it): replaces the val/test split of data.path, and
    # is where a streamed run (which never indexes data.path) evaluates
    val_path: str | None = None
    test_path: str | None = None
    num_workers: int = Field(0, ge=0)
    max_train_images: int | None = Field(None, ge=1)
    # WebDataset shards: member extensions tried for the image (None: "jpg;jpeg;png;webp;bmp;gif;tiff;tif") and
    # caption sources, first present wins (None: "json:captions;json:caption;txt"); other formats refuse them
    wds_image_key: str | None = None
    wds_caption_key: str | None = None
    streaming: bool = False  # stream the shards of data.path (train/batches.py) instead of indexing every sample
    shuffle_buffer: int = Field(1000, ge=0)  # streaming: samples held for shuffling within a reader
    resampled: bool = False  # streaming: draw shards with replacement, endlessly (set epoch_length or max_steps)
    epoch_length: int | None = Field(None, ge=1)  # streaming + resampled: samples per epoch over all ranks
    no_duplicate_batches: bool = True  # no image or caption text twice in a batch (false negatives)
    decode_cache: bool = False  # store decoded images resized to the model's input size; later epochs read it

    @field_validator("split_ratios")
    @classmethod
    def _shares(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(x < 0 for x in v) or not any(v):
            raise ValueError(f"expected three shares >= 0, not all zero, got {list(v)}")
        return v


class LossCfg(_Section):
    type: str = "infonce"
    params: dict[str, Any] = Field(default_factory=dict)


class TrainCfg(_Section):
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    # stop here, resumably, as if interrupted (the schedule still spans max_steps)
    stop_at_step: int | None = Field(None, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-4, gt=0)
    head_lr: float | None = Field(None, gt=0)  # heads and logit scale; defaults to lr
    layer_decay: float | None = Field(None, gt=0, le=1)  # lr × decay^(depth from the top) per block (train/optim.py)
    weight_decay: float = Field(0.1, ge=0)
    warmup_steps: int = Field(50, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, ge=0)  # max gradient norm; 0 or None: no clipping
    accum_steps: int = Field(1, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = Field(None, ge=1)  # steps; None = once per epoch
    early_stop_patience: int | None = Field(None, ge=1)  # evaluations without improvement
    early_stop_metric: str = "mean_R@10"
    save_every_epoch: bool = False  # keep checkpoints/epoch_N at each epoch end
    save_every_steps: int | None = Field(None, ge=1)  # resumable checkpoints between evaluations (not `best`)
    feature_cache: bool = True
    local_loss: bool = False  # with torchrun: each process scores only its own queries (open_clip's local_loss)
    max_bad_steps: int = Field(5, ge=1)  # non-finite losses in a row before the run stops (each skips its update)
    log_every: int = Field(10, ge=1)
    output_dir: str = "runs"
    name: str | None = None
    task: Literal["retrieval", "match"] = "retrieval"  # match: labelled pairs (image_path,text,label), loss `match`
    gradcache_mini_batch: int | None = Field(None, ge=1)  # GradCache: encode at most this many pairs at a time
    match_threshold_metric: Literal["f1", "accuracy", "balanced_accuracy"] = "f1"  # tuned on val pairs
    # WiSE-FT after training (train/wise.py): mix base and fine-tuned weights, choose α on the val split
    wise_ft: bool = False
    wise_alphas: str | list[float] = "0:1:0.1"  # quoted 'start:stop:step' (ends included), "a,b,c" or a list; in [0, 1]
    wise_rule: str | None = None  # target | average | min-drop:D; None: average with wise_general, else target
    wise_general: str | None = None  # data spec of a general image–text set weighed against the target
    wise_general_split: str = "all"  # split of wise_general ("all": every record)

    @field_validator("wise_alphas", mode="before")
    @classmethod
    def _wise_alphas(cls, v: Any) -> Any:
        from cliptune.wise_rule import parse_alphas

        if isinstance(v, (int, float)) and not isinstance(v, bool):  # YAML reads unquoted 0:1:0.1 as base 60 (60.1)
            raise ValueError(f"got the number {v}: quote a range ('0:1:0.1'; unquoted, YAML reads it as a base-60 "
                             f"number) or give a list ([0, 0.5, 1])")
        try:
            parse_alphas(v)
        except UsageError as err:
            raise ValueError(str(err)) from None
        return v

    @model_validator(mode="after")
    def _wise_rule(self) -> "TrainCfg":
        from cliptune.wise_rule import parse_rule

        try:  # a rule that needs a general set fails here, before training, not after it
            parse_rule(self.wise_rule, has_general=self.wise_general is not None)
        except UsageError as err:
            raise ValueError(str(err)) from None
        return self


class EvalCfg(_Section):
    split: str = "test"
    batch_size: int = Field(16, ge=1)  # images per forward pass; small batches are faster on CPU (cache-friendly)
    before: bool = True
    probe: bool = True  # also fit the frozen towers' heads on cached features (train/probe.py): before/probe/after
    report: bool = True  # write report.html (curves, before/after galleries) at the end of training
    chunk_size: int = Field(1024, ge=1)


class AugmentCfg(_Section):
    """Training-time augmentation (`cliptune.data.augment`); never applied at evaluation."""

    enabled: bool = False
    crop_scale: tuple[float, float] | None = (0.8, 1.0)  # random resized crop: share of the area kept; None = off
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratios the crop may take
    color_jitter: float = Field(0.2, ge=0, le=1)  # brightness, contrast, saturation factors in [1-s, 1+s]
    hue: float = Field(0.0, ge=0, le=0.5)  # hue shift in [-h, h] of a full turn
    hflip: float = Field(0.5, ge=0, le=1)  # probability; skipped when a caption mentions left or right
    rotate: float = Field(0.0, ge=0, le=45)  # degrees, uniform in [-r, r], cropped to the rotated content
    templates: list[str] = Field(default_factory=list)  # e.g. ["a photo of {}"]; one drawn per caption
    template_prob: float = Field(0.5, ge=0, le=1)  # chance a caption is wrapped in a template
    word_dropout: float = Field(0.0, ge=0, lt=1)  # chance each word of a caption is dropped (one always stays)

    @field_validator("crop_scale", "crop_ratio")
    @classmethod
    def _range(cls, v: Any, info: Any) -> Any:
        top = 1.0 if info.field_name == "crop_scale" else float("inf")
        if v is not None and not (0 < v[0] <= v[1] <= top):
            raise ValueError(f"expected 0 < low <= high{' <= 1' if top == 1 else ''}, got {tuple(v)}")
        return v

    @field_validator("templates")
    @classmethod
    def _placeholder(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if "{}" not in t]
        if bad:
            raise ValueError(f"each template needs a {{}} for the caption: {bad}")
        return v

    def enabled_for(self, side: str) -> bool:
        """Whether `side` ("image" or "text") changes between epochs; a side that does must not be cached."""
        if side not in ("image", "text"):
            raise ValueError(f"side must be 'image' or 'text', got {side!r}")
        if not self.enabled:
            return False
        if side == "image":
            return (self.crop_scale is not None and self.crop_scale != (1.0, 1.0)) or self.color_jitter > 0 \
                or self.hue > 0 or self.hflip > 0 or self.rotate > 0
        return (bool(self.templates) and self.template_prob > 0) or self.word_dropout > 0


class Config(_Section):
    model: ModelCfg = Field(default_factory=ModelCfg)
    data: DataCfg = Field(default_factory=DataCfg)
    loss: LossCfg = Field(default_factory=LossCfg)
    augment: AugmentCfg = Field(default_factory=AugmentCfg)
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
    apply_task_defaults(tree)  # train.task=match picks its loss and early-stop metric; contradictions refused
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
