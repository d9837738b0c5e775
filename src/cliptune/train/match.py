"""The training pieces of `task: match` (labelled image–text pairs, label 1 = match), for the trainer to call.

1. `match_pairs(records)` once, on the train records loaded with `load_dataset(..., group=False)` (one record per
   CSV row): checks that every row has a 0/1 label and indexes images, texts and known matches.
2. `match_batch(pairs, index)` per step: the `labels` and `negative_mask` fields of the objective's `TrainBatch`
   (loss `match`, `objectives/match.py`).
3. `finish_match(...)` after training: tunes the head's threshold on validation pairs, scores the test pairs at that
   threshold and writes `match.json` (+ classifier weights) into the exported model folder. Export the model itself
   inside `detached_match_head(model)`: backends that save `state_dict()` (lite, composed) would otherwise write the
   head's weights into the model file, which then no longer loads strictly.
`match_training_step` is the whole step for one batch of pixels and tokens, for callers without the trainer's
feature cache.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

from cliptune.data.records import Record
from cliptune.errors import DataError
from cliptune.eval.calibration import fit_platt
from cliptune.eval.matching import match_metrics, tune_threshold
from cliptune.models.match_head import MatchHead, save_match_head
from cliptune.objectives.batch import TrainBatch


@dataclass
class MatchPairs:
    labels: torch.Tensor  # [N] float 0/1
    image_ids: torch.Tensor  # [N] long; rows showing the same image share an id
    text_ids: torch.Tensor  # [N] long; rows with the same text share an id
    positive_keys: torch.Tensor  # sorted long keys image_id * n_texts + text_id of every pair labelled 1
    n_texts: int


def check_match_labels(records: list[Record]) -> list[int]:
    """Each record's label, which must be 0 or 1; otherwise a DataError naming the file and row."""
    labels = []
    for rec in records:
        file, row = rec.sources[0] if rec.sources else (rec.image, None)
        if rec.label not in (0, 1):
            what = "no label" if rec.label is None else f"label {rec.label!r}"
            raise DataError(f"{what}: match data needs label 1 (the text fits the image) or 0 (it does not)",
                            file=file, row=row)
        if len(rec.captions) != 1:
            raise ValueError("match records hold one caption each: load them with load_dataset(..., group=False)")
        labels.append(int(rec.label))
    return labels


def match_pairs(records: list[Record]) -> MatchPairs:
    labels = check_match_labels(records)
    images: dict[str, int] = {}
    texts: dict[str, int] = {}
    image_ids = torch.tensor([images.setdefault(r.image, len(images)) for r in records], dtype=torch.long)
    text_ids = torch.tensor([texts.setdefault(r.captions[0], len(texts)) for r in records], dtype=torch.long)
    label_t = torch.tensor(labels, dtype=torch.float32)
    positive = label_t > 0.5
    keys = torch.unique(image_ids[positive] * len(texts) + text_ids[positive])
    return MatchPairs(label_t, image_ids, text_ids, keys, len(texts))


def match_batch(pairs: MatchPairs, index: torch.Tensor) -> dict[str, torch.Tensor]:
    """`labels` [B] and `negative_mask` [B, B]: (i, j) is an extra negative when row i is a match, j ≠ i, row j shows
    another image, and text j is not labelled a match for image i anywhere in the data."""
    index = torch.as_tensor(index, dtype=torch.long)
    labels = pairs.labels[index]
    img, txt = pairs.image_ids[index], pairs.text_ids[index]
    mask = (labels > 0.5).unsqueeze(1) & (img.unsqueeze(1) != img.unsqueeze(0))
    keys = img.unsqueeze(1) * pairs.n_texts + txt.unsqueeze(0)
    mask &= ~torch.isin(keys, pairs.positive_keys)
    return {"labels": labels, "negative_mask": mask}


def match_training_step(model, head: MatchHead, batch: dict, objective=None) -> dict[str, torch.Tensor]:
    """Encode `batch["pixel_values"]` and `batch["tokens"]` with grad and return the match objective's outputs
    (call `out["loss"].backward()`); `batch` also carries `labels` and optionally `negative_mask`."""
    if objective is None:
        from cliptune.objectives.match import MatchLoss

        objective = MatchLoss(head=head.kind)
    objective.use_head(head)  # the head given here, whatever the objective was attached to
    image_emb = model.encode_image(batch["pixel_values"])
    text_emb = model.encode_text(batch["tokens"])
    fields = {k: v for k, v in batch.items() if k not in ("pixel_values", "tokens")}
    return objective(image_emb.float(), text_emb.float(), model.scale(), model.logit_bias,
                     batch=TrainBatch.coerce(fields))


@contextlib.contextmanager
def detached_match_head(model):
    """Temporarily take `model.match_head` off the model (e.g. around `model.save`), putting it back afterwards."""
    head = getattr(model, "match_head", None)
    if head is not None:
        delattr(model, "match_head")  # nn.Module's public way to drop a submodule
    try:
        yield head
    finally:
        if head is not None:
            model.match_head = head


def _summary(metrics: dict | None) -> dict | None:
    return None if metrics is None else {k: v for k, v in metrics.items() if k != "pr_curve"}


def finish_match(model, head: MatchHead, tune_records: list[Record], test_records: list[Record] | None,
                 model_dir: str | Path, metric: str = "f1", progress: bool = True, batch_size: int = 64,
                 num_workers: int = 0) -> dict:
    """Tune `head.threshold` on `tune_records` (the validation pairs), evaluate `test_records` at it, and save the
    head as `match.json` in `model_dir`. Returns {"threshold", "metric", "val", "test"} (metric dicts)."""
    from cliptune.inference.match import score_pairs

    labels = check_match_labels(tune_records)
    scores = score_pairs(model, head, tune_records, batch_size, num_workers, progress).numpy()
    head.threshold = tune_threshold(scores, labels, metric)
    val = match_metrics(scores, labels, head.threshold)
    test = None
    if test_records:
        test_labels = check_match_labels(test_records)
        test_scores = score_pairs(model, head, test_records, batch_size, num_workers, progress).numpy()
        test = match_metrics(test_scores, test_labels, head.threshold)
    warning = chance_warning(val, head.kind)
    platt = fit_platt(scores, labels)
    save_match_head(head, model_dir, extra={"threshold_metric": metric, "val": _summary(val), "test": _summary(test),
                                            "warning": warning,
                                            "calibration": None if platt is None else platt.to_dict()})
    return {"threshold": head.threshold, "metric": metric, "val": val, "test": test, "warning": warning}


def at_chance(metrics: dict) -> bool:
    """Whether ROC AUC is within two standard errors of 0.5 under the no-skill hypothesis (the Mann–Whitney null
    variance (n₁+n₀+1) / (12·n₁·n₀)), or cannot be computed (one class only)."""
    auc, n_pos = metrics.get("roc_auc"), metrics.get("n_matches", 0)
    n_neg = metrics.get("n_pairs", 0) - n_pos
    if auc is None or n_pos == 0 or n_neg == 0:
        return True
    return auc - 0.5 < 2 * ((n_pos + n_neg + 1) / (12 * n_pos * n_neg)) ** 0.5


def chance_warning(val: dict, head_kind: str) -> str | None:
    """Advice when the head separates matches from mismatches no better than chance on validation."""
    if not at_chance(val):
        return None
    auc = "n/a" if val.get("roc_auc") is None else f"{val['roc_auc']:.3f}"
    advice = ["train longer (train.epochs or train.max_steps)", "raise train.head_lr",
              "check that the labels are right (1 = the text fits the image)"]
    if head_kind != "score":
        advice.insert(0, "use loss.params.head=score (it starts from the model's own similarity, while a "
                         "classifier head starts from scratch)")
    return (f"the match head is at chance on validation (ROC AUC {auc} on {val.get('n_pairs', 0)} pairs): "
            + "; ".join(advice))


def match_run_record(model_dir: str | Path, after: dict, before: dict | None, **provenance) -> dict:
    """metrics.json of a match run: the tuned threshold and the metric it was tuned for, validation metrics (from
    the saved `match.json`) and test metrics (`after`, `before`) with P/R/F1/ROC AUC/confusion matrix."""
    import json

    from cliptune.models.match_head import MATCH_FILE, match_dir

    folder = match_dir(model_dir)
    meta = json.loads((folder / MATCH_FILE).read_text()) if folder is not None else {}
    payload = {"match": after["match"], "threshold": meta.get("threshold"),
               "threshold_metric": meta.get("threshold_metric"), "val": {"match": meta.get("val")},
               "test": {"match": after["match"]}, **provenance}
    if meta.get("warning"):
        payload["warnings"] = [meta["warning"]]
    if before is not None:
        payload["before"] = {"match": before["match"]}
    return payload
