"""The HTTP server through FastAPI's TestClient: every endpoint, and every kind of bad request answered with a 4xx
and a JSON message (never a 500), including oversized uploads and attempts to read files outside the index."""

import io
import json

import pytest
from conftest import make_shapes_csv

LIMIT = 200_000  # a small upload limit, so the test for 413 stays cheap


@pytest.fixture(scope="module")
def model():
    from cliptune.models.registry import load_model

    return load_model("tiny-clip")


@pytest.fixture(scope="module")
def index(model, tmp_path_factory):
    from cliptune.data.load import load_dataset
    from cliptune.search.index import build_index

    records = load_dataset(make_shapes_csv(tmp_path_factory.mktemp("shapes"))).records
    return build_index(model, records, tmp_path_factory.mktemp("idx") / "index", progress=False)


@pytest.fixture(scope="module")
def client(model, index):
    from fastapi.testclient import TestClient

    from cliptune.search.serve import create_app

    return TestClient(create_app(model, index, max_upload_bytes=LIMIT))


@pytest.fixture(scope="module")
def bare(model):
    """A server with a model and no index."""
    from fastapi.testclient import TestClient

    from cliptune.search.serve import create_app

    return TestClient(create_app(model))


def png(path=None, color=(200, 30, 30), size=64) -> bytes:
    from PIL import Image

    if path is not None:
        return open(path, "rb").read()
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(data: bytes, name: str = "q.png"):
    return {"file": (name, data, "image/png")}


def assert_client_error(response, status=None):
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["detail"]


def test_health(client, bare):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny-clip" and health["embed_dim"] == 32
    assert health["index"]["count"] == 64 and health["index"]["ann"] == "flat"
    assert health["match_head"] == "score" and health["threshold"] is None
    assert health["max_upload_bytes"] == LIMIT
    assert bare.get("/health").json()["index"] is None


def test_embed_text(client):
    response = client.post("/embed/text", json={"texts": ["a red circle", "a blue square"]})
    assert response.status_code == 200
    body = response.json()
    assert body["dim"] == 32 and len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert len(vector) == 32 and sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)
    for bad in ({}, {"texts": []}, {"texts": [""]}, {"texts": ["   "]}, {"texts": "a red circle"},
                {"texts": [3]}, {"texts": ["x"] * 257}, {"texts": ["x" * 2001]}):
        assert_client_error(client.post("/embed/text", json=bad), 422)
    assert_client_error(client.post("/embed/text", content=b"{not json", headers={"content-type": "application/json"}))


def test_embed_image_and_search_by_image(client, index):
    picture = png(index.items[7].path)
    response = client.post("/embed/image", files=upload(picture))
    assert response.status_code == 200
    vector = response.json()["embedding"]
    assert len(vector) == 32 and sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)
    result = client.post("/search/image", files=upload(picture), data={"k": "3"}).json()
    assert result["hits"][0]["id"] == 7 and result["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert len(result["hits"]) == 3 and result["query"] is None


def test_garbage_and_empty_uploads_are_400(client):
    for endpoint, extra in (("/embed/image", {}), ("/match", {"text": "a red circle"}),
                            ("/classify", {"labels": ["cat", "dog"]}), ("/search/image", {})):
        for data in (b"this is not an image", b"", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64):
            assert_client_error(client.post(endpoint, files=upload(data), data=extra), 400)
        assert_client_error(client.post(endpoint, data=extra), 422)  # no file at all


def test_oversized_uploads_are_413(client):
    big = png(size=64) + b"\x00" * (LIMIT + 1)
    response = client.post("/embed/image", files=upload(big))
    assert_client_error(response, 413)
    assert "upload limit" in response.json()["detail"]

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n\r\n"
        for _ in range(10):
            yield b"\x00" * (LIMIT // 4)

    response = client.post("/embed/image", content=chunks(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert_client_error(response, 413)


def test_search_by_text(client, index):
    response = client.get("/search", params={"q": "a red circle on dark", "k": 5})
    assert response.status_code == 200
    result = response.json()
    assert result["count"] == 64 and len(result["hits"]) == 5 and result["query"] == "a red circle on dark"
    scores = [hit["score"] for hit in result["hits"]]
    assert scores == sorted(scores, reverse=True)
    first = result["hits"][0]
    assert first["rank"] == 1 and first["image_url"] == f"/image/{first['id']}"
    assert first["name"] == index.items[first["id"]].path.rsplit("/", 1)[-1]
    assert "/" not in first["name"]  # the server never tells a client its file paths


def test_search_errors(client, bare):
    assert_client_error(client.get("/search", params={"q": "   "}), 400)  # empty query
    assert_client_error(client.get("/search", params={"q": ""}), 400)
    assert_client_error(client.get("/search"), 422)  # no query
    for k in (0, -3, 101, 10_000, "ten", 2.5):
        assert_client_error(client.get("/search", params={"q": "a red circle", "k": k}), 422)
    assert_client_error(client.get("/search", params={"q": "x" * 2001}), 422)
    assert_client_error(bare.get("/search", params={"q": "a red circle"}), 404)  # no index loaded
    assert "--index" in bare.get("/search", params={"q": "a red circle"}).json()["detail"]
    assert_client_error(bare.get("/image/0"), 404)
    assert_client_error(bare.post("/search/image", files=upload(png())), 404)


def test_images_are_served_by_item_id_only(client, index):
    response = client.get("/image/3")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert response.content == open(index.items[3].path, "rb").read()
    thumb = client.get("/image/3", params={"size": 32})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb.content)).size) == 32
    assert_client_error(client.get("/image/64"), 404)  # unknown id
    assert_client_error(client.get("/image/99999999999999999999"), 404)
    for bad in ("-1", "abc", "1.5", "3;rm", "0x1"):
        assert_client_error(client.get(f"/image/{bad}"))
    assert_client_error(client.get("/image/3", params={"size": 0}), 422)
    assert_client_error(client.get("/image/3", params={"size": 100_000}), 422)


@pytest.mark.parametrize("path", [
    "/image/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/image/%2e%2e/%2e%2e/etc/passwd",
    "/image/0/../../../../etc/passwd",
    "/image/..\\..\\etc\\passwd",
    "/image//etc/passwd",
    "/image/%2Fetc%2Fpasswd",
    "/static/../../../../etc/passwd",
    "/static/..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/static/%2e%2e/serve.py",
    "/static/..%2Fserve.py",
    "/static//etc/passwd",
])
def test_path_traversal_is_refused(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500, (path, response.status_code)
    assert b"root:" not in response.content and b"def create_app" not in response.content


def test_images_gone_from_disk_are_404(model, tmp_path):
    from fastapi.testclient import TestClient

    from cliptune.search.index import build_index
    from cliptune.search.serve import create_app

    paths = []
    for i, color in enumerate(((255, 0, 0), (0, 255, 0))):
        paths.append(tmp_path / f"{i}.png")
        paths[-1].write_bytes(png(color=color))
    small = build_index(model, paths, tmp_path / "idx", progress=False)
    paths[1].unlink()
    client = TestClient(create_app(model, small))
    assert client.get("/image/0").status_code == 200
    assert_client_error(client.get("/image/1"), 404)
    assert "gone" in client.get("/image/1").json()["detail"]


def test_match(client, model, index, tmp_path):
    from fastapi.testclient import TestClient

    from cliptune.models.match_head import ScoreHead, save_match_head
    from cliptune.search.serve import create_app

    result = client.post("/match", files=upload(png()), data={"text": "a red square"}).json()
    assert -1.0 <= result["score"] <= 1.0 and result["head"] == "score"
    assert result["threshold"] is None and result["match"] is None
    assert_client_error(client.post("/match", files=upload(png()), data={"text": "  "}), 400)
    assert_client_error(client.post("/match", files=upload(png())), 422)

    model_dir = tmp_path / "model"  # a model directory that carries a calibrated threshold
    save_match_head(ScoreHead(threshold=-1.0), model_dir)
    calibrated = TestClient(create_app(model, model_spec=str(model_dir)))
    result = calibrated.post("/match", files=upload(png()), data={"text": "a red square"}).json()
    assert result["threshold"] == -1.0 and result["match"] is True
    overridden = TestClient(create_app(model, model_spec=str(model_dir), threshold=1.01))
    result = overridden.post("/match", files=upload(png()), data={"text": "a red square"}).json()
    assert result["threshold"] == 1.01 and result["match"] is False


def test_classify(client):
    labels = ["red circle", "blue square", "green triangle"]
    response = client.post("/classify", files=upload(png()), data={"labels": labels})
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["template"] == "a photo of a {label}."
    probabilities = [p["probability"] for p in result["predictions"]]
    assert sorted(p["label"] for p in result["predictions"]) == sorted(labels)
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-5) and probabilities == sorted(probabilities, reverse=True)
    as_json = client.post("/classify", files=upload(png()), data={"labels": json.dumps(labels)}).json()
    assert as_json["predictions"] == result["predictions"]
    for bad in ({"labels": [""]}, {"labels": ["cat", "cat"]}, {"labels": "[1, 2]"}, {"labels": "[not json"},
                {"labels": ["cat", "dog"], "template": "no placeholder"}):
        assert_client_error(client.post("/classify", files=upload(png()), data=bad), 400)
    assert_client_error(client.post("/classify", files=upload(png())), 422)  # no labels


def test_openapi_docs_and_page(client):
    spec = client.get("/openapi.json").json()
    for path in ("/health", "/embed/text", "/embed/image", "/search", "/search/image", "/image/{item_id}", "/match",
                 "/classify"):
        assert path in spec["paths"], path
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and 'id="q"' in page.text and "default-src 'self'" in page.headers[
        "content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text  # no CDN, no external requests
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200 and "http://" not in response.text and "https://" not in response.text
    assert client.get("/static/missing.js").status_code == 404
    assert client.get("/no/such/route").status_code == 404
    assert client.delete("/search").status_code == 405


def test_a_model_other_than_the_index_one_is_refused(index):
    from cliptune.errors import UsageError
    from cliptune.models.registry import load_model
    from cliptune.search.serve import create_app

    with pytest.raises(UsageError, match="different model"):
        create_app(load_model("tiny-clip", seed=3), index)
