"""The real trainer on a CUDA device, end to end on tiny data: fp16 (GradScaler), bf16, `precision=auto`, the pinned
DataLoader path with worker processes, and resume with dropout drawing from the CUDA generator.

Skipped where no GPU is present (CI, laptops); run on a GPU machine with `pytest tests/test_cuda.py`.
"""

import json
import math

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from cliptune.config import load_config  # noqa: E402
from cliptune.inference.embed import encode_images, encode_texts  # noqa: E402
from cliptune.inference.evaluate import evaluate_records  # noqa: E402
from cliptune.models.registry import load_model  # noqa: E402
from cliptune.train import checkpoint as ckpt  # noqa: E402
from cliptune.train.precision import resolve_precision  # noqa: E402
from cliptune.train.run import train_run  # noqa: E402
from cliptune.train.rundir import RunDir  # noqa: E402
from cliptune.train.trainer import Trainer  # noqa: E402

BASE = {
    "model": {"spec": "tiny-clip"},
    "train": {"batch_size": 16, "lr": 2e-3, "warmup_steps": 2, "log_every": 1, "seed": 0, "device": "cuda"},
    "data": {"split_ratios": [0.6, 0.2, 0.2]},
    "eval": {"report": False},
}
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


class Recorder:
    """What a training run did on the GPU, observed from outside the trainer (which stays untouched)."""

    def __init__(self, monkeypatch):
        self.trainers: list[Trainer] = []
        self.scalers: list = []
        self.train_dtypes: set[torch.dtype] = set()  # outputs of nn.Linear while training, with grad
        self.train_devices: set[str] = set()
        self.loaders: list[dict] = []  # per DataLoader iterator: its settings and whether each batch was pinned
        recorder = self

        original_fit = Trainer.fit

        def fit(trainer, *args, **kwargs):
            recorder.trainers.append(trainer)
            for module in trainer.model.modules():
                if isinstance(module, torch.nn.Linear):
                    module.register_forward_hook(recorder._linear_hook)
            return original_fit(trainer, *args, **kwargs)

        monkeypatch.setattr(Trainer, "fit", fit)

        class RecordingScaler(torch.amp.GradScaler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.calls = {"scale": 0, "unscale_": 0, "step": 0, "update": 0}
                self.scales: list[float] = []
                recorder.scalers.append(self)

            def scale(self, outputs):
                self.calls["scale"] += 1
                return super().scale(outputs)

            def unscale_(self, optimizer):
                self.calls["unscale_"] += 1
                return super().unscale_(optimizer)

            def step(self, optimizer, *args, **kwargs):
                self.calls["step"] += 1
                return super().step(optimizer, *args, **kwargs)

            def update(self, new_scale=None):
                self.calls["update"] += 1
                if self.is_enabled():
                    self.scales.append(self.get_scale())
                return super().update(new_scale)

        monkeypatch.setattr(torch.amp, "GradScaler", RecordingScaler)

        original_iter = torch.utils.data.DataLoader.__iter__

        def loader_iter(loader):
            entry = {"pin_memory": loader.pin_memory, "num_workers": loader.num_workers, "pinned": []}
            recorder.loaders.append(entry)
            for batch in original_iter(loader):
                entry["pinned"].append(all(t.is_pinned() for t in _tensors(batch)))
                yield batch

        monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", loader_iter)

    def _linear_hook(self, module, inputs, output):
        if module.training and torch.is_grad_enabled() and isinstance(output, torch.Tensor):
            self.train_dtypes.add(output.dtype)
            self.train_devices.add(output.device.type)

    @property
    def model(self):
        assert len(self.trainers) == 1, "expected exactly one Trainer.fit call"
        return self.trainers[0].model


def _tensors(batch):
    if isinstance(batch, torch.Tensor):
        yield batch
    elif isinstance(batch, dict):
        for value in batch.values():
            yield from _tensors(value)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            yield from _tensors(value)


def _cfg(tmp_path, data_path, name, *overrides):
    return load_config(None, [f"data.path={data_path}", f"train.output_dir={tmp_path / 'runs'}",
                              f"train.name={name}", *overrides], base=BASE)


def _train(tmp_path, data_path, name, *overrides):
    cfg = _cfg(tmp_path, data_path, name, *overrides)
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    return run, train_run(cfg, run, progress=False)


def _history(run) -> list[dict]:
    return [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]


def _check_trained_and_exported(run, result, model, steps: int) -> None:
    """Loss finite and falling, weights moved, metrics.json written, and the export reloads to the same embeddings."""
    history = _history(run)
    losses = [h["loss"] for h in history if h["event"] == "train"]
    assert len(losses) == steps and all(math.isfinite(loss) for loss in losses), losses
    assert not [h for h in history if h["event"] == "skipped_step"]
    assert sum(losses[-5:]) / 5 < losses[0] - 0.1, losses  # it learns, so the updates were really applied
    assert result.steps == steps

    metrics = json.loads((run.path / "metrics.json").read_text())
    for side in ("t2i", "i2t"):
        assert all(0.0 <= metrics[side][k] <= 1.0 for k in ("R@1", "R@5", "R@10", "mAP"))
    assert metrics["after"]["t2i"]["R@1"] == pytest.approx(result.after["t2i"]["R@1"])

    # the trained model lives on the GPU, in fp32 (autocast never changes the stored weights)
    params = list(model.parameters())
    assert {p.device.type for p in params} == {"cuda"} and {p.dtype for p in params} == {torch.float32}
    start = load_model("tiny-clip").state_dict()
    trained = model.state_dict()
    assert any(not torch.equal(start[k], trained[k].cpu()) for k in start)

    test = _test_records(run)
    captions = sorted({c for r in test for c in r.captions})
    want_img = encode_images(model, test, progress=False)
    want_txt = encode_texts(model, captions, progress=False)
    on_gpu = load_model(run.model_dir).to("cuda")
    torch.testing.assert_close(encode_images(on_gpu, test, progress=False), want_img, rtol=0, atol=1e-5)
    torch.testing.assert_close(encode_texts(on_gpu, captions, progress=False), want_txt, rtol=0, atol=1e-5)
    after = evaluate_records(on_gpu, test, progress=False)
    for side in ("t2i", "i2t"):
        for key in ("R@1", "R@5", "mAP"):
            assert after[side][key] == pytest.approx(metrics["after"][side][key], abs=1e-6), (side, key)
    # and on the CPU, within TF32/reduction-order tolerance of the GPU's answer
    on_cpu = load_model(run.model_dir)
    torch.testing.assert_close(encode_images(on_cpu, test, progress=False), want_img, rtol=0, atol=5e-3)
    torch.testing.assert_close(encode_texts(on_cpu, captions, progress=False), want_txt, rtol=0, atol=5e-3)


def _test_records(run):
    from cliptune.data.load import load_dataset

    cfg = load_config(run.config_file, [])
    return load_dataset(cfg.data.path, split_ratios=cfg.data.split_ratios, seed=cfg.data.split_seed).split("test")


def test_fp16_trains_with_grad_scaler_and_exports(tmp_path, shapes_csv, monkeypatch):
    rec = Recorder(monkeypatch)
    steps = 30
    run, result = _train(tmp_path, shapes_csv, "fp16", "train.precision=fp16", f"train.max_steps={steps}",
                         "train.eval_every=10")
    trainer = rec.trainers[0]
    assert trainer.device.type == "cuda" and trainer.precision == "fp16"
    assert rec.train_dtypes == {torch.float16} and rec.train_devices == {"cuda"}
    assert len(rec.scalers) == 1
    scaler = rec.scalers[0]
    assert scaler.is_enabled()
    # every step scales its loss, unscales before clipping, steps through the scaler and updates the scale
    assert scaler.calls == {"scale": steps, "unscale_": steps, "step": steps, "update": steps}
    assert all(s >= 1.0 for s in scaler.scales) and scaler.get_scale() >= 1.0
    _check_trained_and_exported(run, result, rec.model, steps)


def test_bf16_trains_without_grad_scaling_and_exports(tmp_path, shapes_csv, monkeypatch):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    rec = Recorder(monkeypatch)
    steps = 30
    run, result = _train(tmp_path, shapes_csv, "bf16", "train.precision=bf16", f"train.max_steps={steps}",
                         "train.eval_every=10")
    assert rec.trainers[0].precision == "bf16"
    assert rec.train_dtypes == {torch.bfloat16} and rec.train_devices == {"cuda"}
    assert len(rec.scalers) == 1 and not rec.scalers[0].is_enabled()  # bf16 has fp32's range: nothing to scale
    _check_trained_and_exported(run, result, rec.model, steps)


def test_auto_precision_resolves_as_precision_py_says(tmp_path, shapes_csv, monkeypatch):
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected
    rec = Recorder(monkeypatch)
    run, result = _train(tmp_path, shapes_csv, "auto", "train.precision=auto", "train.device=auto",
                         "train.max_steps=4", "eval.before=false")
    trainer = rec.trainers[0]
    assert trainer.device.type == "cuda" and trainer.precision == expected
    assert rec.train_dtypes == {DTYPES[expected]}  # what autocast really ran in
    assert rec.scalers[0].is_enabled() == (expected == "fp16")
    assert result.steps == 4 and (run.path / "metrics.json").is_file()


def test_training_batches_come_pinned_from_worker_processes(tmp_path, shapes_csv, monkeypatch):
    rec = Recorder(monkeypatch)
    steps = 6
    run, result = _train(tmp_path, shapes_csv, "pinned", "data.num_workers=2", f"train.max_steps={steps}",
                         "train.precision=fp32", "eval.before=false", "train.feature_cache=false")
    assert result.steps == steps and rec.train_devices == {"cuda"} and rec.train_dtypes == {torch.float32}
    training = [e for e in rec.loaders if e["pin_memory"]]
    assert training, f"no DataLoader with pin_memory=True: {[(e['pin_memory'], e['num_workers']) for e in rec.loaders]}"
    assert all(e["num_workers"] == 2 for e in training)
    pinned = [p for e in training for p in e["pinned"]]
    assert len(pinned) >= steps and all(pinned)  # one pinned batch per optimiser step, none left unpinned


def test_checkpoint_rng_state_restores_the_cuda_generator():
    torch.cuda.manual_seed_all(123)
    torch.rand(8, device="cuda")
    state = ckpt.rng_state()
    first = torch.rand(8, device="cuda")
    torch.cuda.manual_seed_all(7)  # what a resumed run does: seed_everything, then load the checkpoint
    ckpt.set_rng_state(state)
    torch.testing.assert_close(torch.rand(8, device="cuda"), first, rtol=0, atol=0)


def test_resume_with_cuda_dropout_is_exact(tmp_path, shapes_csv, monkeypatch):
    """2N steps in one go == N steps, stop, resume for N more, with dropout drawing from the CUDA generator."""
    from cliptune.models import tiny_clip

    monkeypatch.setitem(tiny_clip.TINY_CLIP["text"], "attention_dropout", 0.2)
    monkeypatch.setitem(tiny_clip.TINY_CLIP["vision"], "attention_dropout", 0.2)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    common = ["train.max_steps=12", "train.eval_every=4", "train.precision=fp32", "eval.before=false"]
    full_cfg = _cfg(tmp_path, shapes_csv, "full", *common)
    full = RunDir.create(full_cfg.train.output_dir, full_cfg.train.name)
    train_run(full_cfg, full, progress=False)

    part_cfg = _cfg(tmp_path, shapes_csv, "part", *common, "train.stop_at_step=6")
    part = RunDir.create(part_cfg.train.output_dir, part_cfg.train.name)
    assert train_run(part_cfg, part, progress=False).steps == 6
    resumed = train_run(load_config(part.config_file, ["train.stop_at_step=null"]), part, resume=True,
                        progress=False)
    assert resumed.steps == 12

    from cliptune.models.weights import load_state_dict_file

    a = load_state_dict_file(full.checkpoints / "last" / "model.safetensors")
    b = load_state_dict_file(part.checkpoints / "last" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_streamed_shards_train_in_fp16_with_pinned_worker_batches(tmp_path, shapes_csv, monkeypatch):
    """`data.streaming`: shard batches from worker processes arrive pinned, train in fp16 and evaluate on the
    separate test shards."""
    from cliptune.data.load import load_dataset
    from cliptune.data.to_wds import write_shards

    splits = write_shards(load_dataset(shapes_csv, split_ratios=(0.6, 0.2, 0.2)), tmp_path / "shards",
                          shard_size=10).splits
    pattern = {split: str(tmp_path / "shards" / info.pattern) for split, info in splits.items()}
    rec = Recorder(monkeypatch)
    steps = 20
    run, result = _train(tmp_path, pattern["train"], "stream", "data.streaming=true", "data.resampled=true",
                         "data.epoch_length=32", "data.num_workers=2", f"data.test_path={pattern['test']}",
                         f"train.max_steps={steps}", "train.precision=fp16", "train.batch_size=8")
    assert result.steps == steps and rec.train_dtypes == {torch.float16} and rec.train_devices == {"cuda"}
    assert rec.scalers[0].calls["step"] == steps
    streamed = [e for e in rec.loaders if e["pin_memory"] and e["num_workers"] == 2]
    assert sum(len(e["pinned"]) for e in streamed) >= steps and all(p for e in streamed for p in e["pinned"])
    losses = [h["loss"] for h in _history(run) if h["event"] == "train"]
    assert len(losses) == steps and sum(losses[-5:]) / 5 < losses[0] - 0.1, losses
    assert json.loads((run.path / "metrics.json").read_text())["n_images"] == len(load_dataset(pattern["test"]).records)


def test_fp16_resume_restores_the_loss_scale(tmp_path, shapes_csv, monkeypatch):
    """The loss scale after the first half (a huge initial scale forces overflows and backoffs) is what the resumed
    run starts with, and the resumed run ends with the uninterrupted run's weights."""
    class HugeInitialScale(torch.amp.GradScaler):
        def __init__(self, device="cuda", **kwargs):
            super().__init__(device, init_scale=2.0**40, **kwargs)

    monkeypatch.setattr(torch.amp, "GradScaler", HugeInitialScale)
    common = ["train.max_steps=12", "train.eval_every=100", "train.precision=fp16", "eval.before=false"]
    full_run, _ = _train(tmp_path, shapes_csv, "full", *common)
    part_cfg = _cfg(tmp_path, shapes_csv, "part", *common, "train.stop_at_step=6")
    part = RunDir.create(part_cfg.train.output_dir, part_cfg.train.name)
    train_run(part_cfg, part, progress=False)
    saved = torch.load(part.checkpoints / "last" / "optimizer.pt", weights_only=True)["scaler"]
    assert saved["scale"] < 2.0**40  # it backed off, so restoring it matters
    train_run(load_config(part.config_file, ["train.stop_at_step=null"]), part, resume=True, progress=False)

    from cliptune.models.weights import load_state_dict_file

    a = load_state_dict_file(full_run.checkpoints / "last" / "model.safetensors")
    b = load_state_dict_file(part.checkpoints / "last" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
