"""An on-disk search index over an image collection: a FAISS index of image embeddings, the items they stand for,
and a manifest (`index.json`) saying which model made them.

Layout of an index directory:

    index.json                 manifest: model spec + fingerprint, embed dim, index type, count, current files
    vectors-<generation>.faiss the FAISS index (vector i is item i)
    items-<generation>.jsonl   the items: id, image path, captions, added-at

Every change writes a new generation of the data files and then replaces `index.json` atomically; the manifest is
the commit point, so a reader or a crash always sees one complete version. Old generations are removed afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from cliptune.errors import CliptuneError, UsageError
from cliptune.search.ann import ANN, new_faiss_index, tune
from cliptune.utils.atomic import fsync_dir, locked, usual_mode, write_atomic, write_text_atomic
from cliptune.search.collection import Source, as_records
from cliptune.search.fingerprint import Fingerprint, fingerprint
from cliptune.search.store import Item, read_items, write_items

if TYPE_CHECKING:
    from PIL import Image

    from cliptune.data.records import Record
    from cliptune.models.base import DualEncoder

MANIFEST = "index.json"
FORMAT = "cliptune-index"
VERSION = 1


class Hit(NamedTuple):
    """One search result: cosine similarity (higher is closer), the image, its captions, and its item id."""

    score: float
    path: str
    captions: list[str]
    id: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _spec_of(model: "DualEncoder") -> str:
    """The model's spec, with a local path made absolute so the index finds its model from any directory."""
    spec = str(getattr(model, "spec", "") or "")
    return os.path.abspath(spec) if spec and os.path.exists(spec) else spec


def _as_matrix(embeddings) -> np.ndarray:
    array = embeddings.numpy() if hasattr(embeddings, "numpy") else np.asarray(embeddings)
    return np.ascontiguousarray(array, dtype=np.float32)


def _embed_records(model: "DualEncoder", records: list["Record"], batch_size: int, progress: bool) -> np.ndarray:
    from cliptune.inference.embed import encode_images

    return _as_matrix(encode_images(model, records, batch_size=batch_size, progress=progress))


class Index:
    """An opened index. Searching is safe from several threads; `add` writes a new version to disk."""

    def __init__(self, directory: Path, manifest: dict[str, Any], vectors: Any, items: list[Item]):
        self.directory = directory
        self.manifest = manifest
        self._vectors = vectors
        self.items = items
        self._fingerprint = Fingerprint.from_json(manifest["fingerprint"])
        self._checked_models: weakref.WeakSet = weakref.WeakSet()  # models whose fingerprint matched
        self._lock = threading.Lock()

    # ---- what it is ----------------------------------------------------------------------------------------------
    @property
    def model_spec(self) -> str:
        return self.manifest["model"]

    @property
    def ann(self) -> str:
        return self.manifest["ann"]

    @property
    def embed_dim(self) -> int:
        return int(self.manifest["embed_dim"])

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    def __len__(self) -> int:
        return len(self.items)

    def item(self, item_id: int) -> Item:
        """The item with this id; KeyError when there is none (ids are 0..len-1)."""
        if isinstance(item_id, bool) or not isinstance(item_id, int) or not 0 <= item_id < len(self.items):
            raise KeyError(item_id)
        return self.items[item_id]

    def summary(self) -> dict[str, Any]:
        return {"count": len(self), "model": self.model_spec, "ann": self.ann, "embed_dim": self.embed_dim,
                "fingerprint": self._fingerprint.digest, "updated_at": self.manifest.get("updated_at")}

    # ---- model check ---------------------------------------------------------------------------------------------
    def check_model(self, model: "DualEncoder") -> None:
        """Refuse a model other than the one that made this index: its vectors would be compared with unrelated ones."""
        if model in self._checked_models:
            return
        theirs = fingerprint(model)
        if not self._fingerprint.matches(theirs):
            same_name = _spec_of(model) == self.model_spec
            hint = (" The spec is the same, so it does not pin its weights (a model directory retrained since, or a "
                    "spec whose weights are not fixed): index with a saved model or run directory."
                    if same_name else " Use the index's model (omit --model), or build a new index with this one.")
            raise UsageError(
                f"{self.directory}: this index was built with model {self.model_spec!r} "
                f"(fingerprint {self._fingerprint.digest}, {self.embed_dim}-d); the model given "
                f"({_spec_of(model) or 'unnamed'}, fingerprint {theirs.digest}, {theirs.embed_dim}-d) is a different "
                f"model or different weights, whose embeddings are not comparable.{hint}")
        self._checked_models.add(model)

    # ---- search --------------------------------------------------------------------------------------------------
    def search_vectors(self, queries, k: int = 10) -> list[list[Hit]]:
        """Top-k items for each query embedding ([Q, dim], L2-normalised), best first; k is capped at the count."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise UsageError(f"k must be a positive integer, got {k!r}")
        matrix = _as_matrix(queries)
        if matrix.ndim != 2 or matrix.shape[1] != self.embed_dim:
            raise UsageError(f"query embeddings must be [n, {self.embed_dim}], got {list(matrix.shape)}")
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(matrix.shape[0])]
        with self._lock:  # tuning sets search knobs on the shared FAISS object
            tune(self._vectors, self.ann, self.manifest.get("ann_params", {}), k)
            scores, ids = self._vectors.search(matrix, k)
        return [[Hit(float(score), self.items[i].path, list(self.items[i].captions), int(i))
                 for score, i in zip(row_scores, row_ids) if i >= 0]
                for row_scores, row_ids in zip(scores, ids)]

    def search_text(self, model: "DualEncoder", query: str, k: int = 10) -> list[Hit]:
        from cliptune.search.queries import embed_texts

        if not isinstance(query, str) or not query.strip():
            raise UsageError("empty search query: type some words, or search by image")
        self.check_model(model)
        return self.search_vectors(embed_texts(model, [query.strip()]), k)[0]

    def search_image(self, model: "DualEncoder", image: "Image.Image", k: int = 10) -> list[Hit]:
        from cliptune.search.queries import embed_pil

        self.check_model(model)
        return self.search_vectors(embed_pil(model, [image]), k)[0]

    # ---- growing -------------------------------------------------------------------------------------------------
    def add(self, model: "DualEncoder", sources: Iterable[Source], batch_size: int = 32,
            progress: bool = True) -> int:
        """Embed and add images (records or paths) not in the index yet; returns how many were added.

        Refuses a model other than the index's own. The new version is written to disk before this returns.
        """
        self.check_model(model)
        records = as_records(sources)
        with locked(self.directory):
            self._reload_if_changed()
            known = {item.path for item in self.items}
            records = [record for record in records if record.image not in known]
            if not records:
                return 0
            import faiss

            vectors = faiss.clone_index(self._vectors)  # the opened version stays intact if writing fails
            vectors.add(_embed_records(model, records, batch_size, progress))
            stamp = _now()
            items = self.items + [Item(len(self.items) + i, record.image, list(record.captions), stamp)
                                  for i, record in enumerate(records)]
            manifest = dict(self.manifest, count=len(items), updated_at=stamp)
            self.manifest = _commit(self.directory, vectors, items, manifest)
            self._vectors, self.items = vectors, items
        return len(records)

    def refresh(self) -> bool:
        """Pick up images another process (`cliptune index --add`) added since this index was opened; True when it
        did. Cheap when nothing changed: one small file read."""
        try:
            current = _read_manifest(self.directory)
        except (UsageError, CliptuneError):
            return False  # mid-rewrite or gone: keep serving the version we have
        if current.get("generation") == self.manifest.get("generation"):
            return False
        fresh = open_index(self.directory)
        with self._lock:
            if not fresh.fingerprint.matches(self._fingerprint):  # rebuilt with another model: check it again
                self._fingerprint, self._checked_models = fresh.fingerprint, weakref.WeakSet()
            self.manifest, self._vectors, self.items = fresh.manifest, fresh._vectors, fresh.items
        return True

    def _reload_if_changed(self) -> None:
        """Another process may have added images since this index was opened: extend that version, not ours."""
        current = _read_manifest(self.directory)
        if current.get("generation") != self.manifest.get("generation"):
            fresh = open_index(self.directory)
            self.manifest, self._vectors, self.items = fresh.manifest, fresh._vectors, fresh.items


# ---- reading and writing --------------------------------------------------------------------------------------------
def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise UsageError(f"{directory}: no such index directory; build one with `cliptune index`")
    if not path.is_file():
        raise UsageError(f"{directory}: not a cliptune index ({MANIFEST} missing); build one with `cliptune index`")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CliptuneError(f"{path}: unreadable index manifest ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise UsageError(f"{path}: not a cliptune index manifest")
    if int(manifest.get("version", 0)) > VERSION:
        raise UsageError(f"{path}: index format version {manifest.get('version')} is newer than this cliptune "
                         f"reads ({VERSION}); upgrade cliptune")
    return manifest


def open_index(directory: str | os.PathLike) -> Index:
    """Open an index directory written by `build_index` (raises UsageError with what to do when it is not one)."""
    import faiss

    directory = Path(directory)
    for attempt in range(3):  # a writer may switch generations (and remove ours) between our reads: reread
        manifest = _read_manifest(directory)
        files = manifest.get("files", {})
        try:
            vectors = faiss.read_index(str(directory / files["vectors"]))
            items = read_items(directory / files["items"])
            break
        except (KeyError, OSError, RuntimeError) as err:
            if attempt == 2 or _read_manifest(directory).get("generation") == manifest.get("generation"):
                raise CliptuneError(f"{directory}: index files missing or unreadable ({err}); rebuild the "
                                    "index") from None
    if vectors.ntotal != len(items) or len(items) != manifest.get("count"):
        raise CliptuneError(f"{directory}: index is inconsistent ({vectors.ntotal} vectors, {len(items)} items, "
                            f"manifest says {manifest.get('count')}); rebuild it")
    return Index(directory, manifest, vectors, items)


def _commit(directory: Path, vectors: Any, items: list[Item], manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a new generation of the data files, then switch the manifest to it (the atomic step), then clean up."""
    import faiss

    generation = uuid.uuid4().hex[:12]
    files = {"vectors": f"vectors-{generation}.faiss", "items": f"items-{generation}.jsonl"}
    write_atomic(directory / files["vectors"], lambda tmp: faiss.write_index(vectors, tmp))
    write_atomic(directory / files["items"], lambda tmp: write_items(tmp, items))
    manifest = dict(manifest, files=files, generation=generation)
    write_text_atomic(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    keep = set(files.values())
    for old in [*directory.glob("vectors-*.faiss"), *directory.glob("items-*.jsonl")]:
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return manifest


def check_destination(out_dir: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise UsageError unless a new index may be written to `out_dir` (cheap: call it before loading a model)."""
    out = Path(out_dir)
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"{out}: exists and is not a folder")
    if (out / MANIFEST).exists() and not overwrite:
        raise UsageError(f"{out}: an index already exists here; add images with --add, or replace it with "
                         "--overwrite")
    if not (out / MANIFEST).exists() and any(out.iterdir()):
        raise UsageError(f"{out}: folder is not empty and holds no index; choose a new or empty folder")


def build_index(model: "DualEncoder", records_or_paths: Iterable[Source], out_dir: str | os.PathLike,
                ann: str = "flat", batch_size: int = 32, progress: bool = True, overwrite: bool = False) -> Index:
    """Embed every image (records or paths) with `model` and write a new index to `out_dir`.

    `out_dir` must not exist, be empty, or (with `overwrite`) hold an index, which is then replaced atomically.
    """
    ANN.get(ann)  # an unknown type fails before any embedding
    out = Path(out_dir)
    check_destination(out, overwrite)
    records = as_records(records_or_paths)
    if not records:
        raise UsageError("nothing to index: no images given")
    probe = fingerprint(model)
    embeddings = _embed_records(model, records, batch_size, progress)
    vectors, params = new_faiss_index(ann, embeddings.shape[1], len(records))
    if not vectors.is_trained:
        vectors.train(embeddings)
    vectors.add(embeddings)
    stamp = _now()
    items = [Item(i, record.image, list(record.captions), stamp) for i, record in enumerate(records)]
    manifest = {"format": FORMAT, "version": VERSION, "model": _spec_of(model), "fingerprint": probe.to_json(),
                "embed_dim": int(embeddings.shape[1]), "ann": ann, "ann_params": params, "count": len(items),
                "created_at": stamp, "updated_at": stamp}
    if out.exists():
        with locked(out):
            _commit(out, vectors, items, manifest)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        try:
            os.chmod(staging, usual_mode(directory=True))
            _commit(staging, vectors, items, manifest)
            os.rename(staging, out)  # fails, rather than merges, if someone created `out` meanwhile
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fsync_dir(out.parent)
    return open_index(out)


__all__ = ["Hit", "Index", "MANIFEST", "build_index", "check_destination", "open_index"]
