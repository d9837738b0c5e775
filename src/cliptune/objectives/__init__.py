"""Training objectives; importing this package registers every built-in one (one file per loss)."""

from cliptune.objectives import infonce  # noqa: F401
from cliptune.objectives import siglip, triplet, hard_negatives, match  # noqa: F401
from cliptune.objectives.hooks import attach_objective  # noqa: F401
from cliptune.objectives.registry import OBJECTIVES, build_objective  # noqa: F401
