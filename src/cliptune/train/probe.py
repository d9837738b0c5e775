"""The probe: is fine-tuning worth more than re-fitting the heads? Both towers stay exactly as loaded; only the
model's own heads (its towers' `head_modules()`), logit scale and, when the objective has one, logit bias are fitted,
starting from their loaded values, on cached k = 0 features (train/probe_features.py).

It is the cheap baseline of linear-probe evaluation (Radford et al. 2021, §3.2; Kumar et al. 2022, "Fine-Tuning can
Distort Pretrained Features", for linear probing as the reference fine-tuning must beat), trained contrastively with
the run's own objective and batches, and chosen the way the run chooses its checkpoint: the heads with the best
`train.early_stop_metric` on the validation split, evaluated every epoch (the loaded heads count as epoch 0). The
test split is embedded once, after the choice. A tight loop over feature tensors: no Trainer, no checkpoint, no
history.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field

import torch
from torch.nn import functional as F

from cliptune.config import Config
from cliptune.data.records import Dataset, Record
from cliptune.eval.retrieval import retrieval_metrics
from cliptune.inference.embed import suffix_batched
from cliptune.inference.evaluate import Scored, score_embeddings
from cliptune.models.base import DualEncoder
from cliptune.models.freeze import SIDES
from cliptune.objectives import attach_objective, build_objective
from cliptune.objectives.batch import TrainBatch
from cliptune.train.batches import IndexedBatches
from cliptune.train.distributed import DistContext
from cliptune.train.early_stop import EarlyStopping, metric_value
from cliptune.train.feature_cache import select
from cliptune.train.optim import build_optimizer
from cliptune.train.precision import resolve_device
from cliptune.train.probe_features import ProbeFeatures, SplitFeatures
from cliptune.train.rebuild import build_model
from cliptune.train.schedule import build_scheduler
from cliptune.train.setup import split_records

DEFAULT_PROBE_LR = 1e-3


@dataclass(frozen=True)
class ProbeSettings:
    """The probe's fixed budget; written into metrics.json so the number can be reproduced."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = DEFAULT_PROBE_LR  # AdamW, cosine to 0, no warmup
    weight_decay: float = 0.1
    seed: int = 0
    selection_metric: str = "mean_R@10"
    selection_split: str = "val"

    @classmethod
    def from_config(cls, cfg: Config, epochs: int = 20) -> "ProbeSettings":
        t = cfg.train
        return cls(epochs=epochs, batch_size=t.batch_size, lr=t.head_lr or DEFAULT_PROBE_LR,
                   weight_decay=t.weight_decay, seed=t.seed, selection_metric=t.early_stop_metric,
                   selection_split=cfg.data.val_split)


@dataclass
class ProbeResult:
    settings: ProbeSettings
    test: Scored  # the chosen heads on the test split, with per-query ranks
    model: DualEncoder  # the loaded model with the chosen heads (for an independent evaluation)
    best_epoch: int  # 0: the loaded heads were never beaten on validation
    val_curve: list[float] = field(default_factory=list)  # selection metric per epoch, epoch 0 first
    feature_source: dict[str, str] = field(default_factory=dict)
    features_s: float = 0.0
    wall_s: float = 0.0

    def block(self) -> dict:
        """The probe's extras in metrics.json (next to its metrics record)."""
        s = self.settings
        selection = {"split": s.selection_split if self.val_curve else None, "metric": s.selection_metric,
                     "best_epoch": self.best_epoch,
                     "val_curve": [round(v, 6) for v in self.val_curve]}
        return {"settings": asdict(s), "selection": selection, "features": self.feature_source,
                "features_s": round(self.features_s, 2), "wall_s": round(self.wall_s, 2)}


def fresh_model(cfg: Config, device: torch.device) -> tuple[DualEncoder, torch.nn.Module]:
    """The model as loaded (rebuild.build_model, seeded) with the run's objective attached, towers frozen."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg).to(device)
        objective = build_objective(cfg.loss.type, **cfg.loss.params).to(device)
        attach_objective(objective, model)  # SigLIP's bias where the model has none, as the run started
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for t in head_tensors(model, parameters_only=True):
        t.requires_grad_(True)
    return model, objective


def head_tensors(model: DualEncoder, parameters_only: bool = False) -> list[torch.Tensor]:
    """What the probe fits (and snapshots): the towers' head modules, the logit scale and bias (and, for a
    snapshot, the heads' buffers, e.g. a BatchNorm's running statistics)."""
    out: list[torch.Tensor] = []
    for side in SIDES:
        for module in model.tower(side).head_modules():
            out += list(module.parameters())
            if not parameters_only:
                out += list(module.buffers())
    out += [p for p in (model.logit_scale, model.logit_bias) if p is not None]
    return out


def _set_heads_mode(model: DualEncoder, training: bool) -> None:
    for side in SIDES:
        for module in model.tower(side).head_modules():
            module.train(training)


def embed(model: DualEncoder, feats: SplitFeatures, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised embeddings of a split's k = 0 features through the current heads."""
    return (suffix_batched(model.image_tower, feats.image, 0, batch_size),
            suffix_batched(model.text_tower, feats.text, 0, batch_size))


def val_score(model: DualEncoder, val: SplitFeatures, metric: str, chunk_size: int) -> float:
    image_emb, text_emb = embed(model, val)
    metrics = retrieval_metrics(image_emb, text_emb, val.captions.text_to_image, chunk_size=chunk_size)
    return metric_value(metrics, metric)


def _train_epoch(model, objective, optimizer, scheduler, batches: IndexedBatches, train: SplitFeatures,
                 epoch: int) -> None:
    device = model.logit_scale.device
    _set_heads_mode(model, True)
    for group, _ in batches.epoch(epoch, 0):
        for mb in group:  # accum_steps is 1: one micro-batch per step
            image = {k: v.to(device) for k, v in select(train.image, mb.image_index).items()}
            text = {k: v.to(device) for k, v in select(train.text, mb.caption_index).items()}
            img = F.normalize(model.image_tower.suffix(image, 0), dim=-1).float()
            txt = F.normalize(model.text_tower.suffix(text, 0), dim=-1).float()
            batch = TrainBatch(epoch=epoch, image_index=mb.image_index, caption_index=mb.caption_index)
            loss = objective(img, txt, model.scale(), model.logit_bias, batch=batch)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    _set_heads_mode(model, False)


def _fit(cfg: Config, s: ProbeSettings, model, objective, train_records: list[Record], train: SplitFeatures,
         val: SplitFeatures | None) -> tuple[int, list[float]]:
    """Train the heads for `s.epochs` epochs; leave the model holding the heads chosen on `val` (or the last)."""
    batches = IndexedBatches(train_records, train.captions, batch_size=s.batch_size, accum_steps=1,
                             seed=s.seed, no_duplicates=cfg.data.no_duplicate_batches, image_dataset=None,
                             num_workers=0, pin_memory=False, dctx=DistContext())
    optimizer = build_optimizer(model, s.lr, s.weight_decay, s.lr)
    scheduler = build_scheduler(optimizer, 0, batches.steps_per_epoch * s.epochs, 0.0)
    stopper, curve = EarlyStopping(None, s.selection_metric), []
    best = [t.detach().clone() for t in head_tensors(model)]

    def evaluate(epoch: int) -> None:
        nonlocal best
        if val is None:
            return
        curve.append(val_score(model, val, s.selection_metric, cfg.eval.chunk_size))
        if stopper.update(curve[-1], epoch):
            best = [t.detach().clone() for t in head_tensors(model)]

    evaluate(0)
    for epoch in range(s.epochs):
        _train_epoch(model, objective, optimizer, scheduler, batches, train, epoch)
        evaluate(epoch + 1)
    if val is None:
        return s.epochs, curve
    with torch.no_grad():
        for t, saved in zip(head_tensors(model), best):
            t.copy_(saved)
    return stopper.best_step, curve


@contextlib.contextmanager
def one_cpu_thread(device: torch.device):
    """Head-sized matmuls gain nothing from intra-op threads on a CPU, and on a busy one the threads' hand-offs
    dominate: the emoji probe fit took 118 s with 2 threads and 8 s with 1 on a loaded 2-core machine."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def fit_probe(cfg: Config, data: Dataset, progress: bool = False, epochs: int = 20) -> ProbeResult:
    """Fit and choose the probe's heads, then evaluate them once on the run's test split (`cfg.eval.split`)."""
    start = time.time()
    s = ProbeSettings.from_config(cfg, epochs)
    train_records, val_records, test_records = split_records(cfg, data)  # the splits the run itself used
    if not train_records or not test_records:
        raise ValueError("the probe needs an indexed training split and a test split")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        model, objective = fresh_model(cfg, resolve_device(cfg.train.device))
        features = ProbeFeatures(model, cfg, progress=progress)
        train = features.split(train_records)
        val = features.split(val_records) if val_records else None
        features_s = time.time() - start
        with one_cpu_thread(model.logit_scale.device):
            best_epoch, curve = _fit(cfg, s, model, objective, train_records, train, val)
        test = features.split(test_records)  # the test split is read only now, after the choice
        image_emb, text_emb = embed(model, test)
    scored = score_embeddings(image_emb, text_emb, test.captions, chunk_size=cfg.eval.chunk_size)
    return ProbeResult(s, scored, model, best_epoch, curve, dict(features.source), features_s, time.time() - start)
