"""Hard-negative mining over the training captions (for `objectives/hard_negatives.py`).

For each image, `num_negatives` captions of *other* images that the current model finds similar to it: the nearest
captions in a FAISS inner-product index over L2-normalised caption embeddings (`semantic`, as ANCE, Xiong et al. 2021,
mines from a refreshed index) or uniform draws (`random`, a baseline). Mined captions that are really positives would
teach the model the wrong thing, so two kinds of false negatives are excluded: captions of the same image, and captions
whose cosine similarity to any positive caption of the image exceeds `false_negative_threshold` (near-duplicates,
e.g. "a red car" under another photo of a red car). Where fewer than `num_negatives` candidates survive, the row is
padded with −1, which the objective masks out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

STRATEGIES = ("semantic", "random")
CANDIDATE_BUDGET = 1 << 16  # (image, candidate) pairs checked at once; memory ≈ budget × dim floats


def _positives(text_to_image: torch.Tensor, n_images: int) -> torch.Tensor:
    """[n_images, P] caption indices of each image's captions, padded with −1."""
    counts = torch.bincount(text_to_image, minlength=n_images)
    width = max(1, int(counts.max())) if len(counts) else 1
    out = torch.full((n_images, width), -1, dtype=torch.long)
    order = torch.argsort(text_to_image, stable=True)
    owners = text_to_image[order]
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(order)) - starts[owners]
    out[owners, slot] = order
    return out


def _keep_mask(cand: torch.Tensor, rows: torch.Tensor, text_emb: torch.Tensor, text_to_image: torch.Tensor,
               positives: torch.Tensor, threshold: float) -> torch.Tensor:
    """cand [b, k] caption ids (−1 = none) for images `rows` [b] → which candidates are usable negatives."""
    valid = cand >= 0
    safe = cand.clamp(min=0)
    keep = valid & (text_to_image[safe] != rows.unsqueeze(1))
    pos = positives[rows]  # [b, P]
    pos_valid = pos >= 0
    sim = torch.einsum("bkd,bpd->bkp", text_emb[safe], text_emb[pos.clamp(min=0)])
    sim = sim.masked_fill(~pos_valid.unsqueeze(1), -float("inf"))
    keep &= sim.max(dim=2).values <= threshold
    # a caption drawn twice counts once
    s, order = safe.sort(dim=1)
    dup_sorted = torch.zeros_like(keep)
    dup_sorted[:, 1:] = s[:, 1:] == s[:, :-1]
    dup = torch.zeros_like(keep).scatter_(1, order, dup_sorted)
    return keep & ~dup


def _first_kept(cand: torch.Tensor, keep: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` kept candidates per row, in candidate order, −1-padded; and how many were found."""
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :n]
    picked = torch.gather(cand, 1, order)
    found = keep.sum(dim=1).clamp(max=n)
    pad = torch.arange(picked.shape[1]).unsqueeze(0) >= found.unsqueeze(1)
    picked = picked.masked_fill(pad, -1)
    if picked.shape[1] < n:
        picked = torch.cat([picked, picked.new_full((picked.shape[0], n - picked.shape[1]), -1)], dim=1)
    return picked, found


def _semantic_candidates(index, queries: np.ndarray, k: int) -> torch.Tensor:
    _, ids = index.search(queries, k)
    return torch.from_numpy(ids).long()


def _random_candidates(n_rows: int, n_texts: int, k: int, gen: torch.Generator) -> torch.Tensor:
    if k >= n_texts or n_rows * n_texts <= 1 << 22:  # small: a random order of all captions (no repeats)
        return torch.rand(n_rows, n_texts, generator=gen).argsort(dim=1)[:, :k]
    return torch.randint(0, n_texts, (n_rows, k), generator=gen)


def mine_negatives(image_emb_all: torch.Tensor, text_emb_all: torch.Tensor, text_to_image: torch.Tensor,
                   num_negatives: int, strategy: str = "semantic", false_negative_threshold: float = 0.9,
                   seed: int = 0) -> torch.Tensor:
    """LongTensor [N_images, num_negatives] of caption indices mined for each image (−1 where too few exist).

    Embeddings must be L2-normalised; `text_to_image[c]` is the image caption c belongs to. `semantic` lists the
    candidates by similarity to the image (hardest first); `random` draws them uniformly (seeded).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"mining strategy must be one of {STRATEGIES}, got {strategy!r}")
    n_images, n_texts = image_emb_all.shape[0], text_emb_all.shape[0]
    if num_negatives <= 0 or n_images == 0:
        return torch.empty((n_images, max(0, num_negatives)), dtype=torch.long)
    image_emb = image_emb_all.detach().float().cpu()
    text_emb = text_emb_all.detach().float().cpu()
    text_to_image = text_to_image.long().cpu()
    positives = _positives(text_to_image, n_images)
    gen = torch.Generator().manual_seed(int(seed))
    index = None
    if strategy == "semantic":
        import faiss

        index = faiss.IndexFlatIP(text_emb.shape[1])
        index.add(np.ascontiguousarray(text_emb.numpy()))
    queries = np.ascontiguousarray(image_emb.numpy())

    out = torch.full((n_images, num_negatives), -1, dtype=torch.long)
    pending = torch.arange(n_images)
    k = min(n_texts, num_negatives + positives.shape[1] + 8)
    while len(pending):
        short = []
        block = max(1, CANDIDATE_BUDGET // k)  # images per block, so block × k × dim stays bounded
        for start in range(0, len(pending), block):
            rows = pending[start:start + block]
            if index is not None:
                cand = _semantic_candidates(index, queries[rows.numpy()], k)
            else:
                cand = _random_candidates(len(rows), n_texts, k, gen)
            keep = _keep_mask(cand, rows, text_emb, text_to_image, positives, false_negative_threshold)
            picked, found = _first_kept(cand, keep, num_negatives)
            out[rows] = picked
            short.append(rows[found < num_negatives])
        if k >= n_texts:  # every caption was a candidate: what is missing does not exist
            break
        pending = torch.cat(short)
        k = min(n_texts, 4 * k)  # retry the short rows with a deeper candidate list
    return out


def mining_stats(mined: torch.Tensor) -> dict:
    """How many of the requested negatives were found: worth logging, because with anisotropic text embeddings
    (many captions more similar than the threshold) the false-negative filter can leave few or none."""
    n_images, requested = mined.shape
    found = (mined >= 0).sum(dim=1)
    return {"requested": int(requested), "mean_found": float(found.float().mean()) if n_images else 0.0,
            "rows_full": int((found == requested).sum()), "rows_empty": int((found == 0).sum()), "rows": int(n_images)}


def mining_warning(stats: dict, threshold: float) -> str | None:
    """A message for the user when fewer than half of the requested negatives could be mined, else None."""
    if stats["requested"] == 0 or stats["mean_found"] >= stats["requested"] / 2:
        return None
    return (f"hard-negative mining found {stats['mean_found']:.1f} of {stats['requested']} negatives per image "
            f"({stats['rows_empty']} of {stats['rows']} images got none): captions more similar than "
            f"false_negative_threshold={threshold} to a positive are excluded; if the data has few true duplicates, "
            f"raise loss.params.false_negative_threshold")


def mine_for(objective, image_emb_all: torch.Tensor, text_emb_all: torch.Tensor, text_to_image: torch.Tensor,
             seed: int = 0) -> torch.Tensor:
    """`mine_negatives` with a `hard_negatives` objective's settings (num_negatives, strategy, threshold)."""
    return mine_negatives(image_emb_all, text_emb_all, text_to_image, objective.num_negatives, objective.strategy,
                          objective.false_negative_threshold, seed)


def log_mined(path: str | os.PathLike, mined: torch.Tensor, texts: list[str], images: list[str] | None = None,
              text_to_image: torch.Tensor | None = None) -> Path:
    """Write one JSON line per image — its index (and path), its own captions when `text_to_image` is given, and the
    mined negatives as {"index", "text"} — for eyeballing what the model is being pushed away from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    own: dict[int, list[str]] = {}
    if text_to_image is not None:
        for c, i in enumerate(text_to_image.tolist()):
            own.setdefault(int(i), []).append(texts[c])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for i, row in enumerate(mined.tolist()):
            entry: dict = {"image_index": i}
            if images is not None:
                entry["image"] = images[i]
            if text_to_image is not None:
                entry["captions"] = own.get(i, [])
            entry["negatives"] = [{"index": int(c), "text": texts[c]} for c in row if c >= 0]
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path


def last_refresh_epoch(epoch: int, refresh_epochs: int) -> int:
    """The epoch whose mining is in force at `epoch` (0 when mining happens only once)."""
    return 0 if refresh_epochs <= 0 else (epoch // refresh_epochs) * refresh_epochs
