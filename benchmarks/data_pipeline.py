"""Is the data loader or the model the bottleneck? Images/s of the image loader (decode + model transform), with and
without the decode cache (and with augmentation on cached images), from image files, from WebDataset shards read
in place (map-style) and streamed (`data.streaming`), against the model's own training step rate.

    python benchmarks/data_pipeline.py [--images 256] [--workers 0 2] [--out benchmarks/data_pipeline.json]

Photos are generated (640x480 JPEG, quality 90, ~60 KB: the cost of decoding a typical web image). The step rate is
a full fine-tuning step (both towers forward, symmetric InfoNCE, backward, AdamW) on random pixels at batch 32.
Timings are wall clock on whatever machine runs this (loader rates: best of two passes); the JSON records the
machine and its load average, since other work on a small machine slows every number down.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cliptune.config import AugmentCfg
from cliptune.data.augment import ImageAugment
from cliptune.data.datasets import ImageFiles
from cliptune.data.decode_cache import DecodeCache
from cliptune.data.load import load_dataset
from cliptune.data.records import Dataset, Record
from cliptune.data.streaming import WebDatasetStream
from cliptune.data.to_wds import write_shards
from cliptune.models.registry import load_model

BATCH = 32
MODELS = {"lite@128": ("lite", {"image_size": 128}), "tiny-clip": ("tiny-clip", {})}


def make_photos(folder: Path, n: int) -> list[Record]:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        small = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480),
                                                                                          Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(small, np.int16) + rng.integers(-12, 12, (480, 640, 3)), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(noisy).save(path, quality=90)
        records.append(Record(image=str(path), captions=[f"photo {i}"]))
    return records


def loader_rate(dataset, workers: int, repeats: int = 1) -> float:
    """Best of `repeats` passes (other load on the machine only ever slows a pass down)."""
    best = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in every DataLoader worker; per-image ops gain nothing from more
    try:
        for _ in range(repeats):
            loader = torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=workers, shuffle=False)
            start = time.perf_counter()
            n = sum(len(batch) for batch in loader)
            best = max(best, n / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return best


def stream_rate(stream: WebDatasetStream, workers: int, repeats: int = 1) -> float:
    """Images/s of a stream through a DataLoader (the way the trainer reads it), best of `repeats` passes."""
    best = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for epoch in range(repeats):
            stream.set_epoch(epoch)
            loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers)
            start = time.perf_counter()
            n = sum(len(batch["caption"]) for batch in loader)
            best = max(best, n / (time.perf_counter() - start))
    finally:
        torch.set_num_threads(threads)
    return best


def step_rate(model, steps: int = 3) -> float:
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    pixels = torch.randn(BATCH, 3, model.image_size, model.image_size)
    tokens = model.tokenize([f"a photo of thing number {i}" for i in range(BATCH)])
    labels = torch.arange(BATCH)

    def step():
        image = torch.nn.functional.normalize(model.encode_image(pixels, normalize=False), dim=-1)
        text = torch.nn.functional.normalize(model.encode_text(tokens, normalize=False), dim=-1)
        logits = model.scale() * image @ text.T
        loss = (torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * BATCH / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("data_pipeline.json"))
    args = parser.parse_args()
    results: dict = {"machine": {"python": sys.version.split()[0], "torch": torch.__version__,
                                 "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                 "platform": platform.platform(), "cuda": torch.cuda.is_available(),
                                 "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
                     "images": args.images, "photo": "640x480 JPEG q90", "batch_size": BATCH, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        records = make_photos(Path(tmp) / "photos", args.images)
        results["mean_file_kb"] = round(sum(os.path.getsize(r.image) for r in records) / len(records) / 1024, 1)
        for record in records:
            record.split = "train"
        shards = write_shards(Dataset(records, source="photos"), Path(tmp) / "shards", shard_size=64)
        pattern = str(Path(tmp) / "shards" / shards.splits["train"].pattern)
        members = load_dataset(pattern).records  # images as `shard.tar#key.jpg`, read in place
        for name, (spec, kwargs) in MODELS.items():
            model = load_model(spec, **kwargs)
            transform = model.image_transform(train=False)
            entry: dict = {"image_size": model.image_size, "loader_images_per_s": {}}
            for workers in args.workers:
                cache = DecodeCache(Path(tmp) / f"cache-{name}-{workers}", size=model.image_size)
                augment = ImageAugment.from_cfg(AugmentCfg(enabled=True), size=model.image_size)
                row = {
                    "no_cache": loader_rate(ImageFiles(records, transform), workers, repeats=2),
                    "cache_first_pass": loader_rate(ImageFiles(records, transform, loader=cache), workers),
                    "cache_warm": loader_rate(ImageFiles(records, transform, loader=cache), workers, repeats=2),
                    "cache_warm_augmented": loader_rate(ImageFiles(records, transform, loader=cache,
                                                                   augment=augment), workers, repeats=2),
                    "shards_in_place": loader_rate(ImageFiles(members, transform), workers, repeats=2),
                    "shards_streamed": stream_rate(WebDatasetStream(
                        pattern, batch_size=BATCH, transform=transform, shuffle_buffer=256, num_workers=workers,
                        drop_last=False), workers, repeats=2),
                }
                entry["loader_images_per_s"][f"workers={workers}"] = {k: round(v, 1) for k, v in row.items()}
                print(f"{name} workers={workers}: " + ", ".join(f"{k} {v:.0f}/s" for k, v in row.items()),
                      flush=True)
            entry["train_step_images_per_s"] = round(step_rate(model), 1)
            print(f"{name}: training step {entry['train_step_images_per_s']:.0f} images/s", flush=True)
            results["models"][name] = entry
            del model
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
