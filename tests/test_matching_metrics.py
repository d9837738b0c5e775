"""Match metrics cross-checked against scikit-learn; the tuned threshold is the best one."""

import numpy as np
import pytest
from sklearn import metrics as skm

from cliptune.eval.matching import match_metrics, pr_curve, roc_auc, tune_threshold


def _data(n=120, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    scores = rng.normal(labels * 0.8, 1.0)
    if ties:
        scores = np.round(scores, 1)
    return scores, labels


@pytest.mark.parametrize("ties", [False, True])
def test_match_metrics_equal_sklearn(ties):
    scores, labels = _data(ties=ties)
    t = 0.3
    m = match_metrics(scores, labels, t)
    pred = (scores >= t).astype(int)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred))
    assert m["roc_auc"] == pytest.approx(skm.roc_auc_score(labels, scores))
    assert m["confusion_matrix"] == skm.confusion_matrix(labels, pred, labels=[0, 1]).tolist()
    assert m["threshold"] == t
    p, r, _ = skm.precision_recall_curve(labels, scores)
    assert len(p) <= 200
    np.testing.assert_allclose(m["pr_curve"]["precision"], p)
    np.testing.assert_allclose(m["pr_curve"]["recall"], r)


def test_pr_curve_is_subsampled_to_200_points_keeping_the_ends():
    scores, labels = _data(n=1000, seed=1)
    p, r, _ = skm.precision_recall_curve(labels, scores)
    curve = pr_curve(scores, labels)
    assert len(curve["precision"]) == len(curve["recall"]) == 200
    assert curve["precision"][0] == pytest.approx(p[0]) and curve["recall"][0] == pytest.approx(r[0])
    assert curve["precision"][-1] == 1.0 and curve["recall"][-1] == 0.0


@pytest.mark.parametrize("metric,sk", [("f1", skm.f1_score), ("accuracy", skm.accuracy_score),
                                       ("balanced_accuracy", skm.balanced_accuracy_score)])
def test_tuned_threshold_is_optimal(metric, sk):
    scores, labels = _data(n=80, seed=2, ties=True)
    t = tune_threshold(scores, labels, metric)
    best = max(sk(labels, (scores >= c).astype(int)) for c in np.r_[np.unique(scores), np.inf])
    assert sk(labels, (scores >= t).astype(int)) == pytest.approx(best)
    assert t not in set(scores.tolist()) or t == scores.min()  # between scores, not on one


def test_edge_cases():
    assert roc_auc([0.1, 0.2], [1, 1]) is None
    assert match_metrics([0.1, 0.9], [0, 0], 0.5)["roc_auc"] is None
    assert tune_threshold([0.2, 0.8], [0, 1]) == pytest.approx(0.5)
    assert tune_threshold([0.2, 0.8], [0, 0], "accuracy") > 0.8  # predict nothing
    with pytest.raises(ValueError):
        match_metrics([0.1], [2], 0.5)
    with pytest.raises(ValueError):
        tune_threshold([], [])
    with pytest.raises(ValueError):
        tune_threshold([0.1], [1], "auc")
