"""`cliptune validate`: every problem counted with its first rows; exit 0 when usable, 2 when not. Also the exit
codes of `cliptune eval` on bad data, through the real `main()`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_inprocess import run_cli
from cliptune.data.validate import validate_dataset


def image(path: Path, size=(40, 40), color=(200, 40, 40), seed: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if seed is None:
        Image.new("RGB", size, color).save(path)
    else:
        Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), np.uint8)).save(path)
    return path


@pytest.fixture
def dirty(tmp_path):
    for i in range(5):
        image(tmp_path / "img" / f"{i}.png", seed=i)
    image(tmp_path / "img" / "tiny.png", size=(12, 40))
    shutil.copy(tmp_path / "img" / "0.png", tmp_path / "img" / "copy.png")
    rng = np.random.default_rng(0)
    good = tmp_path / "img" / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    (tmp_path / "img" / "cut.jpg").write_bytes(good.read_bytes()[:500])
    long_caption = "a " + " ".join(["long"] * 90)
    lines = ["image_path,caption,split",
             "img/0.png,a red square,train",        # 1
             "img/1.png,a red square,train",        # 2 shared caption
             "img/2.png,   ,train",                 # 3 whitespace caption
             "img/missing.png,gone,train",          # 4 missing file
             "img/cut.jpg,truncated,train",         # 5 does not decode
             f"img/3.png,{long_caption},val",       # 6 too long
             "img/0.png,a red square,train",        # 7 duplicate pair
             "img/4.png,in two splits,val",         # 8
             "img/4.png,in two splits again,test",  # 9 same image, other split
             "img/tiny.png,tiny,test",              # 10 small
             "img/copy.png,a copy of 0,test",       # 11 same bytes as 0.png, other split
             "img/photo.jpg,fine,train"]            # 12
    spec = tmp_path / "dirty.csv"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def by_check(report):
    return {issue.check: issue for issue in report.issues}


def test_every_problem_is_counted_with_its_rows(dirty):
    report = validate_dataset(dirty)
    issues = by_check(report)
    spec = str(dirty)
    expected = {"empty_caption": [3], "missing_image": [4], "unreadable_image": [5], "caption_too_long": [6],
                "duplicate_pairs": [7], "image_in_two_splits": [9], "small_images": [10],
                "content_in_two_splits": [11], "duplicate_images": [11], "shared_captions": [1]}
    for check, rows in expected.items():
        assert check in issues, (check, sorted(issues))
        assert [e.row for e in issues[check].examples] == rows, check
        assert all(e.file == spec for e in issues[check].examples)
    assert issues["missing_image"].severity == "error" and issues["caption_too_long"].severity == "warning"
    assert "truncated" in issues["unreadable_image"].examples[0].detail
    assert issues["caption_too_long"].examples[0].detail.startswith("93 tokens")  # 91 words + start + end
    assert not report.usable and report.counts["rows"] == 12 and report.counts["usable_rows"] == 9
    sizes = report.image_sizes
    assert sizes["width"]["min"] == 12 and sizes["height"]["max"] == 64 and sizes["below_32px"] == 1
    assert report.caption_tokens["over_context"] == 1 and report.caption_tokens["context_length"] == 77
    assert report.to_json()["issues"][0]["examples"][0]["where"] == f"{spec}:3"


def test_skip_policy_makes_bad_rows_warnings_but_split_leaks_stay_errors(dirty, tmp_path):
    report = validate_dataset(dirty, on_bad_sample="skip")
    issues = by_check(report)
    assert issues["missing_image"].severity == "warning"
    assert [i.check for i in report.errors] == ["image_in_two_splits"]
    fixed = tmp_path / "fixed.csv"
    fixed.write_text("\n".join(line for line in dirty.read_text().splitlines() if "again" not in line) + "\n")
    assert validate_dataset(fixed, on_bad_sample="skip").usable
    assert not validate_dataset(fixed).usable


def test_context_length_and_match_labels(tmp_path):
    for i in range(4):
        image(tmp_path / f"{i}.png", seed=i)
    spec = tmp_path / "pairs.csv"
    spec.write_text("image_path,text,label\n0.png,a dog running on grass,1\n1.png,a cat,0\n2.png,a bird,2\n"
                    "3.png,a fish,\n0.png,a dog running on grass,0\n")
    report = validate_dataset(spec, task="match", context_length=6)
    issues = by_check(report)
    assert [e.row for e in issues["caption_too_long"].examples] == [1]  # 5 words + 2 special tokens > 6
    assert [e.row for e in issues["bad_label"].examples] == [3]
    assert [e.row for e in issues["missing_labels"].examples] == [4]
    assert [e.row for e in issues["label_conflict"].examples] == [5]  # the same pair labelled 1 at row 1
    assert report.labels == {"0": 1, "1": 1, "positive_share": 0.5}
    assert "caption_too_long" not in by_check(validate_dataset(spec, task="retrieval"))


def test_source_level_problems_are_reported_not_raised(tmp_path):
    spec = tmp_path / "nohead.csv"
    spec.write_text("a.png,a cat\n")
    report = validate_dataset(spec)
    assert not report.usable and report.issues[0].check == "source"
    assert "no header" in report.issues[0].examples[0].detail


def test_validate_shards_in_place(tmp_path):
    from cliptune.data.load import load_dataset
    from cliptune.data.to_wds import write_shards

    for i in range(3):
        image(tmp_path / "img" / f"{i}.png", seed=i)
    spec = tmp_path / "d.csv"
    spec.write_text("image_path,text\n" + "".join(f"img/{i}.png,caption {i}\n" for i in range(3)))
    write_shards(load_dataset(spec, split_ratios=(1, 0, 0)), tmp_path / "shards", shard_size=2)
    report = validate_dataset(str(tmp_path / "shards" / "train-{000000..000001}.tar"))
    assert report.usable and report.format == "webdataset" and report.image_sizes["images"] == 3


# ---- exit codes through the real main() ------------------------------------------------------------------------

def test_validate_cli_exit_codes_and_json(monkeypatch, dirty, tmp_path, capsys):
    out = tmp_path / "report.json"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "validate", dirty, "--json", out)
    assert code == 2
    assert "not usable" in stderr and "not usable" in stdout and "dirty.csv" in stdout
    payload = json.loads(out.read_text())
    assert payload["usable"] is False
    missing = next(i for i in payload["issues"] if i["check"] == "missing_image")
    assert missing["count"] == 1 and missing["examples"][0]["where"] == f"{dirty}:4"

    clean = tmp_path / "clean.csv"
    image(tmp_path / "ok.png", seed=1)
    clean.write_text("image_path,text\nok.png,a fine caption\n")
    code, stdout, _ = run_cli(monkeypatch, capsys, "validate", clean, "--context-length", "32")
    assert code == 0 and "usable" in stdout
    assert run_cli(monkeypatch, capsys, "validate", tmp_path / "nope.csv")[0] == 2
    assert run_cli(monkeypatch, capsys, "validate", clean, "--task", "classify")[0] == 2


@pytest.mark.parametrize("content,words", [
    ("image_path,text\nimg/missing.png,x\n", ["row 1", "not found"]),
    ("", ["empty"]),
    ("a.png,no header\n", ["no header"]),
])
def test_eval_exits_2_on_bad_data_naming_the_file(monkeypatch, tmp_path, capsys, content, words):
    spec = tmp_path / "bad.csv"
    spec.write_text(content)
    code, _, stderr = run_cli(monkeypatch, capsys, "eval", "--model", "tiny-clip", "--data", spec, "-q")
    assert code == 2
    err = stderr.replace("\n", "")
    assert "bad.csv" in err and all(w in err for w in words), err
