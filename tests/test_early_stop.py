from cliptune.train.early_stop import EarlyStopping


def test_patience_and_best():
    stop = EarlyStopping(patience=2, metric="mean_R@10")
    assert stop.update(0.5, 10) and stop.best_step == 10
    assert stop.update(0.6, 20) and not stop.should_stop
    assert not stop.update(0.4, 30) and not stop.should_stop
    assert not stop.update(0.55, 40) and stop.should_stop
    assert stop.best == 0.6 and stop.best_step == 20


def test_a_tie_moves_best_to_the_later_step_without_resetting_patience():
    stop = EarlyStopping(patience=2, metric="mean_R@10")
    stop.update(1.0, 10)
    assert stop.update(1.0, 20) and stop.best_step == 20
    assert stop.bad_evals == 1
    stop.update(1.0, 30)
    assert stop.should_stop and stop.best_step == 30


def test_state_roundtrip():
    stop = EarlyStopping(patience=3, metric="m")
    stop.update(0.3, 5)
    stop.update(0.2, 6)
    other = EarlyStopping(patience=3, metric="m")
    other.load_state(stop.state())
    assert (other.best, other.best_step, other.bad_evals) == (0.3, 5, 1)
