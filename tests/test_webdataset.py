"""WebDataset shards: csv → `cliptune data to-wds` → load_dataset(pattern) round trip, in-place image reads,
bad samples named by shard and key, interchange with the webdataset library, and the stream's guarantees."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_inprocess import run_cli
from cliptune.data.formats import detect_format
from cliptune.data.images import check_image, load_image
from cliptune.data.load import load_dataset
from cliptune.data.streaming import Reader, WebDatasetStream
from cliptune.data.tar_members import SHARDS, member_ref
from cliptune.data.to_wds import write_shards
from cliptune.errors import DataError, UsageError


def photo(path: Path, seed: int, size=(24, 16)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def png_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((6, 6, 3), seed * 20 % 255, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_shards(folder: Path, n_shards: int, per_shard: int, caption=lambda i: f"caption {i}") -> list[Path]:
    shards, i = [], 0
    for s in range(n_shards):
        members = {}
        for _ in range(per_shard):
            members[f"{i:05d}.png"] = png_bytes(i)
            members[f"{i:05d}.json"] = json.dumps({"captions": [caption(i)], "label": i % 2}).encode()
            i += 1
        shards.append(make_tar(folder / f"part-{s:03d}.tar", members))
    return shards


@pytest.fixture
def pairs_csv(tmp_path):
    photo(tmp_path / "img" / "a.jpg", 1)
    photo(tmp_path / "img" / "b.png", 2)
    photo(tmp_path / "img" / "c.webp", 3, size=(10, 30))
    photo(tmp_path / "img" / "d.png", 4)
    spec = tmp_path / "pairs.csv"
    spec.write_text('image_path,caption,label\nimg/a.jpg,"a cat, sitting\non a mat",1\nimg/b.png,a dog,0\n'
                    "img/a.jpg,another cat caption,1\nimg/c.webp,a tall bird,1\nimg/d.png,café,0\n")
    return spec


# ---- round trip ------------------------------------------------------------------------------------------------

def test_csv_to_wds_round_trip(monkeypatch, tmp_path, pairs_csv, capsys):
    out = tmp_path / "shards"
    code, stdout, _ = run_cli(monkeypatch, capsys, "data", "to-wds", pairs_csv, "--out", out, "--shard-size", "2")
    assert code == 0 and "train" in stdout
    source = load_dataset(pairs_csv)
    names = sorted(p.name for p in out.iterdir())
    assert "manifest.json" in names and not [n for n in names if n.startswith(".")]  # no temp files left
    manifest = json.loads((out / "manifest.json").read_text())

    patterns = [str(out / info["pattern"]) for info in manifest["splits"].values()]
    assert any("{" in p for p in patterns) or len(source.split("train")) <= 2
    for pattern, split in zip(patterns, manifest["splits"]):
        assert detect_format(pattern) == "webdataset"
        back = load_dataset(pattern)
        expected = source.split(split)
        assert [r.captions for r in back.records] == [r.captions for r in expected]
        assert [r.label for r in back.records] == [r.label for r in expected]
        assert {r.split for r in back.records} == {split}
        for got, want in zip(back.records, expected):
            assert got.image.startswith(str(out)) and "#" in got.image
            assert got.meta["source"] == want.image
            assert np.array_equal(np.asarray(load_image(got.image)), np.asarray(load_image(want.image)))
    whole = load_dataset(out)  # the folder of shards, every split at once
    assert sorted(map(tuple, (r.captions for r in whole.records))) == \
        sorted(map(tuple, (r.captions for r in source.records)))


def test_to_wds_copies_bytes_reencodes_on_request_and_replaces_stale_shards(tmp_path, pairs_csv):
    data = load_dataset(pairs_csv, split_ratios=(1, 0, 0))
    out = tmp_path / "out"
    first = write_shards(data, out, shard_size=1)
    assert len(first.splits["train"].shards) == 4
    with tarfile.open(out / "train-000000.tar") as tar:
        names = tar.getnames()
        image_name = next(n for n in names if not n.endswith((".txt", ".json")))
        stored = tar.extractfile(image_name).read()
        meta = json.loads(tar.extractfile(names[2]).read())
    original = Path(meta["source"]).read_bytes()
    assert stored == original  # copied as-is
    assert meta["captions"] == data.records[0].captions

    again = write_shards(data, out, shard_size=3, reencode="jpg", quality=80)
    assert again.removed == ["train-000002.tar", "train-000003.tar"]
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar", "train-000001.tar"]
    back = load_dataset(out / "train-{000000..000001}.tar")
    assert all(r.image.endswith(".jpg") for r in back.records)
    assert load_image(back.records[2].image).size == (10, 30)
    with pytest.raises(UsageError, match="reencode"):
        write_shards(data, out, shard_size=3, reencode="gif")


# ---- in-place reads --------------------------------------------------------------------------------------------

def test_member_refs_load_in_place_and_notice_changes(tmp_path):
    shard = make_tar(tmp_path / "s.tar", {"k1.png": png_bytes(1), "k1.txt": b"x"})
    ref = member_ref(shard, "k1.png")
    assert load_image(ref).size == (6, 6) and check_image(ref) is None
    missing = member_ref(shard, "nope.png")
    err = pytest.raises(DataError, load_image, missing).value
    assert err.file == missing and "no member 'nope.png'" in str(err)
    assert "no member" in check_image(missing)
    make_tar(shard, {"k1.png": png_bytes(9), "k2.png": png_bytes(2)})  # rewritten: reindexed, not stale
    assert load_image(member_ref(shard, "k2.png")).size == (6, 6)
    assert "not found" in check_image(member_ref(tmp_path / "gone.tar", "k1.png"))
    SHARDS.close()


def test_shard_patterns_and_missing_shards(tmp_path):
    make_shards(tmp_path / "wds", 3, 2)
    data = load_dataset(str(tmp_path / "wds" / "part-{000..002}.tar"))
    assert len(data.records) == 6 and data.records[0].sources[0][1] == "00000"
    assert len(load_dataset(str(tmp_path / "wds" / "part-*.tar")).records) == 6
    err = pytest.raises(DataError, load_dataset, str(tmp_path / "wds" / "part-{000..004}.tar")).value
    assert "part-003.tar does not exist" in str(err) and "2 of 5" in str(err)


# ---- bad samples -----------------------------------------------------------------------------------------------

@pytest.fixture
def dirty_shard(tmp_path):
    return make_tar(tmp_path / "dirty-000000.tar", {
        "good.png": png_bytes(1), "good.txt": b"a good caption",
        "nocap.png": png_bytes(2),
        "noimg.txt": b"an orphan caption", "noimg.cls": b"3",
        "broken.png": b"\x89PNG\r\n\x1a\n not really", "broken.txt": b"broken image",
        "badjson.png": png_bytes(3), "badjson.json": b'{"captions": [1, 2]}',
    })


def test_tar_sample_missing_caption_or_image_names_shard_and_key(dirty_shard):
    err = pytest.raises(DataError, load_dataset, dirty_shard).value
    assert err.file == str(dirty_shard) and err.row == "nocap" and "no caption" in str(err)
    assert f"{dirty_shard}, row nocap" in str(err)
    data = load_dataset(dirty_shard, on_bad_sample="skip")
    reasons = {s.row: s.reason for s in data.skipped}
    assert set(reasons) == {"nocap", "noimg", "broken", "badjson"}
    assert "no image" in reasons["noimg"] and "noimg.cls" in reasons["noimg"]
    assert "not an image" in reasons["broken"] or "decode" in reasons["broken"]
    assert "list of captions" in reasons["badjson"]
    assert [r.captions for r in data.records] == [["a good caption"]]


def test_image_and_caption_keys_are_configurable(tmp_path):
    shard = make_tar(tmp_path / "laion.tar", {"0.webp": png_bytes(1), "0.jpg": png_bytes(2),
                                              "0.json": json.dumps({"text": "from json"}).encode(),
                                              "0.txt": b"from txt"})
    default = load_dataset(shard).records[0]
    assert default.image.endswith("0.jpg") and default.captions == ["from txt"]
    custom = load_dataset(shard, format_options={"image_key": "webp", "caption_key": "json:text"}).records[0]
    assert custom.image.endswith("0.webp") and custom.captions == ["from json"]
    with pytest.raises(UsageError, match="takes no option"):
        load_dataset(shard, format_options={"image_keys": "jpg"})
    csv = tmp_path / "x.csv"  # unset (None) options are no options: a config can always pass them
    Image.open(io.BytesIO(png_bytes(1))).save(tmp_path / "x.png")
    csv.write_text("image_path,text\nx.png,hello\n")
    assert load_dataset(csv, format_options={"image_key": None, "caption_key": None}).records
    with pytest.raises(UsageError, match="format 'csv' takes no option"):
        load_dataset(csv, format_options={"image_key": "jpg"})


def test_webdataset_library_interchange(tmp_path, pairs_csv):
    import webdataset as wds

    out = tmp_path / "ours"
    write_shards(load_dataset(pairs_csv, split_ratios=(1, 0, 0)), out, shard_size=10)
    samples = list(wds.WebDataset(str(out / "train-000000.tar"), shardshuffle=False))
    assert len(samples) == 4 and {"txt", "json"} <= set(samples[0])

    theirs = tmp_path / "theirs.tar"
    with wds.TarWriter(str(theirs)) as sink:
        for i in range(3):
            sink.write({"__key__": f"s{i}", "png": png_bytes(i), "json": {"caption": f"cap {i}"}})
    assert [r.captions for r in load_dataset(theirs).records] == [["cap 0"], ["cap 1"], ["cap 2"]]


# ---- streaming -------------------------------------------------------------------------------------------------

def keys_of(stream: WebDatasetStream, reader: Reader) -> list[str]:
    return [s.key.rsplit("#", 1)[1] for s in stream.samples(reader)]


def readers(world: int, workers: int) -> list[Reader]:
    return [Reader(r * workers + w, world * workers, r, world, w, workers)
            for r in range(world) for w in range(workers)]


@pytest.mark.parametrize("n_shards", [6, 3])  # more shards than readers, and fewer
def test_stream_reads_every_sample_once_per_epoch_across_ranks_and_workers(tmp_path, n_shards):
    make_shards(tmp_path, n_shards, 5)
    stream = WebDatasetStream(str(tmp_path / f"part-{{000..{n_shards - 1:03d}}}.tar"), batch_size=4,
                              shuffle_buffer=8, seed=3)
    for epoch in (0, 1):
        stream.set_epoch(epoch)
        seen = [k for reader in readers(2, 2) for k in keys_of(stream, reader)]
        assert Counter(seen) == Counter(f"{i:05d}" for i in range(5 * n_shards))
    stream.set_epoch(0)
    first = keys_of(stream, readers(1, 1)[0])
    assert first == keys_of(stream, readers(1, 1)[0])  # deterministic
    stream.set_epoch(1)
    assert first != keys_of(stream, readers(1, 1)[0])  # reshuffled per epoch


def test_stream_batches_have_no_duplicate_captions(tmp_path):
    make_shards(tmp_path, 2, 20, caption=lambda i: "the same caption" if i % 3 == 0 else f"caption {i}")
    stream = WebDatasetStream(str(tmp_path / "part-{000..001}.tar"), batch_size=5, shuffle_buffer=0,
                              shuffle_shards=False, transform=lambda im: torch.from_numpy(np.array(im)).float())
    batches = list(stream)
    assert all(len(set(b["caption"])) == len(b["caption"]) == 5 for b in batches)
    assert batches[0]["image"].shape == (5, 6, 6, 3)
    used = sum(len(b["caption"]) for b in batches)
    assert used + sum(b["dropped"] for b in batches) <= 40 and used >= 25

    plain = WebDatasetStream(str(tmp_path / "part-{000..001}.tar"), batch_size=5, shuffle_buffer=0,
                             shuffle_shards=False, no_duplicates=False)
    assert any(len(set(b["caption"])) < 5 for b in plain)


def test_resampled_stream_has_a_fixed_epoch_length_with_dataloader_workers(tmp_path):
    make_shards(tmp_path, 2, 4)
    stream = WebDatasetStream(str(tmp_path / "part-*.tar"), batch_size=3, resampled=True, epoch_length=20,
                              num_workers=2, shuffle_buffer=4, transform=lambda im: torch.zeros(3, 2, 2))
    assert stream.batches_per_worker() == 4 and len(stream) == 8  # ceil(20 / 3) = 7 per rank: 4 per worker
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=2)
    batches = list(loader)
    assert len(batches) == 8 and all(b["image"].shape == (3, 3, 2, 2) for b in batches)
    with pytest.raises(UsageError, match="epoch_length needs resampled"):
        WebDatasetStream(str(tmp_path / "part-*.tar"), batch_size=3, epoch_length=20)
    with pytest.raises(TypeError):
        len(WebDatasetStream(str(tmp_path / "part-*.tar"), batch_size=3))


def test_stream_bad_samples_error_or_are_counted(dirty_shard, tmp_path):
    err = pytest.raises(DataError, list, WebDatasetStream(str(dirty_shard), batch_size=1, shuffle_buffer=0)).value
    assert err.file == str(dirty_shard) and err.row == "nocap"
    stream = WebDatasetStream(str(dirty_shard), batch_size=1, shuffle_buffer=0, on_bad_sample="skip",
                              shuffle_shards=False)
    batches = list(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=1))
    assert [b["caption"] for b in batches] == [["a good caption"]]
    assert stream.skipped_count == 4  # counted in the worker, read here

    reordered = make_tar(dirty_shard.parent / "r.tar", {
        "nocap.png": png_bytes(2), "ok.png": png_bytes(1), "ok.txt": b"fine",
        "noimg.txt": b"x", "ok2.png": png_bytes(3), "ok2.txt": b"also fine"})
    batches = list(WebDatasetStream(str(reordered), batch_size=1, shuffle_buffer=0, on_bad_sample="skip"))
    assert [len(b["skipped"]) for b in batches] == [1, 1]  # each rides on the next batch
    assert "nocap" in batches[0]["skipped"][0] and "noimg" in batches[1]["skipped"][0]

    cut = tmp_path / "cut.tar"
    cut.write_bytes(make_shards(tmp_path / "whole", 1, 4)[0].read_bytes()[:3000])
    err = pytest.raises(DataError, list, WebDatasetStream(str(cut), batch_size=1, shuffle_buffer=0)).value
    assert err.file == str(cut) and "truncated" in str(err)
