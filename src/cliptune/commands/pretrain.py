"""`cliptune pretrain-lite`: reproduce `lite`'s shipped aligned heads from the Debian-built pre-training data."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, progress_enabled, quiet_libraries

DEFAULT_DATA = ["data/openclipart/openclipart.csv", "data/icons/icons.csv"]
PACKAGE_DIR = Path(__file__).resolve().parents[1] / "models" / "pretrained"


@app.command("pretrain-lite")
def pretrain_lite(
    data: list[str] = typer.Option(DEFAULT_DATA, "--data", help="Pre-training data specs (repeatable); build them "
                                   "with `cliptune data build openclipart` and `cliptune data build icons`."),
    head: str = typer.Option("linear", "--head", help="Projection head: linear or mlp."),
    embed_dim: int = typer.Option(256, "--embed-dim"),
    head_hidden: Optional[int] = typer.Option(None, "--head-hidden", help="Hidden width of an mlp head."),
    epochs: int = typer.Option(30, "--epochs"),
    held_out: float = typer.Option(0.03, "--held-out", help="Share of images held out to measure the heads."),
    max_images: Optional[int] = typer.Option(2200, "--max-images", help="Training images per data set at most "
                                             "(a seeded sample); 0 for all."),
    out_dir: Path = typer.Option(PACKAGE_DIR, "--out", help="Where <name>.safetensors and <name>.json go."),
    tower: str = typer.Option("b0", "--tower", help="Image tower: b0 (lite, EfficientNet-Lite0), b1 (lite:b1) or "
                              "b2 (lite:b2)."),
    name: Optional[str] = typer.Option(None, "--name", help="File name (default: the tower's shipped heads, "
                                       "e.g. lite1-heads for b1)."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Fit lite's projection heads and logit scale with InfoNCE on frozen, cached tower features."""
    quiet_libraries()
    from cliptune.models.lite import VARIANTS
    from cliptune.pretrain.run import PretrainSpec, run_pretrain

    name = name or VARIANTS.get(tower).heads
    spec = PretrainSpec(data=list(data), head=head, embed_dim=embed_dim, head_hidden=head_hidden, epochs=epochs,
                        held_out=held_out, max_images=max_images or None, tower=tower)
    command = "cliptune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = run_pretrain(spec, out_dir, name, command, progress=progress_enabled(quiet), log=console.print)
    console.print(f"held-out text→image R@1 {record['heldout']['t2i']['R@1']:.4f}, "
                  f"R@10 {record['heldout']['t2i']['R@10']:.4f}; wrote {out_dir / name}.safetensors")
