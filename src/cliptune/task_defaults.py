"""What `train.task` implies for the rest of the config, applied to the raw settings before validation.

`train.task: match` is a different problem from retrieval (labelled pairs, a match head, a threshold), so it picks
its own objective (`loss.type: match`) and early-stopping metric (`match/<train.match_threshold_metric>`) unless the
user set them. Settings that contradict the task (a retrieval loss or metric for match, the match loss for
retrieval) are refused here, at config time, instead of failing minutes into training.
"""

from __future__ import annotations

from cliptune.errors import UsageError

MATCH_LOSS = "match"
MATCH_METRIC_PREFIX = "match/"


def _section(tree: dict, name: str) -> dict:
    section = tree.get(name)
    return section if isinstance(section, dict) else {}


def apply_task_defaults(tree: dict) -> None:
    """Fill in and check the loss and early-stop metric for `train.task` in the raw config `tree` (in place)."""
    train, loss = _section(tree, "train"), _section(tree, "loss")
    task = train.get("task", "retrieval")
    loss_type, metric = loss.get("type"), train.get("early_stop_metric")
    if task == "match":
        if loss_type not in (None, MATCH_LOSS):
            raise UsageError(f"train.task=match trains the match head: loss.type must be 'match' (or unset), "
                             f"got {loss_type!r}")
        if metric is not None and not str(metric).startswith(MATCH_METRIC_PREFIX):
            raise UsageError(f"train.task=match evaluates match detection: train.early_stop_metric must be one of "
                             f"match/f1, match/accuracy, match/balanced_accuracy (or unset), "
                             f"got {metric!r}")
        tree.setdefault("loss", {})["type"] = MATCH_LOSS
        tree.setdefault("train", {}).setdefault(
            "early_stop_metric", MATCH_METRIC_PREFIX + str(train.get("match_threshold_metric", "f1")))
        return
    if loss_type == MATCH_LOSS:
        raise UsageError("loss.type=match needs labelled pairs: set train.task=match as well")
    if metric is not None and str(metric).startswith(MATCH_METRIC_PREFIX):
        raise UsageError(f"train.early_stop_metric={metric} is a match metric: set train.task=match as well")
