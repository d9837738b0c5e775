import pytest

from cliptune.config import load_config
from cliptune.errors import UsageError


def test_defaults_and_overrides(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model:\n  spec: tiny-clip\ntrain:\n  lr: 0.001\n  epochs: 3\n")
    cfg = load_config(cfg_file, ["train.lr=1e-4", "model.freeze=image", "model.unfreeze_last_n=2",
                                 "data.split_ratios=[0.5, 0.25, 0.25]"])
    assert cfg.model.spec == "tiny-clip"
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.train.epochs == 3
    assert cfg.model.freeze == "image"
    assert cfg.model.unfreeze_last_n.image == 2 and cfg.model.unfreeze_last_n.text == 2
    assert cfg.data.split_ratios == (0.5, 0.25, 0.25)


def test_json_config_and_roundtrip(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text('{"train": {"batch_size": 8}, "loss": {"type": "infonce"}}')
    cfg = load_config(cfg_file)
    again = tmp_path / "resolved.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(again) == cfg


@pytest.mark.parametrize("override, needle", [
    ("train.lr=fast", "train.lr"),
    ("model.freeze=half", "model.freeze"),
    ("train.nonsense=1", "train.nonsense"),
    ("novalue", "key.path=value"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(UsageError) as err:
        load_config(None, [override])
    assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(UsageError, match="bad.yaml"):
        load_config(bad)
