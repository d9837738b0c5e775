"""No silent data loss: damaged tar shards, undecodable pixels, label rules, symlinked folders, overlap between
training and evaluation data, and the full list of what `--on-bad-sample skip` left out, through every command."""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import shutil
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_inprocess import run_cli
from cliptune.data.images import check_image
from cliptune.data.load import load_dataset
from cliptune.data.records import BadSample
from cliptune.data.skipped import SkipLog, read_skipped, write_skipped
from cliptune.data.tar_integrity import TarWalk
from cliptune.data.tar_members import ShardFiles, member_ref
from cliptune.data.to_wds import write_shards
from cliptune.data.validate import validate_dataset
from cliptune.errors import DataError

TRAIN = ["--model", "tiny-clip", "--set", "train.batch_size=8", "--set", "eval.report=false",
         "--set", "eval.before=false", "-q"]


# ---- generated data --------------------------------------------------------------------------------------------------

def png(path: Path, seed: int, size: int = 16) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="PNG")
    return path


def broken_pixels_png(path: Path) -> Path:
    """A PNG whose headers and chunk CRCs are valid but whose IDAT zlib stream is garbage (CRCs recomputed)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    data = buffer.getvalue()
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], bytearray(data[pos + 8:pos + 8 + length])
        if kind == b"IDAT":
            for i in range(8, len(body) - 8, 5):
                body[i] ^= 0x5A
        out += struct.pack(">I", length) + kind + body + struct.pack(">I", zlib.crc32(kind + bytes(body)))
        pos += 12 + length
    path.write_bytes(bytes(out))
    return path


def make_tar(path: Path, n: int, start: int = 0) -> Path:
    """`n` samples (png + txt), keys start..start+n-1."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for i in range(start, start + n):
            buffer = io.BytesIO()
            Image.new("RGB", (8, 8), (i * 9 % 255, 90, 140)).save(buffer, format="PNG")
            for name, data in ((f"{i:04d}.png", buffer.getvalue()), (f"{i:04d}.txt", f"caption {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def header_offsets(path: Path) -> list[int]:
    with tarfile.open(path) as tar:
        return [m.offset for m in tar.getmembers()]


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def corrupt_header(path: Path, member: int) -> int:
    """Flip bytes of the `member`-th header (its checksum no longer matches); returns its offset."""
    offset = header_offsets(path)[member]
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    return offset


def skipped_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ---- the walk itself -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["intact", "half", "header", "boundary", "gzip_cut"])
def test_tar_walk_reads_to_the_end_or_says_where_it_stopped(tmp_path, damage):
    shard = make_tar(tmp_path / "s.tar", 12)
    offsets = header_offsets(shard)
    if damage == "half":
        truncate(shard)
    elif damage == "header":
        corrupt_header(shard, 6)  # sample 0003's png
    elif damage == "boundary":  # cut exactly between two members: tarfile just sees a shorter archive
        shard.write_bytes(shard.read_bytes()[:offsets[10]])
    elif damage == "gzip_cut":
        data = gzip.compress(shard.read_bytes())
        shard = tmp_path / "s.tar.gz"
        shard.write_bytes(data[: len(data) // 2])
    walk = TarWalk(shard)
    names = [member.name for member, _ in walk]
    if damage == "intact":
        assert walk.damage is None and len(names) == 24
        return
    assert walk.damage is not None and len(names) < 24
    reason = walk.damage.reason
    assert "truncated or corrupt at byte" in reason and walk.damage.row == names[-1].split(".")[0]
    if damage == "header":
        assert walk.damage.offset == offsets[6] and names[-1] == "0002.txt" and "invalid member header" in reason
    if damage == "boundary":
        assert walk.damage.offset == offsets[10] and "cut short" in reason


def test_in_place_reads_name_the_damage(tmp_path):
    shard = make_tar(tmp_path / "s.tar", 6)
    corrupt_header(shard, 4)  # sample 0002
    files = ShardFiles()
    assert files.read(str(shard), "0001.png")[:4] == b"\x89PNG"  # members before the damage still read
    with pytest.raises(FileNotFoundError, match="truncated or corrupt at byte"):
        files.read(str(shard), "0004.png")
    assert "truncated or corrupt" in check_image(member_ref(shard, "0004.png"))


# ---- damaged shards through every command ----------------------------------------------------------------------------

@pytest.fixture
def damaged(tmp_path, shapes_csv) -> dict[str, str]:
    """Shapes data as shards (train 5, val/test 1 each, 10 samples a shard); train-000000.tar cut in half and
    train-000001.tar with a corrupt header in the middle."""
    data = load_dataset(shapes_csv, split_ratios=(0.8, 0.1, 0.1))
    result = write_shards(data, tmp_path / "shards", shard_size=10)
    folder = tmp_path / "shards"
    truncate(folder / "train-000000.tar")
    corrupt_header(folder / "train-000001.tar", 9)
    spec = {split: str(folder / info.pattern) for split, info in result.splits.items()}
    spec["cut"], spec["corrupt"] = str(folder / "train-000000.tar"), str(folder / "train-000001.tar")
    return spec


def assert_lists_damage(path: Path, *shards: str) -> list[dict]:
    rows = skipped_rows(path)
    damage = [r for r in rows if "truncated or corrupt" in r["reason"]]
    assert sorted(r["file"] for r in damage) == sorted(shards), rows
    assert all(r["key"] and "byte" in r["reason"] for r in damage)
    return rows


def test_validate_eval_and_to_wds_refuse_or_list_damaged_shards(tmp_path, damaged, monkeypatch, capsys):
    def cli(*args):
        return run_cli(monkeypatch, capsys, *args)

    code, stdout, stderr = cli("validate", damaged["train"])
    assert code == 2 and "truncated or corrupt shards" in stdout
    report = tmp_path / "v.json"
    code, _, _ = cli("validate", damaged["train"], "--on-bad-sample", "skip", "--json", report, "--skipped",
                     tmp_path / "v.csv")
    assert code == 0
    issue = next(i for i in json.loads(report.read_text())["issues"] if i["check"] == "damaged_shard")
    assert issue["count"] == 2 and len(issue["examples"]) == 2
    assert_lists_damage(tmp_path / "v.csv", damaged["cut"], damaged["corrupt"])

    code, _, stderr = cli("eval", "--model", "tiny-clip", "--data", damaged["train"], "--split", "all")
    assert code == 2 and "truncated or corrupt" in stderr and "train-00000" in stderr
    code, _, stderr = cli("eval", "--model", "tiny-clip", "--data", damaged["train"], "--split", "all",
                          "--on-bad-sample", "skip", "--skipped", tmp_path / "e.csv", "--out", tmp_path / "m.json")
    assert code == 0 and "skipped" in stderr
    rows = assert_lists_damage(tmp_path / "e.csv", damaged["cut"], damaged["corrupt"])
    assert json.loads((tmp_path / "m.json").read_text())["skipped_samples"] == len(rows)

    code, _, stderr = cli("data", "to-wds", damaged["train"], "--out", tmp_path / "re")
    assert code == 2 and "truncated or corrupt" in stderr and not (tmp_path / "re" / "manifest.json").exists()
    code, _, _ = cli("data", "to-wds", damaged["train"], "--out", tmp_path / "re", "--on-bad-sample", "skip")
    assert code == 0
    assert_lists_damage(tmp_path / "re" / "skipped.csv", damaged["cut"], damaged["corrupt"])


@pytest.mark.parametrize("streaming", [False, True])
def test_training_refuses_or_lists_damaged_shards(tmp_path, damaged, monkeypatch, capsys, streaming):
    args = ["train", "--data", damaged["train"], "--val-data", damaged["val"], "--test-data", damaged["test"],
            "--output-dir", tmp_path / "runs", *TRAIN, "--set", "train.max_steps=2"]
    if streaming:
        args += ["--streaming", "--set", "data.shuffle_buffer=0"]
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--name", "strict")
    assert code == 2 and "truncated or corrupt" in stderr and "train-00000" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, *args, "--name", "skip", "--on-bad-sample", "skip",
                              "--set", "train.max_steps=8")  # 8 steps of 8: the stream passes the shards twice
    assert code == 0, stderr
    run = tmp_path / "runs" / "skip"
    rows = assert_lists_damage(run / "skipped.csv", damaged["cut"], damaged["corrupt"])
    assert json.loads((run / "metrics.json").read_text())["skipped_samples"] == len(rows)


# ---- undecodable pixels ----------------------------------------------------------------------------------------------

@pytest.fixture
def broken_png_csv(tmp_path) -> Path:
    for i in range(12):
        png(tmp_path / "img" / f"{i}.png", i)
    bad = broken_pixels_png(tmp_path / "img" / "broken.png")
    with Image.open(bad) as im:
        im.verify()  # headers and checksums pass: only decoding finds it
    spec = tmp_path / "pairs.csv"
    spec.write_text("image_path,caption\n" + "".join(f"img/{i}.png,picture number {i}\n" for i in range(12))
                    + "img/broken.png,a picture that does not decode\n")
    return spec


def test_corrupt_png_pixels_are_found_by_validate_and_skipped_everywhere(tmp_path, broken_png_csv, monkeypatch,
                                                                         capsys):
    def cli(*args):
        return run_cli(monkeypatch, capsys, *args)

    assert "cannot decode" in check_image(broken_png_csv.parent / "img" / "broken.png")
    code, stdout, _ = cli("validate", broken_png_csv, "--json", tmp_path / "v.json")
    assert code == 2 and "images that do not decode" in stdout
    errors = [i for i in json.loads((tmp_path / "v.json").read_text())["issues"] if i["severity"] == "error"]
    assert [(i["check"], [e["row"] for e in i["examples"]]) for i in errors] == [("unreadable_image", [13])]
    assert cli("validate", broken_png_csv, "--on-bad-sample", "skip")[0] == 0
    code, _, stderr = cli("eval", "--model", "tiny-clip", "--data", broken_png_csv, "--split", "all")
    assert code == 2 and "row 13" in stderr
    code, _, _ = cli("eval", "--model", "tiny-clip", "--data", broken_png_csv, "--split", "all",
                     "--on-bad-sample", "skip", "--skipped", tmp_path / "e.csv")
    assert code == 0 and [r["row"] for r in skipped_rows(tmp_path / "e.csv")] == ["13"]
    code, _, stderr = cli("train", "--data", broken_png_csv, "--output-dir", tmp_path / "runs", "--name", "r",
                          *TRAIN, "--set", "train.max_steps=1", "--on-bad-sample", "skip")
    assert code == 0, stderr
    rows = skipped_rows(tmp_path / "runs" / "r" / "skipped.csv")
    assert [(r["row"], "decode" in r["reason"]) for r in rows] == [("13", True)]


# ---- label rules -----------------------------------------------------------------------------------------------------

@pytest.fixture
def match_csv(tmp_path) -> Path:
    """Match data: each image with a caption that fits (1) and one that does not (0)."""
    for i in range(4):
        png(tmp_path / f"{i}.png", i)
    spec = tmp_path / "match.csv"
    spec.write_text("image_path,text,label\n" + "".join(
        f"{i}.png,picture {i},1\n{i}.png,picture {(i + 1) % 4},0\n" for i in range(4)))
    return spec


def test_match_data_is_usable_as_match_and_refused_with_a_hint_as_retrieval(match_csv, monkeypatch, capsys):
    report = validate_dataset(match_csv, task="match")
    assert report.usable, [(i.check, i.examples[:1]) for i in report.errors]
    assert len(load_dataset(match_csv, group=False).records) == 8  # how match training reads it
    retrieval = validate_dataset(match_csv)
    assert not retrieval.usable and {i.check for i in retrieval.errors} == {"label_conflict"}
    hint = "--set train.task=match"
    assert hint in retrieval.errors[0].examples[0].detail
    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--model", "tiny-clip", "--data", match_csv,
                              "--split", "all")
    assert code == 2 and hint in stderr and "row 2" in stderr
    data = load_dataset(match_csv, on_bad_sample="skip")  # skip can skip them: the rows labelled 0 go
    assert [s.row for s in data.skipped] == [2, 4, 6, 8] and all(len(r.captions) == 1 for r in data.records)


def test_same_pair_with_two_labels_is_a_conflict_for_match(tmp_path, match_csv):
    spec = tmp_path / "contradiction.csv"
    spec.write_text(match_csv.read_text() + "0.png,picture 0,0\n")
    report = validate_dataset(spec, task="match")
    issue = next(i for i in report.issues if i.check == "label_conflict")
    assert [e.row for e in issue.examples] == [9] and "same image and text" in issue.examples[0].detail
    with pytest.raises(DataError, match="same image and text") as err:
        load_dataset(spec, group=False)
    assert err.value.row == 9


def test_class_names_in_the_label_column_are_metadata_for_retrieval(tmp_path, monkeypatch, capsys):
    for i in range(4):
        png(tmp_path / f"{i}.png", i)
    spec = tmp_path / "named.csv"
    spec.write_text("image_path,text,label\n" + "".join(f"{i}.png,picture {i},{'cat' if i % 2 else 'dog'}\n"
                                                        for i in range(4)))
    assert validate_dataset(spec).usable
    records = load_dataset(spec, split_ratios=(1, 0, 0)).records
    assert [r.meta["label"] for r in records] == ["dog", "cat", "dog", "cat"] and all(r.label is None for r in records)
    assert not validate_dataset(spec, task="match").usable  # a match label must be 0 or 1
    code, _, _ = run_cli(monkeypatch, capsys, "eval", "--model", "tiny-clip", "--data", spec, "--split", "all")
    assert code == 0


# ---- sidecar folders -------------------------------------------------------------------------------------------------

def test_sidecar_folders_follow_symlinks_and_match_extensions_in_any_case(tmp_path, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    for i in range(4):
        png(elsewhere / f"{i}.png", i)
        (elsewhere / f"{i}.txt").write_text(f"picture {i}")
    root = tmp_path / "data"
    (root / "val").mkdir(parents=True)
    os.symlink(elsewhere, root / "train")
    png(root / "val" / "UP.PNG", 9)
    (root / "val" / "UP.TXT").write_text("an upper-case caption file")
    (root / "val" / "UP.JSON").write_text('{"id": "up-1"}')
    data = load_dataset(root)
    assert sorted(Path(r.image).name for r in data.split("train")) == ["0.png", "1.png", "2.png", "3.png"]
    (up,) = data.split("val")
    assert up.captions == ["an upper-case caption file"] and up.id == "up-1"
    assert validate_dataset(root).counts["images"] == 5

    os.symlink(root, elsewhere / "loop")  # data/train/loop -> data: walking it would never end
    with pytest.raises(DataError, match="symlink loop: train/loop"):
        load_dataset(root)
    code, stdout, _ = run_cli(monkeypatch, capsys, "validate", root)
    assert code == 2 and "symlink loop" in stdout


# ---- skipped lists and counts ----------------------------------------------------------------------------------------

def test_validate_json_lists_every_occurrence(tmp_path, monkeypatch, capsys):
    for i in range(3):
        png(tmp_path / f"{i}.png", i)
    spec = tmp_path / "gaps.csv"
    spec.write_text("image_path,text\n" + "".join(f"{i % 3}.png,picture {i}\n" for i in range(3))
                    + "".join(f"gone{i}.png,missing {i}\n" for i in range(9)))
    code, stdout, _ = run_cli(monkeypatch, capsys, "validate", spec, "--json", tmp_path / "r.json",
                              "--skipped", tmp_path / "s.csv")
    assert code == 2 and "4 more" in stdout  # the table shows 5 of 9
    issue = next(i for i in json.loads((tmp_path / "r.json").read_text())["issues"] if i["check"] == "missing_image")
    assert issue["count"] == 9 and [e["row"] for e in issue["examples"]] == list(range(4, 13))
    assert [int(r["row"]) for r in skipped_rows(tmp_path / "s.csv")] == list(range(4, 13))


def test_skip_log_counts_distinct_samples_across_processes(tmp_path):
    log = SkipLog()
    bad = BadSample("s.tar", "0003", "no caption")
    pid = os.fork()
    if pid == 0:  # a forked DataLoader worker adds the same sample, then exits
        log.add(bad)
        os._exit(0)
    os.waitpid(pid, 0)
    log.add(bad)
    log.add(BadSample("s.tar", 7, "empty caption"))
    assert [(s.row, s.reason) for s in log.samples()] == [("0003", "no caption"), (7, "empty caption")]
    assert os.path.exists(log.path)  # the child's exit did not remove its parent's log
    assert write_skipped(tmp_path / "s.csv", [bad, bad]) == 1
    assert read_skipped(tmp_path / "s.csv") == [bad]


# ---- train vs separately given evaluation data -----------------------------------------------------------------------

def test_overlap_between_training_and_test_data_is_reported_before_training(tmp_path, shapes_csv, caplog):
    from cliptune.config import load_config
    from cliptune.data.eval_sets import with_eval_sets
    from cliptune.data.overlap import find_overlap

    data = load_dataset(shapes_csv)
    train, held_out = data.split("train"), data.split("test")
    shutil.copy(train[0].image, tmp_path / "copy.png")
    test_csv = tmp_path / "test.csv"
    test_csv.write_text(f"image_path,text\n{train[0].image},same file\ncopy.png,same picture, other name\n"
                        f"{held_out[0].image},not a training image\n".replace("picture, other", "picture other"))
    found = find_overlap(train, load_dataset(test_csv).records, "test", str(test_csv))
    assert found.same_path == [(train[0].image, train[0].image)]
    assert found.same_content == [(str(tmp_path / "copy.png"), train[0].image)]
    cfg = load_config(None, [f"data.path={shapes_csv}", f"data.test_path={test_csv}"])
    with caplog.at_level(logging.WARNING):
        with_eval_sets(data, cfg.data)
    assert "2 of 3 test images" in caplog.text and "training images too" in caplog.text

    caplog.clear()
    cfg = load_config(None, [f"data.path={shapes_csv}", f"data.test_path={shapes_csv}"])
    with caplog.at_level(logging.WARNING):
        with_eval_sets(data, cfg.data)
    assert f"{len(train)} of 64 test images" in caplog.text  # a.csv as its own test data: every training image


def test_cli_train_warns_about_test_data_that_is_the_training_data(tmp_path, shapes_csv, monkeypatch, capsys,
                                                                    caplog):
    with caplog.at_level(logging.WARNING):
        code, _, stderr = run_cli(monkeypatch, capsys, "train", "--data", shapes_csv, "--test-data", shapes_csv,
                                  "--output-dir", tmp_path / "runs", "--name", "same", *TRAIN,
                                  "--set", "train.max_steps=1")
    assert code == 0, stderr
    assert "test images" in caplog.text and "training images too" in caplog.text
