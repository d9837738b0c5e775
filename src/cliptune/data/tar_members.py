"""Files inside uncompressed tar shards, addressed as `/path/shard.tar#member.jpg` and read in place.

A WebDataset of a million images should train map-style without unpacking it: each shard is indexed once per
process (member name -> byte offset and size, from the tar headers alone), and a member is then one `pread`,
which is safe from several threads at once. Open shards are kept per process (a forked DataLoader worker opens
its own) and capped, so ten thousand shards do not exhaust file handles. A shard that changed on disk since it
was indexed (size or mtime) is indexed again.
"""

from __future__ import annotations

import os
import tarfile
import threading
from collections import OrderedDict
from dataclasses import dataclass

from cliptune.data.tar_integrity import ShardDamage, TarWalk, is_gzip

SEPARATOR = ".tar#"  # `shard.tar` + `#` + member name; only uncompressed .tar shards allow reads in place
MAX_OPEN_SHARDS = 64


class MemberNotFound(FileNotFoundError):
    """A reference whose shard exists but holds no such member; the message says which."""


def member_ref(shard: str | os.PathLike, member: str) -> str:
    """The reference `load_image` understands for `member` inside `shard`."""
    path = os.path.abspath(os.fspath(shard))
    if not path.endswith(".tar"):
        raise ValueError(f"in-place reads need an uncompressed .tar shard, got {path}")
    return f"{path}#{member}"


def split_ref(ref: str) -> tuple[str, str] | None:
    """(shard path, member name) for a `shard.tar#member` reference; None for a plain path."""
    at = ref.find(SEPARATOR)
    if at < 0:
        return None
    return ref[: at + len(".tar")], ref[at + len(SEPARATOR):]


def is_member_ref(ref: str) -> bool:
    """True for `shard.tar#member` (unless a plain file really has that name, which then wins)."""
    return split_ref(ref) is not None and not os.path.isfile(ref)


@dataclass
class _Shard:
    fd: int
    stamp: tuple[int, int]  # (size, mtime_ns) when indexed
    members: dict[str, tuple[int, int]]  # name -> (offset of data, size)
    damage: ShardDamage | None = None  # where reading stopped, when the shard does not read to its end


def index_shard(path: str) -> tuple[dict[str, tuple[int, int]], ShardDamage | None]:
    """member name -> (data offset, size) for every regular file read whole (only the headers are read), and
    the damage that stopped the walk early, if any. A file that is no tar at all raises tarfile.ReadError."""
    if is_gzip(path):
        raise tarfile.ReadError("compressed shard; in-place reads need an uncompressed .tar")
    walk = TarWalk(path)
    members = {m.name: (m.offset_data, m.size) for m, _ in walk}
    if walk.damage is not None and not members and walk.damage.offset == 0:
        raise tarfile.ReadError(walk.damage.reason)
    return members, walk.damage


class ShardFiles:
    """Per-process cache of open, indexed shards (LRU, at most `max_open`)."""

    def __init__(self, max_open: int = MAX_OPEN_SHARDS):
        self.max_open = max_open
        self._pid = os.getpid()
        self._open: OrderedDict[str, _Shard] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, shard: str, member: str) -> bytes:
        entry = self._get(shard)
        where = entry.members.get(member)
        if where is None:
            damage = f"; {entry.damage.reason}" if entry.damage is not None else ""
            raise MemberNotFound(f"no member {member!r} in shard {shard}{damage}")
        offset, size = where
        data = os.pread(entry.fd, size, offset)
        if len(data) != size:
            raise OSError(f"shard {shard} is truncated: member {member!r} ends past the end of the file")
        return data

    def members(self, shard: str) -> dict[str, tuple[int, int]]:
        return self._get(shard).members

    def _get(self, shard: str) -> _Shard:
        with self._lock:
            if os.getpid() != self._pid:  # forked: the parent's descriptors share its file offsets; start over
                self._open = OrderedDict()
                self._pid = os.getpid()
            st = os.stat(shard)
            stamp = (st.st_size, st.st_mtime_ns)
            entry = self._open.get(shard)
            if entry is not None and entry.stamp == stamp:
                self._open.move_to_end(shard)
                return entry
            if entry is not None:
                os.close(self._open.pop(shard).fd)
            members, damage = index_shard(shard)
            entry = _Shard(os.open(shard, os.O_RDONLY), stamp, members, damage)
            self._open[shard] = entry
            while len(self._open) > self.max_open:
                os.close(self._open.popitem(last=False)[1].fd)
            return entry

    def close(self) -> None:
        with self._lock:
            for entry in self._open.values():
                os.close(entry.fd)
            self._open.clear()


SHARDS = ShardFiles()


def read_member(ref: str) -> bytes:
    """Bytes of `shard.tar#member`; FileNotFoundError (or MemberNotFound) when either is missing."""
    parts = split_ref(ref)
    if parts is None:
        raise ValueError(f"not a shard member reference: {ref}")
    return SHARDS.read(*parts)


def stat_key(ref: str) -> str:
    """What identifies the current content of `ref` cheaply (path, size, mtime; the shard's for members)."""
    parts = split_ref(ref) if is_member_ref(ref) else None
    st = os.stat(parts[0] if parts else ref)
    return f"{ref}|{st.st_size}|{st.st_mtime_ns}"
