"""`cliptune index` and `cliptune search`: embed a collection once, then find images by words or by example."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from cliptune.cli import app, console, out, progress_enabled, quiet_libraries
from cliptune.search.model_choice import DEFAULT_MODEL, MODEL_ENV, resolve_model_spec



def _collection(data: Optional[str], images: Optional[Path], split: Optional[str], format: Optional[str],
                image_root: Optional[str], on_bad_sample: str, model: Optional[str] = None):
    """Records to index from exactly one of --data / --images, checked; returns (records, number skipped).

    With a run directory as --model and its own training data as --data, the data is read as the run read it
    (train/rebuild.py: its split ratios and seed, --val-data/--test-data as its val/test splits)."""
    from cliptune.errors import UsageError
    from cliptune.search.collection import as_records, checked, image_files
    from cliptune.train.rebuild import is_run_data, load_run_data, run_config

    if (data is None) == (images is None):
        raise UsageError("give exactly one of --data (a data spec) or --images (a folder of pictures)")
    if data is not None:
        from cliptune.data.load import load_dataset

        cfg = run_config(model) if model else None
        if cfg is not None and is_run_data(cfg, data) and format is None and image_root is None:
            dataset = load_run_data(cfg)
        else:
            dataset = load_dataset(data, format=format, image_root=image_root, on_bad_sample=on_bad_sample)
        records = dataset.records if split in (None, "all") else dataset.split(split)
        if not records:
            raise UsageError(f"{data}: split {split!r} is empty; splits found: {dataset.splits or ['(none)']}")
        return records, len(dataset.skipped)
    records, skipped = checked(as_records(image_files(images)), on_bad_sample)
    return records, len(skipped)


@app.command("index")
def index_cmd(
    out_dir: Path = typer.Option(..., "--out", help="Index directory to create (or to extend with --add)."),
    model: Optional[str] = typer.Option(None, "--model", help=f"Model spec or run directory (default: "
                                        f"${MODEL_ENV}, the index's model with --add, else {DEFAULT_MODEL})."),
    data: Optional[str] = typer.Option(None, "--data", help="Data spec whose images (and captions) to index."),
    images: Optional[Path] = typer.Option(None, "--images", help="A folder of pictures to index (recursively)."),
    ann: str = typer.Option("flat", "--ann", help="flat (exact), hnsw or ivfpq (large collections)."),
    add: bool = typer.Option(False, "--add", help="Add the images to an existing index (ones already in it are "
                                                  "left out)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index at --out."),
    split: Optional[str] = typer.Option(None, "--split", help="With --data: only this split (default: all)."),
    format: Optional[str] = typer.Option(None, "--format", help="Force the data format."),
    image_root: Optional[str] = typer.Option(None, "--image-root", help="Resolve relative image paths here."),
    on_bad_sample: str = typer.Option("error", "--on-bad-sample", help="error or skip."),
    batch_size: int = typer.Option(32, "--batch-size", help="Images per forward pass."),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
):
    """Embed a collection of images into a search index (FAISS + items + manifest)."""
    quiet_libraries()
    import time

    from cliptune.errors import UsageError
    from cliptune.models.registry import load_model
    from cliptune.search.ann import ANN
    from cliptune.search.index import build_index, check_destination, open_index

    ANN.get(ann)
    if add and overwrite:
        raise UsageError("--add extends an index and --overwrite replaces it: give one")
    if not add:
        check_destination(out_dir, overwrite)  # before the slow part
    records, skipped = _collection(data, images, split, format, image_root, on_bad_sample, model)
    existing = open_index(out_dir) if add else None
    encoder = load_model(model or (existing.model_spec if existing else resolve_model_spec(None)))
    start = time.perf_counter()
    if existing is not None:
        index = existing
        if ann != "flat" and ann != index.ann:
            console.print(f"[yellow]note:[/] --ann {ann} ignored: the index is {index.ann}")
        added = index.add(encoder, records, batch_size=batch_size, progress=progress_enabled(quiet))
        message = f"added {added} image(s) ({len(records) - added} already indexed)"
    else:
        index = build_index(encoder, records, out_dir, ann=ann, batch_size=batch_size,
                            progress=progress_enabled(quiet), overwrite=overwrite)
        reason = index.manifest.get("ann_params", {}).get("reason")
        if reason:
            console.print(f"[yellow]note:[/] --ann {ann}: {reason}", markup=True, highlight=False)
        message = f"indexed {len(index)} image(s)"
    elapsed = time.perf_counter() - start
    skipped_note = f", skipped {skipped} bad sample(s)" if skipped else ""
    console.print(f"{message}{skipped_note} in {elapsed:.1f} s; index {out_dir} now holds {len(index)} "
                  f"({index.ann}, model {index.model_spec}, {index.embed_dim}-d)")


def _shown(path: str) -> str:
    """A path as short as it can be shown unambiguously: relative to the working directory when under it."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def _hits_table(hits, title: str):
    from rich.table import Table

    table = Table(title=title)
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    table.add_column("image", overflow="fold")
    table.add_column("captions", overflow="fold")
    for rank, hit in enumerate(hits, 1):
        captions = "; ".join(hit.captions[:2]) + (" …" if len(hit.captions) > 2 else "")
        table.add_row(str(rank), f"{hit.score:.4f}", _shown(hit.path), captions)
    return table


@app.command("search")
def search_cmd(
    query: Optional[str] = typer.Argument(None, help="What to look for, in words (or use --image)."),
    index_dir: Path = typer.Option(..., "--index", help="Index directory (from `cliptune index`)."),
    k: int = typer.Option(10, "-k", "--top-k", help="How many results."),
    image: Optional[Path] = typer.Option(None, "--image", help="Search by this picture instead of words."),
    model: Optional[str] = typer.Option(None, "--model", help="Model spec (default: the index's model)."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write a self-contained results page here."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Also write a results picture (PNG) here."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON instead of a table."),
):
    """Top-k images of an index for a text or an image query, with their scores."""
    quiet_libraries()
    from cliptune.data.images import load_image
    from cliptune.errors import UsageError
    from cliptune.models.registry import load_model
    from cliptune.search.index import open_index

    if (query is None or not query.strip()) == (image is None):
        raise UsageError("give either a text query or --image (one of them)")
    if k < 1:
        raise UsageError(f"-k must be at least 1, got {k}")
    index = open_index(index_dir)
    encoder = load_model(model or index.model_spec)
    query_image = load_image(image) if image is not None else None
    if query_image is not None:
        hits = index.search_image(encoder, query_image, k)
        label = f"image {image}"
    else:
        hits = index.search_text(encoder, query, k)
        label = repr(query)
    if as_json:
        payload = {"query": query, "image": str(image) if image else None, "k": k, "index": str(index_dir),
                   "model": encoder.spec, "hits": [{"rank": rank, **hit._asdict()} for rank, hit in enumerate(hits, 1)]}
        typer.echo(json.dumps(payload, indent=2))  # plain: rich would wrap long paths inside strings
    else:
        out.print(_hits_table(hits, f"top {len(hits)} of {len(index)} for {label}"))
    if grid is not None:
        from cliptune.search.grid import render_grid

        render_grid(hits, grid, title=query or f"image: {image.name}", query_image=query_image)
        console.print(f"wrote {grid}")
    if html is not None:
        from cliptune.search.page import render_html

        render_html(hits, html, query=query or "", model=encoder.spec, index=str(index_dir), query_image=query_image)
        console.print(f"wrote {html}")
