"""`cliptune report RUN_DIR`: (re)write a run's report.html."""

from __future__ import annotations

from pathlib import Path

import typer

from cliptune.cli import app, console, progress_enabled, quiet_libraries


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="Run directory (holds config.yaml, metrics.json, history.jsonl)."),
    no_galleries: bool = typer.Option(False, "--no-galleries", help="Skip the before/after retrieval galleries "
                                      "(they load the base model and the data again)."),
    queries: int = typer.Option(8, "--queries", min=0, help="Sample captions shown in the galleries."),
    open_: bool = typer.Option(False, "--open", help="Open the report in the default browser."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Write RUN_DIR/report.html: config, before/after metrics, training curves and retrieval galleries."""
    quiet_libraries()
    from cliptune.report.html import write_report

    path = write_report(run_dir, n_queries=queries, galleries=not no_galleries, progress=progress_enabled(quiet))
    console.print(f"wrote {path}")
    if open_:
        import webbrowser

        if not webbrowser.open(path.resolve().as_uri()):
            console.print("[yellow]no browser found[/]; open the file above by hand")
