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


def _emoji_fingerprints(emoji_dir: Path):
    """The emoji build a pre-training set is checked against (built first when absent)."""
    from cliptune.data.builders.emoji import build_emoji
    from cliptune.data.builders.emoji_overlap import EmojiFingerprints

    build_emoji(emoji_dir)
    return EmojiFingerprints(emoji_dir)


EMOJI_DIR_HELP = "The emoji build every picture is checked against (built there when absent)."


@build_app.command("openclipart")
def build_openclipart_cmd(
    out_dir: Path = typer.Option(Path("data/openclipart"), "--out", help="Output folder (images + openclipart.csv)."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N drawings (for quick checks)."),
    emoji_dir: Path = typer.Option(Path("data/emoji"), "--emoji-dir", help=EMOJI_DIR_HELP),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the CSV exists."),
):
    """Open Clip Art drawings (Debian openclipart-png + openclipart-svg) captioned from their SVG metadata."""
    from cliptune.data.builders import openclipart
    from cliptune.data.builders.picture_set import debian_version, write_picture_set

    items = openclipart.collect(openclipart.ROOT, limit)
    if not items:
        raise typer.BadParameter(f"no drawings under {openclipart.ROOT}: apt-get install openclipart-png "
                                 "openclipart-svg")
    provenance = {"source": "Open Clip Art Library 0.18", "limit": limit,
                  "packages": {p: debian_version(p) for p in ("openclipart-png", "openclipart-svg")},
                  "captions_from": "SVG dc:title (or file-name words), dc:description, dc:subject + folders"}
    csv_path = write_picture_set(items, out_dir, "openclipart", openclipart.ROOT / "png",
                                 _emoji_fingerprints(emoji_dir), size, provenance, force=force)
    console.print(f"wrote {csv_path}")


@build_app.command("icons")
def build_icons_cmd(
    out_dir: Path = typer.Option(Path("data/icons"), "--out", help="Output folder (images + icons.csv)."),
    theme: Path = typer.Option(Path("/usr/share/icons/Adwaita"), "--theme", help="An installed icon theme."),
    size: int = typer.Option(128, "--size", help="Image side in pixels."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N icon names (for quick checks)."),
    emoji_dir: Path = typer.Option(Path("data/emoji"), "--emoji-dir", help=EMOJI_DIR_HELP),
    force: bool = typer.Option(False, "--force", help="Rebuild even if the CSV exists."),
):
    """The PNG icons of an icon theme, captioned with the words of their freedesktop names."""
    from cliptune.data.builders import icons
    from cliptune.data.builders.picture_set import debian_version, write_picture_set

    items = icons.collect(theme, limit)
    if not items:
        raise typer.BadParameter(f"no PNG icons under {theme}")
    provenance = {"source": f"icon theme {theme.name}", "limit": limit,
                  "packages": {"adwaita-icon-theme": debian_version("adwaita-icon-theme")},
                  "captions_from": "icon name words; icon name words + context folder"}
    csv_path = write_picture_set(items, out_dir, "icons", theme, _emoji_fingerprints(emoji_dir), size,
                                 provenance, force=force)
    console.print(f"wrote {csv_path}")


@build_app.command("emoji-classes")
def build_emoji_classes_cmd(
    emoji_dir: Path = typer.Option(Path("data/emoji"), "--emoji-dir", help="An emoji build (built when absent)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Default: data/emoji-<level>-<split>."),
    level: str = typer.Option("subgroup", "--level", help="CLDR level used as the class: group or subgroup."),
    split: str = typer.Option("test", "--split", help="Split of the emoji data to file (as the demo splits it), "
                              "or 'all'."),
    min_images: int = typer.Option(1, "--min-images", help="Leave out classes with fewer images."),
):
    """Emoji class folders (CLDR group or subgroup as the class) for zero-shot classification."""
    from cliptune.data.builders.emoji import build_emoji
    from cliptune.data.builders.emoji_classes import build_emoji_classes
    from cliptune.data.load import load_dataset

    data = load_dataset(build_emoji(emoji_dir))
    records = data.records if split == "all" else data.split(split)
    out_dir = out_dir or Path(f"data/emoji-{level}-{split}")
    counts = build_emoji_classes([Path(r.image) for r in records], out_dir, level, min_images)
    console.print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {out_dir}")
