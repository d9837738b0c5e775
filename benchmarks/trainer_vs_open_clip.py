"""cliptune's trainer side by side with open_clip's reference trainer (`open_clip_train`): the same tiny open_clip
architecture, the same images and captions, batch, epochs, optimiser settings and schedule; samples/s of each and
the test R@10 of each final model (over `--seeds` runs), all scored by cliptune's evaluation on the same test split.

    python benchmarks/trainer_vs_open_clip.py [--train 1024] [--test 256] [--epochs 3] [--batch 32]

The architecture is registered at run time with `open_clip.add_model_config` (ViT: width 64, 2 layers, patch 8,
64 px; text: width 64, 2 layers, context 32; embed 64), in both trainer processes and here. cliptune trains it
through its `openclip:` backend; open_clip's final checkpoint is scored as `openclip:<arch>/<epoch_N.pt>`.
Both run as CLI subprocesses on the CPU in fp32 with 0 loader workers and `--threads` torch threads (default 1),
AdamW (0.9, 0.98, eps 1e-6), weight decay 0.1, gradient clipping at 1.0, cosine schedule with warm-up.
Differences that remain, by design of each trainer: open_clip exempts gains/biases/logit scale from weight decay;
cliptune's data has no val split here, so it keeps the last weights as open_clip does (with a val split cliptune
would keep the best evaluation's).

samples/s, three ways: (1) marginal — each trainer runs 1 epoch and `--epochs` epochs, and the extra samples are
divided by the extra time, so start-up, model building, cliptune's final test evaluation and export cancel out;
computed from wall time and from the child process's CPU time (user + sys, all threads), which other load on a
shared machine barely changes, taking the fastest of the `--seeds` runs of each length; (2) each trainer's own logged
rate (median over the full-length runs after each one's first log: open_clip per logged batch, cliptune per history
window); (3) the whole command's wall clock. Still noisy on a loaded machine; the CPU-time figure is the steadiest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from emoji_subset import write_emoji_subset
from machine import load_average, machine_info, print_table

ARCH = "bench-tiny-ViT"
CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
LR, WD, WARMUP, CLIP = 5e-4, 0.1, 10, 1.0
THREADS = 1  # torch threads per trainer (--threads): on a busy 2-core machine two threads mostly wait for each other

# Each trainer runs in its own process with the tiny architecture registered first.
OPEN_CLIP_MAIN = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
                  "from open_clip_train.main import main; main(sys.argv[2:])")
CLIPTUNE_MAIN = ("import sys, open_clip; open_clip.add_model_config(sys.argv[1]); "
                 "from cliptune.cli import main; sys.argv = ['cliptune'] + sys.argv[2:]; main()")


def run(cmd: list[str], log: Path, threads: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child: user + sys over all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{cmd[3:6]} failed (rc {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def train_open_clip(cfg_dir: Path, train_csv: Path, out: Path, args, epochs: int, seed: int) -> dict:
    cmd = [sys.executable, "-c", OPEN_CLIP_MAIN, str(cfg_dir),
           "--train-data", str(train_csv), "--dataset-type", "csv", "--csv-separator", ",",
           "--csv-img-key", "filepath", "--csv-caption-key", "title", "--model", ARCH,
           "--batch-size", str(args.batch), "--epochs", str(epochs), "--lr", str(LR), "--wd", str(WD),
           "--warmup", str(WARMUP), "--grad-clip-norm", str(CLIP), "--workers", "0", "--device", "cpu",
           "--precision", "fp32", "--logs", str(out), "--name", "open_clip", "--save-frequency", "1",
           "--log-every-n-steps", str(args.log_every), "--report-to", "", "--seed", str(seed),
           "--zeroshot-frequency", "0"]
    log = out / "open_clip_stdout.log"
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = run(cmd, log, args.threads)
    text = (out / "open_clip" / "out.log").read_text() if (out / "open_clip" / "out.log").is_file() else log.read_text()
    rates = [float(m) for m in re.findall(r"Batch \(t\): [\d.]+, ([\d.]+)/s,", text)]
    checkpoint = out / "open_clip" / "checkpoints" / f"epoch_{epochs}.pt"
    return {"wall_s": wall, "cpu_s": cpu, "rates": rates, "checkpoint": checkpoint}


def train_cliptune(cfg_dir: Path, data_csv: Path, out: Path, args, epochs: int, seed: int) -> dict:
    sets = [f"train.epochs={epochs}", f"train.batch_size={args.batch}", f"train.lr={LR}",
            f"train.weight_decay={WD}", f"train.warmup_steps={WARMUP}", f"train.grad_clip={CLIP}",
            f"train.seed={seed}", f"train.log_every={args.log_every}", "train.precision=fp32", "train.device=cpu",
            "data.num_workers=0", "eval.before=false", "eval.report=false"]
    cmd = [sys.executable, "-c", CLIPTUNE_MAIN, str(cfg_dir), "train", "--data", str(data_csv),
           "--model", f"openclip:{ARCH}", "--output-dir", str(out), "--name", "cliptune", "-q",
           *[a for s in sets for a in ("--set", s)]]
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = run(cmd, out / "cliptune_stdout.log", args.threads)
    history = [json.loads(x) for x in (out / "cliptune" / "history.jsonl").read_text().splitlines()]
    rates = [h["samples_per_s"] for h in history if h.get("event") == "train"]
    return {"wall_s": wall, "cpu_s": cpu, "rates": rates, "model": out / "cliptune"}


def evaluate(spec: str, data_csv: Path) -> dict:
    from cliptune.data.load import load_dataset
    from cliptune.inference.evaluate import evaluate_records
    from cliptune.models.registry import load_model

    test = load_dataset(data_csv).split("test")
    return evaluate_records(load_model(spec), test, progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=1024)
    parser.add_argument("--test", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--log-every", type=int, default=8)
    parser.add_argument("--threads", type=int, default=THREADS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="runs per trainer and length: the spread of test R@10; speed takes the fastest")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("trainer_vs_open_clip.json"))
    args = parser.parse_args()
    import open_clip

    results: dict = {"machine": machine_info(), "arch": ARCH, "arch_config": CONFIG,
                     "data": f"emoji subset: {args.train} train / {args.test} test images, one caption each",
                     "epochs": args.epochs, "batch": args.batch, "steps": args.epochs * (args.train // args.batch),
                     "test_metric": "mean R@10 = (t2i R@10 + i2t R@10) / 2 on the test split, cliptune's evaluation",
                     "settings": {"lr": LR, "weight_decay": WD, "warmup_steps": WARMUP, "grad_clip": CLIP,
                                  "seeds": args.seeds, "precision": "fp32", "device": "cpu", "workers": 0,
                                  "torch_threads_per_trainer": args.threads},
                     "cliptune_backend": "openclip: (models/openclip.py), the same open_clip CLIP module"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg_dir = tmp / "configs"
        cfg_dir.mkdir()
        (cfg_dir / f"{ARCH}.json").write_text(json.dumps(CONFIG))
        open_clip.add_model_config(cfg_dir)
        paths = write_emoji_subset(tmp / "data", args.train, 0, args.test)
        runs: dict = {"open_clip_train": {}, "cliptune": {}}
        first = args.seeds[0]  # its full-length run's wall time goes in the table
        plan = [(epochs, seed) for seed in args.seeds for epochs in (1, args.epochs)]
        for epochs, seed in plan:  # interleaved, so a burst of outside load hits both trainers alike
            print(f"{epochs} epoch(s), seed {seed}: open_clip_train ...", flush=True)
            runs["open_clip_train"][epochs, seed] = train_open_clip(cfg_dir, paths["train"],
                                                                    tmp / f"oc{epochs}-{seed}", args, epochs, seed)
            print(f"{epochs} epoch(s), seed {seed}: cliptune ...", flush=True)
            runs["cliptune"][epochs, seed] = train_cliptune(cfg_dir, paths["all"], tmp / f"ct{epochs}-{seed}", args,
                                                            epochs, seed)
        extra_samples = (args.epochs - 1) * (args.train // args.batch) * args.batch
        rows, results["trainers"] = [], {}
        for name in ("open_clip_train", "cliptune", "untrained (reference)"):
            if name == "untrained (reference)":
                specs = {None: f"openclip:{ARCH}"}
            elif name == "open_clip_train":
                specs = {s: f"openclip:{ARCH}/{runs[name][args.epochs, s]['checkpoint']}" for s in args.seeds}
            else:
                specs = {s: str(runs[name][args.epochs, s]["model"]) for s in args.seeds}
            per_seed = {}
            for seed, spec in specs.items():
                metrics = evaluate(spec, paths["all"])
                per_seed[seed] = {"t2i_R@10": metrics["t2i"]["R@10"], "i2t_R@10": metrics["i2t"]["R@10"],
                                  "mean_R@10": (metrics["t2i"]["R@10"] + metrics["i2t"]["R@10"]) / 2,
                                  "t2i_R@1": metrics["t2i"]["R@1"], "i2t_R@1": metrics["i2t"]["R@1"]}
            means = [r["mean_R@10"] for r in per_seed.values()]
            entry = {"test_mean_R@10_mean": statistics.mean(means),
                     "test_mean_R@10_sd": statistics.stdev(means) if len(means) > 1 else 0.0,
                     "test_per_seed": {str(k): {m: round(v, 4) for m, v in r.items()} for k, r in per_seed.items()}}
            if name in runs:
                def best(epochs: int, key: str) -> float:  # fastest of the seeds: outside load only slows runs
                    return min(runs[name][epochs, seed][key] for seed in args.seeds)

                rates = [r for seed in args.seeds for r in (runs[name][args.epochs, seed]["rates"][1:]
                                                            or runs[name][args.epochs, seed]["rates"])]
                entry.update(
                    marginal_samples_per_cpu_s=extra_samples / (best(args.epochs, "cpu_s") - best(1, "cpu_s")),
                    marginal_samples_per_wall_s=extra_samples / (best(args.epochs, "wall_s") - best(1, "wall_s")),
                    logged_samples_per_s_median=statistics.median(rates), n_rate_logs=len(rates),
                    command_wall_s={f"{e} epochs, seed {s}": round(r["wall_s"], 2) for (e, s), r in runs[name].items()},
                    command_cpu_s={f"{e} epochs, seed {s}": round(r["cpu_s"], 2) for (e, s), r in runs[name].items()})
            results["trainers"][name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}
            rows.append([name, entry.get("marginal_samples_per_cpu_s"), entry.get("marginal_samples_per_wall_s"),
                         entry.get("logged_samples_per_s_median"),
                         round(runs[name][args.epochs, first]["wall_s"], 1) if name in runs else None,
                         f"{entry['test_mean_R@10_mean']:.4f} ± {entry['test_mean_R@10_sd']:.4f}",
                         " ".join(f"{m:.3f}" for m in means)])
        oc, ct = results["trainers"]["open_clip_train"], results["trainers"]["cliptune"]
        results["cliptune_speed_vs_open_clip"] = {
            "cpu_time": round(ct["marginal_samples_per_cpu_s"] / oc["marginal_samples_per_cpu_s"], 3),
            "wall_time": round(ct["marginal_samples_per_wall_s"] / oc["marginal_samples_per_wall_s"], 3),
            "note": "cliptune samples/s ÷ open_clip_train samples/s (marginal); > 1 means cliptune is faster"}
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["trainer", "samples/CPU-s", "samples/wall-s", "logged samples/s", f"{args.epochs}-epoch wall s",
                 "test mean R@10 (mean ± sd)", "per seed"], rows)
    print(f"cliptune ÷ open_clip_train speed: {results['cliptune_speed_vs_open_clip']}")
    print(f"load average {results['machine']['load_average_at_start']} → {results['machine']['load_average_at_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
