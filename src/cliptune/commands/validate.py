"""`cliptune validate`: check a dataset before training on it; exit 0 when usable, 2 when not."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


@app.command("validate")
def validate_cmd(
    data: str = typer.Argument(..., help="Data spec (csv/tsv, json, COCO, Karpathy, folder, WebDataset shards)."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format."),
    task: str = typer.Option("retrieval", "--task", help="retrieval, or match (0/1 labels required)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Also write the report as JSON here (every "
                                                                  "occurrence of every problem)."),
    skipped_path: Optional[Path] = typer.Option(None, "--skipped", help="Write every bad row (what --on-bad-sample "
                                                "skip leaves out) as CSV here: file, row, key, reason."),
    context_length: Optional[int] = typer.Option(None, "--context-length",
                                                 help="Text tokens the model takes (default: --model's, or 77)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec whose context length to check against."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample",
                                      help="error: any bad row makes the data unusable; skip: bad rows are counted."),
):
    """Check columns, images (in parallel), captions, labels, duplicates, split leaks and image sizes."""
    from cliptune.data.validate import default_context_length, validate_dataset
    from cliptune.errors import UsageError

    if context_length is None:
        context_length = default_context_length(model)
    report = validate_dataset(data, format=format, image_root=image_root, task=task, context_length=context_length,
                              on_bad_sample=on_bad_sample)
    out.print(_table(report))
    out.print(_summary(report), highlight=False)
    if json_path is not None:
        from cliptune.report.table import write_json_atomic

        write_json_atomic(json_path, report.to_json())
        console.print(f"wrote {json_path}")
    if skipped_path is not None:
        from cliptune.data.skipped import write_skipped

        count = write_skipped(skipped_path, report.bad_rows())
        console.print(f"wrote {skipped_path} ({count} bad row(s))")
    if not report.usable:
        raise UsageError(f"{data}: not usable ({len(report.errors)} failing check(s) above); "
                         + ("fix them, or pass --on-bad-sample skip to leave bad rows out"
                            if on_bad_sample == "error" and report.counts.get("usable_rows") else "fix them"))


def _table(report):
    from rich.table import Table

    table = Table(title=f"validate {report.data} ({report.format or 'unknown format'}, task {report.task})",
                  show_lines=False)
    table.add_column("check")
    table.add_column("severity")
    table.add_column("count", justify="right")
    table.add_column("first offending rows (file:row)", overflow="fold")
    if not report.issues:
        table.add_row("all checks", "[green]ok[/]", "0", "")
    from cliptune.data.validate import MAX_EXAMPLES

    for issue in report.issues:
        style = SEVERITY_STYLE.get(issue.severity, "")
        examples = "\n".join(f"{e.where}: {e.detail}" for e in issue.examples[:MAX_EXAMPLES])
        if len(issue.examples) > MAX_EXAMPLES:
            examples += f"\n... {len(issue.examples) - MAX_EXAMPLES} more (all of them: --json or --skipped)"
        table.add_row(issue.title, f"[{style}]{issue.severity}[/]", str(issue.count), examples)
    return table


def _summary(report) -> str:
    c = report.counts
    lines = []
    if c:
        lines.append(f"rows {c.get('rows', 0)}, usable {c.get('usable_rows', 0)}, images {c.get('images', 0)}, "
                     f"captions {c.get('captions', 0)}; splits {c.get('splits', '?')}: "
                     + ", ".join(f"{k} {v}" for k, v in sorted(c.get("images_per_split", {}).items())))
    sizes = report.image_sizes
    if sizes:
        w, h = sizes["width"], sizes["height"]
        small = next(v for k, v in sizes.items() if k.startswith("below_"))
        lines.append(f"image size: width {w['min']}/{w['median']:g}/{w['max']}, height {h['min']}/{h['median']:g}/"
                     f"{h['max']} (min/median/max); {small} below 32 px")
    tokens = report.caption_tokens
    if tokens:
        lines.append(f"caption tokens ({tokens['method']}): max {tokens['max']}, {tokens['over_context']} over "
                     f"the {tokens['context_length']}-token context")
    if report.labels:
        lines.append(f"labels: 0 → {report.labels['0']}, 1 → {report.labels['1']}")
    verdict = "[bold green]usable[/]" if report.usable else "[bold red]not usable[/]"
    lines.append(f"{verdict} (checked in {report.seconds:.1f} s)")
    return "\n".join(lines)
