"""WiSE-FT's α grids and choice rules live in `cliptune.wise_rule` (the config validates them without importing the
training package); re-exported here for the training code and its callers."""

from cliptune.wise_rule import (  # noqa: F401
    DEFAULT_ALPHAS, RULES, Rule, alphas_for, choose_alpha, parse_alphas, parse_rule,
)
