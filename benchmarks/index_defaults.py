"""The index types as `cliptune index --ann` plans them, at the size of the emoji collection and above: recall@10
against exact search, build time, and the warnings FAISS prints while training.

    python benchmarks/index_defaults.py [--sizes 3800 12000] [--dim 256] [--queries 300]

Vectors are L2-normalised 256-d (lite's embedding width) from a mixture of Gaussian clusters, a stand-in for image
embeddings (which are clustered); queries come from the same mixture and are not in the collection. FAISS writes
its warnings to the C stderr, so that file descriptor is captured around each build and the lines holding
"WARNING" are counted. Writes index_defaults.json next to this file. One run; build times on a loaded machine are
noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import machine_info

from cliptune.search.ann import new_faiss_index, tune

K, CLUSTERS = 10, 300


def vectors(n: int, dim: int, seed: int, centres: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, len(centres), n)] + rng.standard_normal((n, dim)).astype(np.float32) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


class CapturedStderr:
    """The C-level stderr (fd 2) of this process, captured into a file while inside the block."""

    def __enter__(self):
        self.file = tempfile.TemporaryFile(mode="w+b")
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", "replace")
        self.file.close()


def measure(kind: str, data: np.ndarray, queries: np.ndarray, exact_ids: np.ndarray) -> dict:
    with CapturedStderr() as err:
        start = time.perf_counter()
        index, params = new_faiss_index(kind, data.shape[1], len(data))
        if not index.is_trained:
            index.train(data)
        index.add(data)
        build_s = time.perf_counter() - start
    tune(index, kind, params, K)
    start = time.perf_counter()
    _, found = index.search(queries, K)
    search_ms = (time.perf_counter() - start) * 1000 / len(queries)
    recall = float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found, exact_ids)]))
    warnings = [line for line in err.text.splitlines() if "WARNING" in line]
    return {"params": params, "build_s": round(build_s, 2), "search_ms_per_query_batched": round(search_ms, 3),
            "recall@10_vs_exact": round(recall, 4), "faiss_warnings": len(warnings),
            "first_warning": warnings[0] if warnings else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3800, 12000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("index_defaults.json"))
    args = parser.parse_args()
    import faiss

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((CLUSTERS, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    results = {"machine": machine_info(), "faiss": faiss.__version__, "dim": args.dim, "k": K,
               "data": f"mixture of {CLUSTERS} Gaussian clusters, L2-normalised", "sizes": {}}
    for n in args.sizes:
        data, queries = vectors(n, args.dim, 1, centres), vectors(args.queries, args.dim, 2, centres)
        exact = faiss.IndexFlatIP(args.dim)
        exact.add(data)
        _, exact_ids = exact.search(queries, K)
        row = {kind: measure(kind, data, queries, exact_ids) for kind in ("flat", "hnsw", "ivfpq")}
        results["sizes"][str(n)] = row
        for kind, r in row.items():
            print(f"n={n:>7,} {kind:<6} {r['params']['factory']:<32} recall@10 {r['recall@10_vs_exact']:.4f} "
                  f"build {r['build_s']:>6.2f} s  FAISS warnings {r['faiss_warnings']}", flush=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
