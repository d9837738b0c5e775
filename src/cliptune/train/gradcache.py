"""GradCache: a large contrastive batch in the memory of a small one (Gao et al. 2021, "Scaling Deep Contrastive
Learning Batch Size under Memory Limited Setup").

A contrastive loss couples every pair of the batch, so it cannot be split into independent pieces the way gradient
accumulation splits a sum. GradCache splits the *encoder* work instead:

1. embed all n items in mini-batches without building a graph (no activations kept);
2. compute the loss on the full [n, D] embeddings, leaves with `requires_grad`, and backpropagate it to get
   ∂loss/∂embedding for every item (and the gradient of the logit scale/bias, which reach the model here);
3. re-run each mini-batch with a graph and backpropagate `embedding · cached_gradient`, which by the chain rule adds
   exactly that mini-batch's share of ∂loss/∂θ.

Parameter gradients equal the full-batch ones; peak activation memory is one mini-batch. The forward pass runs twice.
Randomness (dropout) is replayed: the RNG state before each mini-batch's first pass is restored for its second pass.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

Encode = Callable[[torch.Tensor], torch.Tensor]  # positions in the batch (LongTensor) → [len, D] embeddings


class RandState:
    """The CPU and (initialised) CUDA RNG states at construction; `replay()` runs a block from that state and then
    puts the caller's RNG back where it was."""

    def __init__(self):
        self.cpu = torch.get_rng_state()
        cuda_live = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.cuda = torch.cuda.get_rng_state_all() if cuda_live else None

    @contextlib.contextmanager
    def replay(self):
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def chunks(n: int, mini_batch: int) -> list[torch.Tensor]:
    """Positions 0..n−1 in consecutive mini-batches."""
    if mini_batch < 1:
        raise ValueError(f"mini_batch must be >= 1, got {mini_batch}")
    return [torch.arange(s, min(s + mini_batch, n)) for s in range(0, n, mini_batch)]


def _embed_no_grad(encode: Encode, parts: list[torch.Tensor]) -> tuple[torch.Tensor, list[RandState]]:
    states, embs = [], []
    with torch.no_grad():
        for part in parts:
            states.append(RandState())
            embs.append(encode(part).detach())
    return torch.cat(embs), states


def _replay_backward(encode: Encode, parts: list[torch.Tensor], states: list[RandState],
                     grad: torch.Tensor | None) -> None:
    if grad is None:  # the loss does not depend on this side
        return
    for part, state, start in zip(parts, states, _starts(parts)):
        with state.replay():
            emb = encode(part)
        if emb.requires_grad:  # else nothing trainable on this side
            emb.backward(gradient=grad[start:start + len(part)].to(emb.dtype))


def _starts(parts: list[torch.Tensor]) -> list[int]:
    out, at = [], 0
    for part in parts:
        out.append(at)
        at += len(part)
    return out


def gradcache_step(encode_image: Encode, encode_text: Encode, objective: Callable, n: int, mini_batch: int,
                   logit_scale: torch.Tensor, logit_bias: torch.Tensor | None = None, batch=None,
                   scale_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
                   return_outputs: bool = False) -> float | tuple[float, dict]:
    """Accumulate into `.grad` the parameter gradients of `objective` over a batch of `n` pairs, encoding at most
    `mini_batch` items at a time. Returns the loss as a float (with `return_outputs`, also the objective's other
    outputs, detached). A non-finite loss is returned without any backward pass, for the caller to report.

    `encode_*` take LongTensor positions (0..n−1) into the batch and return L2-normalised embeddings; `logit_scale`
    (exponentiated, as the objective expects) and `logit_bias` are computed once by the caller with grad (e.g.
    `model.scale()`), so their gradient reaches the model in step 2. `scale_loss` maps the loss to what is
    backpropagated (e.g. `lambda l: scaler.scale(l / accum_steps)` for AMP and accumulation); the cached embedding
    gradients carry that factor, so the result equals `scale_loss(loss).backward()` on the full batch.
    Does not call `zero_grad` or `optimizer.step`. `batch` (a `TrainBatch`, or a callable returning one, called
    after step 1 so that embedding mined negatives draws from the RNG where the loss used to) goes to the objective.
    """
    parts = chunks(n, mini_batch)
    # 1. all embeddings, no graph; remember each mini-batch's RNG state
    image_emb, image_states = _embed_no_grad(encode_image, parts)
    text_emb, text_states = _embed_no_grad(encode_text, parts)
    # 2. loss on the full batch; gradients w.r.t. the embeddings (and through scale/bias into the model)
    if callable(batch):
        batch = batch()
    image_leaf = image_emb.float().requires_grad_(True)
    text_leaf = text_emb.float().requires_grad_(True)
    out = objective(image_leaf, text_leaf, logit_scale, logit_bias, batch=batch)
    loss = out["loss"]
    extras = {k: v.detach() if torch.is_tensor(v) else v for k, v in out.items() if k != "loss"}
    if not torch.isfinite(loss):
        return (float(loss.detach()), extras) if return_outputs else float(loss.detach())
    to_backprop = scale_loss(loss) if scale_loss is not None else loss
    to_backprop.backward()
    # 3. replay each mini-batch with a graph and push the cached gradient through it
    _replay_backward(encode_image, parts, image_states, image_leaf.grad)
    _replay_backward(encode_text, parts, text_states, text_leaf.grad)
    return (float(loss.detach()), extras) if return_outputs else float(loss.detach())
