"""Which mixing coefficients WiSE-FT tries, and the stated rule that picks one of them.

WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models") evaluates a grid of α and keeps one. The
choice must be made on validation data by a rule fixed in advance, or the reported gain is tuned on the test set.
Rules (every score is the sweep metric, by default mean R@10 = mean of t2i and i2t R@10):

* ``target``       — the α with the best target score. The default without a general set.
* ``average``      — the α with the best mean of target and general scores. The default with a general set: it
                     weighs the gain on the user's data and what the base model knew equally.
* ``min-drop:D``   — the α with the best target score among those whose general score is at most ``D`` below the
                     base model's (α = 0, always evaluated for this rule); ``D`` is in metric units (0.02 = 2 points
                     of R@10). α = 0 always qualifies, so the rule never comes back empty.

Ties go to the smallest α, the one closest to the base model (the more robust one, in the paper's findings).
No torch here: the config validates rules and grids with it before any training starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cliptune.errors import UsageError

RULES = ("target", "average", "min-drop:D")
DEFAULT_ALPHAS = "0:1:0.1"


def parse_alphas(text: str | list | tuple) -> list[float]:
    """`start:stop:step` (both ends included, e.g. 0:1:0.1), a comma list (0,0.5,1) or a list of numbers → sorted,
    de-duplicated α values in [0, 1], rounded to 6 decimals so 0.1 steps do not accumulate float error."""
    if isinstance(text, (list, tuple)):
        values = [float(v) for v in text]
    else:
        raw = str(text).strip()
        try:
            if ":" in raw:
                parts = [float(p) for p in raw.split(":")]
                if len(parts) != 3:
                    raise ValueError("expected start:stop:step")
                start, stop, step = parts
                if step <= 0 or stop < start:
                    raise ValueError("needs step > 0 and stop >= start")
                n = int(math.floor((stop - start) / step + 1e-9)) + 1
                values = [start + i * step for i in range(n)]
            else:
                values = [float(p) for p in raw.split(",") if p.strip()]
        except ValueError as err:
            raise UsageError(f"alphas {text!r}: {err} (write e.g. 0:1:0.1 or 0,0.5,1)") from None
    values = sorted({round(v, 6) for v in values})
    if not values:
        raise UsageError(f"alphas {text!r}: no values")
    bad = [v for v in values if not 0.0 <= v <= 1.0 or not math.isfinite(v)]
    if bad:
        raise UsageError(f"alphas {text!r}: {bad} outside [0, 1]; WiSE-FT interpolates between the base (0) and the "
                         f"fine-tuned model (1)")
    return values


@dataclass(frozen=True)
class Rule:
    name: str  # target | average | min-drop
    max_drop: float | None = None

    def __str__(self) -> str:
        return f"min-drop:{self.max_drop:g}" if self.name == "min-drop" else self.name

    @property
    def needs_general(self) -> bool:
        return self.name != "target"

    def describe(self, metric: str) -> str:
        if self.name == "target":
            return f"the alpha with the highest target {metric}; ties go to the smaller alpha"
        if self.name == "average":
            return (f"the alpha with the highest mean of target and general {metric}; ties go to the smaller alpha")
        return (f"the alpha with the highest target {metric} among those whose general {metric} is at most "
                f"{self.max_drop:g} below the base model's (alpha 0); ties go to the smaller alpha")


def parse_rule(text: str | None, has_general: bool) -> Rule:
    """None → `average` with a general set, else `target`. Rules that compare with a general set refuse to run
    without one instead of silently falling back."""
    if text is None or not str(text).strip():
        return Rule("average" if has_general else "target")
    raw = str(text).strip().lower()
    if raw in ("target", "average"):
        rule = Rule(raw)
    elif raw.startswith("min-drop"):
        _, _, value = raw.partition(":")
        try:
            drop = float(value)
        except ValueError:
            raise UsageError(f"rule {text!r}: write min-drop:D with D the largest allowed drop of the general "
                             f"metric, e.g. min-drop:0.02") from None
        if not math.isfinite(drop) or drop < 0:
            raise UsageError(f"rule {text!r}: the allowed drop must be >= 0")
        rule = Rule("min-drop", drop)
    else:
        raise UsageError(f"unknown rule {text!r}; choose one of {', '.join(RULES)}")
    if rule.needs_general and not has_general:
        raise UsageError(f"rule {rule} compares with a general set; give one (--general / train.wise_general) or "
                         f"use the rule 'target'")
    return rule


def choose_alpha(rows: list[dict], rule: Rule) -> float:
    """Pick α from `rows` ({"alpha", "target", "general"?} with scores as floats) by `rule`."""
    if not rows:
        raise ValueError("no alphas were evaluated")
    rows = sorted(rows, key=lambda r: r["alpha"])
    if rule.name == "target":
        candidates, score = rows, (lambda r: r["target"])
    elif rule.name == "average":
        candidates, score = rows, (lambda r: (r["target"] + r["general"]) / 2)
    elif rule.name == "min-drop":
        base = [r for r in rows if r["alpha"] == 0.0]
        if not base:
            raise ValueError("rule min-drop needs alpha 0 (the base model) among the evaluated alphas")
        floor = base[0]["general"] - rule.max_drop - 1e-12  # a drop of exactly D is allowed
        candidates, score = [r for r in rows if r["general"] >= floor], (lambda r: r["target"])
    else:  # pragma: no cover - parse_rule admits nothing else
        raise ValueError(f"unknown rule {rule}")
    best = max(score(r) for r in candidates)
    return next(r["alpha"] for r in candidates if score(r) == best)  # rows ascend: the smallest tied α


def alphas_for(rule: Rule, alphas: list[float]) -> list[float]:
    """The grid to evaluate: `min-drop` measures the drop from the base, so α = 0 is always among them."""
    return sorted({0.0, *alphas}) if rule.name == "min-drop" else list(alphas)


__all__ = ["DEFAULT_ALPHAS", "RULES", "Rule", "alphas_for", "choose_alpha", "parse_alphas", "parse_rule"]
