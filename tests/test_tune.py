"""`cliptune tune`: a budgeted Optuna search on validation, its outputs, pruning, budget, resume and bad input."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from cliptune.config import load_config
from cliptune.train.run import train_run
from cliptune.train.rundir import RunDir
from cliptune.tune.budget import Deadline, parse_budget
from cliptune.tune.budget_callback import BudgetExhausted, BudgetGuard
from cliptune.tune.pruning import OptunaPruning
from cliptune.tune.search import run_tune
from cliptune.tune.settings import TuneSettings
from cliptune.tune.setup import create_tune_dir, new_settings
from cliptune.tune.study import open_study

# tiny-clip with both towers frozen but their last block: cached prefixes, a few steps per trial
BASE = {
    "model": {"spec": "tiny-clip", "freeze": "both", "unfreeze_last_n": {"image": 1, "text": 1}},
    "train": {"max_steps": 4, "eval_every": 2, "batch_size": 8, "warmup_steps": 1, "log_every": 2, "seed": 0},
    "data": {"split_ratios": [0.6, 0.2, 0.2]},
}


def _settings(data_path, max_trials: int, budget: str = "10m") -> TuneSettings:
    settings, _ = new_settings(BASE, [f"data.path={data_path}"], None, budget, 0, None, max_trials)
    return settings


class EvalSpy:
    """Every image path the trials' evaluations read, through the trainer's own evaluation function."""

    def __init__(self, monkeypatch):
        import cliptune.train.setup as setup

        self.images: set[str] = set()
        real = setup.evaluate_records

        def spy(model, records, **kw):
            self.images.update(r.image for r in records)
            return real(model, records, **kw)

        monkeypatch.setattr(setup, "evaluate_records", spy)


def test_three_trial_tune_writes_every_output(tmp_path, shapes_csv, monkeypatch):
    from cliptune.inference.evaluate import evaluate_records
    from cliptune.models.registry import load_model
    from cliptune.train.rebuild import load_run_data

    spy = EvalSpy(monkeypatch)
    settings = _settings(shapes_csv, max_trials=3)
    tune_dir = create_tune_dir(tmp_path / "runs", "t")
    result = run_tune(settings, tune_dir)

    for name in ("study.db", "tune.json", "leaderboard.json", "tune.png", "metrics.json"):
        assert (tune_dir / name).is_file(), name
    board = json.loads((tune_dir / "leaderboard.json").read_text())
    trials = {t["number"]: t for t in board["trials"]}
    assert sorted(trials) == [0, 1, 2] and trials[0]["base_recipe"]
    assert all(t["state"] in ("complete", "pruned", "failed") for t in trials.values())
    complete = [t for t in trials.values() if t["state"] == "complete"]
    assert complete and all(0.0 <= t["value"] <= 1.0 for t in complete)
    assert board["winner"] == max(complete, key=lambda t: t["value"])["number"] == result.winner
    assert (tune_dir / "tune.png").read_bytes()[:4] == b"\x89PNG"

    # trials evaluated on val only: their metrics, their history, and every image any evaluation read
    cfg = load_config(None, [f"data.path={shapes_csv}"], base=BASE)
    data = load_run_data(cfg)
    val_images, test_images = {r.image for r in data.split("val")}, {r.image for r in data.split("test")}
    assert spy.images and spy.images <= val_images and not spy.images & test_images
    for t in complete:
        trial_metrics = json.loads((tune_dir / "trials" / str(t["number"]) / "metrics.json").read_text())
        assert trial_metrics["split"] == "val" and "before" not in trial_metrics
        history = (tune_dir / "trials" / str(t["number"]) / "history.jsonl").read_text().splitlines()
        assert {json.loads(h)["split"] for h in history if json.loads(h)["event"] == "eval"} == {"val"}

    # the winner, once on test: equal to an independent evaluation of its exported model
    metrics = json.loads((tune_dir / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tune"]["winner_trial"] == result.winner
    assert {"before", "after"} <= set(metrics) and metrics["n_images"] == len(test_images)
    # the three-way proof, as train writes it: the probe (chosen on val) and the gains with their intervals
    assert metrics["probe"]["selection"]["split"] == "val" and metrics["probe"]["n_images"] == len(test_images)
    gain = metrics["gains"]["after-probe"]["t2i"]["R@1"]
    assert gain["delta"] == pytest.approx(metrics["after"]["t2i"]["R@1"] - metrics["probe"]["t2i"]["R@1"], abs=1e-6)
    model_dir = tune_dir / "trials" / str(result.winner) / "model"
    independent = evaluate_records(load_model(model_dir), data.split("test"), progress=False)
    for side in ("t2i", "i2t"):
        for key in ("R@1", "R@5", "mAP"):
            assert metrics["after"][side][key] == pytest.approx(independent[side][key], abs=1e-6)
    assert json.loads((tune_dir / "tune.json").read_text())["spent_s"] > 0


def test_trials_share_the_feature_cache(tmp_path, shapes_csv, monkeypatch):
    """A second trial with the same freeze boundary reads the cached prefix features instead of computing them."""
    import cliptune.train.feature_cache as fc

    calls = []
    real = fc.prefix_images
    monkeypatch.setattr(fc, "prefix_images", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    settings = _settings(shapes_csv, max_trials=1)
    tune_dir = create_tune_dir(tmp_path / "runs", "cache")
    study = open_study(tune_dir, 0)  # the same boundary as the base recipe (1 trainable block each), no augmentation
    study.enqueue_trial({"unfreeze_image": 1, "unfreeze_text": 1, "lr": 1e-4, "head_lr": 1e-3, "loss": "siglip",
                         "augment": False, "epochs": 4})
    run_tune(settings, tune_dir)
    first = len(calls)
    assert first > 0  # trial 0 computed the image prefixes (train and val)
    settings.max_trials = 2
    run_tune(settings, tune_dir)  # trial 1: the base recipe
    trials = open_study(tune_dir, 0).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[1].user_attrs["base_recipe"]
    assert len(calls) == first  # read from the shared cache, not computed again


class FakeTrial:
    def __init__(self, prune: bool):
        self.prune = prune
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune


def _run(tmp_path, data_path, name, callbacks, *overrides):
    cfg = load_config(None, [f"data.path={data_path}", f"train.output_dir={tmp_path / 'runs'}",
                             f"train.name={name}", "eval.report=false", "train.max_steps=6", *overrides], base=BASE)
    return train_run(cfg, RunDir.create(cfg.train.output_dir, name), progress=False, callbacks=callbacks)


def test_pruning_callback_prunes_through_train_run(tmp_path, shapes_csv):
    pruned = FakeTrial(prune=True)
    with pytest.raises(optuna.TrialPruned):
        _run(tmp_path, shapes_csv, "pruned", [OptunaPruning(pruned)])
    assert [step for _, step in pruned.reports] == [2]  # stopped at the first evaluation
    kept = FakeTrial(prune=False)
    result = _run(tmp_path, shapes_csv, "kept", [OptunaPruning(kept)])
    assert result.steps == 6 and [step for _, step in kept.reports] == [2, 4, 6]


class FakeClock:
    """Time moves only when a step ends: `step_s` seconds per optimisation step."""

    def __init__(self, step_s: float):
        self.t, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.t

    def on_step_end(self, ctx, state, out) -> None:
        self.t += self.step_s


def test_budget_guard_stops_a_trial_that_would_overrun(tmp_path, shapes_csv):
    clock = FakeClock(step_s=10.0)  # 6 steps of 10 s: 60 s + evaluations
    short = Deadline(budget_s=35.0, clock=clock)
    # step 2 ends with an evaluation (eval_every=2), so the guard has two plain steps to go by after step 3:
    # 3 steps left × 10 s > the 5 s left, so it stops there rather than run past the deadline
    with pytest.raises(BudgetExhausted, match="step 3 of 6"):
        _run(tmp_path, shapes_csv, "short", [clock, BudgetGuard(short, clock=clock)])
    assert clock.t == 30.0
    clock = FakeClock(step_s=10.0)
    long = Deadline(budget_s=200.0, clock=clock)
    assert _run(tmp_path, shapes_csv, "long", [clock, BudgetGuard(long, clock=clock)]).steps == 6


def test_resume_fails_stale_trials_and_continues_the_study(tmp_path, shapes_csv):
    settings = _settings(shapes_csv, max_trials=1)
    tune_dir = create_tune_dir(tmp_path / "runs", "r")
    run_tune(settings, tune_dir)
    # a kill during trial 1: the trial stays RUNNING and its directory half-written
    killed = open_study(tune_dir, 0).ask()
    (tune_dir / "trials" / str(killed.number)).mkdir(parents=True)
    (tune_dir / "trials" / str(killed.number) / "config.yaml").write_text("partial")

    saved = TuneSettings.load(tune_dir)
    assert saved.spent_s > 0
    saved.max_trials = 3
    result = run_tune(saved, tune_dir)
    study = open_study(tune_dir, 0)
    assert len(study.trials) == 3 and result.stale == [killed.number]
    stale = study.trials[killed.number]
    assert stale.state == TrialState.FAIL and "interrupted" in stale.user_attrs["fail_reason"]
    assert not (tune_dir / "trials" / str(killed.number)).exists()
    assert study.trials[0].user_attrs["base_recipe"] and study.trials[2].state != TrialState.RUNNING
    assert TuneSettings.load(tune_dir).spent_s > saved.spent_s - 1e-9


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("20m", 1200), ("1h", 3600), ("1h30m", 5400),
                                          ("2m30s", 150)])
def test_budget_strings(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("bad", ["20x", "0m", "m", "1.5h", "30m1h", ""])
def test_bad_budget_exits_2_naming_the_value(tmp_path, shapes_csv, monkeypatch, capsys, bad):
    from cli_inprocess import run_cli

    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--data", shapes_csv, "--budget", bad, "--set",
                           "model.spec=tiny-clip", "--name", "bad")
    assert code == 2 and f"--budget {bad!r}" in err
    assert not (tmp_path / "runs").exists()


def test_budget_stops_a_slow_trial_setup(tmp_path, shapes_csv, monkeypatch):
    """A set-up (data, model, feature caching) that outlasts the budget is stopped at the deadline by the timer."""
    import time

    import cliptune.train.run as run_module
    from cliptune.errors import CliptuneError

    settings = _settings(shapes_csv, max_trials=2, budget="2s")
    tune_dir = create_tune_dir(tmp_path / "runs", "slow")

    def slow_load(cfg, *a, **kw):
        time.sleep(30)  # a cold feature cache on a large data set

    monkeypatch.setattr(run_module, "load_run_data", slow_load)
    started = time.monotonic()
    with pytest.raises(CliptuneError, match="no trial completed"):
        run_tune(settings, tune_dir)
    assert time.monotonic() - started < 20
    board = json.loads((tune_dir / "leaderboard.json").read_text())
    assert [(t["number"], t["state"]) for t in board["trials"]] == [(0, "pruned")]
    assert "ran out" in board["trials"][0]["note"] and board["winner"] is None


def test_interrupted_search_names_the_tune_resume_command(tmp_path, shapes_csv):
    from cliptune.train.callbacks.base import Callback
    from cliptune.train.callbacks.interrupt import Interrupted

    class CtrlC(Callback):
        def on_step_end(self, ctx, state, out):
            raise Interrupted("SIGINT received: stopped after step 1", 2)

    settings = _settings(shapes_csv, max_trials=2)
    tune_dir = create_tune_dir(tmp_path / "runs", "ctrl-c")
    with pytest.raises(Interrupted, match=f"cliptune tune --resume {tune_dir}"):
        run_tune(settings, tune_dir, extra_callbacks=[CtrlC()])
    assert TuneSettings.load(tune_dir).spent_s > 0


def test_deadline_timer_defers_inside_a_shielded_section():
    import time

    from cliptune.tune.deadline_timer import DeadlineReached, DeadlineTimer

    timer = DeadlineTimer(Deadline(budget_s=0.05))
    timer.arm()
    inside_done = False
    with pytest.raises(DeadlineReached):
        with timer.shielded():
            time.sleep(0.3)  # the alarm rings here: deferred
            inside_done = True
    assert inside_done and not timer.armed
    timer = DeadlineTimer(Deadline(budget_s=0.05))
    timer.arm()
    with pytest.raises(DeadlineReached):
        time.sleep(5)  # unshielded: stopped at once
    timer.disarm()


@pytest.mark.parametrize("stopped_by,again", [("budget: the budget ran out", True),
                                              ("pruner: pruned at step 2", False)])
def test_base_trial_stopped_by_the_budget_runs_again_on_resume(tmp_path, stopped_by, again):
    from cliptune.tune.study import BASE_ATTR, has_base_trial

    study = open_study(tmp_path, 0)
    study.enqueue_trial({"lr": 1e-4}, user_attrs={BASE_ATTR: True})
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 3e-4, log=True)})
    assert has_base_trial(study)  # running
    trial.set_user_attr("stopped_by", stopped_by)
    study.tell(trial, state=TrialState.PRUNED)
    assert has_base_trial(study) is not again


def test_tune_command_end_to_end(tmp_path, shapes_csv, monkeypatch, capsys):
    from cli_inprocess import run_cli

    monkeypatch.chdir(tmp_path)
    sets = [a for kv in ("model.freeze=both", "model.unfreeze_last_n=1", "train.max_steps=4", "train.eval_every=2",
                         "train.batch_size=8", "data.split_ratios=[0.6,0.2,0.2]") for a in ("--set", kv)]
    code, out, err = run_cli(monkeypatch, capsys, "tune", "--data", shapes_csv, "--model", "tiny-clip", "--recipe",
                             "none", *sets, "--budget", "5m", "--max-trials", "2", "--name", "cli", "-q")
    assert code == 0, err
    assert "winner (trial" in out and "trials (val mean_mAP" in out
    metrics = json.loads((tmp_path / "runs" / "cli" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["tune"]["n_trials"] == 2
    code, _, err = run_cli(monkeypatch, capsys, "tune", "--resume", "runs/cli", "--set", "train.lr=1")
    assert code == 2 and "--set" in err


def test_a_cpu_search_leaves_augmentation_out():
    """Augmented images cannot be cached: on a CPU such trials run the image tower live and are never worth it."""
    from cliptune.tune.space import ModelFacts, default_space

    facts = {"n_blocks": {"image": 17, "text": 6}, "native_image_size": 224, "resizable": True}
    cpu = default_space(ModelFacts(**facts, live_images_fast=False)).describe()
    gpu = default_space(ModelFacts(**facts, live_images_fast=True)).describe()
    assert "augment" not in cpu and "augment" in gpu
    assert set(gpu) - set(cpu) == {"augment"}


def test_the_embedded_towers_are_a_dimension_and_native_size_follows_the_tower():
    """With lite as the base, a trial may swap the image tower (lite:b1, lite:b2) and run it at its own size."""
    from cliptune.config import load_config
    from cliptune.tune.space import ModelFacts, default_space, tower_alternatives

    assert tower_alternatives("lite") == ("lite", "lite:b1", "lite:b2")
    assert tower_alternatives("lite:b2") == ("lite:b2", "lite", "lite:b1")
    assert tower_alternatives("tiny-clip") == () and tower_alternatives("lite-random") == ()
    facts = ModelFacts(n_blocks={"image": 17, "text": 6}, native_image_size=224, resizable=True,
                       live_images_fast=False, towers=tower_alternatives("lite"))
    space = default_space(facts)
    assert space.describe()["image_tower"]["choices"] == ["lite", "lite:b1", "lite:b2"]
    assert space.describe()["image_size"]["choices"] == [None, 192, 160]
    base = load_config(None, ["model.spec=lite"])
    params = space.base_params(base, facts)
    assert params["image_tower"] == "lite" and params["image_size"] is None
    sets = space.overrides({**params, "image_tower": "lite:b1"}, base)
    assert "model.spec=lite:b1" in sets and "model.image_size=null" in sets
    cfg = load_config(None, sets)
    assert cfg.model.spec == "lite:b1" and cfg.model.image_size is None
    no_towers = default_space(ModelFacts(n_blocks={"image": 4, "text": 4}, native_image_size=64, resizable=True))
    assert "image_tower" not in no_towers.describe()


def test_leaderboard_settings_name_the_tower_and_native_size():
    from cliptune.tune.leaderboard import settings_text

    params = {"unfreeze_image": 2, "unfreeze_text": 1, "lr": 1e-4, "head_lr": 1e-3, "loss": "infonce", "epochs": 12,
              "image_tower": "lite:b1", "image_size": None}
    assert settings_text(params) == "img2 txt1 lr 1e-04 head 1e-03 infonce ep12 lite:b1 native px"
    assert settings_text({**params, "image_size": 160}).endswith("lite:b1 160px")
