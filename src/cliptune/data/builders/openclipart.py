"""Open Clip Art Library 0.18 as an image–caption set, from Debian's `openclipart-png` + `openclipart-svg`.

About 8,100 drawings (animals, food, people, signs, tools, flags …). `openclipart-png` ships them rendered;
their words live in the matching SVG of `openclipart-svg` (RDF metadata): `dc:title`, `dc:description` and the
`dc:subject` keywords. Each picture gets up to three captions: its title (or, where the title is a collection
name shared by many drawings, the words of its file name minus the author's name), its description, and its
keywords with its category folders. This is `lite`'s pre-training data; the emoji set is never part of it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from cliptune.data.builders.framing import clean_caption

ROOT = Path("/usr/share/openclipart")
NS = {"dc": "http://purl.org/dc/elements/1.1/", "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#"}
WORK_TAGS = ("{http://web.resource.org/cc/}Work", "{http://creativecommons.org/ns#}Work")
AGENT_TITLE = ".//{http://purl.org/dc/elements/1.1/}creator//{http://purl.org/dc/elements/1.1/}title"
SHARED_TITLE = 5  # a title on more drawings than this names a collection, not a drawing
NOISE_WORDS = {"hash", "icons", "icon", "theme", "computer", "clipart", "clip", "art", "svg", "png", "special",
               "signs", "and", "symbols", "media", "openclipart", "image", "picture", "none", "the", "by", "of"}
JUNK = re.compile(r"hash\(|https?:|www\.|\bcopyright\b|\blicen[cs]e\b|@|inkscape|converted", re.IGNORECASE)


@dataclass(frozen=True)
class ClipartMeta:
    """What one SVG says about its drawing."""

    title: str
    description: str
    keywords: tuple[str, ...]
    author: str


def read_meta(svg: Path) -> ClipartMeta:
    """The RDF metadata of one SVG; empty fields where it has none or does not parse."""
    try:
        root = ET.parse(svg).getroot()
    except (ET.ParseError, OSError):
        return ClipartMeta("", "", (), "")
    work = next((w for tag in WORK_TAGS for w in root.iter(tag)), None)
    if work is None:
        return ClipartMeta("", "", (), "")
    keywords = tuple(li.text.strip() for li in work.findall("dc:subject//rdf:li", NS) if li.text and li.text.strip())
    return ClipartMeta(title=(work.findtext("dc:title", "", NS) or "").strip(),
                       description=(work.findtext("dc:description", "", NS) or "").strip(),
                       keywords=keywords, author=(work.findtext(AGENT_TITLE, "") or "").strip())


def stem_words(stem: str, author: str) -> str:
    """'bored_dog_01' → 'bored dog'; 'az-lizard_benji_park_01' by Benji Park → 'az lizard'; 'arrow04' → 'arrow'.

    Numbering ('star_32pt05step') says nothing a picture shows, so words with digits inside are dropped."""
    author_words = {w.lower() for w in re.split(r"[\W_]+", author) if len(w) > 1}
    words = [w.strip("0123456789") for w in re.split(r"[\W_]+", stem.lower())]
    words = [w for w in words if len(w) > 1 and not re.search(r"\d", w)]
    kept = [w for w in words if w not in author_words and not any(a.startswith(w) for a in author_words
                                                                   if len(w) >= 4)]
    return " ".join(kept)


def _usable(text: str, max_words: int = 40) -> str:
    text = clean_caption(text)
    if not text or JUNK.search(text) or len(text.split()) > max_words or not re.search(r"[a-z]", text):
        return ""
    return text


def captions_for(rel: Path, meta: ClipartMeta, title_counts: Counter) -> list[str]:
    """Up to three distinct captions for one drawing (see the module doc)."""
    title = _usable(meta.title, max_words=12)
    if not title or title_counts[title] > SHARED_TITLE:
        title = stem_words(rel.stem, meta.author)
    description = _usable(meta.description.split(". ")[0])
    words = [clean_caption(k) for k in meta.keywords] + [clean_caption(p) for p in reversed(rel.parent.parts)]
    keywords = list(dict.fromkeys(w for w in words if w and not set(w.split()) <= NOISE_WORDS))
    out = [c for c in (title, description, ", ".join(keywords[:8])) if c]
    return list(dict.fromkeys(out))


def sources(root: Path = ROOT) -> list[tuple[Path, Path]]:
    """(png, svg) pairs present in both packages, in path order."""
    pngs = root / "png"
    pairs = []
    for png in sorted(pngs.rglob("*.png")):
        svg = root / "svg" / png.relative_to(pngs).with_suffix(".svg")
        if svg.is_file():
            pairs.append((png, svg))
    return pairs


def collect(root: Path = ROOT, limit: int | None = None) -> list[tuple[Path, list[str]]]:
    """(png, captions) for every drawing with at least one caption."""
    pairs = sources(root)[:limit] if limit else sources(root)
    metas = {png: read_meta(svg) for png, svg in pairs}
    title_counts = Counter(clean_caption(m.title) for m in metas.values())
    out = []
    for png, _ in pairs:
        caps = captions_for(png.relative_to(root / "png"), metas[png], title_counts)
        if caps:
            out.append((png, caps))
    return out
