"""Image–text retrieval metrics over precomputed embeddings, computed in chunks.

Why this module exists
----------------------
Fine-tuning is only worth shipping if the gain can be shown honestly, in both directions, with the numbers that
retrieval papers report. This module turns two embedding matrices and one caption→image index into those numbers,
without ever holding the full ``N x M`` similarity matrix: queries are processed a chunk of rows at a time, each
``chunk x targets`` score block is reduced to the ranks of that chunk's positives, and the block is discarded. A chunk
has at most ``chunk_size`` rows and, since one block grows with the number of targets (1024 queries x 500k captions
is 2 GB of float32 scores, plus the temporaries derived from it), few enough rows that the block and those
temporaries fit in ``max_chunk_bytes`` (default 512 MiB; see :func:`chunk_rows`). Memory therefore grows with
``(N + M) * d`` (the embeddings), the chunk budget and ``N * k`` (top-k results), never with ``N * M``. Every query
row is ranked on its own, so the chunking does not change the metrics (only a product of very few rows may round a
score differently in its last bit).

Conventions
-----------
* **Scores** are dot products ``query @ target.T``; pass L2-normalised embeddings to get cosine similarity. They are
  computed in float32 (float64 if either input is float64), whatever the input dtype.
* **t2i** (text → image): every caption is a query over all ``N`` images and has exactly one relevant image,
  ``text_to_image[t]``.
* **i2t** (image → text): every image is a query over all ``M`` captions and *all* of its captions are relevant.
  ``R@K`` is 1 when *any* of them is in the top ``K`` — the multi-positive convention of CLIP (Radford et al., 2021,
  "Learning Transferable Visual Models From Natural Language Supervision") and of LAION's CLIP_benchmark
  (``clip_benchmark/metrics/zeroshot_retrieval.py``), which is how MS-COCO / Flickr30k numbers are reported.
  Images without any caption have no positive, so they are *not* i2t queries: they are skipped there (they still
  count as distractors for t2i) and the i2t dict reports ``n_image_queries``, the number of images actually queried.
* **Ranks** are 1-based positions in the full ranking of all targets (never cut off).
* **Ties** are broken *pessimistically and deterministically*: a positive tied with a negative is ranked after the
  negative; positives tied with each other are ordered by target index. So the rank of positive ``p`` of a query is
  ``1 + #{negatives with score >= s_p - tol} + #{positives q with s_q > s_p, or s_q == s_p and q < p}``.
  A collapsed model (all embeddings equal) therefore scores the worst possible, not a lucky draw.
  Two scores count as tied when they differ by at most ``tol = 4 * sqrt(d) * eps * max|q| * max|t|`` (``eps`` of
  the compute dtype, norms over all queries and targets): one dot product computed by different BLAS kernels (a
  one-row chunk and a full block) differs by a few ulps, so float equality would make ties — and metrics — depend
  on the chunking. Among a query's positives the order only assigns its ranks to them; every metric depends on the
  query's set of ranks, which is the same either way.
  (``topk_chunked``, used for search, instead breaks ties by lower target index, as a user would expect from a list.)

Per query, with ``r_1 < r_2 < ... < r_n`` the ranks of its ``n`` positives:

* ``R@K``       = 1 if ``r_1 <= K`` else 0 (any positive in the top K).
* ``mAP``       = mean over queries of AP = ``(1/n) * sum_i i / r_i`` (all positives, full ranking).
* ``NDCG@10``   = DCG / IDCG with binary relevance and the log2 discount of Järvelin & Kekäläinen (2002),
  "Cumulated gain-based evaluation of IR techniques": DCG = ``sum_{r_i <= 10} 1 / log2(r_i + 1)``,
  IDCG = ``sum_{i=1}^{min(n, 10)} 1 / log2(i + 1)``.
* ``MRR``       = mean of ``1 / r_1``.
* ``median_rank`` / ``mean_rank`` = median / mean of ``r_1`` (median as ``numpy.median``: the mean of the two middle
  values for an even count).

Every metric is derived exactly from the positives' ranks, so R@K and NDCG@10 need no top-k pass and agree with the
rank-based metrics under the same tie convention. All values are plain Python floats/ints (json-serialisable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "NDCG_K",
    "average_precision",
    "chunk_rows",
    "first_positive_ranks",
    "mean_rank",
    "mean_recall",
    "median_rank",
    "ndcg_at_k",
    "QueryRanks",
    "per_query_average_precision",
    "positive_ranks",
    "query_ranks",
    "recall_at_k",
    "reciprocal_rank",
    "retrieval_metrics",
    "tie_tolerance",
    "topk_chunked",
]

NDCG_K = 10
"""Cut-off of the reported NDCG (``NDCG@10``)."""

DEFAULT_MAX_CHUNK_BYTES = 512 * 2**20
"""Memory budget of one chunk: its score block plus the temporaries derived from it (512 MiB)."""


# --------------------------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------------------------


def _check_matrix(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [n, d], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has embedding dimension 0")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.detach()


def _check_pair(queries: torch.Tensor, targets: torch.Tensor, qname: str, tname: str) -> None:
    if queries.shape[1] != targets.shape[1]:
        raise ValueError(
            f"embedding dimensions differ: {qname} has d={queries.shape[1]}, {tname} has d={targets.shape[1]}"
        )
    if queries.device != targets.device:
        raise ValueError(f"{qname} is on {queries.device} but {tname} is on {targets.device}")


def _check_chunk_size(chunk_size: object) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return chunk_size


def _check_max_chunk_bytes(max_chunk_bytes: object) -> int | None:
    if max_chunk_bytes is None:
        return None
    if isinstance(max_chunk_bytes, bool) or not isinstance(max_chunk_bytes, int) or max_chunk_bytes < 1:
        raise ValueError(f"max_chunk_bytes must be a positive int or None, got {max_chunk_bytes!r}")
    return max_chunk_bytes


def _check_ks(ks: object) -> tuple[int, ...]:
    if isinstance(ks, int | bool) or not isinstance(ks, Sequence) or len(ks) == 0:
        raise ValueError(f"ks must be a non-empty sequence of positive ints, got {ks!r}")
    out: list[int] = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"every k in ks must be a positive int, got {k!r} in {ks!r}")
        if k not in out:
            out.append(k)
    return tuple(out)


def _check_text_to_image(text_to_image: object, n_images: int, n_texts: int, device: torch.device) -> torch.Tensor:
    if not isinstance(text_to_image, torch.Tensor):
        try:
            text_to_image = torch.as_tensor(text_to_image)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"text_to_image must be a 1-D integer tensor: {e}") from None
    if text_to_image.dim() != 1:
        raise ValueError(f"text_to_image must be 1-D [M], got shape {tuple(text_to_image.shape)}")
    if text_to_image.dtype == torch.bool or text_to_image.is_floating_point() or text_to_image.is_complex():
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {text_to_image.dtype}")
    if text_to_image.shape[0] != n_texts:
        raise ValueError(
            f"text_to_image has {text_to_image.shape[0]} entries but text_emb has {n_texts} rows; "
            "there must be one image index per caption"
        )
    t2i = text_to_image.to(device=device, dtype=torch.long)
    bad = (t2i < 0) | (t2i >= n_images)
    if bool(bad.any()):
        first = int(bad.nonzero()[0, 0])
        raise ValueError(
            f"text_to_image[{first}] = {int(t2i[first])} is out of range: there are {n_images} images "
            f"(valid indices 0..{n_images - 1}); {int(bad.sum())} caption(s) point outside"
        )
    return t2i


def _compute_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32


def _scores(queries: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """One ``chunk x targets`` score block. Kept as a function so tests can check the block never exceeds a chunk."""
    return queries @ targets.T


def tie_tolerance(queries: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype) -> float:
    """Largest score difference that counts as a tie: a few ulps of the largest possible |score|, grown with
    sqrt(d) like the rounding error of a length-d dot product. One value for the whole evaluation, so every chunk
    compares with the same tolerance."""
    scale = float(queries.to(dtype).norm(dim=1).max()) * float(targets.to(dtype).norm(dim=1).max())
    return 4.0 * math.sqrt(queries.shape[1]) * torch.finfo(dtype).eps * scale


def _rank_bytes_per_score(dtype: torch.dtype) -> int:
    """Peak bytes per score in `positive_ranks`: the block, a copy of some of its rows, the ``>=`` mask and the int32
    count that `sum` casts the mask to."""
    return 2 * dtype.itemsize + 1 + 4


def _topk_bytes_per_score(dtype: torch.dtype) -> int:
    """Peak bytes per score in `_deterministic_topk`: the block, its `keep` mask and, for rows with a tied k-th score,
    a copy of those rows, two masks over them, the int32 `cumsum` (with its cast input) and one more mask."""
    return 2 * dtype.itemsize + 1 + 1 + 1 + 4 + 4 + 1


def chunk_rows(
    n_targets: int,
    bytes_per_score: int,
    chunk_size: int = 1024,
    max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES,
) -> int:
    """Query rows per chunk: at most ``chunk_size``, and few enough that ``rows x n_targets`` scores at
    ``bytes_per_score`` each fit in ``max_chunk_bytes`` (no budget when it is None).

    Never fewer than one row: a single query over the budget still runs, as the smallest possible chunk.
    """
    chunk_size = _check_chunk_size(chunk_size)
    max_chunk_bytes = _check_max_chunk_bytes(max_chunk_bytes)
    if max_chunk_bytes is None:
        return chunk_size
    per_row = max(1, n_targets) * max(1, bytes_per_score)
    return max(1, min(chunk_size, max_chunk_bytes // per_row))


def _group_starts(sorted_groups: torch.Tensor) -> torch.Tensor:
    """For a non-decreasing group-id vector, the index where each element's group begins."""
    return torch.searchsorted(sorted_groups, sorted_groups, right=False)


# --------------------------------------------------------------------------------------------------------------------
# top-k (reused by search)
# --------------------------------------------------------------------------------------------------------------------


def _deterministic_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of each row, ties broken by lower column index, sorted by (score desc, index asc)."""
    kth = torch.topk(block, k, dim=1, largest=True, sorted=True).values[:, -1:]  # [c, 1]
    keep = block >= kth  # at least k per row; more only when the k-th score is tied
    # int32 counts: `sum` and `cumsum` cast the whole mask first, and int64 copies would be 8 bytes per score
    excess_rows = (keep.sum(dim=1, dtype=torch.int32) > k).nonzero().flatten()
    if excess_rows.numel():
        sub = block.index_select(0, excess_rows)
        sub_kth = kth.index_select(0, excess_rows)
        greater = sub > sub_kth
        equal = sub == sub_kth
        room = k - greater.sum(dim=1, keepdim=True, dtype=torch.int32)
        # keep the lowest-index tied entries only
        keep[excess_rows] = greater | (equal & (equal.cumsum(dim=1, dtype=torch.int32) <= room))
    # nonzero is row-major, so within a row the kept columns come out in ascending index order
    idx = keep.nonzero()[:, 1].view(block.shape[0], k)
    vals = block.gather(1, idx)
    vals, order = torch.sort(vals, dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


@torch.no_grad()
def topk_chunked(
    queries: torch.Tensor,
    targets: torch.Tensor,
    k: int,
    chunk_size: int = 1024,
    max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k targets for every query by dot product, a chunk of query rows at a time.

    Returns ``(scores [Q, k'], indices [Q, k'])`` with ``k' = min(k, n_targets)``, each row sorted by score
    descending; ties are broken by lower target index, so the result is deterministic. Scores are float32
    (float64 if an input is float64); indices are int64. Memory: one chunk of at most ``chunk_size`` rows whose
    score block and temporaries fit in ``max_chunk_bytes`` (see :func:`chunk_rows`).
    """
    queries = _check_matrix(queries, "queries")
    targets = _check_matrix(targets, "targets")
    _check_pair(queries, targets, "queries", "targets")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    k = min(k, targets.shape[0])
    dtype = _compute_dtype(queries, targets)
    chunk_size = chunk_rows(targets.shape[0], _topk_bytes_per_score(dtype), chunk_size, max_chunk_bytes)
    targets = targets.to(dtype)
    out_scores = torch.empty((queries.shape[0], k), dtype=dtype, device=queries.device)
    out_idx = torch.empty((queries.shape[0], k), dtype=torch.long, device=queries.device)
    for start in range(0, queries.shape[0], chunk_size):
        stop = min(start + chunk_size, queries.shape[0])
        block = _scores(queries[start:stop].to(dtype), targets)
        out_scores[start:stop], out_idx[start:stop] = _deterministic_topk(block, k)
        del block
    return out_scores, out_idx


# --------------------------------------------------------------------------------------------------------------------
# ranks of the positives
# --------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def positive_ranks(
    queries: torch.Tensor,
    targets: torch.Tensor,
    pos_query: torch.Tensor,
    pos_target: torch.Tensor,
    chunk_size: int = 1024,
    max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES,
) -> torch.Tensor:
    """1-based rank of every (query, positive target) pair in its query's full ranking of all targets.

    ``pos_query`` must be sorted (non-decreasing); each (query, target) pair must appear at most once. Ranks use the
    module's pessimistic tie convention. Returns an int64 CPU tensor aligned with the input pairs. Memory: one chunk
    of at most ``chunk_size`` rows whose score block and temporaries fit in ``max_chunk_bytes`` (see
    :func:`chunk_rows`).
    """
    dtype = _compute_dtype(queries, targets)
    chunk_size = chunk_rows(targets.shape[0], _rank_bytes_per_score(dtype), chunk_size, max_chunk_bytes)
    targets = targets.to(dtype)
    device = queries.device
    pos_query = pos_query.to(device=device, dtype=torch.long)
    pos_target = pos_target.to(device=device, dtype=torch.long)
    n_queries = queries.shape[0]
    ranks = torch.empty(pos_query.shape[0], dtype=torch.long)
    if n_queries == 0 or pos_query.numel() == 0:
        return ranks
    tol = tie_tolerance(queries, targets, dtype)
    bounds = torch.searchsorted(pos_query, torch.arange(0, n_queries + chunk_size, chunk_size, device=device))
    for c, start in enumerate(range(0, n_queries, chunk_size)):
        stop = min(start + chunk_size, n_queries)
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        if lo == hi:
            continue
        ql = pos_query[lo:hi] - start  # local query row of each positive (sorted)
        tt = pos_target[lo:hi]
        block = _scores(queries[start:stop].to(dtype), targets)
        sp = block[ql, tt]  # each positive's own score
        block[ql, tt] = -math.inf  # the block now holds negatives only (scores are finite)

        # positives ranked before p among the query's positives: higher score, or equal score and lower index
        order = torch.argsort(tt, stable=True)
        order = order[torch.argsort(sp[order], descending=True, stable=True)]
        order = order[torch.argsort(ql[order], stable=True)]
        pos_before = torch.empty_like(ql)
        pos_before[order] = torch.arange(ql.numel(), device=device) - _group_starts(ql[order])

        # negatives scored >= p, one "slot" at a time so every query row is compared once per slot
        neg_ge = torch.empty_like(ql)
        slot = torch.arange(ql.numel(), device=device) - _group_starts(ql)
        for j in range(int(slot.max()) + 1):
            sel = (slot == j).nonzero().flatten()
            rows = ql[sel]  # distinct and ascending
            sub = block if rows.numel() == block.shape[0] else block.index_select(0, rows)
            # int32: `sum` casts the whole mask first, and an int64 copy would be 8 bytes per score
            neg_ge[sel] = (sub >= (sp[sel] - tol).unsqueeze(1)).sum(dim=1, dtype=torch.int32).long()
            del sub
        del block
        ranks[lo:hi] = (1 + neg_ge + pos_before).cpu()
    return ranks


def _sorted_by_query_then_rank(ranks: torch.Tensor, pos_query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.argsort(ranks, stable=True)
    order = order[torch.argsort(pos_query[order], stable=True)]
    return ranks[order], pos_query[order]


def first_positive_ranks(ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int) -> torch.Tensor:
    """Rank of the best-ranked positive per query (int64 [n_queries]; 0 for queries without positives)."""
    first = torch.full((n_queries,), torch.iinfo(torch.long).max, dtype=torch.long)
    first.scatter_reduce_(0, pos_query, ranks, reduce="amin", include_self=True)
    first[torch.bincount(pos_query, minlength=n_queries) == 0] = 0
    return first


# --------------------------------------------------------------------------------------------------------------------
# one metric per function (inputs: ranks of positives; outputs: plain floats averaged over queries with positives)
# --------------------------------------------------------------------------------------------------------------------


def recall_at_k(first_ranks: torch.Tensor, k: int) -> float:
    """Fraction of queries with at least one positive in the top ``k`` (multi-positive R@K)."""
    return float((first_ranks <= k).double().mean())


def reciprocal_rank(first_ranks: torch.Tensor) -> float:
    """Mean reciprocal rank of the first positive (full ranking, no cut-off)."""
    return float((1.0 / first_ranks.double()).mean())


def median_rank(first_ranks: torch.Tensor) -> float:
    """Median 1-based rank of the first positive (mean of the two middle values for an even count)."""
    s = torch.sort(first_ranks.double()).values
    n = s.numel()
    return float(s[n // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def mean_rank(first_ranks: torch.Tensor) -> float:
    """Mean 1-based rank of the first positive."""
    return float(first_ranks.double().mean())


def per_query_average_precision(ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int) -> torch.Tensor:
    """AP of every query, ``(1/n) * sum_i i / r_i`` over its positives (float64 [n_queries]; NaN without one)."""
    r, q = _sorted_by_query_then_rank(ranks, pos_query)
    i = torch.arange(1, r.numel() + 1) - _group_starts(q)  # 1-based position among the query's positives
    n_pos = torch.bincount(q, minlength=n_queries).double()
    ap = torch.zeros(n_queries, dtype=torch.float64).index_add_(0, q, i.double() / r.double())
    return ap / n_pos  # 0/0 = NaN for queries without positives


def average_precision(ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int) -> float:
    """mAP over the full ranking: mean over queries with positives of ``(1/n) * sum_i i / r_i``."""
    ap = per_query_average_precision(ranks, pos_query, n_queries)
    return float(ap[~ap.isnan()].mean())


def ndcg_at_k(ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int, k: int = NDCG_K) -> float:
    """Binary-relevance NDCG@k with the log2(rank + 1) discount (Järvelin & Kekäläinen 2002)."""
    gain = torch.where(ranks <= k, 1.0 / torch.log2(ranks.double() + 1.0), torch.zeros((), dtype=torch.float64))
    dcg = torch.zeros(n_queries, dtype=torch.float64).index_add_(0, pos_query, gain)
    n_pos = torch.bincount(pos_query, minlength=n_queries)
    ideal_cum = torch.cumsum(1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float64)), dim=0)
    has = n_pos > 0
    idcg = ideal_cum[n_pos[has].clamp(max=k) - 1]
    return float((dcg[has] / idcg).mean())


def _direction_metrics(
    ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int, ks: tuple[int, ...]
) -> dict[str, float]:
    pos_query = pos_query.cpu()
    first = first_positive_ranks(ranks, pos_query, n_queries)
    first = first[first > 0]  # queries with at least one positive
    out: dict[str, float] = {f"R@{k}": recall_at_k(first, k) for k in ks}
    out["mAP"] = average_precision(ranks, pos_query, n_queries)
    out[f"NDCG@{NDCG_K}"] = ndcg_at_k(ranks, pos_query, n_queries, NDCG_K)
    out["MRR"] = reciprocal_rank(first)
    out["median_rank"] = median_rank(first)
    out["mean_rank"] = mean_rank(first)
    return out


# --------------------------------------------------------------------------------------------------------------------
# public entry points
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRanks:
    """Per-query results of one direction, for queries with at least one positive, in query order: the rank of the
    first positive and the query's AP. Every reported metric except NDCG is a mean of a function of these, which
    is what a bootstrap over queries resamples (`cliptune.eval.bootstrap`)."""

    query: torch.Tensor  # int64 query index
    first_rank: torch.Tensor  # int64, 1-based
    ap: torch.Tensor  # float64


def _query_ranks(ranks: torch.Tensor, pos_query: torch.Tensor, n_queries: int) -> QueryRanks:
    pos_query = pos_query.cpu()
    first = first_positive_ranks(ranks, pos_query, n_queries)
    has = first > 0
    ap = per_query_average_precision(ranks, pos_query, n_queries)
    return QueryRanks(query=has.nonzero().flatten(), first_rank=first[has], ap=ap[has])


def _both_directions_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, t2i_index: torch.Tensor,
                           chunk_size: int, max_chunk_bytes: int | None):
    """(ranks, query of each positive, number of queries) for t2i and for i2t."""
    n_images, n_texts = image_emb.shape[0], text_emb.shape[0]
    # text -> image: caption t is query t, its only positive is image text_to_image[t]
    t_query = torch.arange(n_texts, device=image_emb.device)
    t_ranks = positive_ranks(text_emb, image_emb, t_query, t2i_index, chunk_size, max_chunk_bytes)
    # image -> text: image i is query i, its positives are all captions t with text_to_image[t] == i
    i_target = torch.argsort(t2i_index, stable=True)
    i_query = t2i_index[i_target]
    i_ranks = positive_ranks(image_emb, text_emb, i_query, i_target, chunk_size, max_chunk_bytes)
    return {"t2i": (t_ranks, t_query, n_texts), "i2t": (i_ranks, i_query, n_images)}


@torch.no_grad()
def query_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                chunk_size: int = 1024, max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES) -> dict[str, QueryRanks]:
    """`QueryRanks` for ``"t2i"`` and ``"i2t"``, under the same conventions and checks as `retrieval_metrics`."""
    directions = _checked_directions(image_emb, text_emb, text_to_image, chunk_size, max_chunk_bytes)
    return {name: _query_ranks(*parts) for name, parts in directions.items()}


def _checked_directions(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                        chunk_size: int, max_chunk_bytes: int | None) -> dict:
    """The inputs checked, then both directions ranked: what every public entry point here starts with."""
    image_emb, text_emb = _check_matrix(image_emb, "image_emb"), _check_matrix(text_emb, "text_emb")
    _check_pair(text_emb, image_emb, "text_emb", "image_emb")
    chunk_size, max_chunk_bytes = _check_chunk_size(chunk_size), _check_max_chunk_bytes(max_chunk_bytes)
    t2i_index = _check_text_to_image(text_to_image, image_emb.shape[0], text_emb.shape[0], image_emb.device)
    return _both_directions_ranks(image_emb, text_emb, t2i_index, chunk_size, max_chunk_bytes)


@torch.no_grad()
def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: tuple[int, ...] = (1, 5, 10),
    chunk_size: int = 1024,
    max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES,
) -> dict:
    """Text→image and image→text retrieval metrics, both directions, computed in chunks.

    Args:
        image_emb: ``[N, d]`` image embeddings (L2-normalised for cosine similarity).
        text_emb: ``[M, d]`` caption embeddings, same ``d`` and device.
        text_to_image: ``[M]`` integer tensor, the index (``0..N-1``) of the one image each caption describes.
            Images may have several captions, or none.
        ks: cut-offs for ``R@K``, one key ``"R@{k}"`` per entry.
        chunk_size: the most query rows scored at once.
        max_chunk_bytes: memory budget of one chunk (its ``rows x targets`` score block and the temporaries derived
            from it); fewer rows than ``chunk_size`` are scored at once where the targets are many. None: no budget.
            The metrics are the same for any chunking.

    Returns:
        ``{"t2i": {...}, "i2t": {...}, "n_images": N, "n_texts": M}``. Each direction holds ``R@{k}`` for every k,
        ``mAP``, ``NDCG@10``, ``MRR``, ``median_rank`` and ``mean_rank`` as Python floats; ``i2t`` also holds
        ``n_image_queries`` (images with at least one caption; images without one are not i2t queries).

    Raises:
        ValueError: on shape/dtype/device mismatches, empty inputs, non-finite values, out-of-range
            ``text_to_image`` entries, or bad ``ks`` / ``chunk_size`` / ``max_chunk_bytes``.
    """
    ks = _check_ks(ks)
    directions = _checked_directions(image_emb, text_emb, text_to_image, chunk_size, max_chunk_bytes)
    return _metrics_of(directions, ks, image_emb.shape[0], text_emb.shape[0])


def _metrics_of(directions: dict, ks: tuple[int, ...], n_images: int, n_texts: int) -> dict:
    t2i = _direction_metrics(*directions["t2i"], ks)
    i_ranks, i_query, _ = directions["i2t"]
    i2t: dict[str, float | int] = dict(_direction_metrics(i_ranks, i_query, n_images, ks))
    i2t["n_image_queries"] = int(torch.unique(i_query).numel())
    return {"t2i": t2i, "i2t": i2t, "n_images": int(n_images), "n_texts": int(n_texts)}


@torch.no_grad()
def retrieval_metrics_and_ranks(image_emb: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
                                ks: tuple[int, ...] = (1, 5, 10), chunk_size: int = 1024,
                                max_chunk_bytes: int | None = DEFAULT_MAX_CHUNK_BYTES
                                ) -> tuple[dict, dict[str, QueryRanks]]:
    """`retrieval_metrics` and `query_ranks` from one ranking pass: the ranking is the expensive part, and a model
    evaluated for a paired bootstrap needs both from the same scores."""
    ks = _check_ks(ks)
    directions = _checked_directions(image_emb, text_emb, text_to_image, chunk_size, max_chunk_bytes)
    ranks = {name: _query_ranks(*parts) for name, parts in directions.items()}
    return _metrics_of(directions, ks, image_emb.shape[0], text_emb.shape[0]), ranks


def mean_recall(metrics: dict, k: int = 10) -> float:
    """Mean of t2i and i2t ``R@k`` from a :func:`retrieval_metrics` result (the early-stopping metric)."""
    key = f"R@{k}"
    try:
        return (float(metrics["t2i"][key]) + float(metrics["i2t"][key])) / 2.0
    except (KeyError, TypeError):
        raise ValueError(
            f"metrics has no {key!r} in both 't2i' and 'i2t'; compute retrieval_metrics with {k} in ks"
        ) from None
