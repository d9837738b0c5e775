"""A results page: one self-contained HTML file (thumbnails inlined as base64), so it can be mailed or archived
and still show its pictures. The layout lives in `templates/results.html`."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from jinja2 import Environment, PackageLoader, select_autoescape

from cliptune.utils.atomic import write_text_atomic
from cliptune.search.thumbs import data_uri, thumbnail

if TYPE_CHECKING:
    from PIL import Image

    from cliptune.search.index import Hit

THUMB = 224


def _environment() -> Environment:
    return Environment(loader=PackageLoader("cliptune.search", "templates"), autoescape=select_autoescape(["html"]))


def render_html(hits: list["Hit"], out_path: str | os.PathLike, query: str = "", model: str = "",
                index: str = "", query_image: "Image.Image | None" = None) -> Path:
    """Write the page to `out_path` and return the path."""
    cards = [{"rank": rank, "score": hit.score, "name": Path(hit.path).name, "path": hit.path,
              "captions": hit.captions, "src": data_uri(thumbnail(hit.path, THUMB))}
             for rank, hit in enumerate(hits, 1)]
    query_src = None
    if query_image is not None:
        preview = query_image.convert("RGB")
        preview.thumbnail((THUMB, THUMB))
        query_src = data_uri(preview)
    html = _environment().get_template("results.html").render(
        query=query, query_src=query_src, model=model, index=index, hits=cards,
        created=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(out, html)


__all__ = ["render_html"]
