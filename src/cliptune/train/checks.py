"""Checks of a resolved config that need the training side's registries, run before anything is created (no run
directory, no data read): `loss.params` against the objective's own parameters, the early-stopping metric against
what the evaluator reports. Value ranges are checked by the config models themselves (`config.py`)."""

from __future__ import annotations

import difflib
import inspect

from cliptune.config import Config
from cliptune.errors import UsageError
from cliptune.train.early_stop import metric_names

MATCH_METRICS = ("accuracy", "precision", "recall", "f1", "balanced_accuracy", "roc_auc")


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_loss_params(cfg: Config) -> None:
    """Every key of loss.params must be a parameter of the chosen objective (unless it takes any keyword)."""
    from cliptune.objectives.registry import OBJECTIVES
    import cliptune.objectives  # noqa: F401  (registers the built-in objectives)

    cls = OBJECTIVES.get(cfg.loss.type)
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [name for name in params if name != "self"]
    for key in cfg.loss.params:
        if key not in accepted:
            raise UsageError(f"loss.params.{key}: loss {cfg.loss.type!r} has no parameter {key!r}"
                             f"{_did_you_mean(key, accepted)} (it takes: {', '.join(accepted) or 'none'})")


def check_metric(cfg: Config) -> None:
    """train.early_stop_metric must be a value the evaluation of this task reports."""
    name = cfg.train.early_stop_metric
    if cfg.train.task == "match":
        options = [f"match/{m}" for m in MATCH_METRICS]
        if name in options or name == type(cfg.train).model_fields["early_stop_metric"].default:
            return
    else:
        options = metric_names()
        if name in options:
            return
    raise UsageError(f"train.early_stop_metric={name!r} is not reported by the evaluation"
                     f"{_did_you_mean(name, options)} (choose from: {', '.join(options)})")


def check_config(cfg: Config) -> None:
    check_loss_params(cfg)
    check_metric(cfg)
