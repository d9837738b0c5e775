"""Class folders from an emoji build: each image filed under its CLDR group or subgroup, for zero-shot
classification (`cliptune eval zeroshot --data <out>`, `cliptune classify`).

The group and subgroup of every emoji come from Unicode's `emoji-test.txt` (Debian package `unicode-data`), read by
the codepoints that the emoji builder puts in each file name. Folder names are readable class names: subgroup
`animal-mammal` → `animal mammal`, group `Smileys & Emotion` → `smileys and emotion`. Only images of the chosen
split of the emoji data are filed (the demo's test split by default), so the set stays unseen by fine-tuning.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from cliptune.errors import CliptuneError

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
LEVELS = ("group", "subgroup")


@dataclass(frozen=True)
class EmojiClass:
    group: str
    subgroup: str


def read_emoji_test(path: Path = EMOJI_TEST) -> dict[str, EmojiClass]:
    """{file stem ('1f600', '263a-fe0f'): its group and subgroup} for every sequence listed in emoji-test.txt."""
    if not path.is_file():
        raise CliptuneError(f"{path} not found: apt-get install unicode-data")
    out: dict[str, EmojiClass] = {}
    group = subgroup = ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line:
            codes = line.split(";", 1)[0].split()
            out["-".join(c.lower().rjust(4, "0") for c in codes)] = EmojiClass(group, subgroup)
    return out


def class_folder_name(name: str) -> str:
    """A readable class name usable as a folder: 'Smileys & Emotion' → 'smileys and emotion'."""
    return re.sub(r"\s+", " ", name.replace("&", "and").replace("-", " ")).strip().lower()


def file_classes(image_names: list[str], level: str, table: dict[str, EmojiClass]) -> dict[str, str]:
    """{image file name: class folder name} for the images emoji-test.txt lists (others are left out)."""
    if level not in LEVELS:
        raise CliptuneError(f"level must be one of {LEVELS}, got {level!r}")
    out = {}
    for name in image_names:
        found = table.get(Path(name).stem)
        if found is not None:
            out[name] = class_folder_name(getattr(found, level))
    return out


def build_emoji_classes(images: list[Path], out_dir: Path, level: str = "subgroup", min_images: int = 1,
                        table: dict[str, EmojiClass] | None = None) -> dict[str, int]:
    """Copy `images` into `out_dir/<class>/`; classes with fewer than `min_images` images are left out.
    Returns {class: image count}."""
    classes = file_classes([p.name for p in images], level, read_emoji_test() if table is None else table)
    counts: dict[str, int] = {}
    for cls in classes.values():
        counts[cls] = counts.get(cls, 0) + 1
    kept = {c: n for c, n in sorted(counts.items()) if n >= min_images}
    if out_dir.exists():
        shutil.rmtree(out_dir)
    for path in images:
        cls = classes.get(path.name)
        if cls in kept:
            (out_dir / cls).mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out_dir / cls / path.name)
    return kept
