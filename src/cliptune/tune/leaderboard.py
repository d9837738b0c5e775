"""The leaderboard of a search: every trial with its state, validation metric, wall time and settings, best first;
as a rich table that fits 100 columns and as leaderboard.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.table import Table

from cliptune.tune.budget import format_seconds
from cliptune.tune.study import BASE_ATTR
from cliptune.utils.atomic import write_json_atomic

LEADERBOARD_FILE = "leaderboard.json"
STATE_NAMES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
               TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
STATE_ORDER = ("complete", "pruned", "failed", "running", "waiting")


@dataclass
class Entry:
    number: int
    state: str
    value: float | None  # the validation metric of a complete trial
    last_reported: float | None  # the last validation score reported (what a pruned trial reached)
    wall_s: float | None
    params: dict[str, Any]
    base_recipe: bool
    note: str | None  # why a trial was pruned or failed

    def sort_key(self) -> tuple:
        score = self.value if self.value is not None else self.last_reported
        return STATE_ORDER.index(self.state), -(score if score is not None else float("-inf")), self.number


def entry(trial: optuna.trial.FrozenTrial) -> Entry:
    attrs = trial.user_attrs
    reported = trial.intermediate_values
    return Entry(number=trial.number, state=STATE_NAMES.get(trial.state, trial.state.name.lower()),
                 value=trial.value if trial.state == TrialState.COMPLETE else None,
                 last_reported=reported[max(reported)] if reported else None, wall_s=attrs.get("wall_s"),
                 params=dict(trial.params), base_recipe=bool(attrs.get(BASE_ATTR)),
                 note=attrs.get("stopped_by") or attrs.get("fail_reason"))


def leaderboard(study: optuna.Study) -> list[Entry]:
    return sorted((entry(t) for t in study.get_trials(deepcopy=False)), key=Entry.sort_key)


def write_leaderboard(path: Path, entries: list[Entry], metric: str, winner: int | None) -> Path:
    return write_json_atomic(path, {"metric": metric, "split": "val", "winner": winner,
                                    "trials": [asdict(e) for e in entries]})


def settings_text(params: dict[str, Any]) -> str:
    """The searched settings in one short line (`img1 txt2 lr 3e-05 head 1e-03 siglip aug ep8 160px`)."""
    parts = []
    if "unfreeze_image" in params or "unfreeze_text" in params:
        parts.append(f"img{params.get('unfreeze_image', '-')} txt{params.get('unfreeze_text', '-')}")
    if "lr" in params:
        parts.append(f"lr {params['lr']:.0e}")
    if "head_lr" in params:
        parts.append(f"head {params['head_lr']:.0e}")
    if "loss" in params:
        parts.append(str(params["loss"]))
    if "augment" in params:
        parts.append("aug" if params["augment"] else "no-aug")
    if "epochs" in params:
        parts.append(f"ep{params['epochs']}")
    if "image_tower" in params:
        parts.append(str(params["image_tower"]))
    if "image_size" in params:
        size = params["image_size"]
        parts.append("native px" if size is None else f"{size}px")
    return " ".join(parts)


def _score(e: Entry) -> str:
    if e.value is not None:
        return f"{e.value:.4f}"
    return f"({e.last_reported:.4f})" if e.last_reported is not None else "-"


def leaderboard_table(entries: list[Entry], metric: str, title: str = "trials") -> Table:
    """Best first; a pruned trial shows in brackets the last score it reported; * marks the base recipe."""
    table = Table(title=f"{title} (val {metric}; * = base recipe)")
    for name, justify in (("#", "right"), ("state", "left"), ("val", "right"), ("wall", "right"),
                          ("settings", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "settings")
    for e in entries:
        wall = format_seconds(e.wall_s) if e.wall_s is not None else "-"
        table.add_row(f"{e.number}{'*' if e.base_recipe else ''}", e.state, _score(e), wall,
                      settings_text(e.params))
    return table
