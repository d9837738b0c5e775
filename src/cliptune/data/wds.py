"""WebDataset conventions shared by the shard reader, the stream and the writer.

A shard is a tar file; a sample is the run of members that share a key, the member name up to the first dot of
its base name (`dir/000123.jpg`, `dir/000123.json` → key `dir/000123`, extensions `jpg`, `json`). A data spec
names shards as a brace pattern (`shards/train-{000000..000099}.tar`), a glob, one `.tar`, or a folder of them.

Which member is the image and where the captions are is a `SampleLayout`, parsed from two strings:
`image_key="jpg;png;webp"` (extensions, first present wins) and `caption_key="json:captions;txt"` (sources, first
present wins: `txt` is the whole text member as one caption; `json:FIELD` is a field of the json member holding
one caption or a list of them).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cliptune.data.splits import normalize_split
from cliptune.errors import DataError, UsageError

DEFAULT_IMAGE_KEY = "jpg;jpeg;png;webp;bmp;gif;tiff;tif"
DEFAULT_CAPTION_KEY = "json:captions;json:caption;txt"
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_BRACES = re.compile(r"\{[^{}]*(?:\.\.|,)[^{}]*\}")


def is_shard_spec(spec: str | os.PathLike) -> bool:
    """A brace pattern or glob naming shards, or one shard file (existence is checked on expansion)."""
    text = os.fspath(spec)
    if not text.lower().endswith(SHARD_SUFFIXES):
        return False
    return bool(_BRACES.search(text)) or any(c in text for c in "*?[") or os.path.isfile(text)


def is_shard_folder(path: Path) -> bool:
    """A folder holding `.tar` shards directly (and no images, which would make it a sidecar folder)."""
    if not path.is_dir():
        return False
    names = [name.lower() for name in os.listdir(path) if not name.startswith(".")]
    has_shards = any(name.endswith(SHARD_SUFFIXES) for name in names)
    has_images = any(name.endswith((".jpg", ".jpeg", ".png", ".webp")) for name in names)
    return has_shards and not has_images


def expand_shards(spec: str | os.PathLike) -> list[str]:
    """The shard paths `spec` names, in order (brace order; sorted for globs and folders); a DataError names
    the first missing shard, so a typo in a pattern does not silently train on less data."""
    from braceexpand import braceexpand

    text = os.fspath(spec)
    if os.path.isdir(text):
        shards = sorted(os.path.join(text, n) for n in os.listdir(text)
                        if n.lower().endswith(SHARD_SUFFIXES) and not n.startswith("."))
    elif any(c in text for c in "*?["):
        shards = sorted(p for pattern in braceexpand(text) for p in glob.glob(pattern))
    else:
        shards = list(braceexpand(text))
    if not shards:
        raise DataError("no shards match", file=text)
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise DataError(f"shard {missing[0]} does not exist ({len(missing)} of {len(shards)} named shards are "
                        "missing)", file=text)
    return [os.path.abspath(s) for s in shards]


def split_name(member: str) -> tuple[str, str]:
    """(sample key, extension) as WebDataset splits a member name: at the first dot of the base name."""
    folder, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower() if dot else ""


def shard_split(shard: str) -> str | None:
    """`train-000003.tar` → "train": the one split name among the name's `-`/`_`/`.`-separated words."""
    stem = os.path.basename(shard).split(".", 1)[0]
    found = set()
    for word in re.split(r"[-_.]", stem):
        try:
            split = normalize_split(word)
        except ValueError:
            continue
        if split is not None:
            found.add(split)
    return found.pop() if len(found) == 1 else None


def skip_member(name: str) -> bool:
    """Members that are no part of any sample (macOS `._x` resource forks, hidden files)."""
    return os.path.basename(name).startswith(".")


@dataclass(frozen=True)
class SampleLayout:
    """Which extension is the image and where the captions are (see the module docstring)."""

    image_exts: tuple[str, ...]
    caption_sources: tuple[tuple[str, str | None], ...]  # ("txt", None) or ("json", field)

    @classmethod
    def parse(cls, image_key: str | None = None, caption_key: str | None = None) -> "SampleLayout":
        image_key = image_key or DEFAULT_IMAGE_KEY
        caption_key = caption_key or DEFAULT_CAPTION_KEY
        exts = tuple(e.strip().lower().lstrip(".") for e in image_key.split(";") if e.strip())
        sources = []
        for part in (p.strip() for p in caption_key.split(";") if p.strip()):
            ext, _, field = part.partition(":")
            ext = ext.lower().lstrip(".")
            if ext == "json":
                sources.append(("json", field or "caption"))
            elif not field:
                sources.append((ext, None))
            else:
                raise UsageError(f"caption key {part!r}: only json members have fields (json:FIELD); "
                                 "text members are named by extension (txt)")
        if not exts or not sources:
            raise UsageError(f"image key {image_key!r} and caption key {caption_key!r} must each name at least "
                             "one member")
        return cls(exts, tuple(sources))

    @property
    def caption_exts(self) -> set[str]:
        return {ext for ext, _ in self.caption_sources}

    def image_ext(self, exts) -> str | None:
        return next((e for e in self.image_exts if e in exts), None)

    def describe_image(self, key: str) -> str:
        return ", ".join(f"{key}.{e}" for e in self.image_exts)

    def describe_captions(self, key: str) -> str:
        return ", ".join(f'{key}.json field "{f}"' if ext == "json" else f"{key}.{ext}"
                         for ext, f in self.caption_sources)

    def captions(self, key: str, members: dict[str, bytes]) -> tuple[list[str] | None, dict, str | None]:
        """(captions, json object or {}, None) or (None, {}, why not) from a sample's caption members."""
        meta: dict = {}
        if "json" in members and "json" in self.caption_exts:
            try:
                meta = json.loads(members["json"].decode("utf-8-sig"))
            except (UnicodeDecodeError, ValueError) as e:
                return None, {}, f"{key}.json is not valid UTF-8 JSON: {e}"
            if not isinstance(meta, dict):
                return None, {}, f"{key}.json must hold an object, got {type(meta).__name__}"
        for ext, field in self.caption_sources:
            if ext == "json":
                if field not in meta:
                    continue
                value = meta[field]
                value = value if isinstance(value, list) else [value]
                if not value or not all(isinstance(c, str) for c in value):
                    return None, meta, f'{key}.json field "{field}" must hold a caption or a list of captions'
                return list(value), meta, None
            if ext in members:
                try:
                    return [members[ext].decode("utf-8-sig")], meta, None
                except UnicodeDecodeError as e:
                    return None, meta, (f"{key}.{ext} is not valid UTF-8 (byte 0x{e.object[e.start]:02x}); "
                                        "save it as UTF-8")
        return None, meta, f"no caption (looked for {self.describe_captions(key)}; found {_found(key, members)})"


def _found(key: str, members) -> str:
    return ", ".join(f"{key}.{e}" for e in sorted(members)) or "nothing"


def missing_image(layout: SampleLayout, key: str, members) -> str:
    return f"no image (looked for {layout.describe_image(key)}; found {_found(key, members)})"


def group_members(names: Iterator[tuple[str, object]]) -> Iterator[tuple[str, dict[str, object]]]:
    """(key, {ext: value}) for consecutive members sharing a key, as WebDataset groups a streamed shard."""
    key, group = None, {}
    for name, value in names:
        if skip_member(name):
            continue
        sample_key, ext = split_name(name)
        if sample_key != key:
            if group:
                yield key, group
            key, group = sample_key, {}
        group[ext] = value
    if group:
        yield key, group
