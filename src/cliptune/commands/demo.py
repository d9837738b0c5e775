"""`cliptune demo`: the main job on the embedded default."""

from __future__ import annotations

from pathlib import Path

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries


@app.command()
def demo(
    quick: bool = typer.Option(False, "--quick", help="A smaller, faster run (about 3 minutes on 2 CPU cores)."),
    data_dir: Path = typer.Option(Path("data/emoji"), "--data-dir", help="Where the emoji data is built/read."),
    output_dir: Path = typer.Option(Path("runs"), "--output-dir"),
    set_: list[str] = typer.Option([], "--set", help="Override a demo config value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Build the emoji data if absent, fine-tune `lite` on it, print the before/after table."""
    quiet_libraries()
    from cliptune.demo import run_demo

    run_demo(quick=quick, data_dir=data_dir, output_dir=output_dir, overrides=list(set_),
             progress=progress_enabled(quiet),
             console=console, out=out)
