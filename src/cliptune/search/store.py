"""The items of an index, one JSON object per line: what the i-th vector is (its image, its captions, when it was
added). Line order is vector order, so item `id` is also the FAISS label."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

from cliptune.errors import CliptuneError


@dataclass(frozen=True)
class Item:
    id: int
    path: str
    captions: list[str] = field(default_factory=list)
    added_at: str = ""


def write_items(path: str | os.PathLike, items: list[Item]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")


def read_items(path: str | os.PathLike) -> list[Item]:
    items = []
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                item = Item(int(data["id"]), str(data["path"]), [str(c) for c in data.get("captions", [])],
                            str(data.get("added_at", "")))
            except (ValueError, KeyError, TypeError) as err:
                raise CliptuneError(f"{path}, line {line_no}: not an index item ({err})") from None
            if item.id != len(items):
                raise CliptuneError(f"{path}, line {line_no}: item id {item.id}, expected {len(items)}")
            items.append(item)
    return items


__all__ = ["Item", "read_items", "write_items"]
