"""`cliptune match`: does this text fit this image? One pair, or every row of a CSV."""

from __future__ import annotations

import csv
import io
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries

OUTPUT_COLUMNS = ("image_path", "text", "similarity_score", "threshold", "is_match", "prediction", "confidence")
LABEL_COLUMNS = ("label", "correct")  # added when the input CSV has a label column


def _confidence(platt, score: float, is_match: int) -> str:
    """The calibrated probability that the prediction is right (Platt scaling fitted on validation pairs in
    training, `match.json`); empty when the model has no calibration."""
    if platt is None:
        return ""
    p_match = float(platt.probability([score])[0])
    return f"{p_match if is_match else 1.0 - p_match:.4f}"


def _verdict(score: float, threshold: float) -> tuple[int, str]:
    is_match = int(score >= threshold)
    return is_match, "MATCH" if is_match else "MISMATCH"


def _shown_path(image: str, root: Path) -> str:
    """The image path as the CSV most likely wrote it: relative to the image root when it lies under it."""
    root_text = os.path.abspath(root)
    if os.path.commonpath([image, root_text]) == root_text:
        return os.path.relpath(image, root_text)
    return image


def _write_csv(rows: list[dict], output: Optional[Path], labelled: bool) -> None:
    buffer = io.StringIO(newline="")
    columns = list(OUTPUT_COLUMNS) + (list(LABEL_COLUMNS) if labelled else [])
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    if output is None:
        sys.stdout.write(buffer.getvalue())
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp-{os.getpid()}")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    tmp.replace(output)


@app.command("match")
def match_cmd(
    model: str = typer.Option(..., "--model", help="Run directory, exported model or model spec."),
    image: Optional[Path] = typer.Option(None, "--image", help="One image (with --text)."),
    text: Optional[str] = typer.Option(None, "--text", help="The text to check against --image."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="CSV with image_path,text[,label]: score every row."),
    image_root: Optional[Path] = typer.Option(None, "--image-root", help="Resolve the CSV's relative image paths."),
    output: Optional[Path] = typer.Option(None, "--output", help="Write predictions CSV here (default: stdout)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Override the model's tuned threshold."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    batch_size: int = typer.Option(64, "--batch-size"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
):
    """Flag image–text mismatches: similarity score vs the threshold tuned in training (match.json)."""
    quiet_libraries()
    from cliptune.errors import UsageError

    if (csv_path is None) == (image is None and text is None):
        raise UsageError("give either --image and --text, or --csv")
    if csv_path is None and (image is None or text is None):
        raise UsageError("--image and --text go together")
    if csv_path is None and (output is not None or image_root is not None):
        raise UsageError("--output and --image-root apply to --csv")

    from cliptune.inference.match import load_calibration, load_matcher

    encoder, head = load_matcher(model, threshold)
    platt = load_calibration(model)
    if head.threshold is None:
        raise UsageError(f"{model}: no tuned threshold (no match.json there; train it with task: match) — "
                         f"pass --threshold")
    if csv_path is None:
        _one_pair(encoder, head, platt, image, text)
    else:
        _csv(encoder, head, platt, csv_path, image_root, output, on_bad_sample, batch_size, progress_enabled(quiet))


def _one_pair(encoder, head, platt, image: Path, text: str) -> None:
    from cliptune.data.images import load_image
    from cliptune.data.records import Record
    from cliptune.errors import UsageError
    from cliptune.inference.match import score_pairs

    if not text.strip():
        raise UsageError("--text is empty")
    path = os.path.abspath(os.path.expanduser(str(image)))
    load_image(path)  # a missing or broken image is a DataError naming the file
    score = float(score_pairs(encoder, head, [Record(image=path, captions=[text.strip()])], progress=False)[0])
    is_match, verdict = _verdict(score, head.threshold)
    for key, value in (("image", str(image)), ("text", text), ("similarity_score", f"{score:.4f}"),
                       ("threshold", f"{head.threshold:.4f}"), ("prediction", verdict),
                       ("confidence", _confidence(platt, score, is_match) or "n/a (no calibration)")):
        out.print(f"{key + ':':<18}{value}", markup=False, highlight=False)


def _csv(encoder, head, platt, csv_path: Path, image_root: Optional[Path], output: Optional[Path], on_bad_sample: str,
         batch_size: int, progress: bool) -> None:
    from cliptune.data.load import load_dataset
    from cliptune.eval.matching import match_metrics
    from cliptune.inference.match import score_pairs
    from cliptune.train.match import check_match_labels

    data = load_dataset(csv_path, format="csv", image_root=image_root, on_bad_sample=on_bad_sample, group=False)
    records = data.records
    labelled = any(r.label is not None for r in records)
    labels = check_match_labels(records) if labelled else None
    scores = score_pairs(encoder, head, records, batch_size=batch_size, progress=progress).tolist()
    root = image_root if image_root is not None else csv_path.parent
    rows = []
    for i, (rec, score) in enumerate(zip(records, scores)):
        is_match, verdict = _verdict(score, head.threshold)
        row = {"image_path": _shown_path(rec.image, root), "text": rec.captions[0],
               "similarity_score": f"{score:.6f}", "threshold": f"{head.threshold:.6f}",
               "is_match": is_match, "prediction": verdict, "confidence": _confidence(platt, score, is_match)}
        if labels is not None:
            row.update(label=labels[i], correct=int(labels[i] == is_match))
        rows.append(row)
    _write_csv(rows, output, labelled=labels is not None)
    n_match = sum(r["is_match"] for r in rows)
    summary = f"{len(rows)} pairs: {n_match} MATCH, {len(rows) - n_match} MISMATCH (threshold {head.threshold:.4f})"
    if data.skipped:
        summary += f"; skipped {len(data.skipped)} bad rows (first: {data.skipped[0]})"
    console.print(summary, highlight=False, markup=False)
    if labels is not None:
        m = match_metrics(scores, labels, head.threshold)
        auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.3f}"
        console.print(f"against the labels: accuracy {m['accuracy']:.3f}, precision {m['precision']:.3f}, "
                      f"recall {m['recall']:.3f}, F1 {m['f1']:.3f}, ROC AUC {auc}", highlight=False)
    if output is not None:
        console.print(f"wrote {output}", highlight=False, markup=False)
