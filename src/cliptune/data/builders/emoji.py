"""A real, offline image-text dataset: every emoji the system's Noto Color Emoji font can draw, captioned with its
Unicode CLDR name ("grinning face with big eyes", "flag: france", "waving hand: medium skin tone").

Thousands of small pictures whose captions differ by one word (skin tones, genders, flags) make a quick but honest
retrieval benchmark. Pillow draws color emoji only at the font's bitmap size (109 px), so each is rendered there,
cropped to its ink, centred on a white square and resized. Emoji the font draws identically share one picture
file that carries all their captions.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import emoji as emoji_lib
from PIL import Image, ImageDraw, ImageFont, features
from tqdm import tqdm

from cliptune.errors import CliptuneError

log = logging.getLogger(__name__)

NOTO_COLOR_EMOJI = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
BITMAP_SIZE = 109  # the only size the CBDT bitmaps of Noto Color Emoji are drawn at
CSV_NAME = "emoji.csv"
INFO_NAME = "emoji.json"
MARGIN = 0.04  # white border around the glyph, as a share of its larger side

SKIN_TONE = re.compile(r"\b(?:light|medium-light|medium|medium-dark|dark) skin tone\b")
HAIR = ("red hair", "curly hair", "white hair", "blond hair", "bald", "beard")
PEOPLE = {"man", "woman", "person", "boy", "girl", "adult", "child"}
PEOPLE_GROUPS = ("couple with heart", "family", "kiss")  # CLDR lists their members after a colon
REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
TAG_CHARACTERS = range(0xE0020, 0xE0080)
# Sequences no font maps: what the font draws for them is its "unknown" picture (Noto: a flag with a "?").
UNKNOWN_PROBES = ("\U0001F1FD\U0001F1FD",)  # regional indicators X X, a region code never assigned
PUNCTUATION = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"'})

CsvRow = tuple[str, str]  # (image file name, caption)


def is_flag(e: str) -> bool:
    """Country flags are regional-indicator pairs; England/Scotland/Wales are a black flag plus tag characters."""
    codes = [ord(c) for c in e]
    return (len(codes) == 2 and all(c in REGIONAL_INDICATORS for c in codes)) or (
        codes[0] == 0x1F3F4 and len(codes) > 1 and all(c in TAG_CHARACTERS for c in codes[1:]))


def caption(e: str) -> str:
    """The CLDR name in plain lowercase words: ':waving_hand_medium_skin_tone:' → 'waving hand: medium skin tone',
    ':France:' → 'flag: france', ':kiss_woman_man:' → 'kiss: woman, man', ':keycap_#:' → 'keycap: #'."""
    text = emoji_lib.EMOJI_DATA[e]["en"].strip(":").replace("_", " ").translate(PUNCTUATION).lower()
    if is_flag(e):
        return f"flag: {text}"
    if text.startswith("keycap "):
        return f"keycap: {text[len('keycap '):]}"
    base, qualifiers = _split_qualifiers(text)
    for group in PEOPLE_GROUPS:
        members = base[len(group):].split()
        if base.startswith(group + " ") and members and all(m in PEOPLE for m in members):
            base, qualifiers = group, members + qualifiers
            break
    return f"{base}: {', '.join(qualifiers)}" if qualifiers else base


def _split_qualifiers(text: str) -> tuple[str, list[str]]:
    """'man medium skin tone red hair' → ('man', ['medium skin tone', 'red hair'])."""
    first = SKIN_TONE.search(text)
    if first:
        base, rest = text[: first.start()].strip(), text[first.start():]
        tones = SKIN_TONE.findall(rest)
        tail = SKIN_TONE.sub("", rest).split()
        return base, tones + ([" ".join(tail)] if tail else [])
    for hair in HAIR:
        person = text[: -len(hair)].strip()
        if text.endswith(" " + hair) and person in PEOPLE:
            return person, [hair]
    return text, []


def filename(e: str) -> str:
    """Codepoints in hex joined by '-', e.g. '1f600.png', '1f44b-1f3fd.png'."""
    return "-".join(f"{ord(c):04x}" for c in e) + ".png"


def candidates() -> list[str]:
    """Every fully-qualified emoji, sorted by codepoints so that output and `limit` are deterministic."""
    qualified = emoji_lib.STATUS["fully_qualified"]
    found = [e for e, data in emoji_lib.EMOJI_DATA.items() if data["status"] == qualified]
    return sorted(found, key=lambda e: [ord(c) for c in e])


class Renderer:
    """Draws one emoji at the bitmap size and frames it; None when the font cannot draw it as one glyph."""

    def __init__(self, font_path: Path, size: int):
        engine = ImageFont.Layout.RAQM if features.check("raqm") else ImageFont.Layout.BASIC
        if engine == ImageFont.Layout.BASIC:
            log.warning("Pillow has no libraqm: multi-codepoint emoji (skin tones, flags, ZWJ) will not render")
        try:
            self.font = ImageFont.truetype(str(font_path), BITMAP_SIZE, layout_engine=engine)
        except OSError as e:
            raise CliptuneError(f"cannot load the emoji font {font_path}: {e} "
                                "(on Debian/Ubuntu: apt-get install fonts-noto-color-emoji)") from None
        self.size = size
        self.advance = self.font.getlength("\U0001F600")  # width of one glyph
        self.unknown: set[bytes] = set()  # empty while the probes themselves are drawn
        self.unknown = {im.tobytes() for im in map(self, UNKNOWN_PROBES) if im is not None}

    def __call__(self, e: str) -> Image.Image | None:
        # A sequence the font does not know falls apart into its pieces: wider than one glyph.
        if self.font.getlength(e) > 1.5 * self.advance:
            return None
        left, top, right, bottom = self.font.getbbox(e)
        pad = BITMAP_SIZE // 4
        canvas = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((pad - left, pad - top), e, font=self.font, embedded_color=True)
        ink = canvas.getchannel("A").getbbox()
        if ink is None:  # no glyph: Noto's fallback glyph is empty
            return None
        image = self._frame(canvas.crop(ink))
        return None if image.tobytes() in self.unknown else image

    def _frame(self, glyph: Image.Image) -> Image.Image:
        side = max(glyph.size)
        side += 2 * round(MARGIN * side)
        square = Image.new("RGB", (side, side), (255, 255, 255))
        square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2), mask=glyph.getchannel("A"))
        return square.resize((self.size, self.size), Image.Resampling.LANCZOS)


def build_emoji(out_dir: str | Path, size: int = 72, limit: int | None = None, progress: bool = True, *,
                force: bool = False, font: str | Path = NOTO_COLOR_EMOJI) -> Path:
    """Render the emoji dataset into `out_dir` and return the path of its `emoji.csv` (image_path, caption).

    Idempotent: an existing complete build is returned as is unless `force`; a build happens in a temporary
    folder next to `out_dir` and is renamed into place, so an interrupted build never looks complete.
    `limit` keeps the first `limit` drawable emoji (in codepoint order), for tests.
    """
    out_dir = Path(out_dir)
    target = out_dir / CSV_NAME
    if target.is_file() and not force:
        _warn_if_different(out_dir, size, limit)
        return target
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / INFO_NAME).is_file() and not force:
        raise CliptuneError(f"{out_dir} exists, is not empty and is not an emoji build; choose another folder "
                            "or pass force=True to replace it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    render = Renderer(Path(font), size)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        rows, missing, merged = _render_all(render, tmp, limit, progress)
        seconds = time.perf_counter() - started
        _write_csv(tmp / CSV_NAME, rows)
        info = {"rendered": len(rows), "images": len({file for file, _ in rows}), "same_picture": merged,
                "no_glyph": len(missing), "no_glyph_names": missing, "size": size,
                "limit": limit, "font": str(font), "emoji_package": emoji_lib.__version__, "seconds": round(seconds, 1)}
        (tmp / INFO_NAME).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("rendered %d emoji (%d without a glyph in the font) in %.1f s into %s", len(rows), len(missing),
             seconds, out_dir)
    return target


def _warn_if_different(out_dir: Path, size: int, limit: int | None) -> None:
    try:
        info = json.loads((out_dir / INFO_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if (info.get("size"), info.get("limit")) != (size, limit):
        log.warning("%s holds an emoji build with size=%s, limit=%s; returning it as is (force=True rebuilds)",
                    out_dir, info.get("size"), info.get("limit"))


def _render_all(render: Renderer, folder: Path, limit: int | None,
                progress: bool) -> tuple[list[CsvRow], list[str], list[list[str]]]:
    """Rendered (file, caption) rows, the names of emoji the font cannot draw, and the captions merged onto an
    earlier emoji's picture.

    The font draws some emoji identically (`flag: france` and `flag: clipperton island`): such a picture is
    written once and gets every caption (one image, several positives), so no picture is in two splits and no
    caption is trained as the negative of an identical picture.
    """
    rows: list[CsvRow] = []
    missing: list[str] = []
    merged: list[list[str]] = []  # [caption of the kept picture, caption merged onto it]
    first: dict[bytes, CsvRow] = {}  # pixel digest -> (file, caption) of the first emoji drawn so
    todo = candidates()
    # With a limit the bar counts pictures written; without one, emoji tried (some have no glyph).
    with tqdm(total=limit or len(todo), desc="rendering emoji", unit="emoji", disable=not progress) as bar:
        for e in todo:
            if limit is not None and len(rows) >= limit:
                break
            image = render(e)
            if image is None:
                missing.append(caption(e))
            else:
                digest = hashlib.blake2b(image.tobytes(), digest_size=16).digest()
                kept = first.setdefault(digest, (filename(e), caption(e)))
                if kept[0] == filename(e):
                    image.save(folder / filename(e))
                else:
                    merged.append([kept[1], caption(e)])
                rows.append((kept[0], caption(e)))
            bar.update(1 if limit is None or image is not None else 0)
    return rows, missing, merged


def _write_csv(path: Path, rows: list[CsvRow]) -> None:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_path", "caption"])
        writer.writerows(rows)


def _replace(tmp: Path, out_dir: Path) -> None:
    """Move the finished build into place; an older build (or an empty folder) is swapped out, then removed."""
    tmp.chmod(0o755)  # mkdtemp makes it private; the dataset is not
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    try:
        os.replace(tmp, out_dir)
    except OSError:
        if not (out_dir / CSV_NAME).is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same build first
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
