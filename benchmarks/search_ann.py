"""Exact vs approximate search at collection scale: FAISS IndexFlatIP against HNSW (the project's `search/ann.py`
kinds `flat` and `hnsw`, planned and tuned as `cliptune index --ann` does), on synthetic L2-normalised 512-d vectors.

    python benchmarks/search_ann.py [--n 1000000] [--fallback-n 200000] [--max-build-s 600] [--queries 1000]

Reports build time (all cores), p50/p99 single-query latency (one query per call on one thread, k = 10; on a loaded
2-core machine OpenMP threads only fight over the cores) and recall@10 of HNSW against the exact answer, for the
planned efSearch and a small sweep. Vectors are a mixture of 2,000 Gaussian clusters
(unit centres plus noise, normalised), a rough stand-in for image embeddings, which are clustered; uniformly random
high-dimensional vectors would be the worst case for any graph index. Queries come from the same mixture and are not
in the collection. `--data uniform` uses uniformly random directions instead (the worst case; written to
search_ann_uniform.json). If HNSW's projected build time for `--n` exceeds `--max-build-s` (projected from the rate
of the first 10% of inserts, +30% for the slower inserts into a larger graph), the collection falls back to its
first `--fallback-n` vectors and the JSON says so. One run; on a loaded machine latencies are noisy.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from machine import load_average, machine_info, print_table

from cliptune.search.ann import new_faiss_index, tune

D, CLUSTERS, K, CHUNK = 512, 2000, 10, 50_000


def mixture(n: int, seed: int, centres: np.ndarray | None) -> np.ndarray:
    """Clustered vectors, or uniformly random directions when `centres` is None (the hard case for graphs)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, CHUNK):
        stop = min(n, start + CHUNK)
        x = rng.standard_normal((stop - start, D), dtype=np.float32)
        if centres is not None:
            x = centres[rng.integers(0, len(centres), stop - start)] + x * (1.0 / np.sqrt(D))
        out[start:stop] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def single_query_latency(index, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Search one query per call (what a server answering one user does); returns ids and per-call ms."""
    ids = np.empty((len(queries), K), dtype=np.int64)
    ms = []
    for i in range(len(queries)):
        start = time.perf_counter()
        _, found = index.search(queries[i:i + 1], K)
        ms.append((time.perf_counter() - start) * 1000)
        ids[i] = found[0]
    return ids, ms


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact)]))


def percentiles(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def build_hnsw(data: np.ndarray, n: int, fallback_n: int, max_build_s: float) -> tuple:
    index, params = new_faiss_index("hnsw", D, n)
    start, added, projected = time.perf_counter(), 0, None
    target = n
    while added < target:
        stop = min(target, added + CHUNK)
        index.add(data[added:stop])
        added = stop
        if projected is None and added >= max(CHUNK, n // 10):
            rate = added / (time.perf_counter() - start)
            projected = n / rate * 1.3
            print(f"  HNSW: {added:,} inserted at {rate:,.0f}/s; projected build for {n:,}: {projected:.0f} s",
                  flush=True)
            if projected > max_build_s and n > fallback_n:
                target = max(added, fallback_n)
    return index, params, time.perf_counter() - start, added, projected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--fallback-n", type=int, default=200_000)
    parser.add_argument("--max-build-s", type=float, default=600)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--flat-queries", type=int, default=200, help="single-query latency sample for flat")
    parser.add_argument("--data", choices=("clustered", "uniform"), default="clustered")
    parser.add_argument("--out", type=Path, default=None, help="default: search_ann.json (search_ann_uniform.json)")
    args = parser.parse_args()
    suffix = "" if args.data == "clustered" else f"_{args.data}"
    args.out = args.out or Path(__file__).with_name(f"search_ann{suffix}.json")
    import faiss

    results: dict = {"machine": machine_info(), "faiss": faiss.__version__, "omp_threads": faiss.omp_get_max_threads(),
                     "d": D, "k": K,
                     "data": (f"mixture of {CLUSTERS} Gaussian clusters, L2-normalised" if args.data == "clustered"
                              else "uniformly random directions (worst case for a graph index)"),
                     "requested_n": args.n}
    rng = np.random.default_rng(0)
    centres = None
    if args.data == "clustered":
        centres = rng.standard_normal((CLUSTERS, D), dtype=np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    print(f"generating {args.n:,} × {D} vectors ...", flush=True)
    data = mixture(args.n, 1, centres)
    queries = mixture(args.queries, 2, centres)

    print("building HNSW ...", flush=True)
    hnsw, params, build_s, n, projected = build_hnsw(data, args.n, args.fallback_n, args.max_build_s)
    results["n"] = n
    results["hnsw_projected_build_s_for_requested_n"] = round(projected, 1) if projected else None
    if n < args.n:
        results["fallback"] = (f"HNSW build for {args.n:,} projected at {projected:.0f} s > {args.max_build_s:g} s "
                               f"on this machine: measured on the first {n:,} vectors instead")
        print(f"  {results['fallback']}", flush=True)
    data = data[:n]

    print(f"exact search over {n:,} ...", flush=True)
    start = time.perf_counter()
    flat, _ = new_faiss_index("flat", D, n)
    flat.add(data)
    flat_build = time.perf_counter() - start
    start = time.perf_counter()
    _, exact = flat.search(queries, K)
    batch_s = time.perf_counter() - start
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)  # one query per call on one thread, as a server thread answers a user
    flat_ids, flat_ms = single_query_latency(flat, queries[: args.flat_queries])
    assert recall(flat_ids, exact[: args.flat_queries]) > 0.999
    results["flat"] = {"factory": "Flat (IndexFlatIP)", "build_s": round(flat_build, 2),
                       "batch_search_s_all_queries": round(batch_s, 2), "latency_queries": args.flat_queries,
                       **percentiles(flat_ms), "recall@10": 1.0}
    rows = [["flat", n, round(flat_build, 1), results["flat"]["p50_ms"], results["flat"]["p99_ms"], 1.0]]

    results["hnsw"] = {"factory": params["factory"], "efConstruction": params["efConstruction"],
                       "build_s": round(build_s, 2), "sweep": []}
    for ef in sorted({32, 64, params["efSearch"], 256}):
        tune(hnsw, "hnsw", {**params, "efSearch": ef}, K)
        found, ms = single_query_latency(hnsw, queries)
        entry = {"efSearch": ef, **percentiles(ms), "recall@10": round(recall(found, exact), 4),
                 "planned": ef == params["efSearch"]}
        results["hnsw"]["sweep"].append(entry)
        rows.append([f"hnsw efSearch={ef}" + (" (planned)" if entry["planned"] else ""), n, round(build_s, 1),
                     entry["p50_ms"], entry["p99_ms"], entry["recall@10"]])
        print(f"  {rows[-1]}", flush=True)
    faiss.omp_set_num_threads(threads)
    results["latency_threads"] = 1
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["index", "vectors", "build s", "p50 ms", "p99 ms", "recall@10"], rows)
    print(f"load average {results['machine']['load_average_at_start']} → {results['machine']['load_average_at_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
