"""The Optuna study of a tune run: SQLite in the run directory (`study.db`), TPE with a fixed seed, median pruning,
reopened with `load_if_exists` on resume; trials a kill left RUNNING are marked failed and their directories removed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
from optuna.trial import TrialState

STUDY_DB = "study.db"
STUDY_NAME = "cliptune-tune"
TRIALS_DIR = "trials"
BASE_ATTR = "base_recipe"  # user attribute of the trial that runs the base recipe untouched


def storage_url(tune_dir: Path) -> str:
    return f"sqlite:///{(Path(tune_dir) / STUDY_DB).resolve()}"


def open_study(tune_dir: Path, seed: int) -> optuna.Study:
    """Create or reopen the study. The sampler's seed is offset by the trials already stored, so a resumed search
    does not replay the random start-up suggestions of the first run."""
    storage = optuna.storages.RDBStorage(storage_url(tune_dir))
    done = 0
    if STUDY_NAME in optuna.get_all_study_names(storage):
        done = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    sampler = optuna.samplers.TPESampler(seed=seed + done, n_startup_trials=4)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler, pruner=pruner,
                               direction="maximize", load_if_exists=True)


def trial_dir(tune_dir: Path, number: int) -> Path:
    return Path(tune_dir) / TRIALS_DIR / str(number)


def fail_stale_trials(study: optuna.Study, tune_dir: Path) -> list[int]:
    """Trials left RUNNING (or WAITING with a started directory) by a killed search: marked FAIL, directories removed.
    Only called while this process holds the tune directory's lock, so no live process owns them."""
    storage = optuna.storages.RDBStorage(storage_url(tune_dir))
    study_id = storage.get_study_id_from_name(study.study_name)
    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
        storage.set_trial_user_attr(trial_id, "fail_reason", "interrupted (the search was killed during this trial)")
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
        shutil.rmtree(trial_dir(tune_dir, number), ignore_errors=True)
    return stale


def has_base_trial(study: optuna.Study) -> bool:
    """Whether the base recipe ran (or waits to run). A base trial failed by a kill, or stopped by the budget, is
    enqueued again, so a resumed search with more time measures the recipe it should improve on."""
    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.WAITING, TrialState.RUNNING)
    return any(t.user_attrs.get(BASE_ATTR) and not str(t.user_attrs.get("stopped_by", "")).startswith("budget")
               for t in study.get_trials(deepcopy=False, states=live))


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
