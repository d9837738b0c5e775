"""Rebuild what a run trained on, from its config: the data with its separate val/test sets, the base model with
the objective's extra parameters. `train`, `eval`, `report`, `wise` and `index` all call this module, so a later command
reads exactly the splits and the starting weights the run used (`--val-data`/`--test-data` included).

This is the only training module that touches the model registry; `trainer.py` sees nothing but the DualEncoder.
"""

from __future__ import annotations

from pathlib import Path

from cliptune.config import Config, load_config
from cliptune.data.records import Dataset, Record
from cliptune.errors import UsageError


def run_config(path: str | Path) -> Config | None:
    """The resolved config of a run directory, or None when `path` is not one (e.g. an exported model folder)."""
    config = Path(path) / "config.yaml"
    return load_config(config) if config.is_file() else None


def is_run_data(cfg: Config, spec: str | None) -> bool:
    """Whether `spec` (None: not given) names the run's own training data."""
    return spec is None or (cfg.data.path is not None and str(Path(spec)) == str(Path(cfg.data.path)))


def load_run_data(cfg: Config, group: bool | None = None) -> Dataset:
    """The run's data as training saw it: data.path read and split with the run's reader options, ratios and seed,
    its val/test splits replaced by data.val_path/data.test_path when given (a streamed run: only those)."""
    from cliptune.data.eval_sets import with_eval_sets
    from cliptune.data.load import load_dataset

    d = cfg.data
    group = cfg.train.task != "match" if group is None else group
    if d.streaming:  # the shards are streamed by the trainer, never indexed; evaluation reads its own data
        return with_eval_sets(None, d, group=group)
    if not d.path:
        raise UsageError("no training data: set data.path in the config or pass --data")
    data = load_dataset(d.path, format=d.format, image_root=d.image_root, on_bad_sample=d.on_bad_sample,
                        split_ratios=d.split_ratios, seed=d.split_seed, group=group,
                        format_options={"image_key": d.wds_image_key, "caption_key": d.wds_caption_key})
    return with_eval_sets(data, d, group=group)


def run_split(cfg: Config, split: str, data: Dataset | None = None) -> list[Record]:
    """One split of the run's data (`data` when already loaded); an empty split is a UsageError."""
    data = data if data is not None else load_run_data(cfg)
    records = data.records if split == "all" else data.split(split)
    if not records:
        raise UsageError(f"split {split!r} of {data.source} is empty (splits: {data.splits})")
    return records


def model_kwargs(cfg: Config) -> dict:
    """Architecture options for backends that build heads (lite, composed); None means the backend's default."""
    m = cfg.model
    kw = {"embed_dim": m.embed_dim, "head": m.head, "head_hidden": m.head_hidden, "image_size": m.image_size,
          "context_length": m.context_length, "head_batch_norm": m.head_batch_norm, "attention_pool": m.attention_pool}
    return {k: v for k, v in kw.items() if v is not None}


def build_model(cfg: Config):
    """The model to train: model.spec with the run's architecture options, LoRA adapters added."""
    from cliptune.models.registry import load_model

    kwargs = model_kwargs(cfg)
    try:
        model = load_model(cfg.model.spec, **kwargs)
    except TypeError as err:
        raise UsageError(f"model {cfg.model.spec!r} does not take the options {sorted(kwargs)} ({err}); leave "
                         f"model.embed_dim/head/head_batch_norm/attention_pool/image_size/context_length unset "
                         f"for it") from None
    if cfg.model.lora is not None:  # before the freeze plan, so the plan sees the adapters
        from cliptune.models.lora import apply_lora

        apply_lora(model, cfg.model.lora)
    return model


def base_model(cfg: Config, seeded: bool = True):
    """The model the run started from, as training built it (same architecture options; seeded by train.seed), with
    the objective's extra parameters attached (SigLIP's logit bias, the match head), so its weights line up with the
    fine-tuned model's for WiSE-FT and it scores as the run's baseline did."""
    import torch

    from cliptune.models.registry import load_model
    from cliptune.objectives import build_objective
    from cliptune.objectives.hooks import attach_objective

    with torch.random.fork_rng(devices=[]):
        if seeded:
            torch.manual_seed(cfg.train.seed)
        model = load_model(cfg.model.spec, **model_kwargs(cfg))
        attach_objective(build_objective(cfg.loss.type, **cfg.loss.params), model)
    return model
