"""WebDataset tar shards read map-style: one row per sample, the image left inside its shard.

`shards/train-{000000..000099}.tar`, a glob, one `.tar` or a folder of shards. Only the tar headers and the
caption members are read here; the image stays a `shard.tar#key.jpg` reference that `load_image` decodes in
place (see `data/tar_members.py`), so nothing is unpacked. Rows are named by shard and key
(`shards/train-000003.tar, row 000123`). The split is the split word in the shard's name (`train-000003.tar`),
else a `split` field in the sample's json, else assigned as for any unsplit data. For training straight from the
stream (shard shuffling, resampling, node and worker splitting) use `cliptune.data.streaming`.
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterator

from cliptune.data.formats import Format, register
from cliptune.data.records import BadSample, Row
from cliptune.data.tar_integrity import DAMAGE_KIND, TarWalk
from cliptune.data.tar_members import member_ref
from cliptune.data.wds import (SampleLayout, expand_shards, is_shard_folder, is_shard_spec, missing_image,
                               shard_split, skip_member, split_name)
from cliptune.errors import DataError


def detect(path: Path) -> bool:
    return is_shard_spec(path) or is_shard_folder(path)


def read(path: Path, image_root: Path | None = None, image_key: str | None = None,
         caption_key: str | None = None) -> Iterator[Row | BadSample]:
    """`image_root` is ignored: images are inside the shards."""
    layout = SampleLayout.parse(image_key, caption_key)
    for shard in expand_shards(path):
        if not shard.endswith(".tar"):
            raise DataError("compressed shard: map-style reading needs uncompressed .tar shards (images are read "
                            "in place); recompress with `cliptune data to-wds` or read it with the stream "
                            "(data.streaming)", file=shard)
        yield from read_shard(shard, layout)


def read_shard(shard: str, layout: SampleLayout) -> Iterator[Row | BadSample]:
    """Rows of one shard in key order of first appearance (members of a key need not be adjacent here); a shard
    that does not read to its end-of-archive marker adds a bad sample naming the byte where reading stopped."""
    samples: dict[str, dict[str, tarfile.TarInfo]] = {}
    texts: dict[tuple[str, str], bytes] = {}
    walk = TarWalk(shard, want=lambda name: split_name(name)[1] in layout.caption_exts)
    try:
        for member, data in walk:
            if skip_member(member.name):
                continue
            key, ext = split_name(member.name)
            samples.setdefault(key, {})[ext] = member
            if data is not None:
                texts[(key, ext)] = data
    except OSError as e:
        raise DataError(f"cannot read shard: {e.strerror or e}", file=shard) from None
    split = shard_split(shard)
    cut = walk.damage.row if walk.damage is not None else None
    for key, group in samples.items():
        if key != cut:  # the sample the damage cuts into is reported with the damage
            yield _row(shard, key, group, texts, layout, split)
    if walk.damage is not None:
        yield BadSample(shard, walk.damage.row, walk.damage.reason, kind=DAMAGE_KIND)


def _row(shard: str, key: str, group: dict[str, tarfile.TarInfo], texts: dict[tuple[str, str], bytes],
         layout: SampleLayout, split: str | None) -> Row | BadSample:
    ext = layout.image_ext(group)
    if ext is None:
        return BadSample(shard, key, missing_image(layout, key, group))
    members = {e: texts[(key, e)] for e in group if (key, e) in texts}
    captions, meta, problem = layout.captions(key, members)
    if problem:
        return BadSample(shard, key, problem)
    extra = {k: v for k, v in meta.items() if k not in ("captions", "caption", "label", "split", "id")}
    return Row(image=member_ref(shard, group[ext].name), captions=captions, file=shard, row=key,
               label=meta.get("label"), split=split or meta.get("split"),
               id=str(meta["id"]) if meta.get("id") is not None else key, meta=extra)


register(Format(name="webdataset", detect=detect, read=read, local_images=False, priority=1,
                options=("image_key", "caption_key")))
