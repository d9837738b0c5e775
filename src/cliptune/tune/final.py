"""The winner on the test split, once: the only place a search reads the test split.

`before` is the base recipe's model as loaded (its config: zero-shot for `lite`), `after` the winning trial's
exported model (`trials/<n>/model/`, its best checkpoint chosen on validation); both are measured on the same test
records. The probe (`train/probe.py`: the base model's heads re-fitted on its frozen towers, chosen on validation)
joins them when the base config's `eval.probe` is on, and the `gains` block gives each gain with its paired 95%
bootstrap interval over the test queries — the same three-way proof `cliptune train` writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cliptune.config import Config
from cliptune.train.metrics_file import metrics_record


@dataclass
class FinalEvaluation:
    split: str
    before: dict
    after: dict
    probe: dict | None = None  # frozen towers with re-fitted heads (metrics), where the probe is available
    probe_info: dict | None = None  # its settings, selection and wall time (train/probe.py ProbeResult.block)
    gains: dict | None = None  # train/gains.py: after−probe, after−before, probe−before with intervals
    skipped: int = 0


def final_evaluation(base_cfg: Config, model_dir: Path, progress: bool = False) -> FinalEvaluation:
    """Evaluate the base model, the probe and the winner's export on the base config's test split."""
    from cliptune.data.skipped import distinct
    from cliptune.inference.evaluate import score_records
    from cliptune.models.registry import load_model
    from cliptune.train.gains import gains_block
    from cliptune.train.rebuild import base_model, load_run_data, run_split

    data = load_run_data(base_cfg)
    split = base_cfg.data.test_split
    test = run_split(base_cfg, split, data)
    kw = dict(progress=progress, batch_size=base_cfg.eval.batch_size, num_workers=base_cfg.data.num_workers,
              chunk_size=base_cfg.eval.chunk_size)
    before = score_records(base_model(base_cfg), test, **kw)
    after = score_records(load_model(model_dir), test, **kw)
    ranks = {"before": before.ranks, "after": after.ranks}
    final = FinalEvaluation(split=split, before=before.metrics, after=after.metrics,
                            skipped=len(distinct(data.skipped)))
    if base_cfg.eval.probe:
        from cliptune.train.probe import fit_probe

        probe = fit_probe(base_cfg, data)
        final.probe, final.probe_info, ranks["probe"] = probe.test.metrics, probe.block(), probe.test.ranks
    final.gains = gains_block(ranks, seed=base_cfg.train.seed)
    return final


def tune_metrics_payload(base_cfg: Config, model_dir: Path, final: FinalEvaluation, tune: dict[str, Any]) -> dict:
    """metrics.json of a search, in train's shape (`after` at the top level, `before`/`after`[/`probe`] blocks)
    plus a `tune` block naming the winner and what it was chosen on."""
    data, split = str(base_cfg.data.path), final.split
    after = metrics_record(final.after, model=str(model_dir), data=data, split=split, skipped=final.skipped)
    payload = {**after, "after": after,
               "before": metrics_record(final.before, model=base_cfg.model.spec, data=data, split=split,
                                        skipped=final.skipped)}
    if final.probe is not None:
        payload["probe"] = metrics_record(final.probe, model=base_cfg.model.spec, data=data, split=split,
                                          skipped=final.skipped) | (final.probe_info or {})
    if final.gains:
        payload["gains"] = final.gains
    payload["tune"] = tune
    return payload
