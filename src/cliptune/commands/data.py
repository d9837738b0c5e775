"""`cliptune data ...`: build demo datasets, convert formats."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import build_app, console


@build_app.command("emoji")
def build_emoji_cmd(
    out_dir: Path = typer.Option(Path("data/emoji"), "--out", help="Output folder (images + emoji.csv)."),
    size: int = typer.Option(72, "--size", help="Image side in pixels."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N emoji (for quick checks)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the CSV exists."),
):
    """Render every emoji of Noto Color Emoji with its CLDR name as caption (about 3,900 pairs)."""
    from cliptune.data.builders.emoji import build_emoji

    csv_path = build_emoji(out_dir, size=size, limit=limit, force=force)
    console.print(f"wrote {csv_path}")
