"""What cliptune's Trainer costs over the bare limit: its samples/s against a plain PyTorch loop (AdamW + symmetric
InfoNCE, grad clipping, logit-scale clamp) on the same tiny-clip weights, the same images and the same batches.

    python benchmarks/trainer_overhead.py [--train 512] [--short 16] [--long 64] [--batch 32] [--repeats 3]

Two plain loops bracket the Trainer:
  * plain/in-memory  — images decoded and transformed once, tokens computed once: model compute only (the limit);
  * plain/dataloader — the same DataLoader over the image files and per-batch tokenisation the Trainer uses.
Each variant runs `--short` and `--long` steps; the rate is the *marginal* one, (long − short)·batch over the time
difference, so fixed costs cancel: model building, start-up, and for the Trainer its one validation pass +
checkpoint, final test evaluation and export (eval_every = the step count). What remains is the per-step cost,
including the Trainer's per-epoch loader set-up and history logging. The whole fit's rate is reported too.

Noise: the machine is shared, so besides wall time each run records the process CPU time (all threads), which
other processes barely change, and torch runs on `--threads` threads (default 1: two threads on two busy cores
mostly wait for each other). Variants are interleaved `--repeats` times and the fastest run of each length counts.
The headline overhead is the CPU-time ratio. Data: a seeded emoji subset (benchmarks/emoji_subset.py), 64 px.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from emoji_subset import write_emoji_subset
from machine import load_average, machine_info, print_table

from cliptune.config import load_config
from cliptune.data.datasets import ImageFiles
from cliptune.data.load import load_dataset
from cliptune.models.registry import load_model
from cliptune.train.batches import epoch_batches
from cliptune.train.rundir import RunDir
from cliptune.train.trainer import Trainer

LR, WD, CLIP = 5e-4, 0.1, 1.0


def _step(model, optimizer, pixels, tokens) -> None:
    image = model.encode_image(pixels)
    text = model.encode_text(tokens)
    logits = model.scale() * image @ text.T
    labels = torch.arange(len(image))
    loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


def plain_loop(train, steps: int, batch: int, in_memory: bool) -> None:
    model = load_model("tiny-clip")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WD, betas=(0.9, 0.98), eps=1e-6)
    transform = model.image_transform(train=True)
    captions = [r.captions[0] for r in train]
    per_epoch = len(train) // batch
    if in_memory:
        dataset = ImageFiles(train, transform)
        images = torch.stack([dataset[i] for i in range(len(train))])
        tokens = model.tokenize(captions)
    for step in range(steps):
        epoch, position = divmod(step, per_epoch)
        if position == 0:
            batches = epoch_batches(len(train), batch, 0, epoch)
            if not in_memory:
                loader = iter(DataLoader(ImageFiles(train, transform), batch_sampler=[b.tolist() for b in batches],
                                         num_workers=0))
        index = batches[position]
        if in_memory:
            pixels, tok = images[index], {k: v[index] for k, v in tokens.items()}
        else:
            pixels, tok = next(loader), model.tokenize([captions[int(i)] for i in index])
        _step(model, optimizer, pixels, tok)


def trainer_fit(data_csv: Path, out: Path, steps: int, batch: int) -> None:
    cfg = load_config(None, [f"data.path={data_csv}", "model.spec=tiny-clip", f"train.output_dir={out}",
                             f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.batch_size={batch}",
                             f"train.lr={LR}", f"train.weight_decay={WD}", f"train.grad_clip={CLIP}",
                             "train.warmup_steps=1", "train.log_every=10", "eval.before=false", "eval.report=false",
                             "train.feature_cache=false"])
    data = load_dataset(data_csv)
    Trainer(cfg, load_model("tiny-clip"), data, RunDir.create(out, None), progress=False).fit()


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--short", type=int, default=16)
    parser.add_argument("--long", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("trainer_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict = {"machine": machine_info(), "model": "tiny-clip (HF CLIP, width 64, 2+2 layers, 64 px)",
                     "data": f"emoji subset, {args.train} train images", "batch": args.batch,
                     "steps": {"short": args.short, "long": args.long}, "repeats": args.repeats}
    variants = ("plain/in-memory", "plain/dataloader", "trainer")
    best: dict = {v: {n: [float("inf"), float("inf")] for n in ("short", "long")} for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_emoji_subset(Path(tmp), args.train, 32, 32)
        train = load_dataset(paths["all"]).split("train")
        for repeat in range(args.repeats):
            for length in ("short", "long"):
                steps = getattr(args, length)
                for variant in variants:
                    if variant == "trainer":
                        wall, cpu = timed(trainer_fit, paths["all"], Path(tmp) / "runs", steps, args.batch)
                    else:
                        wall, cpu = timed(plain_loop, train, steps, args.batch, variant == "plain/in-memory")
                    b = best[variant][length]
                    b[0], b[1] = min(b[0], wall), min(b[1], cpu)
                    print(f"repeat {repeat + 1} {variant} {steps} steps: wall {wall:.1f} s, cpu {cpu:.1f} s",
                          flush=True)
    samples = (args.long - args.short) * args.batch
    rates = {}
    for v in variants:
        rates[v] = {"marginal_samples_per_wall_s": samples / (best[v]["long"][0] - best[v]["short"][0]),
                    "marginal_samples_per_cpu_s": samples / (best[v]["long"][1] - best[v]["short"][1]),
                    "whole_run_samples_per_wall_s_long": args.long * args.batch / best[v]["long"][0],
                    "best_seconds": {n: {"wall": round(best[v][n][0], 2), "cpu": round(best[v][n][1], 2)}
                                     for n in ("short", "long")}}
    limit = rates["plain/in-memory"]
    results["rates"] = {v: {k: (round(x, 2) if isinstance(x, float) else x) for k, x in r.items()}
                        for v, r in rates.items()}
    results["overhead"] = {
        f"{v} vs plain/in-memory": {
            "cpu_time_ratio": round(limit["marginal_samples_per_cpu_s"] / rates[v]["marginal_samples_per_cpu_s"], 3),
            "wall_time_ratio": round(limit["marginal_samples_per_wall_s"] / rates[v]["marginal_samples_per_wall_s"],
                                     3)}
        for v in ("plain/dataloader", "trainer")}
    results["overhead"]["trainer vs plain/dataloader"] = {
        "cpu_time_ratio": round(rates["plain/dataloader"]["marginal_samples_per_cpu_s"]
                                / rates["trainer"]["marginal_samples_per_cpu_s"], 3),
        "wall_time_ratio": round(rates["plain/dataloader"]["marginal_samples_per_wall_s"]
                                 / rates["trainer"]["marginal_samples_per_wall_s"], 3)}
    results["overhead_note"] = ("ratio = baseline samples/s ÷ this variant's samples/s, marginal per-step rates "
                                "(1.0 = no overhead, 1.25 = 25% slower)")
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["variant", "samples/CPU-s", "samples/wall-s", "CPU ratio vs in-memory", "wall ratio vs in-memory",
                 "whole run samples/wall-s"],
                [[v, rates[v]["marginal_samples_per_cpu_s"], rates[v]["marginal_samples_per_wall_s"],
                  limit["marginal_samples_per_cpu_s"] / rates[v]["marginal_samples_per_cpu_s"],
                  limit["marginal_samples_per_wall_s"] / rates[v]["marginal_samples_per_wall_s"],
                  rates[v]["whole_run_samples_per_wall_s_long"]] for v in variants])
    print(f"trainer vs plain/dataloader: {results['overhead']['trainer vs plain/dataloader']}")
    print(f"load average {results['machine']['load_average_at_start']} → {results['machine']['load_average_at_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
