"""What `--resume` may change. A resumed run must end as the uninterrupted one would, so settings that change the
result (model, data, batch, learning rate, objective, seed, ...) are refused, listed by key; settings that only
extend the run or change how it is watched (epochs/max_steps, evaluation and save cadence, logging, workers) are
allowed."""

from __future__ import annotations

from cliptune.config import Config
from cliptune.errors import UsageError

ALLOWED = (
    "train.epochs", "train.max_steps", "train.stop_at_step", "train.eval_every", "train.log_every",
    "train.save_every_epoch", "train.save_every_steps", "train.early_stop_patience", "train.max_bad_steps",
    "train.output_dir", "train.name", "train.wise_", "data.num_workers", "data.decode_cache", "eval.batch_size",
    "eval.report", "eval.before", "eval.chunk_size",
)
"""Dotted keys (or key prefixes) a resume may change."""


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


def changed_settings(saved: Config, requested: Config) -> dict[str, tuple]:
    """key -> (saved value, requested value) for every setting that differs."""
    old, new = _flat(saved.model_dump(mode="json")), _flat(requested.model_dump(mode="json"))
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


def check_resume(saved: Config, requested: Config, run_dir) -> list[str]:
    """The allowed keys that change (for the caller to report); a UsageError listing the refused ones."""
    changes = changed_settings(saved, requested)
    refused = {k: v for k, v in changes.items() if not k.startswith(ALLOWED)}
    if refused:
        listed = "; ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise UsageError(f"--resume {run_dir}: these settings would change the result of the run, so a resume "
                         f"cannot change them: {listed}. Start a new run (another --name) to try them; a resume "
                         f"may change {', '.join(k.rstrip('_') + ('*' if k.endswith('_') else '') for k in ALLOWED)}")
    return sorted(changes)
