"""`cliptune train` on streamed WebDataset shards: trains and evaluates on separate data, resumes exactly, names
bad samples (through DataLoader workers too), counts skips, and refuses what a stream cannot do."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from cli_inprocess import run_cli
from cliptune.config import load_config
from cliptune.data.load import load_dataset
from cliptune.data.to_wds import write_shards
from cliptune.errors import DataError, UsageError
from cliptune.models.weights import load_state_dict_file
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir

BASE = {
    "model": {"spec": "tiny-clip"},
    "train": {"batch_size": 8, "lr": 2e-3, "warmup_steps": 2, "log_every": 2, "seed": 0},
    "data": {"streaming": True, "shuffle_buffer": 16},
    "eval": {"report": False},
}


@pytest.fixture
def shards(tmp_path, shapes_csv) -> dict[str, str]:
    """The shapes data (64 pairs) as train/val/test shards, several per split: split -> brace pattern."""
    data = load_dataset(shapes_csv, split_ratios=(0.6, 0.2, 0.2))
    result = write_shards(data, tmp_path / "shards", shard_size=10)
    return {split: str(tmp_path / "shards" / info.pattern) for split, info in result.splits.items()}


def _cfg(tmp_path, shards, name, *overrides):
    return load_config(None, [f"data.path={shards['train']}", f"data.val_path={shards['val']}",
                              f"data.test_path={shards['test']}", f"train.output_dir={tmp_path / 'runs'}",
                              f"train.name={name}", *overrides], base=BASE)


def _train(cfg, resume=False, run=None):
    run = run or RunDir.create(cfg.train.output_dir, cfg.train.name)
    return run, train_run(cfg, run, resume=resume, progress=False)


def test_streamed_training_learns_and_writes_the_run(tmp_path, shards):
    cfg = _cfg(tmp_path, shards, "stream", "data.resampled=true", "data.epoch_length=32", "train.epochs=12",
               "train.early_stop_metric=mean_mAP")
    run, result = _train(cfg)
    assert result.steps == 12 * 4  # 32 samples per epoch in batches of 8
    assert result.after["i2t"]["mAP"] > result.before["i2t"]["mAP"] + 0.05
    assert result.after["t2i"]["mAP"] > result.before["t2i"]["mAP"] + 0.05
    metrics = json.loads((run.path / "metrics.json").read_text())
    test_images = len(load_dataset(shards["test"]).records)
    assert metrics["n_images"] == test_images and metrics["skipped_samples"] == 0
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    evals = [h for h in history if h["event"] == "eval" and h["split"] == "val"]
    assert [h["step"] for h in evals] == [4 * e for e in range(1, 13)]  # once per epoch of epoch_length samples
    assert (run.path / "model" / "cliptune.json").is_file()


def test_plain_passes_end_epochs_where_the_shards_end(tmp_path, shards):
    """Without resampling an epoch is one pass: 38 train samples in batches of 8 give 4 steps (the rest is
    a partial batch), so 10 steps run 2 epochs and a half, evaluating after steps 4 and 8 and at the end."""
    n_train = len(load_dataset(shards["train"]).records)
    cfg = _cfg(tmp_path, shards, "passes", "train.max_steps=10", "data.no_duplicate_batches=false")
    run, result = _train(cfg)
    per_epoch = n_train // 8
    history = [json.loads(line) for line in (run.path / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if h["event"] == "eval" and h["split"] == "val"] == \
        [per_epoch, 2 * per_epoch, 10]
    epochs = {h["step"]: h["epoch"] for h in history if h["event"] == "train"}
    assert epochs[2] == 0 and epochs[2 * per_epoch + 2] == 2
    assert result.steps == 10


@pytest.mark.parametrize("workers", [0, 1])
def test_streamed_resume_is_exact(tmp_path, shards, workers):
    """N steps, stop, resume for N more == 2N in one go: the stream replays its epoch up to the checkpoint."""
    common = ["train.max_steps=12", "train.eval_every=100", "data.resampled=true", "data.epoch_length=40",
              f"data.num_workers={workers}", "augment.enabled=true", "augment.word_dropout=0.2"]
    full, _ = _train(_cfg(tmp_path, shards, f"full{workers}", *common))
    part_cfg = _cfg(tmp_path, shards, f"part{workers}", *common, "train.stop_at_step=7")  # mid-epoch (5 per epoch)
    part, first = _train(part_cfg)
    assert first.steps == 7 and first.after is None
    state = json.loads((part.checkpoints / "last" / "state.json").read_text())
    assert (state["epoch"], state["in_epoch"]) == (1, 2)
    _, second = _train(load_config(part.config_file, ["train.stop_at_step=null"]), resume=True, run=part)
    assert second.steps == 12
    a = load_state_dict_file(full.checkpoints / "last" / "model.safetensors")
    b = load_state_dict_file(part.checkpoints / "last" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)
    from cliptune.models.registry import load_model

    start = load_model("tiny-clip").state_dict()
    assert any(not torch.equal(start[k], a[k]) for k in a if k in start)


def _with_bad_sample(shards: dict[str, str], tmp_path: Path) -> str:
    """A copy of the first train shard plus one sample whose image does not decode."""
    first = sorted(Path(shards["train"]).parent.glob("train-*.tar"))[0]
    bad = tmp_path / "bad" / "train-000000.tar"
    bad.parent.mkdir()
    with tarfile.open(first) as src, tarfile.open(bad, "w") as dst:
        for member in src.getmembers():
            dst.addfile(member, src.extractfile(member))
        for name, data in (("broken.png", b"\x89PNG not really"), ("broken.txt", b"a broken image")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))
    return str(bad)


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_streamed_sample_names_shard_and_key(tmp_path, shards, workers):
    cfg = _cfg(tmp_path, shards, f"bad{workers}", "train.max_steps=3", f"data.num_workers={workers}",
               f"data.path={_with_bad_sample(shards, tmp_path)}", "data.shuffle_buffer=0")
    with pytest.raises(DataError) as err:
        _train(cfg)
    assert err.value.file.endswith("bad/train-000000.tar") and err.value.row == "broken"


def test_skipped_streamed_samples_are_counted_in_metrics(tmp_path, shards):
    cfg = _cfg(tmp_path, shards, "skip", "train.max_steps=2", "data.num_workers=1", "data.on_bad_sample=skip",
               f"data.path={_with_bad_sample(shards, tmp_path)}", "eval.before=false")
    run, result = _train(cfg)
    # 10 good samples make one batch of 8 per pass, so 2 steps read the shard twice: the bad sample is met in
    # both epochs and counted once, as one distinct sample
    assert result.extra["skipped_samples"] == 1
    assert json.loads((run.path / "metrics.json").read_text())["skipped_samples"] == 1
    from cliptune.data.skipped import read_skipped

    (listed,) = read_skipped(run.path / "skipped.csv")
    assert listed.file.endswith("bad/train-000000.tar") and listed.row == "broken"


def test_cli_streams_with_separate_eval_data_and_exits_2_on_bad_samples(tmp_path, shards, monkeypatch, capsys):
    def cli(*args) -> tuple[int, str, str]:
        return run_cli(monkeypatch, capsys, *args)

    common = ["--model", "tiny-clip", "--streaming", "--val-data", shards["val"], "--test-data", shards["test"],
              "--output-dir", tmp_path / "runs", "--set", "train.max_steps=2", "--set", "train.batch_size=8", "--set", "eval.report=false",
              "-q"]
    assert cli("train", "--data", shards["train"], "--name", "ok", *common)[0] == 0
    metrics = json.loads((tmp_path / "runs" / "ok" / "metrics.json").read_text())
    assert metrics["data"] == shards["train"] and "before" in metrics
    code, _, stderr = cli("train", "--data", _with_bad_sample(shards, tmp_path), "--name", "bad", *common,
                          "--set", "data.num_workers=1", "--set", "data.shuffle_buffer=0")
    assert code == 2
    assert "train-000000.tar, row broken" in stderr


@pytest.mark.parametrize("overrides, message", [
    ([], "set train.max_steps"),
    (["data.resampled=true"], "never end"),
    (["train.max_steps=4", "train.task=match", "loss.type=match"], "match task"),
    (["train.max_steps=4", "loss.type=hard_negatives", "loss.params={num_negatives: 2}"], "mining"),
    (["train.max_steps=4", "data.max_train_images=10"], "max_train_images"),
])
def test_what_a_stream_cannot_do_is_refused(tmp_path, shards, overrides, message):
    cfg = _cfg(tmp_path, shards, "refused", "eval.before=false", *overrides)
    with pytest.raises(UsageError, match=message):
        _train(cfg)


def test_eval_data_replaces_splits_without_streaming(tmp_path, shapes_csv, shards):
    """data.val_path / data.test_path work for indexed data too: evaluation uses every record of them."""
    cfg = _cfg(tmp_path, shards, "indexed", "data.streaming=false", f"data.path={shapes_csv}", "train.max_steps=2")
    run, _ = _train(cfg)
    metrics = json.loads((run.path / "metrics.json").read_text())
    assert metrics["n_images"] == len(load_dataset(shards["test"]).records)
    assert metrics["n_images"] != len(load_dataset(shapes_csv, split_ratios=(0.8, 0.1, 0.1)).split("test"))
