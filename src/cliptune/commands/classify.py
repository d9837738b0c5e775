"""`cliptune classify` (zero-shot labels for images) and `cliptune eval zeroshot` (accuracy on class folders)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries
from cliptune.commands.evaluate import eval_app

TEMPLATES_HELP = "Prompt templates: simple, imagenet (CLIP's 80), imagenet7, or a file with one template per line " \
                 "containing {}."


def _expand(images: list[Path]) -> list[Path]:
    """A folder stands for the images directly inside it (sorted), so `cliptune classify photos/` works."""
    from cliptune.data.formats.sidecar_dir import IMAGE_SUFFIXES

    paths: list[Path] = []
    for path in images:
        if path.is_dir():
            paths.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                                and not p.name.startswith(".")))
        else:
            paths.append(path)
    return paths


@app.command()
def classify(
    images: list[Path] = typer.Argument(..., help="Image files (a folder stands for the images in it)."),
    model: str = typer.Option(..., "--model", help="Model spec or run directory."),
    labels: str = typer.Option(..., "--labels", help='Comma-separated class names, e.g. "cat,dog,car".'),
    templates: str = typer.Option("simple", "--templates", help=TEMPLATES_HELP),
    top: Optional[int] = typer.Option(None, "--top", min=1, help="Show only the N most probable labels."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Zero-shot classification: per image, the labels sorted by probability (softmax over the labels)."""
    quiet_libraries()
    from rich.table import Table

    from cliptune.errors import UsageError
    from cliptune.inference.templates import resolve_templates
    from cliptune.inference.zeroshot import classify as zeroshot_classify
    from cliptune.inference.zeroshot import image_records, parse_labels
    from cliptune.models.registry import load_model

    names = parse_labels(labels)
    template_list = resolve_templates(templates)  # bad templates fail before the model loads
    paths = _expand(images)
    if not paths:
        raise UsageError("no images found in the given folder(s)")
    records = image_records(paths)
    encoder = load_model(model)
    probs = zeroshot_classify(encoder, records, names, template_list, batch_size=batch_size,
                              progress=progress_enabled(quiet))
    results = []
    for path, row in zip(paths, probs.tolist()):
        ranked = sorted(zip(names, row), key=lambda pair: -pair[1])[:top]
        results.append({"image": str(path), "predictions": [{"label": n, "probability": p} for n, p in ranked]})
    if as_json:
        out.print_json(json.dumps(results))
        return
    table = Table(title=f"zero-shot: {model}, {len(template_list)} template(s)")
    for column, justify in (("image", "left"), ("label", "left"), ("probability", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for result in results:
        for i, pred in enumerate(result["predictions"]):
            table.add_row(result["image"] if i == 0 else "", pred["label"], f"{pred['probability']:.3f}",
                          end_section=i == len(result["predictions"]) - 1)
    out.print(table)


@eval_app.command("zeroshot")
def eval_zeroshot(
    model: str = typer.Option(..., "--model", help="Model spec or run directory."),
    data: Path = typer.Option(..., "--data", help="Folder of class folders: DIR/<class name>/<image>."),
    templates: str = typer.Option("simple", "--templates", help=TEMPLATES_HELP),
    per_class: bool = typer.Option(False, "--per-class", help="Also print the top-1 accuracy of every class."),
    out_path: Optional[Path] = typer.Option(None, "--out", help="Write the results as JSON here."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Zero-shot top-1/top-5 accuracy on class folders (class name = folder name, underscores → spaces)."""
    quiet_libraries()
    from rich.table import Table

    from cliptune.inference.class_folders import read_class_folders
    from cliptune.inference.templates import resolve_templates
    from cliptune.inference.zeroshot import evaluate_zeroshot
    from cliptune.models.registry import load_model
    from cliptune.report.table import write_json_atomic

    template_list = resolve_templates(templates)
    folders = read_class_folders(data)
    encoder = load_model(model)
    result = evaluate_zeroshot(encoder, folders.records, folders.classnames, template_list, batch_size=batch_size,
                               progress=progress_enabled(quiet))
    table = Table(title=f"zero-shot {model} on {data} ({result['n_images']} images, {result['n_classes']} classes, "
                        f"{len(template_list)} template(s))")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in (("top1", "top-1 accuracy"), ("top5", "top-5 accuracy"),
                       ("mean_per_class_top1", "mean per-class top-1")):
        table.add_row(label, f"{result[key]:.4f}")
    out.print(table)
    if per_class:
        classes = Table(title="per-class top-1 accuracy")
        for column, justify in (("class", "left"), ("images", "right"), ("top-1", "right")):
            classes.add_column(column, justify=justify)  # type: ignore[arg-type]
        for row in result["per_class"]:
            classes.add_row(row["class"], str(row["n_images"]), "-" if row["top1"] is None else f"{row['top1']:.4f}")
        out.print(classes)
    if out_path is not None:
        payload = {**result, "model": model, "data": str(data), "templates": templates,
                   "n_templates": len(template_list)}
        for row, folder in zip(payload["per_class"], folders.folders):
            row["folder"] = folder
        write_json_atomic(out_path, payload)
        console.print(f"wrote {out_path}")
