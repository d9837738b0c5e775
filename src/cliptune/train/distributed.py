"""Data-parallel training under `torchrun`, with negatives that span the global batch.

Each rank encodes its slice of the global batch, then the embeddings of all ranks are gathered *with gradient*
(`torch.distributed.nn.functional.all_gather`), so every rank computes the loss over the whole global batch — the
`ClipLoss(gather_with_grad=True)` arrangement of open_clip. The backward of the gather sums each rank's share of the
gradient back to the rank that produced it, so after averaging parameter gradients across ranks every rank holds
exactly the gradient of the global-batch loss. With `local_loss=True` each rank only scores its own queries against
all keys (open_clip's `local_loss`), which saves memory and gives the same gradient for symmetric losses.

Gradients are averaged with one all-reduce per parameter after backward rather than a DDP wrapper, because towers are
called through `prefix`/`suffix` rather than `forward`. Only rank 0 logs, evaluates and writes checkpoints; the
others wait at barriers around those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous slice of a global batch (sizes differ by at most one across ranks)."""
        if not self.enabled:
            return index
        return index.tensor_split(self.world_size)[self.rank]

    def local_rows(self, global_size: int) -> tuple[int, int] | None:
        """Where this rank's slice sits in a gathered batch (for local_loss); None when not distributed."""
        if not self.enabled:
            return None
        sizes = [len(part) for part in torch.arange(global_size).tensor_split(self.world_size)]
        start = sum(sizes[: self.rank])
        return start, start + sizes[self.rank]

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's rows in rank order; the result keeps the gradient path to the local rows."""
        if not self.enabled:
            return tensor
        from torch.distributed.nn.functional import all_gather

        # the autograd-aware gather is what we need; its deprecation warning is silenced for the whole run by
        # `train.step.run_warning_filters` (a per-call filter would reset the warn-once registry every step)
        return torch.cat(all_gather(tensor.contiguous()), dim=0)

    def average_gradients(self, parameters) -> None:
        if not self.enabled:
            return
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.world_size)

    def all_true(self, flag: torch.Tensor) -> bool:
        """Whether `flag` (a bool scalar on the device) holds on every rank: one small all-reduce, and the one read
        of the device a step needs."""
        if self.enabled:
            flag = flag.to(torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_object(self, obj):
        if not self.enabled:
            return obj
        holder = [obj]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]


def init_distributed(device_type: str = "cpu") -> DistContext:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)
