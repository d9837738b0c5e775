"""Two processes (gloo, CPU) give the same loss and parameter gradients as one process on the global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cliptune.objectives import build_objective
from cliptune.train.distributed import DistContext

GLOBAL_BATCH = 8


def _inputs(model):
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(GLOBAL_BATCH, 3, model.image_size, model.image_size, generator=gen)
    tokens = model.tokenize([f"caption number {i} of a small test" for i in range(GLOBAL_BATCH)])
    return pixels, tokens


def _loss_and_grads(ctx: DistContext, loss_type: str, local_loss: bool = False):
    from cliptune.models.registry import load_model

    model = load_model("tiny-clip").train()
    for module in model.modules():  # dropout would differ between the two arrangements
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    objective = build_objective(loss_type)
    if hasattr(objective, "attach"):
        objective.attach(model)
    pixels, tokens = _inputs(model)
    index = torch.arange(GLOBAL_BATCH)
    local = ctx.shard(index)
    img = ctx.gather(model.encode_image(pixels[local]))
    txt = ctx.gather(model.encode_text({k: v[local] for k, v in tokens.items()}))
    batch = {"local_rows": ctx.local_rows(GLOBAL_BATCH)} if local_loss else None
    loss = objective(img, txt, model.scale(), model.logit_bias, batch=batch)["loss"]
    loss.backward()
    ctx.average_gradients(model.parameters())
    return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _worker(rank, world, port, loss_type, out_dir, local_loss=False):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        loss, grads = _loss_and_grads(DistContext(rank=rank, world_size=world), loss_type, local_loss)
        torch.save({"loss": loss, "grads": grads}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("loss_type", ["infonce", "siglip"])
def test_two_processes_equal_one_on_the_global_batch(tmp_path, loss_type):
    mp.spawn(_worker, args=(2, _free_port(), loss_type, str(tmp_path)), nprocs=2, join=True)
    single_loss, single_grads = _loss_and_grads(DistContext(), loss_type)
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got["loss"] == pytest.approx(single_loss, abs=1e-5)
        assert got["grads"].keys() == single_grads.keys()
        for name, grad in single_grads.items():
            torch.testing.assert_close(got["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in single_grads.values())


def test_shard_covers_the_batch_once():
    index = torch.arange(10)
    parts = [DistContext(rank=r, world_size=3).shard(index) for r in range(3)]
    assert torch.equal(torch.cat(parts), index)


def test_local_loss_gives_the_global_gradient(tmp_path):
    """open_clip's local_loss: each rank's loss covers its own rows; averaged, it is the global-batch loss."""
    mp.spawn(_worker, args=(2, _free_port(), "infonce", str(tmp_path), True), nprocs=2, join=True)
    single_loss, single_grads = _loss_and_grads(DistContext(), "infonce")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(single_loss, abs=1e-5)
    assert ranks[0]["loss"] != pytest.approx(ranks[1]["loss"], abs=1e-6)  # really local, not the global loss twice
    for name, grad in single_grads.items():
        torch.testing.assert_close(ranks[0]["grads"][name], grad, atol=1e-5, rtol=1e-4, msg=name)
