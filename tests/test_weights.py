"""Weights files: pickles that would run code are refused; safetensors writes are atomic and handle aliasing."""

import os
import pickle

import pytest
import torch

from cliptune.errors import ModelLoadError
from cliptune.models import weights
from cliptune.models.weights import load_state_dict_file, save_safetensors_atomic


class _Exploit:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path, writer):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pt"
    payload = {"weight": _Exploit(marker)}
    if writer == "torch.save":  # a real checkpoint container; torch.load(weights_only=False) would run it
        torch.save(payload, bad)
    else:
        with open(bad, "wb") as fh:
            pickle.dump(payload, fh, protocol=2)
    assert not marker.exists()
    with pytest.raises(ModelLoadError, match="evil.pt") as info:
        load_state_dict_file(bad)
    assert "refused" in str(info.value) and "system" in str(info.value)  # names what it wanted to call
    assert info.value.exit_code == 2
    assert not marker.exists(), "the pickle's payload ran"


def test_torch_pickle_and_training_checkpoint_load(tmp_path):
    sd = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.ones(2, dtype=torch.int64)}
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"epoch": 3, "name": "run", "state_dict": sd}, tmp_path / "ckpt.pt")
    for name in ("plain.pth", "ckpt.pt"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    torch.save([1, 2], tmp_path / "list.bin")
    with pytest.raises(ModelLoadError, match="list.bin"):
        load_state_dict_file(tmp_path / "list.bin")


def test_bad_paths_name_the_file(tmp_path):
    with pytest.raises(ModelLoadError, match="missing.safetensors"):
        load_state_dict_file(tmp_path / "missing.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unknown weights format"):
        load_state_dict_file(tmp_path / "w.npz")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="junk.safetensors"):
        load_state_dict_file(tmp_path / "junk.safetensors")


def test_safetensors_roundtrip_with_shared_and_view_tensors(tmp_path):
    embedding = torch.randn(10, 4)
    base = torch.randn(4, 6)
    sd = {
        "embed.weight": embedding,
        "lm_head.weight": embedding,  # tied: same storage
        "half": base[:, :3],  # non-contiguous view into a larger buffer
        "t": base.t(),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0),
    }
    path = save_safetensors_atomic(sd, tmp_path / "sub" / "model.safetensors", metadata={"format": "pt"})
    loaded = load_state_dict_file(path)
    assert loaded.keys() == sd.keys()
    for k in sd:
        assert torch.equal(loaded[k], sd[k]), k
    assert [p.name for p in path.parent.iterdir()] == ["model.safetensors"], "no temporary files left behind"


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    save_safetensors_atomic({"w": torch.zeros(3)}, path)

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise KeyboardInterrupt

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors_atomic({"w": torch.ones(3)}, path)
    monkeypatch.undo()
    assert torch.equal(load_state_dict_file(path)["w"], torch.zeros(3))
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_written_weights_have_the_usual_permissions(tmp_path):
    """A temporary file starts private (0600); the published weights must be readable as any written file is."""
    import os

    from cliptune.utils.atomic import usual_mode

    path = save_safetensors_atomic({"w": torch.zeros(3)}, tmp_path / "model.safetensors")
    assert os.stat(path).st_mode & 0o777 == usual_mode()


def test_model_state_dict_roundtrip(tmp_path):
    from cliptune.models.registry import load_model

    os.environ["HF_HUB_OFFLINE"] = "1"
    model = load_model("tiny-clip")
    path = save_safetensors_atomic(model.state_dict(), tmp_path / "ckpt.safetensors")
    other = load_model("tiny-clip", seed=1)
    other.load_state_dict(load_state_dict_file(path))
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        assert torch.equal(a, b), name
    assert weights.LOADERS[".safetensors"] is not None
