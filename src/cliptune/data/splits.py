"""Split names and the deterministic split of data that comes without one.

Splits are assigned per image, never per caption: an image whose captions landed in both train and test would
let retrieval metrics reward memorisation. The order of images is a seeded hash of each image's key, and the
counts are exact (largest remainder), so the split is the same on every machine and run, every non-zero share
gets at least one image when there are enough, and adding an image moves at most a few others across a boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

from cliptune.data.records import Record

SPLITS = ("train", "val", "test")
ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}


def normalize_split(name: object) -> str | None:
    """"Validation " → "val"; None or "" → None; anything else is a ValueError saying what is accepted."""
    if name is None:
        return None
    text = str(name).strip().lower()
    if not text:
        return None
    try:
        return ALIASES[text]
    except KeyError:
        raise ValueError(f"unknown split {name!r}; use one of {', '.join(SPLITS)}") from None


def normalize_ratios(ratios: Sequence[float] | Mapping[str, float]) -> dict[str, float]:
    """(train, val, test) or {"train": .., ...} → shares that sum to 1."""
    if isinstance(ratios, Mapping):
        unknown = set(ratios) - set(SPLITS)
        if unknown:
            raise ValueError(f"unknown split(s) in ratios: {', '.join(sorted(unknown))}")
        values = [float(ratios.get(name, 0.0)) for name in SPLITS]
    else:
        values = [float(r) for r in ratios]
        if len(values) != len(SPLITS):
            raise ValueError(f"split ratios must be {len(SPLITS)} numbers (train, val, test), got {len(values)}")
    if any(v < 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"split ratios must be non-negative and not all zero, got {values}")
    total = sum(values)
    return {name: v / total for name, v in zip(SPLITS, values)}


def _rank(key: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _counts(n: int, shares: dict[str, float]) -> dict[str, int]:
    """Exact counts by largest remainder; each positive share gets at least one item when n allows."""
    raw = {name: share * n for name, share in shares.items()}
    counts = {name: int(value) for name, value in raw.items()}
    by_remainder = sorted(shares, key=lambda name: (-(raw[name] - counts[name]), SPLITS.index(name)))
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    wanted = [name for name, share in shares.items() if share > 0]
    if n >= len(wanted):
        for name in wanted:
            if counts[name] == 0:
                donor = max(wanted, key=lambda other: counts[other])
                counts[donor] -= 1
                counts[name] += 1
    return counts


def assign_splits(records: list[Record], ratios: Sequence[float] | Mapping[str, float] = (0.8, 0.1, 0.1),
                  seed: int = 0, *, key: Callable[[Record], str] | None = None) -> list[Record]:
    """Set `split` on every record (in place, and returned) so that all records of one image share a split.

    `key` names the image for hashing (default: `record.image`); pass one relative to the dataset folder so that
    moving the folder does not reshuffle the split.
    """
    shares = normalize_ratios(ratios)
    key = key or (lambda record: record.image)
    keys = sorted({key(record) for record in records}, key=lambda k: _rank(k, seed))
    counts = _counts(len(keys), shares)
    split_of: dict[str, str] = {}
    start = 0
    for name in SPLITS:
        for k in keys[start : start + counts[name]]:
            split_of[k] = name
        start += counts[name]
    for record in records:
        record.split = split_of[key(record)]
    return records
