"""The search loop: one trial at a time while the budget allows, then the leaderboard, the plot and the winner's one
evaluation on the test split (metrics.json).

A new trial starts only when the time left is at least the fastest complete trial's wall time (a shorter remainder
could not finish one); a running trial that would overrun the deadline is stopped by `BudgetGuard`. The budget spent
is written to tune.json at every validation evaluation and after every trial, so a resumed search gets the rest.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import optuna
from optuna.trial import TrialState

from cliptune.errors import CliptuneError
from cliptune.train.callbacks.base import Callback
from cliptune.train.callbacks.interrupt import Interrupted
from cliptune.train.lock import RunLock
from cliptune.tune.budget import Deadline, format_seconds
from cliptune.tune.final import FinalEvaluation, final_evaluation, tune_metrics_payload
from cliptune.tune.leaderboard import LEADERBOARD_FILE, Entry, leaderboard, settings_text, write_leaderboard
from cliptune.tune.objective import TrialEnv, TrialFailed, run_trial
from cliptune.tune.plot import PLOT_FILE, write_plot
from cliptune.tune.settings import TuneSettings
from cliptune.tune.setup import space_of
from cliptune.tune.study import (BASE_ATTR, fail_stale_trials, finished_trials, has_base_trial, open_study,
                                 trial_dir)
from cliptune.utils.atomic import write_json_atomic


@dataclass
class TuneResult:
    tune_dir: Path
    entries: list[Entry]
    winner: int | None
    final: FinalEvaluation | None = None
    stop_reason: str = ""
    stale: list[int] = field(default_factory=list)


class RecordSpent(Callback):
    """Keeps tune.json's `spent_s` current during a trial, so a kill loses little of the budget's accounting."""

    def __init__(self, settings: TuneSettings, tune_dir: Path, deadline: Deadline):
        self.settings, self.tune_dir, self.deadline = settings, tune_dir, deadline

    def on_evaluate(self, ctx, state, evaluation) -> None:
        save_spent(self.settings, self.tune_dir, self.deadline)


def save_spent(settings: TuneSettings, tune_dir: Path, deadline: Deadline) -> None:
    settings.spent_s = round(deadline.spent(), 3)
    settings.save(tune_dir)


def stop_reason(study: optuna.Study, deadline: Deadline, max_trials: int | None) -> str | None:
    """Why no further trial should start, or None."""
    done = finished_trials(study)
    if max_trials is not None and len(done) >= max_trials:
        return f"{len(done)} trials run (--max-trials {max_trials})"
    remaining = deadline.remaining()
    if remaining <= 0:
        return "the budget is spent"
    walls = [t.user_attrs["wall_s"] for t in done if t.state == TrialState.COMPLETE and "wall_s" in t.user_attrs]
    if walls and remaining < min(walls):
        return (f"{format_seconds(remaining)} left, less than the fastest complete trial "
                f"({format_seconds(min(walls))})")
    return None


def last_finished(study: optuna.Study) -> optuna.trial.FrozenTrial:
    """The trial that ended last (enqueued trials waiting to run may carry higher numbers)."""
    return max(finished_trials(study), key=lambda t: (t.datetime_complete, t.number))


def _say_trial(console, study: optuna.Study, metric: str) -> None:
    if console is None:
        return
    t = last_finished(study)
    score = f"val {metric} {t.value:.4f}" if t.state == TrialState.COMPLETE else t.state.name.lower()
    note = t.user_attrs.get("stopped_by") or t.user_attrs.get("fail_reason") or ""
    wall = format_seconds(t.user_attrs.get("wall_s", 0))
    console.print(f"trial {t.number}{' (base recipe)' if t.user_attrs.get(BASE_ATTR) else ''}: {score} in {wall}; "
                  f"{settings_text(t.params)}" + (f" — {note}" if note else ""), highlight=False)


def search(settings: TuneSettings, tune_dir: Path, console=None, clock: Callable[[], float] = time.monotonic,
           extra_callbacks: list | None = None) -> tuple[optuna.Study, str, list[int]]:
    """Run trials until the budget or --max-trials ends the search; returns the study, why it ended, stale trials."""
    optuna.logging.set_verbosity(logging.ERROR)  # trials are reported by _say_trial
    space, base_cfg = space_of(settings)
    study = open_study(tune_dir, settings.seed)
    stale = fail_stale_trials(study, tune_dir)
    if not has_base_trial(study):  # trial 0: the recipe itself, so the search can only improve on it
        study.enqueue_trial(space.base_params(base_cfg, _facts(settings)), user_attrs={BASE_ATTR: True})
    deadline = Deadline(settings.budget_s, settings.spent_s, clock)
    env = TrialEnv(tune_dir, settings.base, base_cfg, space, settings.metric, deadline, clock,
                   [RecordSpent(settings, tune_dir, deadline), *(extra_callbacks or [])])
    while (reason := stop_reason(study, deadline, settings.max_trials)) is None:
        try:
            study.optimize(lambda trial: run_trial(env, trial), n_trials=1, catch=(TrialFailed,))
        except Interrupted as stop:  # Ctrl-C / SIGTERM in a trial: that trial is failed, the search resumable
            save_spent(settings, tune_dir, deadline)
            raise Interrupted(f"{str(stop).split(':')[0]}: search stopped during trial {last_finished(study).number}; "
                              f"continue with: cliptune tune --resume {tune_dir}", stop.signum) from None
        save_spent(settings, tune_dir, deadline)
        _say_trial(console, study, settings.metric)
        write_leaderboard(tune_dir / LEADERBOARD_FILE, leaderboard(study), settings.metric, _winner(study))
    return study, reason, stale


def _facts(settings: TuneSettings):
    from cliptune.tune.space import ModelFacts

    return ModelFacts(**settings.facts)


def _winner(study: optuna.Study) -> int | None:
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(complete, key=lambda t: t.value).number if complete else None


def run_tune(settings: TuneSettings, tune_dir: Path, console=None, progress: bool = False,
             clock: Callable[[], float] = time.monotonic, extra_callbacks: list | None = None) -> TuneResult:
    """The whole search under the tune directory's lock: trials, leaderboard, plot, the winner on test."""
    with RunLock(tune_dir):
        settings.save(tune_dir)
        study, reason, stale = search(settings, tune_dir, console, clock, extra_callbacks)
        entries, winner = leaderboard(study), _winner(study)
        write_leaderboard(tune_dir / LEADERBOARD_FILE, entries, settings.metric, winner)
        write_plot(tune_dir / PLOT_FILE, entries, settings.metric)
        result = TuneResult(tune_dir, entries, winner, stop_reason=reason, stale=stale)
        if winner is None:
            raise CliptuneError(f"no trial completed within the budget ({reason}); see {tune_dir / LEADERBOARD_FILE}"
                                f" and give a larger --budget (resume with --resume {tune_dir} --budget ...)")
        result.final = _evaluate_winner(settings, tune_dir, study, study.trials[winner], progress)
        return result


def _evaluate_winner(settings: TuneSettings, tune_dir: Path, study: optuna.Study, trial,
                     progress: bool) -> FinalEvaluation:
    _, base_cfg = space_of(settings)
    model_dir = trial_dir(tune_dir, trial.number) / "model"
    final = final_evaluation(base_cfg, model_dir, progress=progress)
    tune = {"winner_trial": trial.number, "metric": settings.metric, "val_value": trial.value,
            "params": trial.params, "overrides": trial.user_attrs.get("overrides", []),
            "base_recipe": bool(trial.user_attrs.get(BASE_ATTR)), "n_trials": len(finished_trials(study)),
            "budget_s": settings.budget_s, "spent_s": settings.spent_s, "recipe": settings.recipe}
    write_json_atomic(tune_dir / "metrics.json", tune_metrics_payload(base_cfg, model_dir, final, tune))
    return final



def study_if_exists(tune_dir: Path) -> optuna.Study | None:
    """The stored study of a tune directory, or None before its first trial."""
    from cliptune.tune.study import STUDY_DB, STUDY_NAME, storage_url

    if not (Path(tune_dir) / STUDY_DB).is_file():
        return None
    storage = storage_url(tune_dir)
    return optuna.load_study(study_name=STUDY_NAME, storage=storage) if STUDY_NAME in \
        optuna.get_all_study_names(storage) else None
