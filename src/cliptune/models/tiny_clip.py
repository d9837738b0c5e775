"""`tiny-clip`: a small random transformers CLIP, built from a config with no download, for tests and smoke runs.

It is a real `CLIPModel` with the real CLIP tokenizer (49,408 ids), so everything that works on it works on
`hf:` checkpoints too; only the widths are small (64-wide, 2 layers, 64 px images, 32 text tokens). The weights
come from a fixed seed in a forked RNG, so two builds are identical and the caller's random state is untouched.
"""

from __future__ import annotations

import torch

from cliptune.errors import UsageError
from cliptune.models.clip_tokenizer import VOCAB_SIZE, build_clip_tokenizer
from cliptune.models.hf import HFClipEncoder, clip_image_processor
from cliptune.models.registry import SPECS

TINY_CLIP = {
    "projection_dim": 32,
    "text": {
        "vocab_size": VOCAB_SIZE,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 32,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    },
    "vision": {
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": 64,
        "patch_size": 8,
    },
}


def tiny_clip_config():
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    return CLIPConfig(
        text_config=CLIPTextConfig(**TINY_CLIP["text"]).to_dict(),
        vision_config=CLIPVisionConfig(**TINY_CLIP["vision"]).to_dict(),
        projection_dim=TINY_CLIP["projection_dim"],
    )


@SPECS.register("tiny-clip")
def build_tiny_clip(argument: str | None = None, seed: int = 0) -> HFClipEncoder:
    """Random tiny CLIP; the same `seed` gives the same weights."""
    from transformers import CLIPModel

    if argument:
        raise UsageError(f"tiny-clip takes no argument (got tiny-clip:{argument})")
    config = tiny_clip_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config)
    tokenizer = build_clip_tokenizer(context_length=config.text_config.max_position_embeddings)
    processor = clip_image_processor(config.vision_config.image_size)
    return HFClipEncoder(model, tokenizer, processor, spec="tiny-clip")
