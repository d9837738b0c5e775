"""Checkpoints are atomic: a failed write leaves the previous one intact; last/best links always resolve."""

import os

import pytest
import torch

from cliptune.errors import CliptuneError
from cliptune.train import checkpoint as ckpt


def _objects():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    return model, opt, sched


def test_save_load_roundtrip_and_links(tmp_path):
    model, opt, sched = _objects()
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 1}, links=("last", "best"))
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 2}, links=("last",))
    assert os.readlink(tmp_path / "last") == "step_0000002"
    assert os.readlink(tmp_path / "best") == "step_0000001"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("step_")) == ["step_0000001", "step_0000002"]
    fresh, opt2, sched2 = _objects()
    state = ckpt.load_checkpoint(tmp_path / "last", fresh, opt2, sched2)
    assert state["step"] == 2
    torch.testing.assert_close(fresh.weight, model.weight)
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 3}, links=("last", "best"))
    assert not (tmp_path / "step_0000001").exists() and not (tmp_path / "step_0000002").exists()


def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _objects()
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 1})
    good = {k: v.clone() for k, v in model.state_dict().items()}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", disk_full)
    with torch.no_grad():
        model.weight.add_(5.0)
    with pytest.raises(CliptuneError, match="previous checkpoint is intact"):
        ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 2})
    assert os.readlink(tmp_path / "last") == "step_0000001"
    assert not list(tmp_path.glob(".step_*"))  # no half-written directory left behind
    fresh, _, _ = _objects()
    ckpt.load_checkpoint(tmp_path / "last", fresh, restore_rng=False)
    torch.testing.assert_close(fresh.state_dict()["weight"], good["weight"])


def test_next_save_removes_link_temporaries_of_killed_writes(tmp_path):
    """A kill between creating `.last.lnk-PID` and renaming it over `last` leaves that link behind for good unless a
    later save removes it; the checkpoints the links point at stay."""
    model, opt, sched = _objects()
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 1}, links=("last", "best"))
    leftovers = {".last.lnk-4194305": "step_0000001", f".best.lnk-{os.getpid()}": "step_0000001",
                 ".last.lnk-12": "step_0000099"}  # a dead pid, this pid (reused), a dangling one
    for name, target in leftovers.items():
        os.symlink(target, tmp_path / name)
    with torch.no_grad():
        model.weight.add_(1.0)
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 2}, links=("last",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "last", "step_0000001", "step_0000002"]
    assert os.readlink(tmp_path / "last") == "step_0000002" and os.readlink(tmp_path / "best") == "step_0000001"
    for link, step in (("last", 2), ("best", 1)):
        fresh, _, _ = _objects()
        assert ckpt.load_checkpoint(tmp_path / link, fresh, restore_rng=False)["step"] == step


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    model, _, _ = _objects()
    with pytest.raises(CliptuneError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nope", model)


def test_fp16_loss_scale_survives_resume(tmp_path):
    """The GradScaler's scale and growth tracker decide which fp16 steps overflow: a resumed run gets them back."""
    model, opt, sched = _objects()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 512.0, "_growth_tracker": 17})  # after some overflows
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 1}, scaler=scaler)
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    ckpt.load_checkpoint(tmp_path / "last", _objects()[0], scaler=fresh)
    assert fresh.get_scale() == 512.0 and fresh.state_dict()["_growth_tracker"] == 17
    disabled = torch.amp.GradScaler("cpu", enabled=False)  # fp32/bf16 runs: nothing saved, nothing restored
    ckpt.save_checkpoint(tmp_path, model, opt, sched, {"step": 2}, scaler=disabled)
    ckpt.load_checkpoint(tmp_path / "last", _objects()[0], scaler=disabled)
    assert "scaler" not in torch.load(tmp_path / "last" / "optimizer.pt", weights_only=True)
