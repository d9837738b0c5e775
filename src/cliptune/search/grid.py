"""A results picture: the query on top, then one cell per hit with its thumbnail, rank and score, in rank order
left to right, top to bottom. Meant for a quick look or a report, so it is one PNG with no dependencies."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont  # noqa: F401 - ImageFont in annotations

from cliptune.search.fonts import font_for
from cliptune.utils.atomic import write_atomic
from cliptune.search.thumbs import thumbnail

if TYPE_CHECKING:
    from cliptune.search.index import Hit

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
FRAME = (238, 238, 238)
PAD = 8
LABEL_H = 38
TITLE_H = 34


def _font(size: int, text: str = "#0123456789.") -> ImageFont.ImageFont:
    """A font with glyphs for `text` (a query may be in any script: search/fonts.py)."""
    return font_for(text, size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def render_grid(hits: list["Hit"], out_path: str | os.PathLike, title: str = "", thumb: int = 160,
                columns: int = 5, query_image: Image.Image | None = None) -> Path:
    """Write the picture to `out_path` (PNG) and return the path."""
    columns = max(1, min(columns, len(hits) or 1))
    rows = max(1, math.ceil(len(hits) / columns))
    cell_w, cell_h = thumb + 2 * PAD, thumb + LABEL_H + 2 * PAD
    query_h = thumb // 2 + PAD if query_image is not None else 0
    canvas = Image.new("RGB", (columns * cell_w, TITLE_H + query_h + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    big, small = _font(16), _font(12)
    heading = title or "results"
    title_font = _font(16, heading)
    draw.text((PAD, PAD), _fit(draw, heading, title_font, canvas.width - 2 * PAD), font=title_font, fill=INK)
    if query_image is not None:
        preview = query_image.convert("RGB")
        preview.thumbnail((thumb // 2, thumb // 2))
        canvas.paste(preview, (PAD, TITLE_H))
    if not hits:
        draw.text((PAD, TITLE_H + query_h + PAD), "no results", font=small, fill=MUTED)
    for rank, hit in enumerate(hits, 1):
        x0 = ((rank - 1) % columns) * cell_w + PAD
        y0 = TITLE_H + query_h + ((rank - 1) // columns) * cell_h + PAD
        draw.rectangle((x0 - 1, y0 - 1, x0 + thumb, y0 + thumb), fill=FRAME)
        picture = thumbnail(hit.path, thumb, upscale=True)
        canvas.paste(picture, (x0 + (thumb - picture.width) // 2, y0 + (thumb - picture.height) // 2))
        draw.text((x0, y0 + thumb + 4), f"#{rank}  {hit.score:.3f}", font=big, fill=INK)
        name = Path(hit.path).name
        name_font = _font(12, name)
        draw.text((x0, y0 + thumb + 22), _fit(draw, name, name_font, thumb), font=name_font, fill=MUTED)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(out, lambda tmp: canvas.save(tmp, format="PNG"))


__all__ = ["render_grid"]
