"""Server limits that hold against hostile clients: the pixel limit (decided from the header, before decoding),
decoding inside the work slots, the memory one huge upload costs the server process, a slowloris attack on
loopback, HEAD wherever GET works, /docs without a network, every returned status in the OpenAPI schema, and
images added to the index while serving."""

import io
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import make_shapes_csv

ROOT = Path(__file__).resolve().parents[1]


def huge_png(side: int = 10_000) -> bytes:
    """A valid grey PNG of side × side pixels, compressed to a few hundred KB, made without holding it decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    packer = zlib.compressobj(9)
    row = b"\x00" + b"\x80" * side
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def small_png(color=(200, 30, 30), size=64) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model():
    from cliptune.models.registry import load_model

    return load_model("tiny-clip")


@pytest.fixture(scope="module")
def index_dir(model, tmp_path_factory):
    from cliptune.data.load import load_dataset
    from cliptune.search.index import build_index

    records = load_dataset(make_shapes_csv(tmp_path_factory.mktemp("shapes"))).records
    out = tmp_path_factory.mktemp("idx") / "index"
    build_index(model, records[:32], out, progress=False)
    return out, records


@pytest.fixture(scope="module")
def client(model, index_dir):
    from fastapi.testclient import TestClient

    from cliptune.search.index import open_index
    from cliptune.search.serve import create_app

    return TestClient(create_app(model, open_index(index_dir[0]), max_upload_bytes=2_000_000))


# ---- pixel limit ----------------------------------------------------------------------------------------------------
def test_pixel_limit_is_sized_for_the_model_and_read_from_the_header():
    from fastapi import HTTPException
    from PIL import Image

    from cliptune.search.decode import decode_bytes, default_pixel_limit

    assert default_pixel_limit(224) == 3584 ** 2 and default_pixel_limit(64) == 2048 ** 2
    with pytest.raises(HTTPException) as err:
        decode_bytes(huge_png(), default_pixel_limit(224), 224)
    assert err.value.status_code == 400 and "10000x10000" in err.value.detail and "--max-pixels" in err.value.detail
    # a big JPEG (a camera photo) is decoded at a reduced scale, within the limit
    buffer = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 120, 200)).save(buffer, format="JPEG")
    picture = decode_bytes(buffer.getvalue(), 1000 * 1000, 224)
    assert picture.mode == "RGB" and picture.size == (1000, 750)  # 1/4: the smallest scale still ≥ 448 px a side


def test_huge_png_is_refused_by_the_server(client):
    response = client.post("/embed/image", files={"file": ("big.png", huge_png(), "image/png")})
    assert response.status_code == 400 and "pixel limit" in response.json()["detail"]
    assert client.get("/health").json()["pixel_limit"] == 2048 ** 2  # tiny-clip: 64 px input, the 2048 px floor


# ---- decoding inside the work slots ---------------------------------------------------------------------------------
def test_decoding_runs_inside_the_concurrency_limit(model, monkeypatch):
    from fastapi.testclient import TestClient

    from cliptune.search import serve as serve_module
    from cliptune.search.limits import ServerLimits

    active, peak, lock = [0], [0], threading.Lock()
    real = serve_module.decode_upload

    def slow_decode(*args, **kwargs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        try:
            return real(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(serve_module, "decode_upload", slow_decode)
    app = serve_module.create_app(model, limits=ServerLimits(max_concurrent=1, busy_timeout_s=0.1))
    with TestClient(app) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda _: client.post("/embed/image", files={"file": ("a.png", small_png())})
                                 .status_code, range(4)))
    assert peak[0] == 1  # never two decodes at once
    assert 200 in statuses and 503 in statuses  # the rest waited 0.1 s for the slot and were told to retry
    assert set(statuses) <= {200, 503}


# ---- memory of one huge upload, measured on a real server process ----------------------------------------------------
SERVER = """
import sys, socket, uvicorn
from cliptune.models.registry import load_model
from cliptune.search.limits import ServerLimits
from cliptune.search.serve import create_app, uvicorn_options
limits = ServerLimits(max_connections=int(sys.argv[1]), header_timeout_s=float(sys.argv[2]))
sock = socket.socket(); sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
config = uvicorn.Config(create_app(load_model("tiny-clip"), limits=limits), log_level="warning",
                        **uvicorn_options(limits))
uvicorn.Server(config).run(sockets=[sock])
"""


@pytest.fixture
def server_process():
    """A `cliptune` server in its own process on 127.0.0.1: (base url, pid). Stopped after the test."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", SERVER, "16", "2"], stdout=subprocess.PIPE, env=env,
                               text=True)
    try:
        port = int(process.stdout.readline())
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5).read()
                break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline and process.poll() is None, "server did not start"
                time.sleep(0.2)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=20)


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def _post_image(url: str, data: bytes) -> int:
    boundary = "cliptuneboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/embed/image", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        return urllib.request.urlopen(request, timeout=60).status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_a_huge_upload_does_not_cost_the_server_its_memory(server_process):
    url, pid = server_process
    for _ in range(3):  # warm up: imports, allocator pools, the model's first forward pass
        assert _post_image(url, small_png()) == 200
    before = _peak_rss_mb(pid)
    assert _post_image(url, huge_png()) == 400  # 10,000 × 10,000: 300 MB as RGB if decoded
    grown = _peak_rss_mb(pid) - before
    assert grown < 100, f"peak RSS grew by {grown:.0f} MB for one upload"


# ---- slow clients ---------------------------------------------------------------------------------------------------
def test_slowloris_cannot_starve_health(server_process):
    """60 connections that send half a request head and stall (cap 16, header deadline 2 s), all on loopback; the
    attack is bounded (60 sockets, a few seconds) and every socket is closed at the end."""
    url, _ = server_process
    port = int(url.rsplit(":", 1)[1])
    stalled = []
    try:
        for _ in range(60):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            stalled.append(sock)
        started = time.monotonic()
        health = urllib.request.urlopen(url + "/health", timeout=5)
        assert health.status == 200 and time.monotonic() - started < 2  # answered while the attack holds
        # the server let go of the excess at once, and of the rest after the 2 s header deadline
        deadline = time.monotonic() + 6
        open_ = stalled
        while open_ and time.monotonic() < deadline:
            open_ = [s for s in open_ if not _closed_by_peer(s)]
            time.sleep(0.2)
        assert not open_, f"{len(open_)} stalled connections still open after the header deadline"
    finally:
        for sock in stalled:
            sock.close()
    assert urllib.request.urlopen(url + "/health", timeout=5).status == 200


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


# ---- HEAD, docs, OpenAPI --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/health", "/search?q=a+red+circle", "/image/0", "/image/0?size=64",
                                  "/static/app.js", "/docs", "/openapi.json", "/docs-assets/swagger-ui.css",
                                  "/image/99999", "/search?q=%20"])
def test_head_works_where_get_does(client, path):
    got, head = client.get(path), client.head(path)
    assert head.status_code == got.status_code and head.content == b""
    assert head.headers.get("content-type") == got.headers.get("content-type")


def test_docs_work_offline(client):
    page = client.get("/docs")
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text and "http://" not in page.text
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        response = client.get(asset)
        assert response.status_code == 200 and len(response.content) > 10_000, asset
    assert client.get("/openapi.json").status_code == 200


def test_openapi_documents_every_status_the_server_returns(client):
    """Drive every operation with good and bad input; each status it answers must be in its OpenAPI entry."""
    spec = client.get("/openapi.json").json()["paths"]
    big = b"x" * 2_100_000
    bad_image = {"file": ("x.png", b"not an image", "image/png")}
    cases = [
        ("/health", "get", {}), ("/search", "get", {"params": {"q": "a red circle"}}),
        ("/search", "get", {"params": {"q": " "}}), ("/search", "get", {"params": {"k": 0, "q": "x"}}),
        ("/search", "get", {}), ("/image/{item_id}", "get", {"url": "/image/0"}),
        ("/image/{item_id}", "get", {"url": "/image/4000"}), ("/image/{item_id}", "get", {"url": "/image/-1"}),
        ("/embed/text", "post", {"json": {"texts": ["a"]}}), ("/embed/text", "post", {"json": {"texts": []}}),
        ("/embed/text", "post", {"content": big, "headers": {"content-type": "application/json"}}),
        ("/embed/image", "post", {"files": {"file": ("a.png", small_png())}}),
        ("/embed/image", "post", {"files": bad_image}), ("/embed/image", "post", {"files": {"file": ("b", big)}}),
        ("/embed/image", "post", {"files": {"file": ("h.png", huge_png(3000))}}),
        ("/search/image", "post", {"files": {"file": ("a.png", small_png())}}),
        ("/search/image", "post", {"files": bad_image}),
        ("/match", "post", {"files": {"file": ("a.png", small_png())}, "data": {"text": "a red square"}}),
        ("/match", "post", {"files": {"file": ("a.png", small_png())}, "data": {"text": " "}}),
        ("/match", "post", {"files": bad_image, "data": {"text": "x"}}),
        ("/classify", "post", {"files": {"file": ("a.png", small_png())}, "data": {"labels": ["cat", "dog"]}}),
        ("/classify", "post", {"files": {"file": ("a.png", small_png())}, "data": {"labels": ["cat", "cat"]}}),
        ("/classify", "post", {"files": bad_image, "data": {"labels": ["cat", "dog"]}}),
    ]
    seen = set()
    for path, method, kwargs in cases:
        url = kwargs.pop("url", path)
        status = client.request(method.upper(), url, **kwargs).status_code
        seen.add(status)
        documented = {int(code) for code in spec[path][method]["responses"]}
        assert status in documented, (method, url, status, sorted(documented))
    assert {200, 400, 404, 413, 422} <= seen  # the cases do reach every kind of answer


# ---- the index grows while serving ----------------------------------------------------------------------------------
def test_images_added_while_serving_are_found(model, index_dir, monkeypatch, tmp_path):
    import shutil

    from fastapi.testclient import TestClient

    from cliptune.search import serve as serve_module
    from cliptune.search.index import open_index

    folder, records = index_dir
    copy = tmp_path / "index"
    shutil.copytree(folder, copy)
    monkeypatch.setattr(serve_module, "INDEX_CHECK_INTERVAL_S", 0.0)
    client = TestClient(serve_module.create_app(model, open_index(copy)))
    assert client.get("/health").json()["index"]["count"] == 32
    assert open_index(copy).add(model, records[32:40], progress=False) == 8  # another process: `index --add`
    hits = client.get("/search", params={"q": "a red circle", "k": 100}).json()
    assert hits["count"] == 40 and len(hits["hits"]) == 40
    assert client.get("/image/39").status_code == 200
