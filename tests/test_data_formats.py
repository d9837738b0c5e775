"""Reading data specs: formats, detection, bad input (error names file and row; skip counts it), grouping, splits."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cliptune.data.formats import FORMATS, detect_format
from cliptune.data.load import load_dataset
from cliptune.data.records import Record
from cliptune.data.splits import assign_splits
from cliptune.errors import DataError, UsageError


def make_image(path: Path, color=(200, 30, 30), size=(8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


@pytest.fixture
def images(tmp_path):
    """a.png, b.png, c.png in tmp_path/img."""
    return [make_image(tmp_path / "img" / f"{name}.png", (i * 60, 80, 120)) for i, name in enumerate("abc")]


def load_error(spec, **kwargs) -> DataError:
    with pytest.raises(DataError) as err:
        load_dataset(spec, **kwargs)
    return err.value


def assert_bad_row(spec: Path, row, *words: str, file: Path | None = None, **kwargs):
    """The default policy names the file and row; skip mode leaves the row out and counts it."""
    err = load_error(spec, **kwargs)
    file = str(file or spec)
    assert err.file == file and err.row == row, str(err)
    assert f"{file}, row {row}" in str(err)
    for word in words:
        assert word in str(err), str(err)
    data = load_dataset(spec, on_bad_sample="skip", **kwargs)
    assert [(s.file, s.row) for s in data.skipped] == [(file, row)]
    assert all(words_in(s.reason, words) for s in data.skipped)
    return data


def words_in(text: str, words) -> bool:
    return all(w in text for w in words)


# ---- CSV / TSV -------------------------------------------------------------------------------------------------

def test_csv_basic_rows_become_records_with_absolute_paths(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,caption,label\nimg/a.png,a red square,0\n"
                                        "img/b.png,a blue square,1\nimg/c.png,a green square,2\n")
    data = load_dataset(spec)
    assert [r.captions for r in data.records] == [["a red square"], ["a blue square"], ["a green square"]]
    assert [r.label for r in data.records] == [0, 1, 2]
    assert data.records[0].image == str(images[0])
    assert data.records[0].sources == [(str(spec), 1)]
    assert {r.split for r in data.records} <= {"train", "val", "test"} and not data.skipped


@pytest.mark.parametrize("name,sep", [("data.tsv", "\t"), ("data.csv", ";"), ("data.csv", "|"), ("d.csv", "\t")])
def test_separator_is_detected(tmp_path, images, name, sep):
    rows = [["image_path", "text", "split"], ["img/a.png", "one, two", "train"], ["img/b.png", "three", "val"]]
    spec = write(tmp_path / name, "".join(sep.join(r) + "\n" for r in rows))
    data = load_dataset(spec)
    assert [r.captions[0] for r in data.records] == ["one, two", "three"]
    assert [r.split for r in data.records] == ["train", "val"]


def test_quoted_commas_newlines_and_bom(tmp_path, images):
    text = 'image_path,text\nimg/a.png,"a cat, sitting\non a ""mat"""\nimg/b.png,plain\n'
    spec = write(tmp_path / "data.csv", "\ufeff" + text)
    assert spec.read_bytes().startswith(b"\xef\xbb\xbf")
    data = load_dataset(spec)
    assert data.records[0].captions == ['a cat, sitting\non a "mat"']
    assert data.records[1].sources == [(str(spec), 2)]  # row numbers count rows, not lines


def test_utf16_export_is_read(tmp_path, images):
    spec = write(tmp_path / "data.tsv", "image_path\ttext\nimg/a.png\tcafé\n", encoding="utf-16")
    assert load_dataset(spec).records[0].captions == ["café"]


def test_non_utf8_bytes_name_the_row(tmp_path, images):
    spec = tmp_path / "data.csv"
    spec.write_bytes(b"image_path,text\nimg/a.png,fine\nimg/b.png,caf\xe9 au lait\nimg/c.png,ok\n")
    data = assert_bad_row(spec, 2, "UTF-8", "0xe9")
    assert len(data.records) == 2


def test_missing_image_file(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/a.png,x\nimg/nope.png,y\n")
    assert_bad_row(spec, 2, "not found", str(tmp_path / "img" / "nope.png"))


def test_truncated_jpeg_is_caught_before_training(tmp_path, images):
    rng = np.random.default_rng(0)
    good = tmp_path / "img" / "photo.jpg"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(good)
    cut = tmp_path / "img" / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/photo.jpg,x\nimg/a.png,y\nimg/cut.jpg,z\n")
    assert_bad_row(spec, 3, "truncated", str(cut))
    assert len(load_dataset(spec, check_images=False).records) == 3  # the cheap check is what catches it


@pytest.mark.parametrize("caption", ['""', '"   "', ""])
def test_empty_caption(tmp_path, images, caption):
    spec = write(tmp_path / "data.csv", f"image_path,text\nimg/a.png,x\nimg/b.png,{caption}\n")
    assert_bad_row(spec, 2, "empty caption")


def test_labels_follow_the_task_rules(tmp_path, images):
    """Retrieval keeps a label that is no integer as metadata; match (one pair per record) refuses it."""
    spec = write(tmp_path / "data.csv", "image_path,text,label\nimg/a.png,x,3.0\nimg/b.png,y,cat\nimg/c.png,z,\n")
    data = load_dataset(spec)
    assert [r.label for r in data.records] == [3, None, None] and not data.skipped
    assert data.records[1].meta["label"] == "cat"
    pairs = write(tmp_path / "pairs.csv", "image_path,text,label\nimg/a.png,x,1\nimg/b.png,y,cat\nimg/c.png,z,\n")
    data = assert_bad_row(pairs, 2, "label 'cat'", "0 or 1", group=False)
    assert [r.label for r in data.records] == [1, None]


def test_unknown_split_and_split_aliases(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text,split\nimg/a.png,x,Validation\nimg/b.png,y,holdout\n"
                                        "img/c.png,z,training\n")
    data = assert_bad_row(spec, 2, "unknown split", "'holdout'")
    assert [r.split for r in data.records] == ["val", "train"]


def test_wrong_field_count_points_at_quoting(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/a.png,a cat, sitting\nimg/b.png,ok\n")
    assert_bad_row(spec, 1, "3 fields", "quote")


def test_missing_column_lists_columns_found(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,label\nimg/a.png,1\n")
    err = load_error(spec)
    assert err.file == str(spec) and "missing required column" in str(err)
    assert "'image_path'" in str(err) and "'label'" in str(err) and "'caption'" in str(err)


def test_missing_header(tmp_path, images):
    spec = write(tmp_path / "data.csv", "img/a.png,a cat\nimg/b.png,a dog\n")
    err = load_error(spec)
    assert err.file == str(spec) and "no header" in str(err) and "'img/a.png'" in str(err)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "\ufeff"])
def test_empty_file(tmp_path, content):
    spec = write(tmp_path / "data.csv", content)
    err = load_error(spec)
    assert err.file == str(spec) and "empty" in str(err)


def test_header_only_has_no_samples(tmp_path):
    err = load_error(write(tmp_path / "data.csv", "image_path,text\n"))
    assert "no usable samples" in str(err)


def test_unterminated_quote_is_an_error_not_a_merged_row(tmp_path, images):
    spec = write(tmp_path / "data.csv", 'image_path,text\nimg/a.png,"a cat\nimg/b.png,dog\n')
    err = load_error(spec)
    assert err.file == str(spec) and "unterminated quote" in str(err) and "line 2" in str(err)


def test_first_problem_is_reported_and_skip_lists_all(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text,label\nimg/a.png,x,1\nimg/gone.png,y,1\n"
                                        "img/b.png,,1\nimg/a.png,z,0\n")
    err = load_error(spec)
    assert err.row == 2 and "at least 2 more" in str(err)
    data = load_dataset(spec, on_bad_sample="skip")
    assert [s.row for s in data.skipped] == [2, 3, 4] and len(data.records) == 1


def test_all_rows_bad_is_an_error_even_when_skipping(tmp_path):
    spec = write(tmp_path / "data.csv", "image_path,text\ngone.png,x\n")
    assert "no usable samples" in str(load_error(spec, on_bad_sample="skip"))


def test_image_root_resolves_relative_paths(tmp_path, images):
    (tmp_path / "meta").mkdir()
    spec = write(tmp_path / "meta" / "data.csv", "image_path,text\na.png,x\nb.png,y\n")
    assert "not found" in str(load_error(spec))
    data = load_dataset(spec, image_root=tmp_path / "img")
    assert [r.image for r in data.records] == [str(images[0]), str(images[1])]


def test_unknown_policy_and_format_are_usage_errors(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/a.png,x\n")
    with pytest.raises(UsageError, match="on-bad-sample"):
        load_dataset(spec, on_bad_sample="ignore")
    with pytest.raises(UsageError, match="data format"):
        load_dataset(spec, format="parquet")
    with pytest.raises(UsageError, match="split ratios"):
        load_dataset(spec, split_ratios=(0.9, 0.1))


# ---- grouping and splits --------------------------------------------------------------------------------------

def test_rows_sharing_an_image_become_one_record(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/a.png,a red square\nimg/b.png,blue\n"
                                        "img/a.png,red block\nimg/a.png,a red square\n")
    data = load_dataset(spec)
    assert len(data.records) == 2
    assert data.records[0].captions == ["a red square", "red block"]
    assert data.records[0].sources == [(str(spec), 1), (str(spec), 3), (str(spec), 4)]

    rows = load_dataset(spec, group=False).records  # the match task keeps every row
    assert len(rows) == 4
    assert len({r.split for r in rows if r.image == str(images[0])}) == 1


def test_rows_of_one_image_must_agree_on_split(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text,split\nimg/a.png,x,train\nimg/b.png,y,train\n"
                                        "img/a.png,z,test\n")
    err = load_error(spec)
    assert err.row == 3 and f"{spec}, row 1" in str(err) and "'train'" in str(err) and "'test'" in str(err)
    assert load_error(spec, group=False).row == 3  # leakage is leakage whether rows are merged or not


def test_rows_of_one_image_must_agree_on_label_when_merged(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text,label\nimg/a.png,x,1\nimg/a.png,z,0\n")
    err = load_error(spec)
    assert err.row == 2 and "task=match" in str(err)  # the message says what to change
    assert [r.label for r in load_dataset(spec, group=False).records] == [1, 0]


def test_some_rows_with_a_split_is_an_error(tmp_path, images):
    spec = write(tmp_path / "data.csv", "image_path,text,split\nimg/a.png,x,train\nimg/b.png,y,\n")
    err = load_error(spec)
    assert err.row == 2 and "1 of 2" in str(err)


def test_assigned_split_is_deterministic_by_image(tmp_path):
    img = make_image(tmp_path / "one.png")
    lines = ["image_path,text"]
    for i in range(200):
        (tmp_path / "img").mkdir(exist_ok=True)
        (tmp_path / "img" / f"{i:03d}.png").write_bytes(img.read_bytes())
        lines += [f"img/{i:03d}.png,photo {i}", f"img/{i:03d}.png,another caption {i}"]
    spec = write(tmp_path / "data.csv", "\n".join(lines) + "\n")

    rows = load_dataset(spec, group=False, check_images=False).records
    split_of = {}
    for r in rows:
        assert split_of.setdefault(r.image, r.split) == r.split  # no image in two splits
    assert Counter(split_of.values()) == {"train": 160, "val": 20, "test": 20}

    first = load_dataset(spec, check_images=False)
    again = load_dataset(spec, check_images=False)
    other = load_dataset(spec, check_images=False, seed=1)
    assert [r.split for r in first.records] == [r.split for r in again.records]
    assert [r.split for r in first.records] != [r.split for r in other.records]
    assert {r.image: r.split for r in first.records} == split_of
    custom = load_dataset(spec, check_images=False, split_ratios=(0.5, 0.25, 0.25))
    assert Counter(r.split for r in custom.records) == {"train": 100, "val": 50, "test": 50}


def test_assign_splits_small_sets_keep_every_split():
    records = [Record(image=f"/x/{i}.png", captions=["c"]) for i in range(3)]
    assert sorted(r.split for r in assign_splits(records, (0.8, 0.1, 0.1), seed=0)) == ["test", "train", "val"]
    assert {r.split for r in assign_splits(records, (1, 0, 0), seed=0)} == {"train"}
    with pytest.raises(ValueError):
        assign_splits(records, (0.5, 0.5))


def test_split_survives_moving_the_dataset(tmp_path, images):
    text = "image_path,text\n" + "".join(f"img/{c}.png,{c}\n" for c in "abc")
    here = load_dataset(write(tmp_path / "data.csv", text))
    moved = tmp_path / "elsewhere"
    for image in images:
        make_image(moved / "img" / image.name)
    there = load_dataset(write(moved / "data.csv", text))
    assert [r.split for r in here.records] == [r.split for r in there.records]


# ---- JSON with splits -----------------------------------------------------------------------------------------

def test_json_splits(tmp_path, images):
    spec = tmp_path / "data.json"
    spec.write_text(json.dumps({"splits": {
        "train": [{"image_path": "img/a.png", "caption": "a"}, {"image_path": "img/b.png", "captions": ["b1", "b2"]}],
        "validation": [{"image_path": "img/c.png", "text": "c", "id": 7, "source": "web"}],
    }}))
    data = load_dataset(spec)
    assert [(r.split, r.captions) for r in data.records] == [("train", ["a"]), ("train", ["b1", "b2"]),
                                                             ("val", ["c"])]
    assert data.records[2].id == "7" and data.records[2].meta == {"source": "web"}
    assert data.records[1].sources == [(str(spec), "train[1]")]


def test_json_bad_entries_name_the_entry(tmp_path, images):
    spec = tmp_path / "data.json"
    spec.write_text(json.dumps({"splits": {"train": [{"image_path": "img/a.png", "caption": "a"},
                                                     {"image_path": "img/b.png"},
                                                     {"image_path": "img/c.png", "captions": ["c", " "]}]}}))
    err = load_error(spec)
    assert err.row == "train[1]" and "no caption" in str(err)
    data = load_dataset(spec, on_bad_sample="skip")
    assert [(s.row, "empty" in s.reason) for s in data.skipped] == [("train[1]", False), ("train[2]", True)]


def test_json_syntax_error_names_line(tmp_path):
    spec = write(tmp_path / "data.json", '{"splits": {"train": [\n  {"image_path": "a.png",}\n]}}')
    err = load_error(spec, format="json_splits")
    assert err.file == str(spec) and "line 2" in str(err)


# ---- folder of images with sidecar captions ---------------------------------------------------------------------

def test_sidecar_folder_with_split_subfolders(tmp_path):
    root = tmp_path / "icons"
    make_image(root / "train" / "cat.jpg")
    write(root / "train" / "cat.txt", "a cat\n\n  a small cat  \n")
    make_image(root / "train" / "dog.png")
    write(root / "train" / "dog.txt", "a dog")
    write(root / "train" / "dog.json", json.dumps({"label": 2, "source": "mine"}))
    make_image(root / "val" / "fox.webp")
    write(root / "val" / "fox.txt", "a fox")
    write(root / "README.txt", "not a caption")
    write(root / ".DS_Store", "junk")

    data = load_dataset(root)
    by_name = {Path(r.image).name: r for r in data.records}
    assert by_name["cat.jpg"].captions == ["a cat", "a small cat"]
    assert by_name["dog.png"].label == 2 and by_name["dog.png"].meta == {"source": "mine"}
    assert {name: r.split for name, r in by_name.items()} == {"cat.jpg": "train", "dog.png": "train",
                                                              "fox.webp": "val"}
    assert by_name["fox.webp"].sources == [(str(root), "val/fox.webp")]


def test_sidecar_image_without_caption_is_a_bad_sample(tmp_path):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    write(root / "a.txt", "first")
    make_image(root / "b.png")
    make_image(root / "c.png")
    write(root / "c.json", json.dumps({"captions": ["from metadata"], "label": "4"}))
    data = assert_bad_row(root, "b.png", "no caption file", "b.txt")
    assert [(r.captions, r.label) for r in data.records] == [(["first"], None), (["from metadata"], 4)]


def test_sidecar_empty_caption_file(tmp_path):
    root = tmp_path / "photos"
    make_image(root / "a.png")
    write(root / "a.txt", "ok")
    make_image(root / "b.png")
    write(root / "b.txt", "\n  \n")
    assert_bad_row(root, "b.png", "empty caption")


# ---- format detection -------------------------------------------------------------------------------------------

def test_format_detection(tmp_path):
    assert {"csv", "json_splits", "sidecar_dir"} <= set(FORMATS.names())
    assert detect_format(write(tmp_path / "a.csv", "x")) == "csv"
    assert detect_format(write(tmp_path / "a.TSV", "x")) == "csv"
    assert detect_format(write(tmp_path / "s.json", '{"splits": {}}')) == "json_splits"
    assert detect_format(tmp_path) == "sidecar_dir"
    with pytest.raises(DataError, match="cannot tell"):
        detect_format(write(tmp_path / "coco_like.json", '{"images": [], "annotations": []}'))
    with pytest.raises(DataError, match="no such file"):
        detect_format(tmp_path / "typo.csv")


def test_big_json_is_detected_from_its_head(tmp_path):
    spec = tmp_path / "big.json"
    spec.write_text('{"splits": {"train": [' + ",".join(['{"image_path": "x.png", "caption": "c"}'] * 40000)
                    + "]}}")
    assert spec.stat().st_size > 1 << 20
    assert detect_format(spec) == "json_splits"


def test_skip_mode_logs_a_summary(tmp_path, images, caplog):
    spec = write(tmp_path / "data.csv", "image_path,text\nimg/a.png,x\nimg/gone.png,y\n")
    with caplog.at_level(logging.WARNING):
        load_dataset(spec, on_bad_sample="skip")
    assert "skipped 1 bad sample" in caplog.text
