"""Hard-negative mining (false negatives excluded, the planted hardest negative found) and the loss built on it."""

import json

import pytest
import torch
from torch.nn import functional as F

from cliptune.objectives import build_objective
from cliptune.train.mining import last_refresh_epoch, log_mined, mine_for, mine_negatives, mining_stats, mining_warning


def _unit(*values):
    return F.normalize(torch.tensor(values, dtype=torch.float32), dim=-1)


def _planted():
    """4 images on the axes of R^6; caption 5 is image 1's planted hardest negative (close to image 1 but not a
    near-duplicate of image 1's caption); caption 6 is a near-duplicate of image 0's caption under image 2."""
    image = torch.eye(6)[:4]
    text = torch.stack([
        _unit(1, 0, 0, 0, 0, 0),        # 0: image 0
        _unit(1, 0.1, 0, 0, 0, 0),      # 1: image 0 (second caption)
        _unit(0, 1, 0, 0, 0, 0),        # 2: image 1
        _unit(0, 0, 1, 0, 0, 0),        # 3: image 2
        _unit(0, 0, 0, 1, 0, 0),        # 4: image 3
        _unit(0, 0.8, 0, 0, 0.8, 0),    # 5: image 3 — close to image 1, sim to caption 2 ≈ 0.71
        _unit(0.99, 0, 0.14, 0, 0, 0),  # 6: image 2 — near-duplicate of caption 0 (sim ≈ 0.99)
        _unit(0, 0, 0, 0, 0, 1),        # 7: image 3
    ])
    text_to_image = torch.tensor([0, 0, 1, 2, 3, 3, 2, 3])
    return image, text, text_to_image


@pytest.mark.parametrize("strategy", ["semantic", "random"])
def test_mining_excludes_same_image_and_near_duplicates(strategy):
    image, text, t2i = _planted()
    mined = mine_negatives(image, text, t2i, num_negatives=4, strategy=strategy, false_negative_threshold=0.9, seed=3)
    assert mined.shape == (4, 4) and mined.dtype == torch.long
    for i, row in enumerate(mined.tolist()):
        got = [c for c in row if c >= 0]
        assert len(got) == len(set(got)) == 4
        assert all(int(t2i[c]) != i for c in got), (i, got)
    assert 6 not in mined[0].tolist()  # near-duplicate of image 0's caption
    # with the filter off, it is mined (it is the nearest foreign caption to image 0)
    loose = mine_negatives(image, text, t2i, 4, "semantic", false_negative_threshold=1.01)
    assert loose[0, 0].item() == 6


def test_semantic_mining_finds_the_planted_hardest_negative():
    image, text, t2i = _planted()
    mined = mine_negatives(image, text, t2i, num_negatives=2, strategy="semantic")
    assert mined[1, 0].item() == 5


def test_mining_pads_with_minus_one_when_too_few_and_random_is_seeded():
    image, text, t2i = _planted()
    mined = mine_negatives(image, text, t2i, num_negatives=7, strategy="semantic")
    assert (mined[0] == -1).sum() == 7 - 5  # image 0: 8 captions, 2 its own, 1 near-duplicate
    stats = mining_stats(mined)
    assert stats["requested"] == 7 and stats["rows_full"] == 1 and stats["rows_empty"] == 0  # image 1: 7 foreign
    assert mining_warning(stats, 0.9) is None
    starved = mine_negatives(image, text, t2i, 4, "semantic", false_negative_threshold=-1.0)
    assert (starved == -1).all() and "false_negative_threshold" in mining_warning(mining_stats(starved), -1.0)
    a = mine_negatives(image, text, t2i, 3, "random", seed=1)
    b = mine_negatives(image, text, t2i, 3, "random", seed=1)
    assert torch.equal(a, b)


def test_mining_at_scale_is_consistent():
    gen = torch.Generator().manual_seed(0)
    image = F.normalize(torch.randn(300, 16, generator=gen), dim=-1)
    t2i = torch.arange(300).repeat_interleave(2)
    text = F.normalize(image[t2i] + 0.3 * torch.randn(600, 16, generator=gen), dim=-1)
    mined = mine_negatives(image, text, t2i, 5, "semantic", false_negative_threshold=0.95)
    assert (mined >= 0).all() and (t2i[mined] != torch.arange(300).unsqueeze(1)).all()
    # hardest first: similarities to the image do not increase along the row
    sims = torch.einsum("nd,nkd->nk", image, text[mined])
    assert (sims[:, :-1] >= sims[:, 1:] - 1e-6).all()


def test_log_mined_writes_json_lines(tmp_path):
    image, text, t2i = _planted()
    mined = mine_negatives(image, text, t2i, 2)
    texts = [f"caption {i}" for i in range(len(t2i))]
    path = log_mined(tmp_path / "mined.jsonl", mined, texts, images=[f"img{i}.png" for i in range(4)],
                     text_to_image=t2i)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4 and lines[1]["image"] == "img1.png" and lines[1]["captions"] == ["caption 2"]
    assert lines[1]["negatives"][0] == {"index": 5, "text": "caption 5"}


# ---- the loss ------------------------------------------------------------------------------------------------------
def _batch(n=5, d=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    img = F.normalize(torch.randn(n, d, generator=gen), dim=-1)
    txt = F.normalize(img + 0.7 * torch.randn(n, d, generator=gen), dim=-1)
    table = F.normalize(torch.randn(20, d, generator=gen), dim=-1)
    return img, txt, table


def test_equals_infonce_without_negatives():
    img, txt, table = _batch()
    scale = torch.tensor(14.0)
    ref = build_objective("infonce")(img, txt, scale)["loss"]
    zero = build_objective("hard_negatives", num_negatives=0)
    assert zero(img, txt, scale, batch={"negatives": torch.zeros(5, 0, dtype=torch.long)})["loss"].item() == \
        pytest.approx(ref.item(), abs=1e-7)
    four = build_objective("hard_negatives", num_negatives=4)
    assert four(img, txt, scale)["loss"].item() == pytest.approx(ref.item(), abs=1e-7)
    all_masked = {"negatives": torch.full((5, 4), -1, dtype=torch.long), "negative_emb": torch.zeros(5, 4, 8)}
    assert four(img, txt, scale, batch=all_masked)["loss"].item() == pytest.approx(ref.item(), abs=1e-6)
    assert not zero.needs_refresh(0)


def test_matches_explicit_formula_and_gradient_flows_to_negatives():
    img, txt, table = _batch()
    table.requires_grad_(True)
    negatives = torch.tensor([[3, 4], [5, -1], [6, 7], [8, 9], [10, 11]])
    calls = []

    def encode_text(idx):
        calls.append(idx.clone())
        return table[idx]

    scale = torch.tensor(10.0)
    loss = build_objective("hard_negatives", num_negatives=2)(
        img, txt, scale, batch={"negatives": negatives, "encode_text": encode_text})["loss"]
    # explicit: row i's i2t logits are [batch texts, its own mined captions]
    logits = scale * img @ txt.T
    i2t = []
    for i in range(5):
        cols = [c for c in negatives[i].tolist() if c >= 0]
        row = torch.cat([logits[i], scale * table[cols].detach() @ img[i]])
        i2t.append(F.cross_entropy(row.unsqueeze(0), torch.tensor([i])))
    expected = (torch.stack(i2t).mean() + F.cross_entropy(logits.T, torch.arange(5))) / 2
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    assert len(calls) == 1 and calls[0].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 11]  # −1 never encoded
    loss.backward()
    grad_norm = table.grad.norm(dim=1)
    assert (grad_norm[3:12] > 0).all() and (grad_norm[:3] == 0).all() and (grad_norm[12:] == 0).all()


def test_refresh_schedule_and_mine_for():
    every2 = build_objective("hard_negatives", refresh_epochs=2)
    assert [every2.needs_refresh(e) for e in range(5)] == [True, False, True, False, True]
    once = build_objective("hard_negatives", refresh_epochs=0)
    assert [once.needs_refresh(e) for e in range(3)] == [True, False, False]
    assert last_refresh_epoch(5, 2) == 4 and last_refresh_epoch(5, 0) == 0
    image, text, t2i = _planted()
    mined = mine_for(build_objective("hard_negatives", num_negatives=2), image, text, t2i)
    assert mined.shape == (4, 2) and mined[1, 0].item() == 5
