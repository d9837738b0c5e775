"""Icons of an installed freedesktop icon theme (Adwaita by default) as an image–caption set.

Icon names follow the freedesktop naming spec, so the file name describes the picture: `face-smile-big`,
`user-trash-full`, `audio-volume-high`, `weather-storm`. Each name is taken once, at its largest PNG of at most
`MAX_SIDE` px; the caption is its words, and a second caption adds the theme's context folder ("status",
"devices" …). Icons about emoji (`emoji-*`) are left out: the emoji set is the evaluation data.
"""

from __future__ import annotations

import re
from pathlib import Path

from cliptune.data.builders.framing import clean_caption

THEME = Path("/usr/share/icons/Adwaita")
MAX_SIDE = 256
EXCLUDE = re.compile(r"emoji", re.IGNORECASE)
CONTEXT_WORDS = {"mimetypes": "file type", "apps": "application", "emotes": "emote", "ui": "user interface"}
NAME_NOISE = {"symbolic", "x", "rtl", "ltr"}


def _side(path: Path, theme: Path) -> int:
    """Pixel side from the size folder ('48x48', '16x16@2x'); 0 when the folder is not a size."""
    match = re.fullmatch(r"(\d+)x\d+(?:@(\d)x)?", path.relative_to(theme).parts[0])
    return int(match.group(1)) * int(match.group(2) or 1) if match else 0


def icon_name(path: Path) -> str:
    """'face-smile-big-symbolic.symbolic.png' → 'face-smile-big-symbolic'."""
    return path.name.split(".")[0]


def name_words(name: str) -> str:
    """'face-smile-big-symbolic' → 'face smile big'; 'x-office-document' → 'office document'."""
    words = [w for w in re.split(r"[-_.+]+", name.lower()) if w and w not in NAME_NOISE and not w.isdigit()]
    return " ".join(words)


def collect(theme: Path = THEME, limit: int | None = None) -> list[tuple[Path, list[str]]]:
    """(png, captions): one icon per name, at its largest PNG size up to MAX_SIDE px."""
    best: dict[str, tuple[int, Path]] = {}
    for png in sorted(theme.rglob("*.png")):
        side = _side(png, theme)
        name = icon_name(png)
        if not side or side > MAX_SIDE or EXCLUDE.search(str(png.relative_to(theme))) or not png.is_file():
            continue
        if name not in best or side > best[name][0]:
            best[name] = (side, png)
    out = []
    for name in sorted(best)[:limit] if limit else sorted(best):
        png = best[name][1]
        words = name_words(name)
        if not words:
            continue
        context = png.parent.name
        captions = [words, clean_caption(f"{words}, {CONTEXT_WORDS.get(context, context)} icon")]
        out.append((png, captions))
    return out
