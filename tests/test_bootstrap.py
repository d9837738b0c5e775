"""Paired bootstrap intervals for gains: exact deltas, sensible widths, and agreement with scipy's bootstrap."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliptune.eval.bootstrap import gain_intervals, per_query_values
from cliptune.eval.retrieval import QueryRanks, query_ranks, retrieval_metrics


def _data(seed: int, noise: float, n: int = 300, d: int = 32):
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n, d, generator=g), dim=1)
    t2i = torch.arange(n)
    texts = F.normalize(images + noise * torch.randn(n, d, generator=g), dim=1)
    return images, texts, t2i


def test_per_query_values_average_to_the_reported_metrics():
    images, texts, t2i = _data(0, 0.9)
    ranks = query_ranks(images, texts, t2i)
    metrics = retrieval_metrics(images, texts, t2i)
    for direction in ("t2i", "i2t"):
        for name in ("R@1", "R@5", "R@10", "mAP", "MRR"):
            got = float(per_query_values(ranks[direction], name).mean())
            assert got == pytest.approx(metrics[direction][name], abs=1e-12), (direction, name)


def test_same_model_has_a_zero_gain_and_a_better_one_an_interval_above_zero():
    images, texts, t2i = _data(1, 1.2)
    weak = query_ranks(images, texts, t2i)["t2i"]
    strong = query_ranks(images, F.normalize(images + 0.3 * (texts - images), dim=1), t2i)["t2i"]
    same = gain_intervals(weak, weak)
    assert all(g.delta == g.low == g.high == 0.0 for g in same.values())
    better = gain_intervals(weak, strong)
    assert better["R@1"].low > 0 and better["R@1"].low <= better["R@1"].delta <= better["R@1"].high
    assert better["R@1"].n_queries == 300


def test_interval_agrees_with_scipy_paired_percentile_bootstrap():
    from scipy.stats import bootstrap

    g = torch.Generator().manual_seed(3)
    n = 400
    a = QueryRanks(torch.arange(n), torch.randint(1, 20, (n,), generator=g), torch.rand(n, generator=g).double())
    b = QueryRanks(torch.arange(n), torch.randint(1, 12, (n,), generator=g), torch.rand(n, generator=g).double())
    ours = gain_intervals(a, b, metrics=("R@5", "mAP"), n_boot=20000)
    for name in ("R@5", "mAP"):
        diff = (per_query_values(b, name) - per_query_values(a, name)).numpy()
        ref = bootstrap((diff,), np.mean, n_resamples=20000, method="percentile", confidence_level=0.95,
                        random_state=np.random.default_rng(0)).confidence_interval
        assert ours[name].low == pytest.approx(ref.low, abs=0.01)
        assert ours[name].high == pytest.approx(ref.high, abs=0.01)


def test_different_queries_are_refused():
    a = QueryRanks(torch.arange(3), torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.float64))
    b = QueryRanks(torch.tensor([0, 1, 4]), torch.ones(3, dtype=torch.long), torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="different queries"):
        gain_intervals(a, b)
