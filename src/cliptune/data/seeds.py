"""Seeds derived from names, so that everything random in the data pipeline is a function of (seed, epoch, item).

A DataLoader worker, a resumed run and another machine all draw the same crop for the same image in the same
epoch: no state is carried from one sample to the next, and `hash()` (salted per process) is never used.
"""

from __future__ import annotations

import hashlib

import torch


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any values, equal on every machine and Python run."""
    digest = hashlib.blake2b("\0".join(map(str, parts)).encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def sample_generator(seed: int, epoch: int, item: object) -> torch.Generator:
    """The generator for one item (an index or a key) in one epoch."""
    return torch.Generator().manual_seed(stable_seed(seed, epoch, item))
