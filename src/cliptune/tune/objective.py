"""One trial = one ordinary training run (`train_run`) of the base recipe with the trial's overrides, in
`<tune dir>/trials/<number>/`, evaluated on the validation split only.

A trial's config points its evaluation split at the validation split (`data.test_split` and `eval.split` = the val
split name, `data.test_path` = `data.val_path`), with no `before`, report or probe: the test split is never read by
a trial. The objective value is the run's `after` (its best checkpoint, chosen on validation) on that split, measured
by the search metric, which is also the run's `train.early_stop_metric`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import optuna

from cliptune.config import Config, load_config
from cliptune.errors import CliptuneError
from cliptune.train.callbacks.interrupt import Interrupted
from cliptune.tune.budget import Deadline
from cliptune.tune.budget_callback import BudgetExhausted, BudgetGuard
from cliptune.tune.deadline_timer import DeadlineReached, DeadlineTimer
from cliptune.tune.pruning import OptunaPruning
from cliptune.tune.space import SearchSpace
from cliptune.tune.study import BASE_ATTR, TRIALS_DIR


class TrialFailed(CliptuneError):
    """A trial's run failed (a setting combination that cannot train, a runtime error): the trial is marked failed
    and the search goes on."""


@dataclass
class TrialEnv:
    """What every trial of one search shares."""

    tune_dir: Path
    base: dict[str, Any]  # the base config tree
    base_cfg: Config
    space: SearchSpace
    metric: str
    deadline: Deadline
    clock: Callable[[], float] = time.monotonic
    extra_callbacks: list = field(default_factory=list)  # more trainer callbacks (tests observe trials with them)


def isolated_tree(env: TrialEnv, number: int) -> dict[str, Any]:
    """The base tree with the trial's run directory and its evaluation confined to the validation split."""
    tree = json.loads(json.dumps(env.base))
    data, ev, train = (tree.setdefault(k, {}) for k in ("data", "eval", "train"))
    val = env.base_cfg.data.val_split
    data.update({"test_split": val, "test_path": env.base_cfg.data.val_path})
    ev.update({"split": val, "before": False, "report": False, "probe": False})
    train.update({"output_dir": str(Path(env.tune_dir) / TRIALS_DIR), "name": str(number),
                  "early_stop_metric": env.metric, "stop_at_step": None})
    return tree


def trial_config(env: TrialEnv, trial: optuna.Trial) -> tuple[Config, list[str]]:
    """The trial's config: the base recipe untouched for the base trial, else the space's overrides on it."""
    from cliptune.train.checks import check_config

    params = env.space.suggest(trial)
    overrides = [] if trial.user_attrs.get(BASE_ATTR) else env.space.overrides(params, env.base_cfg)
    cfg = load_config(None, overrides, base=isolated_tree(env, trial.number))
    check_config(cfg)
    return cfg, overrides


def run_trial(env: TrialEnv, trial: optuna.Trial) -> float:
    """Train the trial's config; its value is the validation metric of its best checkpoint."""
    from cliptune.train.early_stop import metric_value

    started = env.clock()
    try:
        cfg, overrides = trial_config(env, trial)
        trial.set_user_attr("overrides", overrides)
        result = _train(env, trial, cfg)
    except BudgetExhausted as stop:
        trial.set_user_attr("stopped_by", f"budget: {stop}")
        raise
    except DeadlineReached as stop:
        trial.set_user_attr("stopped_by", f"budget: {stop}")
        raise BudgetExhausted(str(stop)) from None
    except optuna.TrialPruned as stop:
        trial.set_user_attr("stopped_by", f"pruner: {stop}")
        raise
    except Interrupted:
        raise
    except CliptuneError as err:
        trial.set_user_attr("fail_reason", str(err))
        raise TrialFailed(str(err)) from err
    finally:
        trial.set_user_attr("wall_s", round(env.clock() - started, 3))
    if result.after is None:
        raise TrialFailed(f"trial {trial.number}: its run ended without a validation evaluation")
    trial.set_user_attr("best_step", result.best_step)
    trial.set_user_attr("steps", result.steps)
    return float(metric_value(result.after, env.metric))


def _train(env: TrialEnv, trial: optuna.Trial, cfg: Config):
    """`train_run` with the pruning and budget callbacks, under the deadline timer (disarmed before anything else
    writes to the study)."""
    from cliptune.train.run import train_run
    from cliptune.train.rundir import RunDir

    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    timer = DeadlineTimer(env.deadline)
    callbacks = [OptunaPruning(trial, shield=timer.shielded), BudgetGuard(env.deadline, clock=env.clock),
                 *env.extra_callbacks]
    timer.arm()
    try:
        return train_run(cfg, run, progress=False, console=None, callbacks=callbacks)
    finally:
        timer.disarm()
