"""What cliptune's Trainer costs over the bare limit: its samples/s against a plain PyTorch loop (AdamW + symmetric
InfoNCE, grad clipping, logit-scale clamp) on the same tiny-clip weights, the same images and the same batches.

    python benchmarks/trainer_overhead.py [--train 512] [--steps 48] [--batch 32] [--repeats 2]

Two plain loops bracket the Trainer:
  * plain/in-memory  — images decoded and transformed once, tokens computed once: model compute only (the limit);
  * plain/dataloader — the same DataLoader over the image files and per-batch tokenisation the Trainer uses.
Rates are samples/s over the steps after the first `--warmup` (allocator and loader start-up excluded); the Trainer's
come from its own history.jsonl windows (log_every = warmup), which exclude its periodic evaluation and checkpoint.
Its whole `fit` (one val evaluation + checkpoint, final test evaluation, export) is reported separately.
Each variant runs `--repeats` times, interleaved, and the best run counts: other load on a shared machine only ever
slows a run down. Data: a seeded emoji subset (benchmarks/emoji_subset.py), 64 px.
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
from cliptune.train.rundir import RunDir
from cliptune.train.trainer import Trainer, epoch_batches

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


def plain_loop(train, steps: int, batch: int, warmup: int, in_memory: bool) -> float:
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
    start, done = None, 0
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
        if step == warmup:
            start = time.perf_counter()
        _step(model, optimizer, pixels, tok)
        if start is not None:
            done += len(index)
    return done / (time.perf_counter() - start)


def trainer_run(data_csv: Path, out: Path, steps: int, batch: int, warmup: int) -> tuple[float, float]:
    """(loop samples/s after warm-up from the history windows, whole-fit samples/s)."""
    cfg = load_config(None, [f"data.path={data_csv}", "model.spec=tiny-clip", f"train.output_dir={out}",
                             f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.batch_size={batch}",
                             f"train.lr={LR}", f"train.weight_decay={WD}", f"train.grad_clip={CLIP}",
                             "train.warmup_steps=1", f"train.log_every={warmup}", "eval.before=false",
                             "eval.report=false"])
    data = load_dataset(data_csv)
    run = RunDir.create(out, None)
    t0 = time.perf_counter()
    Trainer(cfg, load_model("tiny-clip"), data, run, progress=False).fit()
    fit_s = time.perf_counter() - t0
    windows = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    windows = [w for w in windows if w.get("event") == "train" and w["step"] > warmup]
    samples = batch * warmup * len(windows)
    seconds = sum(batch * warmup / w["samples_per_s"] for w in windows)
    return samples / seconds, steps * batch / fit_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=512)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("trainer_overhead.json"))
    args = parser.parse_args()
    results: dict = {"machine": machine_info(), "model": "tiny-clip (HF CLIP, width 64, 2+2 layers, 64 px)",
                     "data": f"emoji subset, {args.train} train images", "steps": args.steps, "batch": args.batch,
                     "warmup_steps_excluded": args.warmup, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_emoji_subset(Path(tmp), args.train, 32, 32)
        train = load_dataset(paths["all"]).split("train")
        runs: dict[str, list[float]] = {"plain/in-memory": [], "plain/dataloader": [], "trainer/loop": [],
                                        "trainer/whole fit": []}
        for repeat in range(args.repeats):
            runs["plain/in-memory"].append(plain_loop(train, args.steps, args.batch, args.warmup, True))
            runs["plain/dataloader"].append(plain_loop(train, args.steps, args.batch, args.warmup, False))
            loop, fit = trainer_run(paths["all"], Path(tmp) / "runs", args.steps, args.batch, args.warmup)
            runs["trainer/loop"].append(loop)
            runs["trainer/whole fit"].append(fit)
            print(f"repeat {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.1f}/s" for k, v in runs.items()), flush=True)
    best = {k: max(v) for k, v in runs.items()}
    results["runs"] = {k: [round(x, 2) for x in v] for k, v in runs.items()}
    results["best_samples_per_s"] = {k: round(v, 2) for k, v in best.items()}
    results["overhead"] = {
        "trainer_loop_vs_plain_in_memory": round(best["plain/in-memory"] / best["trainer/loop"], 3),
        "trainer_loop_vs_plain_dataloader": round(best["plain/dataloader"] / best["trainer/loop"], 3),
        "trainer_whole_fit_vs_plain_in_memory": round(best["plain/in-memory"] / best["trainer/whole fit"], 3),
    }
    results["overhead_note"] = "ratio = plain samples/s ÷ trainer samples/s (1.0 = no overhead; 1.25 = 25% slower)"
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["variant", "best samples/s", "all runs", "plain in-memory ÷ this"],
                [[k, best[k], " ".join(f"{x:.1f}" for x in runs[k]), best["plain/in-memory"] / best[k]]
                 for k in runs])
    print(f"load average {results['machine']['load_average_at_start']} → {results['machine']['load_average_at_end']}")
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
