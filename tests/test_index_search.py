"""The search index: build, reopen, search by text and by image, add, refuse another model, ANN types, atomic writes,
and the `index` / `search` commands."""

import json
from pathlib import Path

import pytest
from conftest import make_shapes_csv


@pytest.fixture(scope="module")
def model():
    from cliptune.models.registry import load_model

    return load_model("tiny-clip")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from cliptune.data.load import load_dataset

    return load_dataset(make_shapes_csv(tmp_path_factory.mktemp("shapes"))).records


@pytest.fixture(scope="module")
def flat(model, records, tmp_path_factory):
    from cliptune.search.index import build_index

    return build_index(model, records, tmp_path_factory.mktemp("indexes") / "flat", progress=False)


def test_build_writes_manifest_items_and_vectors(flat, records, model):
    from cliptune.search.index import open_index

    manifest = json.loads((flat.directory / "index.json").read_text())
    assert manifest["model"] == "tiny-clip" and manifest["ann"] == "flat"
    assert manifest["count"] == len(records) == 64 and manifest["embed_dim"] == 32
    assert len(manifest["fingerprint"]["digest"]) == 16 and len(manifest["fingerprint"]["image"]) == 32
    assert sorted(p.name for p in flat.directory.iterdir() if not p.name.startswith(".")) == sorted(
        ["index.json", manifest["files"]["vectors"], manifest["files"]["items"]])
    reopened = open_index(flat.directory)
    assert len(reopened) == 64 and reopened.model_spec == "tiny-clip"
    assert [item.path for item in reopened.items] == [r.image for r in records]
    assert reopened.items[5].captions == records[5].captions and reopened.items[5].added_at
    reopened.check_model(model)  # the same weights pass the fingerprint check


def test_every_image_is_its_own_top_hit(flat, model, records):
    from cliptune.data.images import load_image
    from cliptune.search.queries import embed_pil

    pictures = [load_image(record.image) for record in records]
    top = flat.search_vectors(embed_pil(model, pictures), k=3)
    assert [hits[0].path for hits in top] == [record.image for record in records]
    assert all(hits[0].score == pytest.approx(1.0, abs=1e-4) for hits in top)
    for record, picture in list(zip(records, pictures))[::8]:  # the one-picture API gives the same answer
        hits = flat.search_image(model, picture, k=3)
        assert hits[0].path == record.image and hits[0].score >= hits[1].score >= hits[2].score


def test_text_search_returns_k_sorted_hits_with_captions(flat, model, records):
    hits = flat.search_text(model, "a red circle on dark", k=10)
    assert len(hits) == 10
    scores = [hit.score for hit in hits]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores)
    score, path, captions, item_id = hits[0]
    assert flat.item(item_id).path == path and captions == flat.item(item_id).captions
    assert len(flat.search_text(model, "a circle", k=1000)) == len(records)  # k is capped at the count


def test_bad_queries_are_usage_errors(flat, model):
    from cliptune.errors import UsageError

    for query in ("", "   "):
        with pytest.raises(UsageError, match="empty"):
            flat.search_text(model, query, k=3)
    for k in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="k must be"):
            flat.search_text(model, "a red circle", k=k)
    with pytest.raises(KeyError):
        flat.item(len(flat))


def test_add_extends_the_index_and_skips_known_images(model, records, tmp_path):
    from cliptune.data.images import load_image
    from cliptune.search.index import build_index, open_index

    index = build_index(model, records[:40], tmp_path / "idx", progress=False)
    first_generation = index.manifest["generation"]
    added = index.add(model, [r.image for r in records[40:]], progress=False)
    assert added == 24 and len(index) == 64
    assert index.add(model, [records[0].image, records[50].image], progress=False) == 0
    reopened = open_index(tmp_path / "idx")
    assert len(reopened) == 64 and reopened.manifest["generation"] != first_generation
    assert reopened.items[50].captions == [] and reopened.items[50].added_at  # added by path: no captions
    hit = reopened.search_image(model, load_image(records[60].image), k=1)[0]
    assert hit.path == records[60].image and hit.id == 60
    assert len(list((tmp_path / "idx").glob("vectors-*.faiss"))) == 1  # the old generation is gone


def test_a_different_model_is_refused_with_a_clear_message(flat, records):
    from cliptune.errors import UsageError
    from cliptune.models.registry import load_model

    other = load_model("tiny-clip", seed=1)
    with pytest.raises(UsageError, match="different model or different weights"):
        flat.add(other, [records[0].image])
    with pytest.raises(UsageError, match="built with model 'tiny-clip'"):
        flat.search_text(other, "a red circle", k=3)


def test_hnsw_and_ivfpq_agree_with_exact_search(flat, model, records, tmp_path):

    from cliptune.search.index import build_index

    hnsw = build_index(model, records, tmp_path / "hnsw", ann="hnsw", progress=False)
    ivfpq = build_index(model, records, tmp_path / "ivfpq", ann="ivfpq", progress=False)
    assert hnsw.manifest["ann_params"]["factory"].startswith("HNSW")
    assert ivfpq.manifest["ann_params"]["factory"] == "Flat"  # 64 images: too few to train IVF-PQ
    assert ivfpq.manifest["ann_params"]["fallback"] == "flat" and "too few" in ivfpq.manifest["ann_params"]["reason"]
    queries = ["a red circle on dark", "a blue square on light", "a white cross", "a green triangle on dark"]
    for query in queries:
        assert hnsw.search_text(model, query, 1)[0].path == flat.search_text(model, query, 1)[0].path
    from cliptune.search.queries import embed_pil
    from cliptune.data.images import load_image

    vectors = embed_pil(model, [load_image(r.image) for r in records])
    exact = [hits[0].id for hits in flat.search_vectors(vectors, 1)]
    assert [hits[0].id for hits in hnsw.search_vectors(vectors, 1)] == exact
    assert [hits[0].id for hits in ivfpq.search_vectors(vectors, 1)] == exact
    assert len(hnsw.search_vectors(vectors[:1], 50)[0]) == 50  # the search beam widens with k


def test_writes_are_atomic_and_never_clobber(model, records, tmp_path, monkeypatch):
    from cliptune.errors import UsageError
    from cliptune.search import index as index_module
    from cliptune.search.index import build_index, open_index

    target = tmp_path / "idx"
    build_index(model, records[:10], target, progress=False)
    with pytest.raises(UsageError, match="--overwrite"):
        build_index(model, records, target, progress=False)
    stray = tmp_path / "photos"
    stray.mkdir()
    (stray / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        build_index(model, records, stray, progress=False)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the manifest")

    monkeypatch.setattr(index_module, "write_text_atomic", crash)
    with pytest.raises(KeyboardInterrupt):
        open_index(target).add(model, [r.image for r in records[10:20]], progress=False)
    monkeypatch.undo()
    assert len(open_index(target)) == 10  # the last complete version is intact
    replaced = build_index(model, records[:20], target, progress=False, overwrite=True)
    assert len(replaced) == 20 and len(list(target.glob("items-*.jsonl"))) == 1
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_open_index_errors_say_what_to_do(tmp_path):
    from cliptune.errors import UsageError
    from cliptune.search.index import open_index

    with pytest.raises(UsageError, match="cliptune index"):
        open_index(tmp_path / "nowhere")
    with pytest.raises(UsageError, match="index.json missing"):
        open_index(tmp_path)


def test_images_folder_collection_checks_files(tmp_path):
    from cliptune.errors import DataError
    from cliptune.search.collection import as_records, checked, image_files

    make_shapes_csv(tmp_path / "pics")
    (tmp_path / "pics" / "broken.png").write_bytes(b"not a png")
    paths = image_files(tmp_path / "pics")
    assert len(paths) == 65 and all(Path(p).is_absolute() for p in paths)
    with pytest.raises(DataError, match="broken.png"):
        checked(as_records(paths))
    good, skipped = checked(as_records(paths), on_bad_sample="skip")
    assert len(good) == 64 and len(skipped) == 1


# ---- the commands -------------------------------------------------------------------------------------------------
def run_cli(*args):
    from typer.testing import CliRunner

    import cliptune.commands.search  # noqa: F401 - registers `index` and `search`
    from cliptune.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_index_and_search_commands(tmp_path, monkeypatch):
    from PIL import Image

    csv_path = make_shapes_csv(tmp_path / "shapes")
    idx = tmp_path / "idx"
    result = run_cli("index", "--model", "tiny-clip", "--data", csv_path, "--split", "all", "--out", idx, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((idx / "index.json").read_text())["count"] == 64

    grid, page = tmp_path / "grid.png", tmp_path / "page.html"
    result = run_cli("search", "--index", idx, "a red circle on dark", "-k", "6", "--grid", grid, "--html", page)
    assert result.exit_code == 0, result.output
    assert "score" in result.output and "top 6 of 64" in result.output
    picture = Image.open(grid)
    assert picture.format == "PNG" and picture.width >= 5 * 160 and len(picture.getcolors(maxcolors=1 << 20)) > 50
    html = page.read_text()
    assert html.count("data:image/jpeg;base64,") == 6 and "a red circle on dark" in html
    assert "http://" not in html and "https://" not in html  # self-contained

    query = tmp_path / "shapes" / "blue_cross_dark.png"
    result = run_cli("search", "--index", idx, "--image", query, "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    assert payload["hits"][0]["path"] == str(query) and payload["hits"][0]["rank"] == 1

    more = tmp_path / "more"
    more.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(more / "green.png")
    result = run_cli("index", "--images", more, "--out", idx, "--add", "-q")  # the model comes from the index
    assert result.exit_code == 0, result.output
    assert json.loads((idx / "index.json").read_text())["count"] == 65

    result = run_cli("search", "--index", idx, "-k", "3")
    assert result.exit_code != 0 and "text query or --image" in str(result.exception)
    result = run_cli("search", "--index", idx, "a circle", "--model", "nonexistent-model")
    assert result.exit_code != 0 and "unknown model" in str(result.exception)


def test_ivfpq_plan_follows_the_collection_size(capfd):
    """Planned from n: exact below the size PQ can be trained on (no FAISS training warnings), IVF-PQ with a refine
    step above it, with recall@10 against exact search measured on clustered vectors."""
    import faiss
    import numpy as np

    from cliptune.search.ann import MIN_IVFPQ_N, new_faiss_index, tune

    small, params = new_faiss_index("ivfpq", 64, 3800)
    assert params["fallback"] == "flat" and small.is_trained
    n, dim = MIN_IVFPQ_N, 32
    big, params = new_faiss_index("ivfpq", dim, n)
    nlist = int(params["factory"].split(",")[0][3:])
    assert nlist == n // 39 and params["nprobe"] == max(16, nlist // 8) and "Refine(SQfp16)" in params["factory"]
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((200, dim)).astype("float32")
    x = centres[rng.integers(0, 200, n + 100)] + 0.3 * rng.standard_normal((n + 100, dim)).astype("float32")
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    data, queries = x[:n], x[n:]
    big.train(data)
    big.add(data)
    tune(big, "ivfpq", params, 10)
    exact = faiss.IndexFlatIP(dim)
    exact.add(data)
    _, want = exact.search(queries, 10)
    _, got = big.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want)]) >= 0.95
    assert "WARNING" not in capfd.readouterr().err  # enough training points for every centroid


def test_grid_titles_in_other_scripts_use_a_font_with_their_glyphs(tmp_path):
    from PIL import Image, ImageFont

    from cliptune.search.fonts import _codepoints, font_path_for
    from cliptune.search.grid import render_grid

    for title in ("красный круг", "κόκκινος κύκλος", "a red circle"):
        path = font_path_for(title)
        assert path and {ord(c) for c in title if not c.isspace()} <= _codepoints(path), title
    # the title is drawn with glyphs, not Pillow's default font (which has none for Cyrillic: boxes)
    out = render_grid([], tmp_path / "grid.png", title="красный круг")
    band = Image.open(out).convert("L").crop((0, 0, 200, 30))
    tofu = Image.new("L", band.size, 255)
    from PIL import ImageDraw

    ImageDraw.Draw(tofu).text((8, 8), "красный круг", font=ImageFont.load_default(size=16), fill=30)
    assert band.tobytes() != tofu.tobytes()
