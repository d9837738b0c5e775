"""How many text tokens a caption takes, to find captions a model will truncate, without tokenizing everything.

Counts are CLIP BPE tokens including the start and end tokens (what a 77-token CLIP context holds). Two bounds
decide almost every caption for free: each word, digit or run of punctuation is at least one token (CLIP's
pre-tokenizer splits there), and no token is shorter than one byte. Only captions whose byte count could exceed
the limit are tokenized exactly, with the real CLIP tokenizer built offline from open_clip's vocabulary file;
when that is unavailable, the word-piece lower bound is reported instead (it never over-counts). WordPiece
models (`lite`) count within a few tokens of CLIP BPE on English captions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

SPECIAL_TOKENS = 2  # start + end
_PIECES = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+", re.IGNORECASE)


def lower_bound(caption: str) -> int:
    """Tokens at least: one per pre-tokenizer piece, plus the special tokens."""
    return len(_PIECES.findall(caption.lower())) + SPECIAL_TOKENS


def upper_bound(caption: str) -> int:
    """Tokens at most: one per UTF-8 byte, plus the special tokens."""
    return len(caption.encode("utf-8", "surrogatepass")) + SPECIAL_TOKENS


def token_counts(captions: Sequence[str], context_length: int) -> tuple[list[int], str]:
    """(count per caption, method). Counts are exact for every caption that might exceed `context_length`;
    captions that surely fit get their lower bound (enough to say they fit)."""
    counts = [lower_bound(c) for c in captions]
    doubtful = [i for i, c in enumerate(captions) if upper_bound(c) > context_length]
    if not doubtful:
        return counts, "clip-bpe"
    exact = _clip_counts([captions[i] for i in doubtful])
    if exact is None:
        return counts, "lower-bound estimate (CLIP tokenizer unavailable)"
    for i, n in zip(doubtful, exact):
        counts[i] = n
    return counts, "clip-bpe"


def _clip_counts(captions: list[str]) -> list[int] | None:
    try:
        from cliptune.models.clip_tokenizer import build_clip_tokenizer

        tokenizer = build_clip_tokenizer(context_length=1 << 20)
        ids = tokenizer(captions, truncation=False, add_special_tokens=True)["input_ids"]
    except Exception:  # noqa: BLE001 - missing open_clip/transformers: fall back to the lower bound
        return None
    return [len(row) for row in ids]
