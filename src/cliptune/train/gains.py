"""The `gains` block of metrics.json: each model's gain over the cheaper one on the same test queries, with a paired
95% bootstrap interval (eval/bootstrap.py), so "fine-tuning beat the probe by 3 points" comes with how sure that is."""

from __future__ import annotations

from cliptune.eval.bootstrap import gain_intervals
from cliptune.eval.retrieval import QueryRanks

# (better-or-costlier model, baseline): the key is "<model>-<baseline>", its values are model − baseline
GAIN_PAIRS = (("after", "probe"), ("after", "before"), ("probe", "before"))
GAIN_METRICS = ("R@1", "R@5", "R@10", "mAP")
DIRECTIONS = ("t2i", "i2t")


def gain_key(model: str, baseline: str) -> str:
    return f"{model}-{baseline}"


def gains_block(ranks: dict[str, dict[str, QueryRanks] | None], seed: int = 0, n_boot: int = 2000) -> dict:
    """`{"after-probe": {"t2i": {"R@1": {delta, low, high, level, n_queries}, ...}, "i2t": ...}, ...}` for every
    pair whose two models both have test ranks (a pair with a model missing is left out)."""
    out: dict = {}
    for model, baseline in GAIN_PAIRS:
        a, b = ranks.get(baseline), ranks.get(model)
        if not a or not b:
            continue
        out[gain_key(model, baseline)] = {
            d: {m: g.as_dict() for m, g in gain_intervals(a[d], b[d], GAIN_METRICS, n_boot=n_boot, seed=seed).items()}
            for d in DIRECTIONS}
    return out
