"""Index types, by name: how a FAISS index is laid out for a collection of `n` vectors of width `dim`, and tuned to
answer a query for `k` hits.

Embeddings are L2-normalised, so inner product is cosine similarity and every type uses the inner-product metric.
`flat` is exact and the right choice up to a few hundred thousand images; `hnsw` answers large collections in
milliseconds at a little recall; `ivfpq` also compresses the vectors (a few dozen bytes each) for collections that do
not fit in memory. A new type is one `AnnKind` and one registration line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from cliptune.utils.registry import Registry


@dataclass(frozen=True)
class AnnKind:
    """`plan(dim, n)` → JSON-able parameters (kept in the manifest, so reopening needs no re-planning), with the
    FAISS factory string under "factory"; `prepare(index, params)` sets build-time knobs on a new index;
    `tune(index, params, k)` sets search-time knobs before a query."""

    plan: Callable[[int, int], dict[str, Any]]
    prepare: Callable[[Any, dict[str, Any]], None]
    tune: Callable[[Any, dict[str, Any], int], None]
    help: str


ANN: Registry[AnnKind] = Registry("index type (--ann)")


def _nothing(index: Any, params: dict[str, Any], k: int = 0) -> None:
    return None


def _flat_plan(dim: int, n: int) -> dict[str, Any]:
    return {"factory": "Flat"}


def _hnsw_plan(dim: int, n: int) -> dict[str, Any]:
    return {"factory": "HNSW32", "efConstruction": 80, "efSearch": 128}


def _hnsw_prepare(index: Any, params: dict[str, Any]) -> None:
    import faiss

    faiss.downcast_index(index).hnsw.efConstruction = int(params["efConstruction"])


def _hnsw_tune(index: Any, params: dict[str, Any], k: int) -> None:
    """The search beam must be at least k wide, or HNSW returns fewer than k hits."""
    import faiss

    faiss.ParameterSpace().set_index_parameter(index, "efSearch", max(int(params.get("efSearch", 128)), k))


def _ivfpq_plan(dim: int, n: int) -> dict[str, Any]:
    """About 4·sqrt(n) lists with 39+ vectors each (FAISS's own rule of thumb), sub-vectors of ~8 dims, and codes of
    8 bits, or fewer when the collection is too small to train 256 centroids per sub-quantizer."""
    nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))
    m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    nbits = max(1, min(8, int(math.log2(max(n, 2)))))
    return {"factory": f"IVF{nlist},PQ{m}x{nbits}", "nprobe": min(nlist, 16)}


def _ivfpq_prepare(index: Any, params: dict[str, Any]) -> None:
    """No polysemous training: it only serves Hamming-filtered search, which we do not use, and costs 10x the
    rest of training."""
    import faiss

    faiss.downcast_index(index).do_polysemous_training = False


def _ivfpq_tune(index: Any, params: dict[str, Any], k: int) -> None:
    import faiss

    faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(params.get("nprobe", 1)))


ANN.register("flat")(AnnKind(_flat_plan, _nothing, _nothing, "exact inner product (IndexFlatIP)"))
ANN.register("hnsw")(AnnKind(_hnsw_plan, _hnsw_prepare, _hnsw_tune,
                             "graph search, fast on large collections (IndexHNSWFlat)"))
ANN.register("ivfpq")(AnnKind(_ivfpq_plan, _ivfpq_prepare, _ivfpq_tune, "inverted lists + product quantization, "
                                                                         "compressed (IndexIVFPQ, trained)"))


def new_faiss_index(kind: str, dim: int, n: int) -> tuple[Any, dict[str, Any]]:
    """An empty index of type `kind` planned for `n` vectors, and its parameters."""
    import faiss

    ann = ANN.get(kind)
    params = ann.plan(dim, n)
    index = faiss.index_factory(dim, params["factory"], faiss.METRIC_INNER_PRODUCT)
    ann.prepare(index, params)
    return index, params


def tune(index: Any, kind: str, params: dict[str, Any], k: int) -> None:
    ANN.get(kind).tune(index, params, k)


__all__ = ["ANN", "AnnKind", "new_faiss_index", "tune"]
