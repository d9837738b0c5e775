"""Training throughput on one CUDA GPU: cliptune's Trainer against a plain PyTorch loop, in fp32, bf16 and fp16.

    python benchmarks/gpu_throughput.py [--batch 128] [--short 10] [--long 60] [--workers 12]
                                        [--configs lite,lite-frozen,tiny-clip] [--precisions fp32,bf16,fp16]

Configurations (model as `cliptune train` builds it, same weights in every variant):
  * lite         — the embedded default (EfficientNet-Lite0 + all-MiniLM-L6-v2, 224 px), everything trains;
  * lite-frozen  — lite with `model.freeze=both`: both trunks frozen, the projection heads and logit scale train;
  * tiny-clip    — the small random HF CLIP (64 px, width 64, 2+2 layers).
Variants, each the same model, batch, loss (symmetric InfoNCE), AdamW, grad clipping at 1.0 and logit-scale clamp:
  * plain/in-memory  — every training image decoded and transformed once, kept on the GPU, tokens too: the compute
                       limit of the model at this batch size;
  * plain/dataloader — a plain loop over the same DataLoader the Trainer uses (image files, `--workers` worker
                       processes, pin_memory) with per-batch tokenisation;
  * trainer          — `Trainer.fit` with the same settings (`data.num_workers=--workers`, `train.precision`);
  * trainer/no-cache — lite-frozen only: the Trainer with `train.feature_cache=false`, so the frozen trunks run on
                       every step as they do in the plain loops (with the cache, the default, only the heads run).
fp32 is PyTorch's default fp32 (TF32 off for matmuls, on for cuDNN convolutions); bf16/fp16 are autocast, fp16
with a GradScaler, exactly as `train.precision` does.

Timing: a forward hook on the image tower's last head module, counting training-mode calls with grad (one per
optimisation step in every variant), synchronises the GPU and reads the clock at step `--short` and step `--long`;
the rate is (long − short) · batch over that interval, so start-up, the feature cache fill, warm-up, the final
evaluation and the export are all outside it. The whole run's rate is reported too. The train split holds
long · batch images, so the measured steps never cross an epoch boundary. Peak CUDA memory is
`torch.cuda.max_memory_allocated()` over the run (the Trainer's includes its evaluation passes).
Data: generated JPEG images of coloured shapes (`--image-px` px), each with a unique caption.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader

from cliptune.data.builders.shapes import COLORS, SHAPES, draw_shape
from machine import load_average, machine_info, print_table

LR, WD, CLIP = 1e-4, 0.1, 1.0
CONFIGS = {
    "lite": {"spec": "lite", "freeze": "none",
             "what": "lite: EfficientNet-Lite0 + all-MiniLM-L6-v2, 224 px, all trains"},
    "lite-frozen": {"spec": "lite", "freeze": "both",
                    "what": "lite, model.freeze=both: trunks frozen, heads + logit scale train"},
    "tiny-clip": {"spec": "tiny-clip", "freeze": "none", "what": "tiny-clip: HF CLIP, width 64, 2+2 layers, 64 px"},
}


# ---- data ---------------------------------------------------------------------------------------------------------
def _draw(job: tuple[str, int, int]) -> None:
    """Image `i`: a shape on a random ground (busier than the tests' plain grounds), as a JPEG."""
    path, i, size = job
    rng = random.Random(i)
    draw_shape(path, list(COLORS.values())[i % len(COLORS)], SHAPES[(i // len(COLORS)) % len(SHAPES)], size=size,
               rng=rng, background=tuple(rng.randint(0, 255) for _ in range(3)), jitter=size // 12, quality=90)


def write_data(out_dir: Path, n_train: int, n_val: int, n_test: int, size: int, workers: int) -> Path:
    import csv

    out_dir.mkdir(parents=True, exist_ok=True)
    n = n_train + n_val + n_test
    jobs = [(str(out_dir / f"{i:06d}.jpg"), i, size) for i in range(n)]
    with ProcessPoolExecutor(max(1, workers)) as pool:
        list(pool.map(_draw, jobs, chunksize=64))
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    names = list(COLORS)
    path = out_dir / "pairs.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image_path", "caption", "split"])
        writer.writeheader()
        for i, split in enumerate(splits):
            caption = (f"a {names[i % len(names)]} {SHAPES[(i // len(names)) % len(SHAPES)]} on a busy ground, "
                       f"item {i}")
            writer.writerow({"image_path": f"{i:06d}.jpg", "caption": caption, "split": split})
    return path


# ---- timing -------------------------------------------------------------------------------------------------------
class StepClock:
    """Synchronised clock readings at the `short`-th and `long`-th training step (see the module doc)."""

    def __init__(self, model, short: int, long: int, device: torch.device):
        self.short, self.long, self.device = short, long, device
        self.calls, self.times = 0, {}
        self.handle = model.image_tower.head_modules()[-1].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if not (module.training and torch.is_grad_enabled()):
            return
        self.calls += 1
        if self.calls in (self.short, self.long):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.times[self.calls] = time.perf_counter()

    def rate(self, batch: int) -> float:
        self.handle.remove()
        if self.short not in self.times or self.long not in self.times:
            raise RuntimeError(f"the step clock saw {self.calls} training steps, expected at least {self.long}")
        return (self.long - self.short) * batch / (self.times[self.long] - self.times[self.short])


def build(config: str, device: torch.device):
    from cliptune.models.registry import load_model

    return load_model(CONFIGS[config]["spec"]).to(device)


def freeze_trunks(model) -> list[torch.nn.Parameter]:
    """Plain-PyTorch `freeze=both`: only the projection heads (and the logit scale) train; frozen parts in eval."""
    for side in ("image", "text"):
        tower = model.tower(side)
        tower.requires_grad_(False).eval()
        for head in tower.head_modules():
            head.requires_grad_(True).train()
    return [p for p in model.parameters() if p.requires_grad]


def autocast(device: torch.device, precision: str):
    import contextlib

    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def plain_loop(config: str, precision: str, device: torch.device, train, steps: int, batch: int, workers: int,
               clock_at: tuple[int, int], memory: dict | None) -> float:
    """The reference loop; `memory` holds the GPU-resident pixels and tokens (plain/in-memory) or is None."""
    from cliptune.data.datasets import ImageFiles

    model = build(config, device)
    model.train()
    params = freeze_trunks(model) if CONFIGS[config]["freeze"] == "both" else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=LR, weight_decay=WD, betas=(0.9, 0.98), eps=1e-6)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    clock = StepClock(model, *clock_at, device)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = [order[i * batch:(i + 1) * batch] for i in range(steps)]
    captions = [r.captions[0] for r in train]
    if memory is None:
        loader = iter(DataLoader(ImageFiles(train, model.image_transform(train=False)),
                                 batch_sampler=[b.tolist() for b in batches], num_workers=workers,
                                 pin_memory=device.type == "cuda"))
    for index in batches:
        if memory is None:
            pixels = next(loader).to(device, non_blocking=True)
            tokens = {k: v.to(device, non_blocking=True)
                      for k, v in model.tokenize([captions[int(i)] for i in index]).items()}
        else:
            gpu_index = index.to(device)
            pixels = memory["pixels"][gpu_index]
            tokens = {k: v[gpu_index] for k, v in memory["tokens"].items()}
        with autocast(device, precision):
            image = model.encode_image(pixels).float()
            text = model.encode_text(tokens).float()
            logits = model.scale() * image @ text.T
            labels = torch.arange(len(index), device=device)
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, CLIP)
        scaler.step(optimizer)
        scaler.update()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
    return clock.rate(batch)


def in_memory_inputs(config: str, device: torch.device, train, workers: int) -> dict:
    from cliptune.data.datasets import ImageFiles

    model = build(config, torch.device("cpu"))
    loader = DataLoader(ImageFiles(train, model.image_transform(train=False)), batch_size=256, num_workers=workers)
    pixels = torch.cat([b.to(device) for b in loader])
    tokens = {k: v.to(device) for k, v in model.tokenize([r.captions[0] for r in train]).items()}
    return {"pixels": pixels, "tokens": tokens}


def trainer_fit(config: str, precision: str, device: torch.device, data_csv: Path, out: Path, steps: int,
                batch: int, workers: int, clock_at: tuple[int, int], feature_cache: bool) -> float:
    from cliptune.config import load_config
    from cliptune.data.load import load_dataset
    from cliptune.train.rundir import RunDir
    from cliptune.train.trainer import Trainer

    cfg = load_config(None, [
        f"data.path={data_csv}", f"model.spec={CONFIGS[config]['spec']}", f"model.freeze={CONFIGS[config]['freeze']}",
        f"train.output_dir={out}", f"train.max_steps={steps}", f"train.eval_every={steps}", f"train.batch_size={batch}",
        f"train.lr={LR}", f"train.weight_decay={WD}", f"train.grad_clip={CLIP}", "train.warmup_steps=1",
        f"train.precision={precision}", f"train.device={device.type}", f"data.num_workers={workers}",
        f"train.feature_cache={str(feature_cache).lower()}", "eval.before=false", "eval.report=false"])
    model = build(config, torch.device("cpu"))
    clock = StepClock(model, *clock_at, device)
    Trainer(cfg, model, load_dataset(data_csv), RunDir.create(out, None), progress=False).fit()
    return clock.rate(batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=60)
    parser.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    parser.add_argument("--image-px", type=int, default=160)
    parser.add_argument("--configs", default="lite,lite-frozen,tiny-clip")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("gpu_throughput.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    configs, precisions = args.configs.split(","), args.precisions.split(",")
    cuda = device.type == "cuda"
    machine = machine_info()
    if cuda:
        props = torch.cuda.get_device_properties(device)
        machine.update({"device": torch.cuda.get_device_name(device), "cuda_runtime": torch.version.cuda,
                        "cudnn": torch.backends.cudnn.version(), "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                        "bf16_supported": torch.cuda.is_bf16_supported(),
                        "tf32": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                 "cudnn": torch.backends.cudnn.allow_tf32},
                        "cudnn_benchmark": torch.backends.cudnn.benchmark})
    else:
        machine["device"] = "cpu"
    results: dict = {"machine": machine, "models": {c: CONFIGS[c]["what"] for c in configs},
                     "data": None, "batch": args.batch, "steps": {"short": args.short, "long": args.long},
                     "workers": args.workers, "optimizer": f"AdamW lr {LR}, weight decay {WD}, grad clip {CLIP}",
                     "rates": {}}

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ.setdefault("CLIPTUNE_CACHE", str(tmp / "cache"))
        n_train = args.long * args.batch
        t0 = time.perf_counter()
        data_csv = write_data(tmp / "data", n_train, 64, 64, args.image_px, args.workers)
        results["data"] = (f"generated {args.image_px} px JPEG shapes, unique captions: {n_train} train, 64 val, "
                           f"64 test (written in {time.perf_counter() - t0:.1f} s)")
        from cliptune.data.load import load_dataset

        train = load_dataset(data_csv).split("train")
        memory: dict = {}
        for config in configs:
            variants = ["plain/in-memory", "plain/dataloader", "trainer"]
            if CONFIGS[config]["freeze"] == "both":
                variants.append("trainer/no-cache")
            key = CONFIGS[config]["spec"]
            if key not in memory:
                memory.clear()  # one model family's pixels on the GPU at a time
                if cuda:
                    torch.cuda.empty_cache()
                memory[key] = in_memory_inputs(config, device, train, args.workers)
            for precision in precisions:
                if precision == "fp16" and not cuda:
                    continue
                row = results["rates"].setdefault(config, {}).setdefault(precision, {})
                for variant in variants:
                    if cuda:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    wall = time.perf_counter()
                    clock_at = (args.short, args.long)
                    try:
                        if variant.startswith("trainer"):
                            rate = trainer_fit(config, precision, device, data_csv, tmp / "runs", args.long,
                                               args.batch, args.workers, clock_at, variant == "trainer")
                        else:
                            rate = plain_loop(config, precision, device, train, args.long, args.batch, args.workers,
                                              clock_at, memory[key] if variant == "plain/in-memory" else None)
                    except Exception as err:  # record and go on: one broken combination must not hide the rest
                        row[variant] = {"error": f"{type(err).__name__}: {err}"}
                        print(f"{config} {precision} {variant}: FAILED {type(err).__name__}: {err}", flush=True)
                        save()
                        continue
                    wall = time.perf_counter() - wall
                    row[variant] = {"samples_per_s": round(rate, 1), "whole_run_s": round(wall, 2),
                                    "whole_run_samples_per_s": round(args.long * args.batch / wall, 1)}
                    if cuda:
                        row[variant]["peak_cuda_mem_mib"] = round(torch.cuda.max_memory_allocated() / 2**20)
                    print(f"{config} {precision} {variant}: {rate:,.0f} samples/s (whole run {wall:.1f} s)", flush=True)
                    save()
        memory.clear()

    overhead: dict = {}
    speedup: dict = {}
    table = []
    for config, by_precision in results["rates"].items():
        for precision, row in by_precision.items():
            rate = {v: r.get("samples_per_s") for v, r in row.items()}
            o = overhead.setdefault(config, {}).setdefault(precision, {})
            for base in ("plain/dataloader", "plain/in-memory"):
                for v in ("trainer", "trainer/no-cache"):
                    if rate.get(base) and rate.get(v):
                        o[f"{v} vs {base}"] = round(rate[base] / rate[v], 3)
            for v, r in rate.items():
                fp32 = by_precision.get("fp32", {}).get(v, {}).get("samples_per_s")
                if r and fp32 and precision != "fp32":
                    speedup.setdefault(config, {}).setdefault(v, {})[f"{precision} vs fp32"] = round(r / fp32, 3)
                table.append([config, precision, v, r, row[v].get("whole_run_samples_per_s"),
                              row[v].get("peak_cuda_mem_mib")])
    results["overhead"] = overhead
    results["overhead_note"] = ("ratio = baseline samples/s ÷ this variant's samples/s over the timed steps "
                                "(1.0 = no overhead, 1.25 = 25% slower, below 1 = faster than the baseline)")
    results["precision_speedup"] = speedup
    results["precision_speedup_note"] = "samples/s in bf16 or fp16 ÷ samples/s in fp32, same variant"
    results["machine"]["load_average_at_end"] = load_average()
    print()
    print_table(["config", "precision", "variant", "samples/s", "whole run samples/s", "peak MiB"], table)
    print(json.dumps(overhead, indent=1))
    save()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
