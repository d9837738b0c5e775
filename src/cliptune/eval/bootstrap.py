"""Paired bootstrap intervals for the gain of one model over another on the same test queries.

With a few hundred test queries one point of R@1 is a handful of queries, so a gain is reported with a 95%
percentile interval from resampling *queries* with replacement (Efron & Tibshirani 1993, "An Introduction to the
Bootstrap", ch. 13; paired, as in Koehn 2004 for MT metrics): both models are scored on the same resampled queries,
so the interval is for the difference, not two overlapping single-model intervals. It works on per-query values
already computed (`QueryRanks`), so it costs one gather and mean per resample — vectorised, no re-ranking.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from cliptune.eval.retrieval import QueryRanks

DEFAULT_METRICS = ("R@1", "R@5", "R@10", "mAP", "MRR")


@dataclass(frozen=True)
class GainInterval:
    """Gain of model B over model A in one metric (B − A, absolute), with its bootstrap interval."""

    delta: float
    low: float
    high: float
    level: float
    n_queries: int

    def as_dict(self) -> dict:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def per_query_values(q: QueryRanks, metric: str) -> torch.Tensor:
    """The per-query value whose mean is `metric`: R@K → hit (0/1), mAP → AP, MRR → 1/first rank."""
    if metric.startswith("R@"):
        return (q.first_rank <= int(metric[2:])).double()
    if metric == "mAP":
        return q.ap.double()
    if metric == "MRR":
        return 1.0 / q.first_rank.double()
    raise ValueError(f"no per-query form for metric {metric!r}; use R@K, mAP or MRR")


def _resampled_means(diffs: torch.Tensor, n_boot: int, generator: torch.Generator,
                     max_cells: int) -> torch.Tensor:
    """Means of `n_boot` resamples of the rows of `diffs` ([n, m]) → [n_boot, m], drawn in memory-bounded blocks."""
    n = diffs.shape[0]
    rows_per_block = max(1, max_cells // max(1, n))
    out = []
    for start in range(0, n_boot, rows_per_block):
        idx = torch.randint(n, (min(rows_per_block, n_boot - start), n), generator=generator)
        out.append(diffs[idx].mean(dim=1))
    return torch.cat(out)


def gain_intervals(a: QueryRanks, b: QueryRanks, metrics: tuple[str, ...] = DEFAULT_METRICS, n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0, max_cells: int = 2**24) -> dict[str, GainInterval]:
    """Paired percentile-bootstrap interval of B − A for each metric; A and B must rank the same queries."""
    if not torch.equal(a.query, b.query):
        raise ValueError("the two models were evaluated on different queries; a paired interval needs the same ones")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = int(a.query.numel())
    if n == 0:
        return {}
    diffs = torch.stack([per_query_values(b, m) - per_query_values(a, m) for m in metrics], dim=1)
    means = _resampled_means(diffs, n_boot, torch.Generator().manual_seed(seed), max_cells)
    alpha = (1 - level) / 2
    bounds = torch.quantile(means, torch.tensor([alpha, 1 - alpha], dtype=means.dtype), dim=0)
    delta = diffs.mean(dim=0)
    return {m: GainInterval(float(delta[j]), float(bounds[0, j]), float(bounds[1, j]), level, n)
            for j, m in enumerate(metrics)}
