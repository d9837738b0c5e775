"""Training objectives; importing this package registers every built-in one (one file per loss)."""

from cliptune.objectives import infonce  # noqa: F401
from cliptune.objectives.registry import OBJECTIVES, build_objective  # noqa: F401
