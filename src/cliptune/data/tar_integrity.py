"""Reading a tar shard to its end, or saying exactly where it broke.

Python's `tarfile` stops without a word at a damaged header anywhere after the first member, and at a file that
ends early (it reads an empty header there), so a truncated or corrupt shard just looks like a shorter one. Every
reader of shards (the map-style index, the stream, `validate`, `data to-wds`) walks members through `TarWalk`,
which also checks, when the walk ends, that it stopped at the end-of-archive marker (a zero block) and that every
member's data lies inside the file. When not, `walk.damage` says at which byte reading stopped, after which member
and why; the members read before that point are intact and are yielded as usual.
"""

from __future__ import annotations

import gzip
import os
import tarfile
import zlib
from dataclasses import dataclass
from typing import IO, Callable, Iterator

from cliptune.data.wds import split_name

BLOCK = tarfile.BLOCKSIZE
GZIP_MAGIC = b"\x1f\x8b"
DAMAGE_KIND = "damaged_shard"  # BadSample.kind of a shard that does not read to its end


@dataclass(frozen=True)
class ShardDamage:
    """Where and why reading `shard` stopped before its end-of-archive marker."""

    shard: str
    offset: int  # byte of the (decompressed) archive where the walk stopped
    after: str | None  # the last member read whole, None when the damage is before the first
    detail: str

    @property
    def row(self) -> str:
        """The sample the damage cuts into (the key of the last member read whole), as errors name rows."""
        return split_name(self.after)[0] if self.after else "(start)"

    @property
    def reason(self) -> str:
        if not self.after:
            return f"shard is truncated or corrupt at byte {self.offset} (before the first member): {self.detail}"
        return (f"shard is truncated or corrupt at byte {self.offset} (after member {self.after}): {self.detail}; "
                f"sample {self.row}, which may be cut, and the rest of the shard are left out")


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


class _Recording:
    """A read-only file that remembers its last read, so the block tarfile stopped at can be inspected without
    seeking back (a backward seek in a gzip stream decompresses it again from the start)."""

    def __init__(self, f: IO[bytes]):
        self.f = f
        self.last: tuple[int, bytes] = (-1, b"")

    def read(self, size: int = -1) -> bytes:
        at = self.f.tell()
        data = self.f.read(size)
        self.last = (at, data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()


class TarWalk:
    """Iterate `(TarInfo, bytes or None)` over the regular members of `shard` (plain or gzip-compressed), reading
    the bytes of members whose name `want` accepts; after the loop `damage` is None or a `ShardDamage`.

    An unreadable file (missing, permission) raises OSError when iterated: that is not damage inside the shard.
    """

    def __init__(self, shard: str | os.PathLike, want: Callable[[str], bool] | None = None):
        self.shard = os.fspath(shard)
        self.want = want or (lambda name: False)
        self.damage: ShardDamage | None = None

    def __iter__(self) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        self.damage = None
        with open(self.shard, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            size = None if compressed else os.fstat(raw.fileno()).st_size
            with (gzip.GzipFile(fileobj=raw, mode="rb") if compressed else raw) as stream:
                yield from self._walk(_Recording(stream), size)

    def _walk(self, source: _Recording, size: int | None) -> Iterator[tuple[tarfile.TarInfo, bytes | None]]:
        try:
            tar = tarfile.open(fileobj=source, mode="r:")  # type: ignore[call-overload]
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            self.damage = ShardDamage(self.shard, 0, None, f"not a tar archive ({e})")
            return
        last: tarfile.TarInfo | None = None
        with tar:
            try:
                while (member := tar.next()) is not None:
                    end = member.offset_data + member.size
                    if size is not None and end > size:
                        self.damage = ShardDamage(self.shard, member.offset, _name(last), f"member {member.name} "
                                                  f"needs bytes up to {end} but the file has {size}")
                        return
                    data = None
                    if member.isfile() and self.want(member.name):
                        data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    last = member
                    if member.isfile():
                        yield member, data
            except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
                self.damage = ShardDamage(self.shard, tar.offset, _name(last), f"unreadable ({e})")
                return
            self.damage = _end_problem(self.shard, source, tar.offset, _name(last))


def _end_problem(shard: str, source: _Recording, end: int, after: str | None) -> ShardDamage | None:
    """None when the block where tarfile stopped is the end-of-archive marker, else what it is instead."""
    at, block = source.last
    if at != end or len(block) > BLOCK:
        try:
            source.seek(end)
            block = source.read(BLOCK)
        except (OSError, EOFError, zlib.error) as e:
            return ShardDamage(shard, end, after, f"unreadable ({e})")
    block = block[:BLOCK]
    if len(block) < BLOCK:
        return ShardDamage(shard, end, after, f"the file ends at byte {end + len(block)} without the "
                                              "end-of-archive marker, so it was cut short")
    if block.count(0) != BLOCK:
        return ShardDamage(shard, end, after, "invalid member header (bad checksum or garbage)")
    return None


def _name(member: tarfile.TarInfo | None) -> str | None:
    return member.name if member is not None else None


__all__ = ["DAMAGE_KIND", "ShardDamage", "TarWalk", "is_gzip"]
