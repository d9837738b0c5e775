"""Print a run's plan and estimated wall time before it starts, warn when a CPU run would be long, and keep both in
the run directory (`plan.json`), so the choice and its expected cost stay with the result."""

from __future__ import annotations

from cliptune.config import Config
from cliptune.data.records import Dataset
from cliptune.recipes.catalog import get_recipe
from cliptune.recipes.estimate import Estimate, Splits, estimate_run, format_duration, time_probe
from cliptune.recipes.plan import RunPlan, run_plan

LONG_CPU_RUN_S = 30 * 60  # a CPU plan estimated above this names the faster recipe
FASTEST = "cpu-heads"


def _splits(cfg: Config, data: Dataset) -> Splits:
    d = cfg.data
    train = data.split(d.train_split)[: d.max_train_images] if d.max_train_images else data.split(d.train_split)
    return Splits(train, data.split(d.val_split), data.split(d.test_split))


def _estimate(cfg: Config, model, freeze_plan, plan: RunPlan, splits: Splits) -> Estimate:
    from cliptune.train.feature_cache import FeatureCache, default_cache_dir

    cached = {"image": plan.image.cached, "text": plan.text.cached}
    cache = FeatureCache(model, freeze_plan, default_cache_dir()) if any(cached.values()) else None
    timings = time_probe(cfg, model, freeze_plan, splits.train, cached)
    return estimate_run(cfg, timings, splits, plan.steps, cached,
                        on_disk=lambda side, records: cache is not None and cache.holds(side, records))


def faster_recipe(recipe: str | None) -> str:
    named = get_recipe(recipe).faster if recipe else None
    return named or FASTEST


def announce(cfg: Config, model, data: Dataset, recipe: str | None, reason: str, device: str,
             say) -> tuple[RunPlan, Estimate | None]:
    """Plan and (for an indexed retrieval run) estimate; `say` prints one line of rich markup."""
    from cliptune.models.freeze import plan_from_config

    freeze_plan = plan_from_config(model, cfg.model)
    splits = _splits(cfg, data)
    plan = run_plan(cfg, model, freeze_plan, len(splits.train), recipe, reason)
    for line in plan.lines():
        say(line)
    if cfg.train.task != "retrieval" or cfg.data.streaming or not splits.train:
        return plan, None
    estimate = _estimate(cfg, model, freeze_plan, plan, splits)
    say("  " + estimate.describe())
    faster = faster_recipe(recipe)
    if device == "cpu" and estimate.total_s > LONG_CPU_RUN_S and faster != recipe:
        say(f"[yellow]warning:[/] this plan is estimated at {format_duration(estimate.total_s)} on this CPU; "
            f"`--recipe {faster}` is the faster choice (or fewer epochs: --set train.epochs=N)")
    return plan, estimate


def plan_hook(resolved, run, say):
    """`train_run`'s `before_fit` for a new run: print the plan and estimate, keep them in the run's plan.json."""
    from cliptune.recipes.situation import device_kind
    from cliptune.utils.atomic import write_json_atomic

    def before_fit(model, data: Dataset) -> None:
        recipe = resolved.choice.recipe.name if resolved.choice else None
        plan, estimate = announce(resolved.cfg, model, data, recipe, resolved.reason,
                                  device_kind(resolved.cfg.train.device)[0], say)
        write_json_atomic(run.path / "plan.json", {"plan": plan.as_dict(),
                                                   "estimate": estimate.as_dict() if estimate else None})

    return before_fit
