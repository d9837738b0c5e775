"""Tiny models for the model-zoo tests: a BERT saved to a folder, extra open_clip configs, a few training steps."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ("a the of photo red green blue yellow purple orange black white square circle triangle cross on light "
         "dark cat dog bicycle wall").split()
CAPTIONS = ["a red circle on dark", "a photo of a cat", "", "the blue square on light white wall", "dog"]

# open_clip variants the shipped configs do not cover: timm trunk with MAP pooling + appended class token (CoCa-style
# text), timm ResNet trunk with EOS pooling, attentional pooler + qk-norm custom attention blocks.
EXTRA_OPENCLIP_CONFIGS = {
    "zoo-timm-map": {
        "embed_dim": 64, "init_logit_bias": -10, "custom_text": True,
        "vision_cfg": {"image_size": 32, "timm_model_name": "test_vit", "timm_model_pretrained": False,
                       "timm_pool": "map", "timm_proj": "none"},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                     "embed_cls": True, "pool_type": "last"},
    },
    "zoo-timm-rn": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "timm_model_name": "test_resnet", "timm_model_pretrained": False,
                       "timm_pool": "avg", "timm_proj": "linear"},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                     "pool_type": "eos", "eos_id": 49407},
    },
    "zoo-attnpool": {
        "embed_dim": 32, "custom_text": True,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8,
                       "attentional_pool": True, "attn_pooler_queries": 4, "attn_pooler_heads": 2},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2,
                     "qk_norm": True, "pool_type": "argmax"},
    },
}


def make_tiny_bert(directory: Path, layers: int = 2) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def register_openclip_configs(directory: Path) -> None:
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    for name, cfg in EXTRA_OPENCLIP_CONFIGS.items():
        (directory / f"{name}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(directory)


def pixels(model, n: int = 4, seed: int = 1) -> torch.Tensor:
    size = model.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def embeddings(model, px: torch.Tensor, captions=CAPTIONS[:4]):
    """Inference embeddings (eval mode: BatchNorm uses its running statistics)."""
    model.eval()
    with torch.no_grad():
        return model.encode_image(px), model.encode_text(model.tokenize(list(captions)))


def loss_of(model, px: torch.Tensor, captions=CAPTIONS[:4]) -> torch.Tensor:
    from cliptune.objectives import build_objective

    objective = build_objective("infonce")
    return objective(model.encode_image(px), model.encode_text(model.tokenize(list(captions))), model.scale(),
                     model.logit_bias)["loss"]


def train_steps(model, steps: int = 5, lr: float = 1e-3) -> list[float]:
    """A plain AdamW loop with InfoNCE on fixed random images and the test captions."""
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    px = pixels(model, seed=7)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(model, px)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses
