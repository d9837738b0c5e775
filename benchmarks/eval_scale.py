"""Does evaluation scale? Time and peak memory of `eval.retrieval.retrieval_metrics` (chunked: one chunk × targets
score block at a time) against the dense baseline most scripts use (the full N×M similarity matrix + argsort), on
synthetic L2-normalised embeddings: N images × 5 captions, d = 256.

    python benchmarks/eval_scale.py [--n 2000 10000 100000] [--dense-budget-gb 10]

Each (method, N) runs in a fresh subprocess so peak RSS belongs to that case alone: `peak_rss_gb` is the process
peak (psutil, sampled every 5 ms, and getrusage's ru_maxrss), `extra_rss_gb` the peak above the RSS with the
embeddings already in memory. The dense baseline is skipped where its estimate (score matrix 4 B + argsort's
values 4 B and indices 8 B per entry) exceeds `--dense-budget-gb` or the memory available now. Captions are their
image's embedding plus noise, so the metrics are neither 0 nor 1; both methods should agree on R@1/5/10 and MRR
(the JSON records the largest difference).

Above `--full-max` images (default 10k) the chunked method is timed on the first `--fraction` of the queries of each
direction (each still ranked against all targets, so memory is the full-size case's) and its time divided by the
fraction: 100k × 500k in full is ~1.5 h on a loaded 2-core CPU. At N = full-max both ways run, which checks the
extrapolation. One run per case; the machine may be shared, so times are noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

D, CAPTIONS = 256, 5
NOISE = 3.5  # caption = image + noise of norm ~3.5: cosine ~0.27 to its image, so recall is far from 0 and 1


def embeddings(n: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    images = torch.nn.functional.normalize(torch.randn(n, D, generator=gen), dim=1)
    texts = images.repeat_interleave(CAPTIONS, dim=0)
    texts += NOISE * torch.randn(texts.shape, generator=gen) / D ** 0.5
    texts = torch.nn.functional.normalize(texts, dim=1)
    return images, texts, torch.arange(n).repeat_interleave(CAPTIONS)


def _summary(first_ranks_t2i, first_ranks_i2t) -> dict:
    out = {}
    for name, ranks in (("t2i", first_ranks_t2i), ("i2t", first_ranks_i2t)):
        ranks = ranks.double()
        out[name] = {f"R@{k}": float((ranks <= k).double().mean()) for k in (1, 5, 10)}
        out[name]["MRR"] = float((1.0 / ranks).mean())
    return out


def dense_metrics(images, texts, text_to_image) -> dict:
    """The baseline: whole score matrix, full argsort, rank of the first positive by lookup."""
    import torch

    n = images.shape[0]
    scores = texts @ images.T  # [M, N]
    order = scores.argsort(dim=1, descending=True)
    del scores
    t2i_ranks = (order == text_to_image[:, None]).int().argmax(dim=1) + 1
    del order
    scores = images @ texts.T  # [N, M]
    order = scores.argsort(dim=1, descending=True)
    del scores
    owner = text_to_image.to(torch.int32)[order]  # image of the caption at each rank
    del order
    i2t_ranks = (owner == torch.arange(n, dtype=torch.int32)[:, None]).int().argmax(dim=1) + 1
    return _summary(t2i_ranks, i2t_ranks)


def chunked_metrics(images, texts, text_to_image) -> dict:
    from cliptune.eval.retrieval import retrieval_metrics

    full = retrieval_metrics(images, texts, text_to_image)
    return {side: {k: full[side][k] for k in ("R@1", "R@5", "R@10", "MRR")} for side in ("t2i", "i2t")}


def sampled_chunked_metrics(images, texts, text_to_image, fraction: float) -> dict:
    """The work `retrieval_metrics` does for the first `fraction` of the queries of each direction (every query is
    ranked against all targets, independently of the others, so time scales linearly with the query count)."""
    import torch

    from cliptune.eval.retrieval import positive_ranks

    n_t = max(1, int(texts.shape[0] * fraction))
    t2i_ranks = positive_ranks(texts[:n_t], images, torch.arange(n_t), text_to_image[:n_t])
    n_i = max(1, int(images.shape[0] * fraction))
    owned = (text_to_image < n_i).nonzero().flatten()  # captions of the first n_i images (text_to_image is sorted)
    ranks = positive_ranks(images[:n_i], texts, text_to_image[owned], owned)
    i2t_first = torch.full((n_i,), torch.iinfo(torch.long).max).scatter_reduce(0, text_to_image[owned], ranks, "amin")
    return _summary(t2i_ranks, i2t_first)


def run_case(method: str, n: int) -> dict:
    """Inside the subprocess: build the embeddings, then time the method while sampling RSS."""
    import psutil
    import torch

    proc = psutil.Process()
    images, texts, t2i = embeddings(n)
    base = proc.memory_info().rss
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fraction = 1.0
    if method == "dense":
        metrics = dense_metrics(images, texts, t2i)
    elif method.startswith("chunked-sampled:"):
        fraction = float(method.split(":")[1])
        metrics = sampled_chunked_metrics(images, texts, t2i, fraction)
    else:
        metrics = chunked_metrics(images, texts, t2i)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"method": method, "n_images": n, "n_texts": n * CAPTIONS, "query_fraction": fraction,
            "measured_seconds": round(seconds, 3), "seconds": round(seconds / fraction, 3),
            "peak_rss_gb": round(max(peak[0], maxrss) / 1e9, 3), "extra_rss_gb": round((peak[0] - base) / 1e9, 3),
            "embeddings_rss_gb": round(base / 1e9, 3), "torch_threads": torch.get_num_threads(), "metrics": metrics}


def dense_estimate_gb(n: int) -> float:
    return n * n * CAPTIONS * (4 + 4 + 8) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 10_000, 100_000])
    parser.add_argument("--dense-budget-gb", type=float, default=10.0)
    parser.add_argument("--full-max", type=int, default=10_000,
                        help="above this N the chunked method runs on --fraction of the queries, time extrapolated")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--case", nargs=2, metavar=("METHOD", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("eval_scale.json"))
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case[0], int(args.case[1]))))
        return

    import psutil

    from machine import load_average, machine_info, print_table

    results: dict = {"machine": machine_info(), "d": D, "captions_per_image": CAPTIONS,
                     "chunked": "cliptune.eval.retrieval.retrieval_metrics (default chunking, all metrics)",
                     "dense": "full score matrix + argsort per direction (R@1/5/10 and MRR only)", "cases": []}
    rows = []
    for n in args.n:
        methods = ["chunked", "dense"] if n <= args.full_max else [f"chunked-sampled:{args.fraction:g}", "dense"]
        if n == args.full_max:  # one N measured both ways checks the extrapolation
            methods.insert(1, f"chunked-sampled:{args.fraction:g}")
        for method in methods:
            if method == "dense":
                need = dense_estimate_gb(n)
                available = psutil.virtual_memory().available / 1e9
                if need > min(args.dense_budget_gb, available - 2):
                    case = {"method": method, "n_images": n, "n_texts": n * CAPTIONS, "skipped": True,
                            "reason": f"needs ~{need:.0f} GB (N×M×16 B), over the {args.dense_budget_gb:g} GB "
                                      f"budget / {available:.0f} GB available"}
                    results["cases"].append(case)
                    rows.append([method, n, n * CAPTIONS, None, None, None, case["reason"]])
                    print(f"{method} N={n}: skipped ({case['reason']})", flush=True)
                    continue
            print(f"{method} N={n} ...", flush=True)
            proc = subprocess.run([sys.executable, __file__, "--case", method, str(n)], capture_output=True,
                                  text=True)
            if proc.returncode != 0:
                case = {"method": method, "n_images": n, "failed": True, "stderr": proc.stderr[-2000:]}
                rows.append([method, n, n * CAPTIONS, None, None, None, f"failed rc {proc.returncode}"])
            else:
                case = json.loads(proc.stdout.strip().splitlines()[-1])
                rows.append([method, n, n * CAPTIONS, case["seconds"], case["peak_rss_gb"], case["extra_rss_gb"],
                             f"t2i R@10 {case['metrics']['t2i']['R@10']:.4f}"])
            results["cases"].append(case)
            print(f"  {rows[-1]}", flush=True)
    agree = {}
    for n in args.n:
        pair = {c["method"]: c for c in results["cases"] if c["n_images"] == n and "metrics" in c}
        if "dense" in pair and "chunked" in pair:
            agree[str(n)] = max(abs(pair["dense"]["metrics"][s][k] - pair["chunked"]["metrics"][s][k])
                                for s in ("t2i", "i2t") for k in ("R@1", "R@5", "R@10", "MRR"))
    results["dense_vs_chunked_max_abs_metric_difference"] = agree
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["method", "images", "captions", "seconds", "peak RSS GB", "extra RSS GB", "note"], rows)
    print(f"largest |dense - chunked| metric difference per N: {agree}")
    print(f"load average {results['machine']['load_average_at_start']} → {results['machine']['load_average_at_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
