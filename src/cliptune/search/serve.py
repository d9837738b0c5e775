"""The HTTP server: a model (and optionally an index) behind a small JSON API and a search page.

Safe by default: it binds 127.0.0.1, bounds every input (upload size, k, number of texts and labels), serves
pictures only from the index's own items by id (a client never names a path), and answers bad requests with a 4xx
and a JSON `detail` message instead of a 500. `create_app` builds the app for tests and embedding; `serve` runs it
with uvicorn.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import torch
from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StringConstraints

from cliptune import __version__
from cliptune.errors import CliptuneError, UsageError
from cliptune.search.decode import decode_upload, default_pixel_limit
from cliptune.search.docs import mount_offline_docs
from cliptune.search.head import HeadAsGet
from cliptune.search.limits import BodyLimit, ServerLimits, WorkSlots
from cliptune.search.queries import embed_pil, embed_texts, logit_scale

if TYPE_CHECKING:
    from cliptune.models.base import DualEncoder
    from cliptune.models.match_head import MatchHead
    from cliptune.search.index import Hit, Index

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_MB = 10.0
INDEX_CHECK_INTERVAL_S = 1.0  # how often a request may look for images added to the index by another process
MAX_K = 100
MAX_TEXTS = 256
MAX_LABELS = 1000
MAX_TEXT_CHARS = 2000
PROMPT = "a photo of a {label}."
THUMB_SIZES = (16, 1024)
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
               "frame-ancestors 'none'; form-action 'self'")

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_TEXT_CHARS)]


# ---- request and response shapes (they are also the OpenAPI schema) --------------------------------------------------
class EmbedTextRequest(BaseModel):
    texts: list[Text] = Field(..., min_length=1, max_length=MAX_TEXTS, description="Texts to embed.")


class Embeddings(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]] = Field(description="One L2-normalised vector per input.")


class Embedding(BaseModel):
    model: str
    dim: int
    embedding: list[float] = Field(description="L2-normalised image embedding.")


class SearchHit(BaseModel):
    rank: int
    id: int = Field(description="Item id; the picture is at image_url.")
    score: float = Field(description="Cosine similarity to the query (higher is closer).")
    name: str = Field(description="File name of the image.")
    captions: list[str]
    image_url: str
    thumbnail_url: str


class SearchResult(BaseModel):
    query: Optional[str]
    k: int
    count: int = Field(description="Images in the index.")
    hits: list[SearchHit]


class MatchResult(BaseModel):
    text: str
    score: float = Field(description="The match head's score: cosine similarity (head 'score') or match "
                                     "probability (head 'classifier').")
    head: str = Field(description="The model's match head (from its match.json; 'score' when it has none).")
    threshold: Optional[float] = Field(description="The threshold saved with the model (or given to the server).")
    match: Optional[bool] = Field(description="score >= threshold; null without a threshold.")


class Prediction(BaseModel):
    label: str
    probability: float
    score: float = Field(description="Cosine similarity of the image and the label's prompt.")


class Classification(BaseModel):
    template: str
    predictions: list[Prediction] = Field(description="Labels, most probable first.")


class Health(BaseModel):
    status: str
    version: str
    model: str
    embed_dim: int
    index: Optional[dict[str, Any]]
    match_head: str
    threshold: Optional[float]
    max_upload_bytes: int
    pixel_limit: int = Field(description="Largest picture accepted, in pixels (width × height).")


# ---- input checks ---------------------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    detail: str = Field(description="What was wrong with the request, or why the server cannot answer it now.")


ERROR_TEXT = {400: "Bad input (empty query, unreadable image, image over the pixel limit, bad labels).",
              404: "No index on this server, or no such item.",
              413: "Request body over the upload limit.",
              503: "Server busy: no free slot for decoding and the model in time; retry later."}


def errors(*codes: int) -> dict[int, dict[str, Any]]:
    """OpenAPI `responses` for the error statuses an endpoint answers (each with a JSON `detail`)."""
    return {code: {"model": ErrorDetail, "description": ERROR_TEXT[code]} for code in codes}


def parse_form_labels(labels: list[str]) -> list[str]:
    """Labels from repeated form fields, or from one field holding a JSON array; checked like `--labels`."""
    from cliptune.inference.zeroshot import parse_labels

    if len(labels) == 1 and labels[0].strip().startswith("["):
        try:
            parsed = json.loads(labels[0])
        except ValueError:
            raise HTTPException(400, "labels: not a valid JSON array") from None
        if not isinstance(parsed, list) or not all(isinstance(label, str) for label in parsed):
            raise HTTPException(400, "labels: the JSON array must hold strings")
        labels = parsed
    if len(labels) > MAX_LABELS:
        raise HTTPException(400, f"labels: at most {MAX_LABELS}, got {len(labels)}")
    return parse_labels(labels)  # empty or repeated names: UsageError, answered as 400


def _hits(hits: list["Hit"]) -> list[SearchHit]:
    return [SearchHit(rank=rank, id=hit.id, score=hit.score, name=Path(hit.path).name, captions=hit.captions,
                      image_url=f"/image/{hit.id}", thumbnail_url=f"/image/{hit.id}?size=256")
            for rank, hit in enumerate(hits, 1)]


# ---- the app --------------------------------------------------------------------------------------------------------
def _match_head(spec: str) -> "MatchHead":
    """The head saved with the model (`match.json` in a model or run directory), else plain cosine similarity."""
    from cliptune.models.match_head import ScoreHead, load_match_head

    head = load_match_head(spec) if Path(spec).expanduser().is_dir() else None
    return (head if head is not None else ScoreHead()).eval()


def _search_routes(app: FastAPI, model: "DualEncoder", index: "Index | None", slots: WorkSlots, picture) -> None:
    """/search, /search/image and /image/{id}, answered from `index` (404 without one); images added by
    `cliptune index --add` are picked up every INDEX_CHECK_INTERVAL_S."""
    last_index_check = [0.0]

    def need_index() -> "Index":
        if index is None:
            raise HTTPException(404, "this server has no index: start it with `cliptune serve --index DIR`")
        now = time.monotonic()
        if now - last_index_check[0] >= INDEX_CHECK_INTERVAL_S:  # images added by `cliptune index --add`
            last_index_check[0] = now
            index.refresh()
        return index

    @app.get("/search", response_model=SearchResult, tags=["search"], responses=errors(400, 404, 413, 503))
    def search(q: str = Query(..., max_length=MAX_TEXT_CHARS, description="What to look for, in words."),
               k: int = Query(10, ge=1, le=MAX_K, description="How many results.")) -> SearchResult:
        found = need_index()
        if not q.strip():
            raise HTTPException(400, "empty query: type some words")
        with slots.hold():
            hits = _hits(found.search_text(model, q, k))
        return SearchResult(query=q, k=k, count=len(found), hits=hits)

    @app.post("/search/image", response_model=SearchResult, tags=["search"], responses=errors(400, 404, 413, 503))
    def search_image(file: UploadFile = File(..., description="A query image."),
                     k: int = Form(10, ge=1, le=MAX_K)) -> SearchResult:
        found = need_index()
        with slots.hold():
            hits = _hits(found.search_image(model, picture(file), k))
        return SearchResult(query=None, k=k, count=len(found), hits=hits)

    @app.get("/image/{item_id}", tags=["search"], response_class=Response,
             responses={200: {"content": {"image/*": {}}}, **errors(404, 413, 503)})
    def image(item_id: int = PathParam(..., ge=0, description="Item id from a search hit."),
              size: Optional[int] = Query(None, ge=THUMB_SIZES[0], le=THUMB_SIZES[1],
                                          description="Return a JPEG thumbnail at most this many pixels wide.")):
        found = need_index()
        try:
            item = found.item(item_id)
        except KeyError:
            raise HTTPException(404, f"no item {item_id} (the index holds ids 0..{len(found) - 1})") from None
        if not os.path.isfile(item.path):
            raise HTTPException(404, f"the image file of item {item_id} is gone from disk")
        if size is None:
            return FileResponse(item.path)
        from cliptune.search.thumbs import encode, thumbnail

        with slots.hold():
            data = encode(thumbnail(item.path, size))
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "max-age=3600"})


def _task_routes(app: FastAPI, model: "DualEncoder", head: "MatchHead", slots: WorkSlots, picture) -> None:
    """/match (the match head at its threshold) and /classify (zero-shot over given labels)."""

    @app.post("/match", response_model=MatchResult, tags=["match"], responses=errors(400, 413, 503))
    def match(file: UploadFile = File(..., description="An image file."),
              text: str = Form(..., max_length=MAX_TEXT_CHARS, description="A caption to check against it.")
              ) -> MatchResult:
        if not text.strip():
            raise HTTPException(400, "empty text: give the caption to check")
        with slots.hold(), torch.inference_mode():
            score = float(head.score(embed_pil(model, [picture(file)]), embed_texts(model, [text.strip()]))[0])
        return MatchResult(text=text, score=score, head=head.kind, threshold=head.threshold,
                           match=None if head.threshold is None else score >= head.threshold)

    @app.post("/classify", response_model=Classification, tags=["classify"], responses=errors(400, 413, 503))
    def classify(file: UploadFile = File(..., description="An image file."),
                 labels: list[str] = Form(..., description="Candidate labels (repeat the field, or one JSON array)."),
                 template: str = Form(PROMPT, max_length=MAX_TEXT_CHARS,
                                      description="Prompt with a {label} placeholder.")) -> Classification:
        names = parse_form_labels(labels)
        if "{label}" not in template:
            raise HTTPException(400, "template must contain {label}")
        with slots.hold():
            image_emb = embed_pil(model, [picture(file)])[0]
            scores = embed_texts(model, [template.replace("{label}", name) for name in names]) @ image_emb
        probabilities = torch.softmax(logit_scale(model) * scores, dim=0)
        order = torch.argsort(probabilities, descending=True).tolist()
        return Classification(template=template, predictions=[
            Prediction(label=names[i], probability=float(probabilities[i]), score=float(scores[i])) for i in order])


def create_app(model: "DualEncoder", index: "Index | None" = None, *, model_spec: str | None = None,
               max_upload_bytes: int | None = None, threshold: float | None = None,
               match_head: "MatchHead | None" = None, limits: ServerLimits | None = None) -> FastAPI:
    """The app serving `model` (and `index`, which must have been built with it). `/match` uses `match_head`,
    by default the one saved with the model; `threshold` overrides its threshold. `max_upload_bytes`, when given,
    overrides `limits.max_upload_bytes`."""
    spec = model_spec or str(getattr(model, "spec", "") or "model")
    if index is not None:
        index.check_model(model)
    head = match_head if match_head is not None else _match_head(spec)
    if threshold is not None:
        head.threshold = float(threshold)
    dim = int(model.embed_dim)
    limits = limits or ServerLimits()
    max_upload_bytes = int(max_upload_bytes if max_upload_bytes is not None else limits.max_upload_bytes)
    image_size = int(getattr(model, "image_size", 224))
    pixel_limit = int(limits.pixel_limit or default_pixel_limit(image_size))
    slots = WorkSlots(limits.max_concurrent, limits.busy_timeout_s)

    app = FastAPI(title="cliptune", version=__version__, docs_url=None, redoc_url=None,
                  description="Embed, search, match and classify images and texts with a CLIP-style model. "
                              f"Uploads: at most {max_upload_bytes / 1e6:g} MB and {pixel_limit:,} pixels.")
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.add_middleware(HeadAsGet)
    mount_offline_docs(app)

    def picture(file: UploadFile):
        return decode_upload(file, pixel_limit, image_size)

    @app.exception_handler(UsageError)
    async def usage_error(request: Request, err: UsageError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=400)

    @app.exception_handler(CliptuneError)
    async def runtime_error(request: Request, err: CliptuneError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=500)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        return Health(status="ok", version=__version__, model=spec, embed_dim=dim,
                      index=None if index is None else index.summary(), match_head=head.kind,
                      threshold=head.threshold,
                      max_upload_bytes=max_upload_bytes, pixel_limit=pixel_limit)

    @app.post("/embed/text", response_model=Embeddings, tags=["embed"], responses=errors(400, 413, 503))
    def embed_text(body: EmbedTextRequest) -> Embeddings:
        with slots.hold():
            vectors = embed_texts(model, body.texts)
        return Embeddings(model=spec, dim=vectors.shape[1], embeddings=vectors.tolist())

    @app.post("/embed/image", response_model=Embedding, tags=["embed"], responses=errors(400, 413, 503))
    def embed_image(file: UploadFile = File(..., description="An image file.")) -> Embedding:
        with slots.hold():
            vector = embed_pil(model, [picture(file)])[0]
        return Embedding(model=spec, dim=vector.shape[0], embedding=vector.tolist())

    _search_routes(app, model, index, slots, picture)

    _task_routes(app, model, head, slots, picture)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_POLICY,
                                                             "X-Content-Type-Options": "nosniff"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def serve(model_spec: str, index_dir: str | os.PathLike | None = None, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, threshold: float | None = None,
          log_level: str = "info", limits: ServerLimits | None = None) -> None:
    """Load the model (and index) and serve until interrupted, with the connection limits of `limits`."""
    import dataclasses

    import uvicorn

    from cliptune.models.registry import load_model
    from cliptune.search.index import open_index

    if max_upload_mb <= 0:
        raise UsageError(f"the upload limit must be positive, got {max_upload_mb} MB")
    limits = dataclasses.replace(limits or ServerLimits(), max_upload_bytes=int(max_upload_mb * 1e6))
    index = open_index(index_dir) if index_dir is not None else None
    model = load_model(model_spec)
    app = create_app(model, index, model_spec=model_spec, threshold=threshold, limits=limits)
    uvicorn.run(app, **uvicorn_options(limits), host=host, port=port, log_level=log_level)


def uvicorn_options(limits: ServerLimits) -> dict[str, Any]:
    """uvicorn settings for `limits`: header deadline and connection cap (our h11 protocol), keep-alive timeout."""
    from cliptune.search.connections import guarded_protocol

    return {"http": guarded_protocol(limits.max_connections, limits.header_timeout_s),
            "timeout_keep_alive": limits.keep_alive_s, "backlog": max(limits.max_connections, 16)}


__all__ = ["create_app", "serve", "uvicorn_options"]
