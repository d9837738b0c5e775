"""COCO captions JSON: `{"images": [{"id", "file_name"}], "annotations": [{"image_id", "caption"}]}`, about five
captions per image (the `captions_train2017.json` of COCO, and the many datasets exported in its layout).

Images are resolved against `image_root` (default: the JSON's own folder; COCO keeps them elsewhere, e.g.
`--image-root coco/val2017`). Each image is one row named `images[i]`, holding all its captions; an annotation
that cannot be used (unknown image id, caption not a string) is a bad sample named `annotations[j]`, and an image
no annotation describes is a bad sample too (a captions file should caption every image it lists).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from cliptune.data.formats import Format, register, resolve_image
from cliptune.data.formats._json import expect_list, has_keys, head, load_json
from cliptune.data.records import BadSample, Row
from cliptune.errors import DataError

SHAPE = '{"images": [{"id", "file_name"}, ...], "annotations": [{"image_id", "caption"}, ...]}'


def detect(path: Path) -> bool:
    """`"images"` plus signs of COCO entries in the first megabyte (`"annotations"` often comes after a long
    image list, so an image's `"file_name"` counts as much as a caption's `"image_id"`); Karpathy files, whose
    entries carry `"sentences"`, are left to their own format."""
    text = head(path)
    if text is None or not has_keys(text, "images") or has_keys(text, "sentences"):
        return False
    return has_keys(text, "file_name") or has_keys(text, "image_id", "caption")


def read(path: Path, image_root: Path | None = None) -> Iterator[Row | BadSample]:
    file = str(path)
    data = load_json(path)
    images = expect_list(data, "images", file, SHAPE)
    annotations = expect_list(data, "annotations", file, SHAPE)
    if annotations and not any(isinstance(a, dict) and "caption" in a for a in annotations):
        raise DataError('no annotation has a "caption": this is not a COCO captions file (instances or keypoints '
                        "files describe boxes, not text)", file=file)
    root = Path(image_root) if image_root is not None else path.parent

    index: dict[object, int] = {}  # image id -> position in "images"
    for i, entry in enumerate(images):
        if isinstance(entry, dict) and "id" in entry:
            index.setdefault(entry["id"], i)
    captions: list[list[str]] = [[] for _ in images]
    for j, ann in enumerate(annotations):
        where = f"annotations[{j}]"
        if not isinstance(ann, dict):
            yield BadSample(file, where, f"expected an object, got {type(ann).__name__}")
        elif ann.get("image_id") not in index:
            yield BadSample(file, where, f"image_id {ann.get('image_id')!r} is not in \"images\"")
        elif not isinstance(ann.get("caption"), str):
            yield BadSample(file, where, f'"caption" must be a string, got {type(ann.get("caption")).__name__}')
        elif not ann["caption"].strip():
            yield BadSample(file, where, f"empty caption (image_id {ann['image_id']!r})")
        else:
            captions[index[ann["image_id"]]].append(ann["caption"])

    for i, entry in enumerate(images):
        yield _row(entry, captions[i], root, file, f"images[{i}]")


def _row(entry: object, captions: list[str], root: Path, file: str, where: str) -> Row | BadSample:
    if not isinstance(entry, dict):
        return BadSample(file, where, f"expected an object, got {type(entry).__name__}")
    name = entry.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return BadSample(file, where, 'missing or empty "file_name"')
    if "id" not in entry:
        return BadSample(file, where, 'missing "id" (annotations refer to images by it)')
    if not captions:
        return BadSample(file, where, f"no caption annotation refers to image id {entry['id']!r}")
    meta = {k: v for k, v in entry.items() if k in ("width", "height", "coco_url", "flickr_url")}
    return Row(image=resolve_image(name.strip(), root), captions=captions, file=file, row=where,
               split=entry.get("split"), id=str(entry["id"]), meta=meta)


register(Format(name="coco", detect=detect, read=read, priority=1))
