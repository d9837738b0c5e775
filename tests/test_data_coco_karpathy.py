"""COCO captions and Karpathy split JSON: detection from the file's head, rows named by entry, bad entries counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from cliptune.data.formats import detect_format
from cliptune.data.load import load_dataset
from cliptune.errors import DataError


def make_image(path: Path, color=(10, 120, 200)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def coco(images, annotations):
    return {"info": {"year": 2017}, "licenses": [], "images": images, "annotations": annotations}


@pytest.fixture
def coco_dir(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        make_image(tmp_path / "val2017" / name)
    images = [{"id": 11, "file_name": "a.jpg", "width": 8, "height": 8},
              {"id": 22, "file_name": "b.jpg"}, {"id": 33, "file_name": "c.jpg"}]
    annotations = [{"id": 1, "image_id": 11, "caption": "A cat on a mat. "},
                   {"id": 2, "image_id": 22, "caption": "a dog"},
                   {"id": 3, "image_id": 11, "caption": "a sleeping cat"},
                   {"id": 4, "image_id": 33, "caption": "a bird"}]
    spec = write_json(tmp_path / "annotations" / "captions_val2017.json", coco(images, annotations))
    return tmp_path, spec


def test_coco_captions_grouped_per_image_with_image_root(coco_dir):
    root, spec = coco_dir
    assert detect_format(spec) == "coco"
    with pytest.raises(DataError, match="not found"):  # default root: the json's folder
        load_dataset(spec)
    data = load_dataset(spec, image_root=root / "val2017")
    by_id = {r.id: r for r in data.records}
    assert by_id["11"].captions == ["A cat on a mat.", "a sleeping cat"]
    assert by_id["11"].image == str(root / "val2017" / "a.jpg")
    assert by_id["11"].sources == [(str(spec), "images[0]")] and by_id["11"].meta["width"] == 8
    assert {r.split for r in data.records} <= {"train", "val", "test"}  # none in the file: assigned


def test_coco_bad_annotations_and_uncaptioned_images_are_named(tmp_path):
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.jpg")
    spec = write_json(tmp_path / "captions.json", coco(
        [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        [{"image_id": 1, "caption": "fine"}, {"image_id": 99, "caption": "orphan"}, {"image_id": 1, "caption": " "}]))
    err = pytest.raises(DataError, load_dataset, spec).value
    assert err.file == str(spec) and err.row == "annotations[1]" and "99" in str(err)
    data = load_dataset(spec, on_bad_sample="skip")
    assert [s.row for s in data.skipped] == ["annotations[1]", "annotations[2]", "images[1]"]
    assert "no caption annotation" in data.skipped[2].reason
    assert [r.captions for r in data.records] == [["fine"]]


def test_coco_instances_file_is_refused_clearly(tmp_path):
    spec = write_json(tmp_path / "instances.json", coco([{"id": 1, "file_name": "a.jpg"}],
                                                        [{"image_id": 1, "bbox": [0, 0, 1, 1], "category_id": 3}]))
    with pytest.raises(DataError, match="not a COCO captions file"):
        load_dataset(spec)


def test_coco_detected_when_annotations_come_after_a_long_image_list(tmp_path):
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "coco_url": "http://x/" + "y" * 40} for i in range(20000)]
    spec = write_json(tmp_path / "big.json", coco(images, [{"image_id": 0, "caption": "c"}]))
    assert spec.stat().st_size > 1 << 20
    head = spec.read_bytes()[: 1 << 20]
    assert b'"annotations"' not in head
    assert detect_format(spec) == "coco"


@pytest.fixture
def karpathy_dir(tmp_path):
    for folder, name in (("train2014", "t.jpg"), ("val2014", "v.jpg"), ("val2014", "r.jpg"), ("val2014", "x.jpg")):
        make_image(tmp_path / folder / name)

    def entry(folder, name, split, sentences, cocoid):
        return {"filepath": folder, "filename": name, "split": split, "cocoid": cocoid, "imgid": cocoid,
                "sentences": sentences, "sentids": list(range(len(sentences)))}

    data = {"dataset": "coco", "images": [
        entry("train2014", "t.jpg", "train", [{"raw": "A train.", "tokens": ["a", "train"]}], 1),
        entry("val2014", "r.jpg", "restval", [{"raw": "Rest val."}, {"tokens": ["only", "tokens"]}], 2),
        entry("val2014", "v.jpg", "val", [{"raw": "A val image."}], 3),
        entry("val2014", "x.jpg", "test", [{"raw": "A test image."}], 4),
    ]}
    return tmp_path, write_json(tmp_path / "dataset_coco.json", data)


def test_karpathy_split_paths_and_restval(karpathy_dir):
    root, spec = karpathy_dir
    assert detect_format(spec) == "karpathy"
    data = load_dataset(spec)
    assert [(r.split, r.id) for r in data.records] == [("train", "1"), ("train", "2"), ("val", "3"), ("test", "4")]
    assert data.records[1].image == str(root / "val2014" / "r.jpg")
    assert data.records[1].captions == ["Rest val.", "only tokens"]
    assert data.records[2].sources == [(str(spec), "images[2]")]


def test_karpathy_flickr_without_filepath_and_bad_entries(tmp_path):
    make_image(tmp_path / "imgs" / "1.jpg")
    spec = write_json(tmp_path / "dataset_flickr30k.json", {"dataset": "flickr30k", "images": [
        {"filename": "1.jpg", "split": "train", "sentences": [{"raw": "a man"}]},
        {"filename": "2.jpg", "split": "train", "sentences": []},
        {"filename": "3.jpg", "split": "holdout", "sentences": [{"raw": "x"}]},
    ]})
    err = pytest.raises(DataError, load_dataset, spec, image_root=tmp_path / "imgs").value
    assert err.row == "images[1]" and "sentences" in str(err)
    data = load_dataset(spec, image_root=tmp_path / "imgs", on_bad_sample="skip")
    assert [s.row for s in data.skipped] == ["images[1]", "images[2]"]
    assert "unknown split" in data.skipped[1].reason
    assert data.records[0].image == str(tmp_path / "imgs" / "1.jpg")


def test_json_formats_do_not_claim_each_other(tmp_path, karpathy_dir, coco_dir):
    assert detect_format(write_json(tmp_path / "s.json", {"splits": {"train": []}})) == "json_splits"
    with pytest.raises(DataError, match="cannot tell"):
        detect_format(write_json(tmp_path / "empty_coco.json", {"images": [], "annotations": []}))
    assert detect_format(karpathy_dir[1]) == "karpathy" and detect_format(coco_dir[1]) == "coco"
