"""No-duplicate batches: no image and no caption twice in a batch, deterministic per (seed, epoch), nearly every
sample kept, even on adversarial data."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cliptune.data.sampling import (NoDuplicateBatcher, caption_key, epoch_caption_keys, has_duplicates,
                                    image_content_keys, no_duplicate_batches)


def check(batches, images, captions, batch_size):
    flat = [i for b in batches for i in b]
    assert len(flat) == len(set(flat))  # an item is used at most once
    assert not any(has_duplicates(b, images, captions) for b in batches)
    assert len(batches) == len(images) // batch_size
    return flat


def test_unique_data_uses_every_full_batch():
    images = list(range(100))
    captions = [f"caption {i}" for i in range(100)]
    batches = no_duplicate_batches(images, captions, 8, seed=0, epoch=0)
    assert all(len(b) == 8 for b in batches) and len(check(batches, images, captions, 8)) == 96


def test_common_captions_and_copied_images_are_spread_over_batches():
    rng = random.Random(0)
    n, batch = 600, 32
    common = [f"common caption {k}" for k in range(10)]  # 150 items share 10 captions: 15 each, 18 batches
    captions = [common[(i // 4) % 10] if i % 4 == 0 else f"caption {i}" for i in range(n)]
    rng.shuffle(captions)
    images = [f"img{i % 550}" for i in range(n)]  # 50 images appear twice
    batches = no_duplicate_batches(images, captions, batch, seed=1, epoch=0)
    flat = check(batches, images, captions, batch)
    assert all(len(b) == batch for b in batches) and len(flat) == (n // batch) * batch


def test_a_caption_in_more_items_than_batches_keeps_one_per_batch():
    n, batch = 200, 10  # 20 batches; "dup" occurs 50 times: 30 copies cannot be placed this epoch
    captions = ["dup" if i < 50 else f"c{i}" for i in range(n)]
    images = list(range(n))
    batches = no_duplicate_batches(images, captions, batch, seed=0, epoch=3)
    flat = check(batches, images, captions, batch)
    assert Counter(captions[i] for i in flat)["dup"] == 20  # one per batch, the rest left over
    assert len(flat) == 170 and min(len(b) for b in batches) >= 8  # short only where the data forces it


def test_deterministic_per_seed_and_epoch():
    images = list(range(64))
    captions = [f"c{i % 40}" for i in range(64)]
    a = no_duplicate_batches(images, captions, 8, seed=7, epoch=2)
    assert a == no_duplicate_batches(images, captions, 8, seed=7, epoch=2)
    assert a != no_duplicate_batches(images, captions, 8, seed=7, epoch=3)
    assert a != no_duplicate_batches(images, captions, 8, seed=8, epoch=2)


def test_edge_cases():
    assert no_duplicate_batches([], [], 4) == []
    assert no_duplicate_batches([1, 2, 3], ["a", "b", "c"], 8) in ([[0, 1, 2]], [[0, 2, 1]], [[1, 0, 2]],
                                                                   [[1, 2, 0]], [[2, 0, 1]], [[2, 1, 0]])
    with pytest.raises(ValueError):
        no_duplicate_batches([1, 2], ["a"], 2)


def test_caption_keys_and_content_keys(tmp_path):
    assert caption_key("  A  Red\tSquare ") == caption_key("a red square")
    assert epoch_caption_keys(["A cat", "a dog", "a  CAT"], [0, 2, 1]) == ["a cat", "a cat", "a dog"]
    (tmp_path / "a.png").write_bytes(b"same")
    (tmp_path / "b.png").write_bytes(b"same")
    (tmp_path / "c.png").write_bytes(b"other")
    keys = image_content_keys([str(tmp_path / n) for n in ("a.png", "b.png", "c.png", "gone.png")], threads=2)
    assert keys[0] == keys[1] != keys[2] and keys[3].startswith("unreadable")


def test_stream_batcher_defers_conflicts_and_counts_what_it_leaves_out():
    rng = random.Random(1)
    items = [(i, "hot" if i % 5 == 0 else f"c{i}") for i in range(300)]
    rng.shuffle(items)
    batcher = NoDuplicateBatcher(16, keys=lambda item: (item[0], item[1]))
    batches = list(batcher(items))
    assert all(len(b) == 16 and len({c for _, c in b}) == 16 for b in batches)
    used = sum(len(b) for b in batches)
    assert used + batcher.dropped == 300 and used == 16 * 16  # 240 others fill 16 batches around one "hot" each

    adversarial = NoDuplicateBatcher(4, keys=lambda item: (item,), max_pending=8)
    out = list(adversarial(["same"] * 100))
    assert out == [] and adversarial.dropped == 100  # nothing to pair it with: never a batch of copies
