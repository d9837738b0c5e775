"""Platt scaling: a match score (cosine similarity or head probability) → a calibrated probability of a match.

Fitted on the validation pairs after the threshold is tuned (Platt 1999, with his smoothed targets
(n₊+1)/(n₊+2) and 1/(n₋+2), which keep a perfectly separated validation set from giving probabilities of exactly 0
or 1). Stored in `match.json` as {"a", "b"}: p(match | s) = 1 / (1 + exp(-(a·s + b))).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Platt:
    a: float
    b: float

    def probability(self, scores: Sequence[float]) -> np.ndarray:
        z = self.a * np.asarray(scores, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "Platt | None":
        if not data:
            return None
        return cls(float(data["a"]), float(data["b"]))


def fit_platt(scores: Sequence[float], labels: Sequence[int], iterations: int = 100) -> Platt | None:
    """Newton's method on the (convex) log loss with Platt's smoothed targets; None with one class only."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    t = np.where(y > 0.5, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    x = np.stack([s, np.ones_like(s)], axis=1)
    w = np.array([0.0, np.log((n_pos + 1) / (n_neg + 1))])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - t)
        hess = x.T @ (x * (p * (1 - p))[:, None]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return Platt(float(w[0]), float(w[1]))
