"""Index types, by name: how a FAISS index is laid out for a collection of `n` vectors of width `dim`, and tuned to
answer a query for `k` hits.

Embeddings are L2-normalised, so inner product is cosine similarity and every type uses the inner-product metric.
`flat` is exact and the right choice up to a few hundred thousand images; `hnsw` answers large collections in
milliseconds at a little recall; `ivfpq` searches PQ codes (one byte per 8 dimensions) in inverted lists and re-ranks
the best candidates with float16 copies, for collections too large for float32 in memory; below ~10,000 vectors it
is exact (`Flat`), since PQ cannot be trained on so few. A new type is one `AnnKind` and one registration line.
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


PQ_BITS = 8
MIN_POINTS_PER_CENTROID = 39  # FAISS warns (and trains poorly) below this many training points per centroid
MIN_IVFPQ_N = MIN_POINTS_PER_CENTROID * 2 ** PQ_BITS  # 9,984: enough to train 256 centroids per sub-quantizer
REFINE_K_FACTOR = 8


def _ivfpq_plan(dim: int, n: int) -> dict[str, Any]:
    """Planned from the collection size. Below `MIN_IVFPQ_N` vectors the product quantizer cannot be trained (and
    compression saves nothing that matters), so the index is exact (`Flat`) and the parameters say why. Above it:
    about 4·sqrt(n) inverted lists with at least 39 vectors each (FAISS's rule of thumb), PQ codes of one byte per
    8 dimensions, nprobe of 1/8 of the lists (at least 16), and the k·8 best candidates re-ranked with float16 copies
    of the vectors (`Refine(SQfp16)`, half of float32's memory): PQ codes alone put recall@10 near 0.85, and 8-bit
    re-ranking codes near 0.94, on clustered vectors (tests/test_index_search.py, benchmarks/index_defaults.py)."""
    if n < MIN_IVFPQ_N:
        return {"factory": "Flat", "fallback": "flat",
                "reason": f"{n:,} vectors are too few to train IVF-PQ (needs {MIN_IVFPQ_N:,}); exact search "
                          f"instead, rebuild with --ann ivfpq once the collection is larger"}
    nlist = max(1, min(int(4 * math.sqrt(n)), n // MIN_POINTS_PER_CENTROID))
    m = max(d for d in range(1, max(1, dim // 8) + 1) if dim % d == 0)
    return {"factory": f"IVF{nlist},PQ{m}x{PQ_BITS},Refine(SQfp16)", "nprobe": min(nlist, max(16, nlist // 8)),
            "k_factor": REFINE_K_FACTOR}


def _ivf_part(index: Any) -> Any:
    import faiss

    index = faiss.downcast_index(index)
    return faiss.downcast_index(index.base_index) if hasattr(index, "base_index") else index


def _ivfpq_prepare(index: Any, params: dict[str, Any]) -> None:
    """No polysemous training: it only serves Hamming-filtered search, which we do not use, and costs 10x the
    rest of training."""
    if params.get("fallback"):
        return
    _ivf_part(index).do_polysemous_training = False


def _ivfpq_tune(index: Any, params: dict[str, Any], k: int) -> None:
    import faiss

    if params.get("fallback"):
        return
    faiss.ParameterSpace().set_index_parameter(index, "nprobe", int(params.get("nprobe", 1)))
    if "k_factor" in params:
        faiss.downcast_index(index).k_factor = float(params["k_factor"])


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


__all__ = ["ANN", "AnnKind", "MIN_IVFPQ_N", "new_faiss_index", "tune"]
