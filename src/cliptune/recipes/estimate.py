"""Wall-time estimate of a run from a short timing probe, before anything is trained.

A few real steps are timed on a copy of the model (same freeze plan, objective and optimiser, a small batch scaled
to the run's batch size), and the frozen prefix and trainable suffix are timed per image and per caption. With the
run's sizes these give: feature extraction still to do (nothing when the on-disk cache already holds it), training
steps (an upper bound: early stopping may end sooner) and evaluations (before, every validation, after, probe).
The probe costs seconds and changes nothing: the copy is thrown away and the random stream is restored.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass

import torch

from cliptune.config import Config
from cliptune.data.records import Record
from cliptune.models.freeze import FreezePlan, apply_freeze

SAMPLE_IMAGES = 16  # images timed (and tiled into the probe's batches)
PROBE_BATCH = 16  # batch of the timed steps; the step time is scaled to train.batch_size
TIMED_STEPS = 3  # the first is a warm-up and not counted


@dataclass(frozen=True)
class Timings:
    """Seconds per item (image or caption) or per optimisation step at the run's batch size."""

    decode: float
    image_prefix: float
    image_suffix: float
    text_prefix: float
    text_suffix: float
    step: float


@dataclass(frozen=True)
class Estimate:
    features_s: float  # frozen-prefix features still to compute
    train_s: float  # all optimisation steps
    eval_s: float  # every evaluation of the run
    timings: Timings

    @property
    def total_s(self) -> float:
        return self.features_s + self.train_s + self.eval_s

    def as_dict(self) -> dict:
        return {**asdict(self), "total_s": self.total_s}

    def describe(self) -> str:
        return (f"estimated wall time ≈ {format_duration(self.total_s)} (features {format_duration(self.features_s)},"
                f" training {format_duration(self.train_s)}, evaluation {format_duration(self.eval_s)}; "
                f"{self.timings.step:.2f} s per step)")


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _tile(features: dict, n: int) -> dict:
    """`n` rows from the sample's rows, repeated."""
    rows = next(iter(features.values())).shape[0]
    index = torch.arange(n) % rows
    return {k: v[index] for k, v in features.items()}


def _sample_inputs(model, records: list[Record]) -> tuple[float, torch.Tensor, dict]:
    """Decoded pixels of the sample images (and the decode time per image) and tokens of their captions."""
    from cliptune.inference.embed import image_batches

    sample = records[:SAMPLE_IMAGES]
    seconds, pixels = _timed(lambda: next(iter(image_batches(model, sample, batch_size=len(sample)))))
    texts = [c for r in sample for c in r.captions][:PROBE_BATCH * 4]
    return seconds / len(sample), pixels, model.tokenize(texts)


@torch.inference_mode()
def _frozen_costs(model, plan: FreezePlan, pixels: torch.Tensor, tokens: dict) -> tuple[list[float], dict, dict]:
    """Per-item seconds of each tower's prefix and suffix (second of two runs: the first warms up), and the
    sample's prefix features."""
    model.eval()
    costs, feats = [], {}
    for side, inputs in (("image", {"pixel_values": pixels}), ("text", tokens)):
        tower, k = model.tower(side), plan.k[side]
        n = next(iter(inputs.values())).shape[0]
        tower.prefix(inputs, k)
        t_prefix, feats[side] = _timed(lambda: tower.prefix(inputs, k))
        tower.suffix(feats[side], k)
        t_suffix, _ = _timed(lambda: tower.suffix(feats[side], k))
        costs += [t_prefix / n, t_suffix / n]
    return costs, feats["image"], feats["text"]


def _trainable_copy(model):
    """A copy whose tensors are its own; tokenizers, transforms and configs (read-only here) are shared, since
    copying a fast tokenizer costs more than the probe itself."""
    shared = {}
    for module in model.modules():
        for key, value in vars(module).items():
            if not key.startswith("_") and not isinstance(value, (torch.nn.Module, torch.Tensor, int, float, str)):
                shared[id(value)] = value
    return copy.deepcopy(model, shared)


def _step_seconds(cfg: Config, model, plan: FreezePlan, inputs: dict, cached: dict) -> float:
    """One optimisation step at the probe batch on a throw-away copy; live (uncached) sides run their prefix too."""
    from cliptune.objectives import build_objective
    from cliptune.objectives.batch import TrainBatch
    from cliptune.objectives.hooks import attach_objective

    m = _trainable_copy(model).train()
    apply_freeze(m, plan)
    objective = build_objective(cfg.loss.type, **cfg.loss.params)
    attach_objective(objective, m)
    optimizer = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-12)
    b = min(PROBE_BATCH, cfg.train.batch_size)
    batch = {side: _tile(inputs[side], b) for side in inputs}

    def embed(side: str) -> torch.Tensor:
        tower, k = m.tower(side), plan.k[side]
        feats = batch[side] if cached[side] else tower.prefix(batch[side], k)
        return torch.nn.functional.normalize(tower.suffix(feats, k), dim=-1).float()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = objective(embed("image"), embed("text"), m.scale(), m.logit_bias, batch=TrainBatch(epoch=0))
        out["loss"].backward()
        optimizer.step()

    times = [_timed(step)[0] for _ in range(TIMED_STEPS)]
    return sum(times[1:]) / (len(times) - 1) * cfg.train.batch_size / b


def time_probe(cfg: Config, model, plan: FreezePlan, train: list[Record], cached: dict) -> Timings:
    """Time the run's pieces on a few training images; `cached[side]` says whether a side reads cached features."""
    with torch.random.fork_rng(devices=[]):
        was_training = model.training
        decode, pixels, tokens = _sample_inputs(model, train)
        costs, image_feats, text_feats = _frozen_costs(model, plan, pixels, tokens)
        inputs = {"image": image_feats if cached["image"] else {"pixel_values": pixels},
                  "text": text_feats if cached["text"] else tokens}
        step = _step_seconds(cfg, model, plan, inputs, cached)
        model.train(was_training)
    live_decode = 0.0 if cached["image"] else decode * cfg.train.batch_size
    return Timings(decode, *costs, step=step + live_decode)


@dataclass(frozen=True)
class Splits:
    train: list[Record]
    val: list[Record]
    test: list[Record]


def _n_captions(records: list[Record]) -> int:
    return len({c for r in records for c in r.captions})


def _features_seconds(t: Timings, splits: Splits, cached: dict, on_disk) -> float:
    """Prefix passes still to run: each split's entry of each cached side that the disk cache lacks."""
    total = 0.0
    for records in (splits.train, splits.val, splits.test):
        if records and cached["image"] and not on_disk("image", records):
            total += len(records) * (t.decode + t.image_prefix)
        if records and cached["text"] and not on_disk("text", records):
            total += _n_captions(records) * t.text_prefix
    return total


def _eval_seconds(t: Timings, records: list[Record], cached: dict) -> float:
    image = t.image_suffix if cached["image"] else t.decode + t.image_prefix + t.image_suffix
    text = t.text_suffix if cached["text"] else t.text_prefix + t.text_suffix
    return len(records) * image + _n_captions(records) * text


def estimate_run(cfg: Config, t: Timings, splits: Splits, steps: int, cached: dict, on_disk) -> Estimate:
    """`on_disk(side, records)` says whether the feature cache already holds that side of those records."""
    tc = cfg.train
    n_val_evals = (tc.epochs if tc.eval_every is None else max(1, steps // tc.eval_every)) if splits.val else 0
    n_test_evals = (1 + int(cfg.eval.before)) if splits.test else 0
    eval_s = n_val_evals * _eval_seconds(t, splits.val, cached) + n_test_evals * _eval_seconds(t, splits.test,
                                                                                               cached)
    if cfg.eval.probe and splits.test:  # its pooled features come from the cached ones
        everything = splits.train + splits.val + splits.test
        eval_s += len(everything) * t.image_suffix + _n_captions(everything) * t.text_suffix
    return Estimate(features_s=_features_seconds(t, splits, cached, on_disk), train_s=steps * t.step, eval_s=eval_s,
                    timings=t)
