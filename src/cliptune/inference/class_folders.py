"""A classification set as folders: `DIR/<class>/<image>`; the class name is the folder name, underscores → spaces.

This is the layout of torchvision's `ImageFolder` and of most exported classification sets, so a user can point
`cliptune eval zeroshot` at one without writing captions. Classes are sorted by folder name (label = position).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cliptune.data.formats.sidecar_dir import IMAGE_SUFFIXES
from cliptune.data.records import Record
from cliptune.errors import DataError


@dataclass
class ClassFolders:
    classnames: list[str]  # readable names used in prompts, index = label
    folders: list[str]  # the folder of each class, same order
    records: list[Record]  # every image, with `label` set

    @property
    def labels(self) -> list[int]:
        return [int(r.label) for r in self.records]  # type: ignore[arg-type]


def classname(folder: str) -> str:
    """`golden_retriever` → `golden retriever`: folder names are identifiers, prompts want words."""
    return " ".join(folder.replace("_", " ").split())


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def read_class_folders(root: str | Path) -> ClassFolders:
    """Every image under each class folder (recursively, sorted), hidden files and folders skipped.

    An empty class folder stays a class (a distractor in the prompts); a folder with no class folders, or class
    folders holding no image at all, is a DataError naming the folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("not a folder of class folders (DIR/<class>/<image>)", file=str(root))
    folders = sorted(p for p in root.iterdir() if p.is_dir() and _visible(p))
    if not folders:
        raise DataError("no class folders inside (expected DIR/<class>/<image>)", file=str(root))
    names = [classname(p.name) for p in folders]
    seen: dict[str, str] = {}
    for folder, name in zip(folders, names):
        if name in seen:
            raise DataError(f"folders {seen[name]!r} and {folder.name!r} give the same class name {name!r}",
                            file=str(root))
        seen[name] = folder.name
    records = []
    for label, folder in enumerate(folders):
        for image in sorted(folder.rglob("*")):
            hidden = any(part.startswith(".") for part in image.relative_to(folder).parts)
            if image.is_file() and image.suffix.lower() in IMAGE_SUFFIXES and not hidden:
                records.append(Record(image=str(image), captions=[], label=label, split=None,
                                      sources=[(str(image), None)]))  # type: ignore[list-item]
    if not records:
        raise DataError(f"the {len(folders)} class folders hold no images "
                        f"({', '.join(sorted(IMAGE_SUFFIXES))})", file=str(root))
    return ClassFolders(classnames=names, folders=[p.name for p in folders], records=records)
