"""A font that has the glyphs of the text to draw: Pillow's built-in font covers Latin only, so a grid titled with a
Cyrillic, Greek, Arabic or CJK query would show boxes.

Candidates, in order: the system's Noto CJK and Noto Sans fonts (Debian: fonts-noto-cjk, fonts-noto-core) when
installed, then DejaVu Sans, which matplotlib (a dependency) always ships and which covers Latin, Greek, Cyrillic,
Arabic and Hebrew. The first whose character map holds every character of the text wins; with none, the one that
holds the most.
"""

from __future__ import annotations

import functools
from pathlib import Path

from PIL import ImageFont

SYSTEM_FONTS = ("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
                "/usr/share/fonts/opentype/noto/NotoSansCJKsc-Regular.otf",
                "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
                "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def _candidates() -> list[str]:
    import matplotlib

    bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return [path for path in (*SYSTEM_FONTS, str(bundled)) if Path(path).is_file()]


@functools.lru_cache(maxsize=None)
def _codepoints(path: str) -> frozenset[int]:
    from fontTools.ttLib import TTFont

    with TTFont(path, fontNumber=0, lazy=True) as font:
        return frozenset(font.getBestCmap() or {})


def font_path_for(text: str) -> str | None:
    """The candidate font that covers `text` (ignoring whitespace), or covers most of it; None without any."""
    needed = {ord(ch) for ch in text if not ch.isspace()}
    best, best_missing = None, None
    for path in _candidates():
        missing = len(needed - _codepoints(path))
        if missing == 0:
            return path
        if best_missing is None or missing < best_missing:
            best, best_missing = path, missing
    return best


def font_for(text: str, size: int) -> ImageFont.ImageFont:
    path = font_path_for(text)
    return ImageFont.truetype(path, size=size) if path else ImageFont.load_default(size=size)


__all__ = ["font_for", "font_path_for"]
