"""WiSE-FT (Wortsman et al. 2022): exact interpolation end points, the α rules on hand-made tables, and
`cliptune wise` end to end on a tiny fine-tuned run (outputs, exit codes)."""

import json

import pytest
import torch

from cliptune.config import load_config
from cliptune.errors import UsageError
from cliptune.models.registry import load_model
from cliptune.train.wise import check_compatible, interpolate, mixed_model, run_wise_ft, snapshot
from cliptune.wise_rule import Rule, alphas_for, choose_alpha, parse_alphas, parse_rule
from cli_inprocess import run_cli


@pytest.fixture(scope="module")
def pair():
    """Two tiny CLIPs of one architecture with different weights: a stand-in for base and fine-tuned."""
    return load_model("tiny-clip", seed=0), load_model("tiny-clip", seed=1)


def _inputs(model):
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randn(3, 3, model.image_size, model.image_size, generator=gen)
    return pixels, model.tokenize(["a red circle", "a blue square on dark", "x"])


@torch.no_grad()
def _embed(model, pixels, tokens):
    model.eval()
    return model.encode_image(pixels), model.encode_text(tokens)


def test_end_points_reproduce_base_and_tuned_embeddings(pair):
    base, tuned = pair
    pixels, tokens = _inputs(base)
    for alpha, reference in ((0.0, base), (1.0, tuned)):
        mixed = mixed_model(base, tuned, alpha)
        for got, want in zip(_embed(mixed, pixels, tokens), _embed(reference, pixels, tokens)):
            assert torch.equal(got, want), alpha


def test_half_is_the_exact_average_and_tuned_is_untouched(pair):
    base, tuned = pair
    before = snapshot(tuned)
    mixed = mixed_model(base, tuned, 0.5).state_dict()
    b, t = base.state_dict(), tuned.state_dict()
    assert mixed.keys() == t.keys()
    for key in t:
        assert torch.equal(mixed[key], (b[key] + t[key]) / 2), key
    assert any(not torch.equal(b[k], t[k]) for k in t)  # the two really differ
    for key, value in tuned.state_dict().items():
        assert torch.equal(value, before[key]), key  # the fine-tuned model was not modified


def test_lora_runs_mix_merged_weights(pair):
    """A LoRA run's base snapshot (adapters at init, B = 0) is the plain base; α mixes W and W + BA·s exactly."""
    import copy

    from cliptune.models.lora import apply_lora, merge_lora

    base = pair[0]
    with_adapters = copy.deepcopy(base)
    apply_lora(with_adapters, {"r": 2, "alpha": 4.0})
    base_state = snapshot(with_adapters)
    assert base_state.keys() == base.state_dict().keys()
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in base_state.items())
    with torch.no_grad():  # "training": non-zero B factors
        for name, p in with_adapters.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    merged = copy.deepcopy(with_adapters)
    merge_lora(merged)
    m = merged.state_dict()
    for alpha in (0.0, 0.5, 1.0):
        mixed = mixed_model(base_state, with_adapters, alpha).state_dict()
        for key, value in mixed.items():
            torch.testing.assert_close(value, (1 - alpha) * base_state[key] + alpha * m[key], msg=key)
    assert any(".lora_" in k for k in with_adapters.state_dict())  # the caller's model keeps its adapters


def test_interpolate_keeps_integer_buffers_and_dtypes():
    base = {"w": torch.zeros(3, dtype=torch.float16), "ids": torch.arange(3)}
    tuned = {"w": torch.ones(3, dtype=torch.float16), "ids": torch.arange(3)}
    out = interpolate(base, tuned, 0.25)
    assert out["w"].dtype == torch.float16 and torch.equal(out["w"], torch.full((3,), 0.25, dtype=torch.float16))
    assert torch.equal(out["ids"], tuned["ids"])


def test_different_architectures_are_a_clear_error():
    base = {"a": torch.zeros(2), "b": torch.zeros(3)}
    with pytest.raises(UsageError, match="not the same architecture.*only in base.*b"):
        check_compatible(base, {"a": torch.zeros(2)})
    with pytest.raises(UsageError, match=r"different shapes \(a \(2,\) vs \(4,\)\)"):
        check_compatible({"a": torch.zeros(2)}, {"a": torch.zeros(4)})


def test_alpha_grids():
    assert parse_alphas("0:1:0.1") == [round(i / 10, 6) for i in range(11)]
    assert parse_alphas("0:1:0.25") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_alphas("1,0.5,0.5,0") == [0.0, 0.5, 1.0]
    assert parse_alphas([0.3]) == [0.3]
    for bad in ("0:2:0.5", "1:0:0.1", "a,b", "0:1", "0:1:0"):
        with pytest.raises(UsageError):
            parse_alphas(bad)
    assert alphas_for(Rule("min-drop", 0.01), [0.5, 1.0]) == [0.0, 0.5, 1.0]  # the base is the reference
    assert alphas_for(Rule("target"), [0.5, 1.0]) == [0.5, 1.0]


TABLE = [  # alpha, target, general: target rises with alpha, general falls after 0.25
    {"alpha": 0.0, "target": 0.40, "general": 0.60},
    {"alpha": 0.25, "target": 0.55, "general": 0.62},
    {"alpha": 0.5, "target": 0.66, "general": 0.59},
    {"alpha": 0.75, "target": 0.70, "general": 0.50},
    {"alpha": 1.0, "target": 0.72, "general": 0.40},
]


@pytest.mark.parametrize("rule, expected", [
    ("target", 1.0),  # best target alone
    ("average", 0.5),  # (0.66+0.59)/2 = 0.625 beats 0.585 (0.25) and 0.60 (0.75)
    ("min-drop:0.02", 0.5),  # general >= 0.58: alphas 0, 0.25, 0.5 -> best target 0.66
    ("min-drop:0.0", 0.25),  # general >= 0.60: alphas 0 and 0.25
    ("min-drop:0.1", 0.75),  # general >= 0.50 (a drop of exactly D is allowed)
    ("min-drop:1", 1.0),
])
def test_rules_pick_on_a_hand_made_table(rule, expected):
    assert choose_alpha(TABLE, parse_rule(rule, has_general=True)) == expected


def test_rule_defaults_ties_and_bad_rules():
    assert parse_rule(None, has_general=True) == Rule("average")
    assert parse_rule(None, has_general=False) == Rule("target")
    tied = [{"alpha": 1.0, "target": 0.5}, {"alpha": 0.3, "target": 0.5}, {"alpha": 0.0, "target": 0.1}]
    assert choose_alpha(tied, Rule("target")) == 0.3  # ties go to the smaller alpha
    with pytest.raises(UsageError, match="needs|compares with a general set"):
        parse_rule("average", has_general=False)
    with pytest.raises(UsageError, match="unknown rule"):
        parse_rule("best", has_general=True)
    with pytest.raises(UsageError, match="min-drop:D"):
        parse_rule("min-drop:x", has_general=True)


def test_config_checks_wise_settings_before_training():
    cfg = load_config(None, ["train.wise_ft=true", "train.wise_rule=min-drop:0.02", "train.wise_general=g.csv"])
    assert cfg.train.wise_ft and cfg.train.wise_alphas == "0:1:0.1"
    with pytest.raises(UsageError, match="wise_alphas"):
        load_config(None, ["train.wise_alphas='0:3:1'"])
    with pytest.raises(UsageError, match="base-60"):  # unquoted, YAML reads 0:1:0.1 as the number 60.1
        load_config(None, ["train.wise_alphas=0:1:0.1"])
    assert load_config(None, ["train.wise_alphas=[0, 0.5, 1]"]).train.wise_alphas == [0.0, 0.5, 1.0]
    with pytest.raises(UsageError, match="general set"):
        load_config(None, ["train.wise_rule=average"])


# ---- on a real fine-tuned run --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """tiny-clip fine-tuned for 2 epochs on generated shapes (as tests/test_train_e2e.py does)."""
    from conftest import make_shapes_csv

    from cliptune.train.run import train_run
    from cliptune.train.rundir import RunDir

    root = tmp_path_factory.mktemp("wise")
    data = make_shapes_csv(root / "shapes")
    cfg = load_config(None, [f"data.path={data}", f"train.output_dir={root / 'runs'}", "train.name=tuned",
                             "train.eval_every=null"],
                      base={"model": {"spec": "tiny-clip"}, "data": {"split_ratios": [0.6, 0.2, 0.2]},
                            "train": {"epochs": 2, "batch_size": 16, "lr": 2e-3, "warmup_steps": 1, "seed": 0},
                            "eval": {"before": False}})
    run = RunDir.create(cfg.train.output_dir, cfg.train.name)
    train_run(cfg, run, progress=False)
    return run.path, data


def test_run_wise_ft_in_memory_writes_nothing_without_out_dir(tiny_run):
    from cliptune.train.wise import load_records

    run_dir, data = tiny_run
    tuned = load_model(run_dir)
    before = snapshot(tuned)
    records = load_records(str(data), "val", split_ratios=(0.6, 0.2, 0.2))
    payload = run_wise_ft(load_model("tiny-clip"), tuned, records, alphas="0,1", batch_size=64)
    assert [r["alpha"] for r in payload["alphas"]] == [0.0, 1.0] and payload["rule"] == "target"
    assert payload["chosen_alpha"] in (0.0, 1.0) and "model_dir" not in payload
    assert all(torch.equal(v, before[k]) for k, v in tuned.state_dict().items())


def test_wise_command_end_to_end(tiny_run, tmp_path, monkeypatch, capsys):
    run_dir, data = tiny_run
    out = tmp_path / "wise"
    code, stdout, stderr = run_cli(monkeypatch, capsys, "wise", "--tuned", run_dir, "--alphas", "0:1:0.5",
                                   "--general", data, "--rule", "average", "--out", out, "-q")
    assert code == 0, stderr
    assert (out / "wise.png").stat().st_size > 1000 and (out / "model" / "cliptune.json").is_file()
    report = json.loads((out / "wise.json").read_text())
    assert [r["alpha"] for r in report["alphas"]] == [0.0, 0.5, 1.0]
    assert report["rule"] == "average" and report["base"] == "tiny-clip" and report["target_split"] == "val"
    scores = {r["alpha"]: (r["target"] + r["general"]) / 2 for r in report["alphas"]}
    assert report["chosen_alpha"] == min(a for a, s in scores.items() if s == max(scores.values()))
    for row in report["alphas"]:
        assert set(row["target_metrics"]["t2i"]) >= {"R@1", "R@10", "mAP"} and row["general_metrics"]["n_images"] == 64
    # the exported model is the chosen mix, in the backend's native format
    exported = load_model(out / "model").state_dict()
    expected = interpolate(load_model("tiny-clip").state_dict(), load_model(run_dir).state_dict(),
                           report["chosen_alpha"])
    for key, value in expected.items():
        torch.testing.assert_close(exported[key], value, rtol=0, atol=0, msg=key)
    assert "chosen" in stdout


def test_wise_command_refuses_a_different_architecture(tiny_run, tmp_path, monkeypatch, capsys):
    run_dir, _ = tiny_run
    code, _, stderr = run_cli(monkeypatch, capsys, "wise", "--tuned", run_dir, "--base", "openclip:cliptune-tiny-ViT",
                              "--out", tmp_path / "w", "-q")
    assert code == 2
    assert "not the same architecture" in stderr
    assert not (tmp_path / "w").exists()


def test_wise_command_usage_errors(tiny_run, tmp_path, monkeypatch, capsys):
    run_dir, _ = tiny_run
    code, _, stderr = run_cli(monkeypatch, capsys, "wise", "--tuned", run_dir, "--rule", "average", "-q")
    assert code == 2 and "general set" in stderr
    code, _, stderr = run_cli(monkeypatch, capsys, "wise", "--tuned", run_dir / "model", "-q")
    assert code == 2 and "--base" in stderr
