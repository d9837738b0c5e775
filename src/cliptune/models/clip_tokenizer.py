"""The original CLIP BPE tokenizer, built offline from the vocabulary file that ships inside the open_clip wheel.

OpenAI's CLIP vocabulary is 256 byte symbols, the same with an end-of-word marker, 48,894 merges and two special
tokens (49,408 ids). open_clip ships the merges as `bpe_simple_vocab_16e6.txt.gz`; rebuilding the vocabulary in
the same order gives ids identical to both open_clip's and Hugging Face's CLIP tokenizers, with no download.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
from pathlib import Path

from cliptune.errors import ModelLoadError

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # as in OpenAI's simple_tokenizer.py
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 49408


def _bpe_path() -> Path:
    """Locate the file without importing open_clip (whose import pulls in timm and costs seconds)."""
    spec = importlib.util.find_spec("open_clip")
    for root in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(root) / BPE_FILE
        if candidate.is_file():
            return candidate
    raise ModelLoadError(f"cannot build the CLIP tokenizer: {BPE_FILE} not found (is open_clip_torch installed?)")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character table, which the CLIP vocabulary is written in."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@functools.cache
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """Vocabulary (token → id) and merge list, in OpenAI's order."""
    lines = gzip.open(_bpe_path()).read().decode("utf-8").split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : N_MERGES + 1])
    symbols = list(_bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    assert len(tokens) == VOCAB_SIZE, len(tokens)
    return {tok: i for i, tok in enumerate(tokens)}, merges  # type: ignore[return-value]


def build_clip_tokenizer(context_length: int = 77):
    """A fresh transformers `CLIPTokenizer` (pad = eos, as OpenAI's checkpoints on the hub use)."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab_and_merges()
    # transformers 5 ignores vocab_file/merges_file here; the in-memory vocab/merges are what it reads.
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=context_length)
