"""Karpathy split JSON (`dataset_coco.json`, `dataset_flickr30k.json`): `{"images": [{"filepath"?, "filename",
"split", "sentences": [{"raw"}]}]}`, the split every retrieval paper reports COCO and Flickr30k numbers on.

The image is `image_root/filepath/filename` (`filepath` is absent for Flickr); `restval` (the 30k COCO val images
Karpathy moved to training) counts as train. Rows are named `images[i]`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from cliptune.data.formats import Format, register, resolve_image
from cliptune.data.formats._json import expect_list, has_keys, head, load_json
from cliptune.data.records import BadSample, Row

SHAPE = '{"images": [{"filepath", "filename", "split", "sentences": [{"raw"}, ...]}, ...]}'
SPLIT_ALIASES = {"restval": "train"}
ID_KEYS = ("cocoid", "imgid", "id")


def detect(path: Path) -> bool:
    text = head(path)
    return text is not None and has_keys(text, "images", "sentences", "filename")


def read(path: Path, image_root: Path | None = None) -> Iterator[Row | BadSample]:
    file = str(path)
    images = expect_list(load_json(path), "images", file, SHAPE)
    root = Path(image_root) if image_root is not None else path.parent
    for i, entry in enumerate(images):
        yield _row(entry, root, file, f"images[{i}]")


def _caption(sentence: object) -> str | None:
    """`raw` as written; Karpathy's lower-cased `tokens` only when `raw` is missing."""
    if isinstance(sentence, str):
        return sentence
    if not isinstance(sentence, dict):
        return None
    if isinstance(sentence.get("raw"), str):
        return sentence["raw"]
    tokens = sentence.get("tokens")
    return " ".join(tokens) if isinstance(tokens, list) and all(isinstance(t, str) for t in tokens) else None


def _row(entry: object, root: Path, file: str, where: str) -> Row | BadSample:
    if not isinstance(entry, dict):
        return BadSample(file, where, f"expected an object, got {type(entry).__name__}")
    name = entry.get("filename")
    if not isinstance(name, str) or not name.strip():
        return BadSample(file, where, 'missing or empty "filename"')
    sentences = entry.get("sentences")
    if not isinstance(sentences, list) or not sentences:
        return BadSample(file, where, 'no "sentences"')
    captions = [_caption(s) for s in sentences]
    if None in captions:
        k = captions.index(None)
        return BadSample(file, where, f'sentence {k + 1} of {len(captions)} has no "raw" text')
    folder = entry.get("filepath") or ""
    split = entry.get("split")
    split = SPLIT_ALIASES.get(split, split) if isinstance(split, str) else split
    entry_id = next((entry[k] for k in ID_KEYS if k in entry), None)
    return Row(image=resolve_image(os.path.join(str(folder), name.strip()), root), captions=captions, file=file,
               row=where, split=split, id=None if entry_id is None else str(entry_id))


register(Format(name="karpathy", detect=detect, read=read, priority=1))
