"""WiSE-FT: mix the base and the fine-tuned weights, θ(α) = (1 − α)·θ_base + α·θ_tuned, and keep the best α.

Why: fine-tuning a CLIP model on a narrow dataset gains there but loses some of what the base model knew. Wortsman
et al. 2022 ("Robust fine-tuning of zero-shot models", CVPR) show that linearly interpolating the two sets of weights
recovers most of the base model's general ability at little cost on the target, and often beats both ends. It costs
no training: only one evaluation per α. The two models must be the same architecture (same state-dict keys and
shapes), which holds for a fine-tuned model and the spec it started from.

`run_wise_ft` is the whole procedure on models in memory (the trainer calls it at the end of training with
`train.wise_ft: true`; `cliptune wise` calls it on models loaded from disk): sweep the α grid on the target split
and optionally a general set, choose α by a stated rule (`train/wise_rule.py`), export that model and write
`wise.json` + `wise.png`. The fine-tuned model passed in is never modified: the sweep runs on a copy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from cliptune.data.records import Record
from cliptune.errors import UsageError
from cliptune.eval.retrieval import mean_recall
from cliptune.wise_rule import DEFAULT_ALPHAS, Rule, alphas_for, choose_alpha, parse_alphas, parse_rule

StateDict = dict[str, torch.Tensor]
REFERENCE = "Wortsman et al. 2022, Robust fine-tuning of zero-shot models (CVPR)"
DEFAULT_METRIC = "mean_R@10"
JSON_NAME, PLOT_NAME, MODEL_DIR = "wise.json", "wise.png", "model"


def _has_adapters(state: Mapping[str, torch.Tensor]) -> bool:
    return any(".lora_" in key for key in state)


def plain_state(model: nn.Module) -> StateDict:
    """The model's weights with LoRA adapters (models/lora.py) merged in, as its export holds them; the model itself
    is not changed. WiSE-FT mixes full weights: mixing the adapter factors A and B separately would not give
    (1 − α)·W + α·(W + BA)."""
    state = model.state_dict()
    if not _has_adapters(state):
        return state
    from cliptune.models.lora import merge_lora

    merged = copy.deepcopy(model)
    merge_lora(merged)
    return merged.state_dict()


def snapshot(model: nn.Module) -> StateDict:
    """A detached CPU copy of the (adapter-merged) weights, taken before training changes them in place: θ_base."""
    return {k: v.detach().to("cpu", copy=True) for k, v in plain_state(model).items()}


def _working_copy(tuned_model: nn.Module) -> tuple[nn.Module, StateDict]:
    """A private copy to load each mix into, adapters merged, and the fine-tuned weights θ_tuned. Without adapters
    θ_tuned is the caller's own state dict (read only, no copy); with them, a copy of the merged weights."""
    work = copy.deepcopy(tuned_model)
    tuned_state = tuned_model.state_dict()
    if _has_adapters(tuned_state):
        from cliptune.models.lora import merge_lora

        merge_lora(work)
        tuned_state = {k: v.detach().clone() for k, v in work.state_dict().items()}
    return work, tuned_state


def check_compatible(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor],
                     base_name: str = "base", tuned_name: str = "fine-tuned") -> None:
    """Same keys and shapes, or a UsageError that names the first differences (different architectures)."""
    only_base = sorted(set(base) - set(tuned))
    only_tuned = sorted(set(tuned) - set(base))
    shapes = [f"{k} {tuple(base[k].shape)} vs {tuple(tuned[k].shape)}"
              for k in tuned if k in base and base[k].shape != tuned[k].shape]
    if not (only_base or only_tuned or shapes):
        return
    parts = []
    for label, items in ((f"only in {base_name}", only_base), (f"only in {tuned_name}", only_tuned),
                         ("different shapes", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label} ({', '.join(items[:3])}{more})")
    raise UsageError(f"cannot interpolate {base_name} and {tuned_name}: they are not the same architecture "
                     f"({'; '.join(parts)}). WiSE-FT needs the model the fine-tuning started from as the base, "
                     f"built with the same options (for a run directory that is its model.spec)")


def interpolate(base: Mapping[str, torch.Tensor], tuned: Mapping[str, torch.Tensor], alpha: float) -> StateDict:
    """θ(α) = (1 − α)·θ_base + α·θ_tuned for every floating-point tensor, in float32 (float64 for float64
    weights) on the tuned weights' device, cast back to their dtype. α = 0 and α = 1 return the end points exactly.
    Integer buffers (position ids and the like are never trained) are taken from the fine-tuned model."""
    alpha = float(alpha)
    out: StateDict = {}
    for key, t in tuned.items():
        b = base[key]
        if not t.is_floating_point():
            out[key] = t.detach().clone()
        elif alpha == 0.0:
            out[key] = b.detach().to(device=t.device, dtype=t.dtype, copy=True)
        elif alpha == 1.0:
            out[key] = t.detach().clone()
        else:
            wide = torch.float64 if t.dtype == torch.float64 else torch.float32
            mixed = (1.0 - alpha) * b.detach().to(device=t.device, dtype=wide) + alpha * t.detach().to(wide)
            out[key] = mixed.to(t.dtype)
    return out


def mixed_model(base: nn.Module | Mapping[str, torch.Tensor], tuned_model: nn.Module, alpha: float) -> nn.Module:
    """A new model with weights θ(α); `tuned_model` is left as it was."""
    base_state = plain_state(base) if isinstance(base, nn.Module) else base
    model, tuned_state = _working_copy(tuned_model)
    check_compatible(base_state, tuned_state)
    model.load_state_dict(interpolate(base_state, tuned_state, alpha))
    return model


def metric_value(metrics: dict, name: str = DEFAULT_METRIC) -> float:
    """`mean_R@K` (mean of t2i and i2t R@K) or one direction's value, e.g. `t2i/R@1`, `i2t/mAP`."""
    if name.startswith("mean_R@"):
        return mean_recall(metrics, int(name.split("@", 1)[1]))
    direction, _, key = name.partition("/")
    try:
        return float(metrics[direction][key])
    except (KeyError, TypeError, ValueError):
        raise UsageError(f"unknown metric {name!r}; use mean_R@K or <t2i|i2t>/<R@1|R@5|R@10|mAP|NDCG@10|MRR>") from None


def load_records(spec: str, split: str = "all", **load_kw) -> list[Record]:
    """The records of one split of a data spec (`all` for every record), for the target or the general set."""
    from cliptune.data.load import load_dataset

    dataset = load_dataset(spec, **load_kw)
    records = dataset.records if split == "all" else dataset.split(split)
    if not records:
        raise UsageError(f"{spec}: split {split!r} is empty; splits found: {dataset.splits or ['(none)']}")
    return records


def run_wise_ft(base_model: nn.Module | Mapping[str, torch.Tensor], tuned_model: nn.Module,
                val_records: list[Record], general_records: list[Record] | None = None,
                alphas: str | list[float] = DEFAULT_ALPHAS, rule: str | Rule | None = None,
                out_dir: str | Path | None = None, metric: str = DEFAULT_METRIC, describe: dict | None = None,
                on_alpha: Callable[[dict], None] | None = None, plot: Callable | None = None, **eval_kw) -> dict:
    """Sweep α, choose one by `rule`, and (with `out_dir`) export it; returns the `wise.json` payload.

    `base_model` is the model fine-tuning started from, or its state dict (`snapshot(model)` taken before
    training). `val_records` is the target split α is chosen on (never the test split); `general_records` an
    optional general set whose score the rule weighs against the target's. `eval_kw` go to
    `inference.evaluate.evaluate_records` (batch_size, num_workers, chunk_size, cache, progress).
    `on_alpha(row)` is called after each α (for progress output). Writes `out_dir/model/` (the chosen model in
    the backend's native format), `out_dir/wise.json` and, given `plot(path, rows, chosen, metric, rule)` (e.g.
    `report.wise_plot.write_tradeoff_plot`), `out_dir/wise.png`.
    """
    from cliptune.inference.evaluate import evaluate_records

    if not val_records:
        raise UsageError("WiSE-FT needs target records to choose alpha on (the validation split is empty)")
    if general_records is not None and not general_records:
        raise UsageError("WiSE-FT: the general set is empty")
    has_general = general_records is not None
    rule = rule if isinstance(rule, Rule) else parse_rule(rule, has_general)
    if rule.needs_general and not has_general:
        raise UsageError(f"rule {rule} needs a general set")
    grid = alphas_for(rule, parse_alphas(alphas))
    base_state = snapshot(base_model) if isinstance(base_model, nn.Module) else dict(base_model)
    work, tuned_state = _working_copy(tuned_model)  # the sweep runs on `work`; the caller's model is never touched
    check_compatible(base_state, tuned_state)
    eval_kw.setdefault("progress", False)
    rows = []
    for alpha in grid:
        work.load_state_dict(interpolate(base_state, tuned_state, alpha))
        target = evaluate_records(work, val_records, **eval_kw)
        general = evaluate_records(work, general_records, **eval_kw) if has_general else None
        row = {"alpha": alpha, "target": metric_value(target, metric),
               "general": metric_value(general, metric) if has_general else None,
               "target_metrics": target, "general_metrics": general}
        rows.append(row)
        if on_alpha is not None:
            on_alpha(row)
    chosen = choose_alpha(rows, rule)
    best = next(r for r in rows if r["alpha"] == chosen)
    payload = {
        "method": "WiSE-FT", "reference": REFERENCE,
        "formula": "theta(alpha) = (1 - alpha) * theta_base + alpha * theta_tuned",
        **(describe or {}),
        "metric": metric, "rule": str(rule), "rule_description": rule.describe(metric),
        "chosen_alpha": chosen,
        "chosen": {"alpha": chosen, "target": best["target"], "general": best["general"]},
        "base_scores": {"target": rows[0]["target"], "general": rows[0]["general"]} if grid[0] == 0.0 else None,
        "tuned_scores": {"target": rows[-1]["target"], "general": rows[-1]["general"]} if grid[-1] == 1.0 else None,
        "n_target_records": len(val_records),
        "n_general_records": len(general_records) if has_general else None,
        "alphas": rows,
    }
    if out_dir is not None:
        from cliptune.utils.atomic import write_json_atomic

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        work.load_state_dict(interpolate(base_state, tuned_state, chosen))
        work.save(out_dir / MODEL_DIR)
        payload.update(model_dir=MODEL_DIR)
        if plot is not None:
            plot(out_dir / PLOT_NAME, rows, chosen, metric, str(rule))
            payload.update(plot=PLOT_NAME)
        write_json_atomic(out_dir / JSON_NAME, payload)
    del work
    return payload


__all__ = ["check_compatible", "interpolate", "load_records", "metric_value", "mixed_model", "plain_state",
           "run_wise_ft", "snapshot"]
