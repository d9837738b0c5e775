"""Retrieval metrics: cross-checked against torchmetrics (and ranx, slow) plus brute-force numpy, in both directions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cliptune.eval import retrieval
from cliptune.eval.retrieval import mean_recall, retrieval_metrics, topk_chunked

KS = (1, 5, 10)
DIRECTION_KEYS = {"R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR", "median_rank", "mean_rank"}


def make_data(seed: int = 0, n_images: int = 50, d: int = 16, captionless: int = 0):
    """Random normalised embeddings; each image has 1-5 captions (the last `captionless` images have none)."""
    g = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(n_images, d, generator=g), dim=1)
    counts = torch.randint(1, 6, (n_images,), generator=g)
    if captionless:
        counts[-captionless:] = 0
    text_to_image = torch.repeat_interleave(torch.arange(n_images), counts)
    text_to_image = text_to_image[torch.randperm(text_to_image.numel(), generator=g)]  # captions not grouped
    # captions are noisy copies of their image, so metrics land mid-range rather than at 0 or 1
    texts = F.normalize(images[text_to_image] + 1.2 * torch.randn(text_to_image.numel(), d, generator=g), dim=1)
    return images, texts, text_to_image


def relevance(text_to_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """[M, N] bool: caption t is relevant to image i."""
    return F.one_hot(text_to_image, n_images).bool()


def brute_first_ranks(scores: np.ndarray, rel: np.ndarray) -> np.ndarray:
    """1-based rank of the first positive per query with a full argsort (rows without positives dropped)."""
    keep = rel.any(axis=1)
    scores, rel = scores[keep], rel[keep]
    order = np.argsort(-scores, axis=1, kind="stable")
    rel_sorted = np.take_along_axis(rel, order, axis=1)
    return rel_sorted.argmax(axis=1) + 1


def directions(images, texts, text_to_image):
    """(name, scores [Q, T], relevance [Q, T]) for both directions, full matrices (test data is tiny)."""
    s = (texts.double() @ images.double().T).numpy()
    rel = relevance(text_to_image, images.shape[0]).numpy()
    return [("t2i", s, rel), ("i2t", s.T.copy(), rel.T.copy())]


# --------------------------------------------------------------------------------------------------------------------
# cross-checks against independent implementations
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_case():
    images, texts, t2i = make_data(seed=0, captionless=3)
    return images, texts, t2i, retrieval_metrics(images, texts, t2i, ks=KS)


def _torchmetrics_reference(scores: np.ndarray, rel: np.ndarray) -> dict[str, float]:
    tm = pytest.importorskip("torchmetrics.retrieval")
    keep = rel.any(axis=1)
    scores, rel = torch.from_numpy(scores[keep]), torch.from_numpy(rel[keep])
    q, t = scores.shape
    # torchmetrics' RetrievalMAP treats targets scored <= 0 as non-relevant; cosines can be negative, so shift them
    # (a rank-preserving change) to keep every positive relevant
    preds, target = scores.reshape(-1) + 3.0, rel.reshape(-1)
    indexes = torch.arange(q).repeat_interleave(t)
    ref = {f"R@{k}": tm.RetrievalHitRate(top_k=k)(preds, target, indexes=indexes) for k in KS}
    ref["mAP"] = tm.RetrievalMAP()(preds, target, indexes=indexes)  # top_k=None: full ranking
    ref["NDCG@10"] = tm.RetrievalNormalizedDCG(top_k=10)(preds, target, indexes=indexes)
    ref["MRR"] = tm.RetrievalMRR()(preds, target, indexes=indexes)
    return {k: float(v) for k, v in ref.items()}


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_matches_torchmetrics(random_case, direction):
    images, texts, t2i, got = random_case
    name, scores, rel = next(d for d in directions(images, texts, t2i) if d[0] == direction)
    ref = _torchmetrics_reference(scores, rel)
    for key, value in ref.items():
        assert got[name][key] == pytest.approx(value, abs=1e-6), key
    # the data must exercise the metrics, not sit at a trivial 0 or 1
    assert 0.0 < got[name]["R@1"] < got[name]["R@10"] < 1.0


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_ranks_match_bruteforce_argsort(random_case, direction):
    images, texts, t2i, got = random_case
    _, scores, rel = next(d for d in directions(images, texts, t2i) if d[0] == direction)
    first = brute_first_ranks(scores, rel)
    assert got[direction]["median_rank"] == pytest.approx(float(np.median(first)))
    assert got[direction]["mean_rank"] == pytest.approx(float(first.mean()))
    assert got[direction]["MRR"] == pytest.approx(float((1.0 / first).mean()))
    for k in KS:
        assert got[direction][f"R@{k}"] == pytest.approx(float((first <= k).mean()))


def test_bruteforce_ap_and_ndcg_from_definitions(random_case):
    """Textbook AP / NDCG@10 written out per query, independent of both the module and torchmetrics."""
    images, texts, t2i, got = random_case
    for name, scores, rel in directions(images, texts, t2i):
        aps, ndcgs = [], []
        for s, r in zip(scores, rel, strict=True):
            if not r.any():
                continue
            hits = r[np.argsort(-s, kind="stable")]
            positions = np.flatnonzero(hits) + 1
            aps.append(np.mean(np.arange(1, len(positions) + 1) / positions))
            dcg = sum(1 / math.log2(p + 1) for p in positions if p <= 10)
            idcg = sum(1 / math.log2(i + 1) for i in range(1, min(len(positions), 10) + 1))
            ndcgs.append(dcg / idcg)
        assert got[name]["mAP"] == pytest.approx(float(np.mean(aps)))
        assert got[name]["NDCG@10"] == pytest.approx(float(np.mean(ndcgs)))


@pytest.mark.slow
def test_matches_ranx():
    """ranx's first call JIT-compiles with numba (~40 s cold), hence slow; torchmetrics covers the same in fast runs."""
    ranx = pytest.importorskip("ranx")
    images, texts, t2i = make_data(seed=1, n_images=30, captionless=2)
    got = retrieval_metrics(images, texts, t2i, ks=KS)
    names = [f"hit_rate@{k}" for k in KS] + ["map", "ndcg@10", "mrr"]
    ours = [f"R@{k}" for k in KS] + ["mAP", "NDCG@10", "MRR"]
    for name, scores, rel in directions(images, texts, t2i):
        qrels = {f"q{q}": {f"d{t}": 1 for t in np.flatnonzero(rel[q])} for q in range(len(rel)) if rel[q].any()}
        run = {f"q{q}": {f"d{t}": float(scores[q, t]) for t in range(scores.shape[1])} for q in range(len(rel))
               if rel[q].any()}  # every target in the run: full ranking for map / mrr
        ref = ranx.evaluate(ranx.Qrels(qrels), ranx.Run(run), names)
        for ranx_name, key in zip(names, ours, strict=True):
            assert got[name][key] == pytest.approx(float(ref[ranx_name]), abs=1e-6), (name, key)


# --------------------------------------------------------------------------------------------------------------------
# chunking
# --------------------------------------------------------------------------------------------------------------------


def test_chunked_equals_unchunked():
    images, texts, t2i = make_data(seed=2, captionless=4)
    small = retrieval_metrics(images, texts, t2i, chunk_size=7)
    whole = retrieval_metrics(images, texts, t2i, chunk_size=10_000)
    assert small == whole
    assert retrieval_metrics(images, texts, t2i, chunk_size=1) == whole


@pytest.fixture
def block_shapes(monkeypatch) -> list[tuple[int, int]]:
    """(query rows, targets) of every score block computed while the test runs."""
    shapes = []
    real = retrieval._scores

    def spy(q, t):
        shapes.append((q.shape[0], t.shape[0]))
        return real(q, t)

    monkeypatch.setattr(retrieval, "_scores", spy)
    return shapes


def test_score_blocks_never_exceed_chunk(block_shapes):
    """No N x M matrix: every score block has at most chunk_size query rows."""
    images, texts, t2i = make_data(seed=3)
    shapes = block_shapes
    retrieval_metrics(images, texts, t2i, chunk_size=8)
    topk_chunked(texts, images, 5, chunk_size=8)
    assert shapes and max(rows for rows, _ in shapes) <= 8
    assert sum(rows for rows, cols in shapes if cols == images.shape[0]) == 2 * texts.shape[0]  # t2i + topk
    assert sum(rows for rows, cols in shapes if cols == texts.shape[0]) == images.shape[0]  # i2t


def test_chunk_rows_fit_the_memory_budget():
    """A chunk's score block and its temporaries fit the budget, so many targets mean fewer rows, not more memory
    (100k images x 500k captions at 1024 rows per chunk took 6.7 GB)."""
    per_score = retrieval._rank_bytes_per_score(torch.float32)
    rows = retrieval.chunk_rows(500_000, per_score)
    assert 1 <= rows < 1024 and rows * 500_000 * per_score <= retrieval.DEFAULT_MAX_CHUNK_BYTES
    assert retrieval.chunk_rows(500_000, per_score, 1024, 512 * 2**20) == 512 * 2**20 // (500_000 * per_score)
    assert retrieval.chunk_rows(1_000, 10, 1024, 50_000) == 5
    assert retrieval.chunk_rows(100, per_score, 1024) == 1024  # few targets: chunk_size is the limit
    assert retrieval.chunk_rows(500_000, per_score, 64, None) == 64  # no budget
    assert retrieval.chunk_rows(500_000, per_score, 1024, 1) == 1  # never below one row
    with pytest.raises(ValueError, match="max_chunk_bytes must be a positive int"):
        retrieval.chunk_rows(10, 4, 8, 0)


def test_memory_budget_shrinks_chunks_not_results(block_shapes):
    images, texts, t2i = make_data(seed=4, captionless=3)
    unlimited = retrieval_metrics(images, texts, t2i, max_chunk_bytes=None)
    top_scores, top_idx = topk_chunked(texts, images, 5, max_chunk_bytes=None)
    per_score = retrieval._rank_bytes_per_score(torch.float32)
    budget = 5 * images.shape[0] * per_score  # five caption queries over all images
    shapes = block_shapes
    shapes.clear()
    assert retrieval_metrics(images, texts, t2i, max_chunk_bytes=budget) == unlimited
    t2i_rows = [rows for rows, cols in shapes if cols == images.shape[0]]
    i2t_rows = [rows for rows, cols in shapes if cols == texts.shape[0]]
    assert max(t2i_rows) == 5 and sum(t2i_rows) == texts.shape[0]
    assert max(i2t_rows) == max(1, budget // (texts.shape[0] * per_score)) and sum(i2t_rows) <= images.shape[0]
    assert retrieval_metrics(images, texts, t2i, chunk_size=3, max_chunk_bytes=1) == unlimited
    scores, idx = topk_chunked(texts, images, 5, max_chunk_bytes=1)
    assert torch.equal(idx, top_idx)
    torch.testing.assert_close(scores, top_scores)  # a one-row product may round in another order than a block


def test_topk_chunked_matches_full_topk():
    images, texts, _ = make_data(seed=4)
    scores, idx = topk_chunked(texts, images, k=10, chunk_size=7)
    ref = torch.topk(texts @ images.T, 10, dim=1)
    assert idx.shape == (texts.shape[0], 10) and idx.dtype == torch.long
    assert torch.equal(idx, ref.indices)
    assert torch.allclose(scores, ref.values)


def test_topk_chunked_ties_by_lower_index_and_k_clipped():
    queries = torch.ones(3, 4)
    targets = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0]])
    scores, idx = topk_chunked(queries, targets, k=3, chunk_size=2)
    assert idx.tolist() == [[3, 1, 2]] * 3
    assert scores.tolist() == [[2.0, 1.0, 1.0]] * 3
    scores, idx = topk_chunked(queries, targets, k=99)
    assert idx.tolist() == [[3, 1, 2, 4, 0]] * 3


# --------------------------------------------------------------------------------------------------------------------
# hand-made cases with known answers
# --------------------------------------------------------------------------------------------------------------------


def test_perfect_embeddings():
    images = torch.eye(4)
    text_to_image = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    got = retrieval_metrics(images, images[text_to_image], text_to_image)
    for name in ("t2i", "i2t"):
        assert set(got[name]) >= DIRECTION_KEYS
        for key in ("R@1", "R@5", "R@10", "mAP", "NDCG@10", "MRR", "median_rank", "mean_rank"):
            assert got[name][key] == 1.0, (name, key)
    assert got["n_images"] == 4 and got["n_texts"] == 7 and got["i2t"]["n_image_queries"] == 4
    assert set(got["t2i"]) == DIRECTION_KEYS
    assert set(got["i2t"]) == DIRECTION_KEYS | {"n_image_queries"}
    assert mean_recall(got) == 1.0
    json.dumps(got)  # plain Python numbers
    assert all(type(v) is float for d in ("t2i", "i2t") for k, v in got[d].items() if k != "n_image_queries")


def test_hand_computed_ranks():
    # 1-D embeddings make every score easy to read off: score = query * target
    images = torch.tensor([[1.0], [2.0], [3.0]])
    texts = torch.tensor([[1.0], [-1.0], [1.0]])  # t0 -> ranks images 2,1,0 ; t1 -> ranks images 0,1,2
    text_to_image = torch.tensor([0, 0, 2])
    got = retrieval_metrics(images, texts, text_to_image, ks=(1, 2))
    # t2i: t0's image 0 at rank 3, t1's image 0 at rank 1, t2's image 2 at rank 1
    assert got["t2i"]["R@1"] == pytest.approx(2 / 3)
    assert got["t2i"]["R@2"] == pytest.approx(2 / 3)
    assert got["t2i"]["MRR"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert got["t2i"]["mAP"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert got["t2i"]["median_rank"] == 1.0
    assert got["t2i"]["mean_rank"] == pytest.approx(5 / 3)
    assert got["t2i"]["NDCG@10"] == pytest.approx((1 / math.log2(4) + 1 + 1) / 3)
    # i2t: every image ranks captions t0 = t2 (score x) > t1 (score -x); image 1 has no caption
    # image 0: positives t0, t1; t0 ties with negative t2 -> pessimistic: t2 first, t0 rank 2, t1 rank 3
    # image 2: positive t2 ties with negative t0 -> rank 2
    assert got["i2t"]["n_image_queries"] == 2
    assert got["i2t"]["R@1"] == 0.0
    assert got["i2t"]["R@2"] == 1.0
    assert got["i2t"]["median_rank"] == 2.0
    assert got["i2t"]["MRR"] == pytest.approx(0.5)
    assert got["i2t"]["mAP"] == pytest.approx(((1 / 2 + 2 / 3) / 2 + 1 / 2) / 2)
    ndcg0 = (1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    ndcg2 = (1 / math.log2(3)) / 1.0
    assert got["i2t"]["NDCG@10"] == pytest.approx((ndcg0 + ndcg2) / 2)
    assert mean_recall(got, k=1) == pytest.approx((2 / 3 + 0.0) / 2)


def test_collapsed_model_gets_pessimistic_worst_ranks():
    """All embeddings equal: every score ties, so every positive ranks after every negative."""
    n_images = 6
    images = F.normalize(torch.ones(n_images, 8), dim=1)
    text_to_image = torch.tensor([0, 0, 1, 2, 3, 4, 5, 5, 5])
    texts = F.normalize(torch.ones(len(text_to_image), 8), dim=1)
    got = retrieval_metrics(images, texts, text_to_image)
    assert got["t2i"]["median_rank"] == n_images and got["t2i"]["R@5"] == 0.0
    m = len(text_to_image)
    counts = torch.bincount(text_to_image).double()
    assert got["i2t"]["mean_rank"] == pytest.approx(float((m - counts + 1).mean()))
    # deterministic: same answer every time and in every chunking
    assert retrieval_metrics(images, texts, text_to_image, chunk_size=1) == got


@pytest.mark.parametrize("dim", [8, 64, 384])
def test_exact_ties_do_not_depend_on_the_chunking(dim):
    """Mathematically equal scores (duplicated embeddings) computed by different BLAS kernels differ by ulps; the
    tie tolerance makes every chunking give the same metrics, and a collapsed block the pessimistic worst."""
    g = torch.Generator().manual_seed(dim)
    base = F.normalize(torch.randn(5, dim, generator=g), dim=1)
    images = base[torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 0, 2, 4, 4])]
    text_to_image = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 2])
    texts = images[text_to_image] * 1.0
    reference = retrieval_metrics(images, texts, text_to_image)
    for chunk in (1, 2, 3, 5, 7, 13):
        assert retrieval_metrics(images, texts, text_to_image, chunk_size=chunk) == reference, chunk
    # the duplicates of an image tie with it, so a caption's image shares rank with each copy and ranks after them
    assert reference["t2i"]["R@1"] < 1.0


def test_tie_tolerance_is_tiny_next_to_real_score_differences():
    q = F.normalize(torch.randn(10, 512), dim=1)
    from cliptune.eval.retrieval import tie_tolerance

    tol32 = tie_tolerance(q, q, torch.float32)
    assert 1e-7 < tol32 < 2e-5 and tie_tolerance(q, q, torch.float64) < 1e-13


def test_images_without_captions_are_distractors_for_t2i_only():
    images, texts, t2i = make_data(seed=5, n_images=20, captionless=5)
    got = retrieval_metrics(images, texts, t2i)
    assert got["n_images"] == 20 and got["i2t"]["n_image_queries"] == 15
    # dropping the caption-less images changes t2i (fewer distractors) but not i2t (they were never queries)
    sub = retrieval_metrics(images[:15], texts, t2i)
    assert sub["i2t"] == got["i2t"]
    assert sub["t2i"]["mean_rank"] <= got["t2i"]["mean_rank"]


def test_dtypes_and_ks_dedup():
    images, texts, t2i = make_data(seed=6)
    ref = retrieval_metrics(images, texts, t2i)
    as64 = retrieval_metrics(images.double(), texts.double(), t2i.int())
    for name in ("t2i", "i2t"):
        for key in ref[name]:
            assert as64[name][key] == pytest.approx(ref[name][key], abs=1e-9)
    half = retrieval_metrics(images.half(), texts.half(), t2i)
    assert set(half["t2i"]) == set(ref["t2i"])
    got = retrieval_metrics(images, texts, t2i, ks=[3, 3, 1])
    assert [k for k in got["t2i"] if k.startswith("R@")] == ["R@3", "R@1"]


# --------------------------------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_emb": torch.randn(4)}, "image_emb must be 2-D"),
        ({"text_emb": torch.randn(3, 5)}, "embedding dimensions differ"),
        ({"image_emb": torch.randn(0, 8)}, "image_emb is empty"),
        ({"text_emb": torch.randint(0, 2, (3, 8))}, "floating-point"),
        ({"image_emb": torch.full((4, 8), float("nan"))}, "NaN"),
        ({"text_emb": [[0.0] * 8] * 3}, "must be a torch.Tensor"),
        ({"text_to_image": torch.tensor([0, 1])}, "one image index per caption"),
        ({"text_to_image": torch.tensor([0, 1, 4])}, r"text_to_image\[2\] = 4 is out of range"),
        ({"text_to_image": torch.tensor([-1, 1, 2])}, r"text_to_image\[0\] = -1 is out of range"),
        ({"text_to_image": torch.tensor([0.0, 1.0, 2.0])}, "integer image indices"),
        ({"text_to_image": torch.tensor([[0, 1, 2]])}, "must be 1-D"),
        ({"ks": ()}, "ks must be a non-empty"),
        ({"ks": 5}, "ks must be a non-empty"),
        ({"ks": (1, 0)}, "positive int"),
        ({"chunk_size": 0}, "chunk_size must be a positive int"),
        ({"max_chunk_bytes": 0}, "max_chunk_bytes must be a positive int"),
    ],
)
def test_validation(kwargs, message):
    args = {
        "image_emb": torch.randn(4, 8),
        "text_emb": torch.randn(3, 8),
        "text_to_image": torch.tensor([0, 1, 2]),
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(**args)


def test_validation_topk_and_mean_recall():
    with pytest.raises(ValueError, match="k must be a positive int"):
        topk_chunked(torch.randn(2, 4), torch.randn(3, 4), k=0)
    with pytest.raises(ValueError, match="embedding dimensions differ"):
        topk_chunked(torch.randn(2, 4), torch.randn(3, 5), k=1)
    with pytest.raises(ValueError, match="R@10"):
        mean_recall({"t2i": {"R@1": 0.5}, "i2t": {"R@1": 0.5}})
