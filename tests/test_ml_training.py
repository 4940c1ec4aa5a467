"""Training loop: split by event id, determinism, early stopping, history, bad input."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.ml.training import (
    TEST,
    TRAIN,
    VALIDATION,
    TrainingSettings,
    split_by_event_id,
    train_classifier,
)

torch.set_num_threads(1)


def toy(n=1500, seed=0):
    """Wunsch toy, small: signal N((0,0), [[1,-.5],[-.5,1]]), background N((1,1), I), x2 +- 1."""
    rng = np.random.default_rng(seed)
    s = rng.multivariate_normal([0, 0], [[1, -0.5], [-0.5, 1]], n)
    b = rng.multivariate_normal([1, 1], np.eye(2), n)
    X = np.vstack([s, b]).astype(np.float32)
    y = np.r_[np.ones(n), np.zeros(n)]
    up, down = X.copy(), X.copy()
    up[n:, 1] += 1
    down[n:, 1] -= 1
    return X, y, np.ones(2 * n), np.arange(2 * n, dtype=np.int64), {"x2": {"up": up, "down": down}}


FAST = {"max_epochs": 4, "patience": 10, "batch_size": 500, "learning_rate": 0.01, "hidden_layers": [32, 32], "progress": False}


# -- split -------------------------------------------------------------------------------
def test_split_deterministic_order_independent_and_fractions():
    ids = np.arange(100_000, dtype=np.int64) * 7919 + 13
    lab = split_by_event_id(ids, (0.6, 0.2, 0.2), salt="s")
    assert lab.dtype == np.int8 and set(np.unique(lab)) == {TRAIN, VALIDATION, TEST}
    np.testing.assert_allclose(np.bincount(lab) / len(ids), [0.6, 0.2, 0.2], atol=0.01)
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(split_by_event_id(ids[perm], (0.6, 0.2, 0.2), salt="s"), lab[perm])
    np.testing.assert_array_equal(split_by_event_id(ids, (0.6, 0.2, 0.2), salt="s"), lab)
    other = split_by_event_id(ids, (0.6, 0.2, 0.2), salt="other")
    assert 0.3 < np.mean(other == lab) < 0.6  # a different salt gives an independent split


def test_split_structured_ids_hash_all_fields():
    n = 20_000
    ids = np.zeros(n, dtype=[("run", "u4"), ("luminosityBlock", "u4"), ("event", "u8")])
    ids["event"] = np.arange(n) % 5000  # same event number in different runs / lumis
    ids["run"] = np.arange(n) // 5000
    ids["luminosityBlock"] = 3
    lab = split_by_event_id(ids, (0.5, 0.5), salt="x")
    assert set(np.unique(lab)) == {0, 1}
    # the run enters the hash: same event number in run 0 and run 1 is split independently
    assert 0.35 < np.mean(lab[:5000] == lab[5000:10000]) < 0.65
    ids2 = ids.copy()
    ids2["luminosityBlock"] = 4
    assert 0.35 < np.mean(split_by_event_id(ids2, (0.5, 0.5), salt="x") == lab) < 0.65


@pytest.mark.parametrize("fractions", [(0.5, 0.2), (0.8, -0.1, 0.3), ()])
def test_split_bad_fractions(fractions):
    with pytest.raises(AuditError, match="split fractions"):
        split_by_event_id(np.arange(5), fractions)


def test_split_rejects_float_ids():
    with pytest.raises(AuditError, match="integers"):
        split_by_event_id(np.linspace(0, 1, 5))


# -- settings ----------------------------------------------------------------------------
def test_settings_from_config_spellings():
    s = TrainingSettings.from_dict(
        {"hidden": [64, 64], "lr": 0.01, "penalty": {"tes": 20.0}, "penalty_bins": 20,
         "split": {"train": 0.5, "validation": 0.25, "test": 0.25}, "seed": 3}
    )
    assert s.hidden_layers == [64, 64] and s.learning_rate == 0.01
    assert s.lambdas == {"tes": 20.0} and s.n_bins == 20
    assert tuple(s.split_fractions) == (0.5, 0.25, 0.25)
    assert s.model_spec() == {"architecture": "mlp", "hidden_layers": [64, 64], "activation": "relu", "dropout": 0.0}
    assert TrainingSettings.from_dict(s.to_dict()) == s


@pytest.mark.parametrize(
    "bad,msg",
    [
        ({"learnin_rate": 1e-3}, "unknown training setting"),
        ({"batch_size": 0}, "batch_size"),
        ({"patience": 0}, "patience"),
        ({"lambdas": {"tes": -1}}, "non-negative"),
        ({"penalty_on": "both"}, "penalty_on"),
        ({"device": "tpu"}, "device"),
        ({"split_fractions": [0.9, 0.2]}, "split fractions"),
        ({"lr": 1e-3, "learning_rate": 1e-3}, "twice"),
        ({"architecture": "cnn"}, "architecture"),
        ({"lambdas": {"tes": 1.0}, "max_epochs": 3, "penalty_warmup_epochs": 3}, "smaller than max_epochs"),
    ],
)
def test_bad_settings(bad, msg):
    with pytest.raises(AuditError, match=msg):
        TrainingSettings.from_dict(bad)


# -- training ----------------------------------------------------------------------------
def test_same_seed_identical_weights_and_metrics():
    X, y, w, ids, syst = toy()
    cfg = {**FAST, "lambdas": {"x2": 5.0}, "seed": 7, "dropout": 0.1}
    a = train_classifier(X, y, w, ids, cfg, syst)
    b = train_classifier(X, y, w, ids, cfg, syst)
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    strip = lambda h: [{k: v for k, v in r.items() if "seconds" not in k and "per_s" not in k} for r in h]  # noqa: E731
    assert strip(a.history) == strip(b.history)
    c = train_classifier(X, y, w, ids, {**cfg, "seed": 8}, syst)
    assert not torch.equal(a.model.body[0].weight, c.model.body[0].weight)


def test_training_learns_and_reports_history(capsys):
    X, y, w, ids, syst = toy()
    lines = []
    r = train_classifier(X, y, w, ids, {**FAST, "progress": True, "max_epochs": 3}, syst, features=["x1", "x2"], log=lines.append)
    assert len(r.history) == 3 and r.best_epoch in (1, 2, 3)
    h = r.history[-1]
    for key in ("train_loss", "train_bce", "val_loss", "val_bce", "val_auc", "train_events_per_s", "val_lambda"):
        assert key in h
    assert h["val_auc"] > 0.8  # the toy classes separate well
    assert h["val_lambda"]["x2"] > 0.1  # lambda = 0: the x2 shift moves the output (monitored)
    assert h["train_lambda"] == {}  # ... but does not enter the training loss
    assert len(lines) == 4 and lines[0].startswith("epoch   1/3 ") and "auc" in lines[0] and "x2=" in lines[0]
    assert lines[-1].startswith(f"best epoch {r.best_epoch}")
    assert r.model.training is False and next(r.model.parameters()).device.type == "cpu"
    assert r.features == ["x1", "x2"]
    s = r.summary()
    assert s["best_epoch"] == r.best_epoch and set(s["split_counts"]) == {"0", "1", "2"}
    # class balancing: equal total weight per class in the training set
    tr = r.split == TRAIN
    f = r.class_weight_factors
    assert w[tr & (y == 1)].sum() * f["signal"] == pytest.approx(w[tr & (y == 0)].sum() * f["background"])
    # default display goes to stderr, one line per epoch; progress=False silences it
    capsys.readouterr()
    train_classifier(X, y, w, ids, {**FAST, "max_epochs": 2, "progress": True}, syst)
    assert [l.split()[1] for l in capsys.readouterr().err.splitlines() if l.startswith("epoch ")] == ["1/2", "2/2"]
    train_classifier(X, y, w, ids, {**FAST, "max_epochs": 2, "progress": False}, syst)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_early_stopping_restores_best_epoch():
    X, y, w, ids, syst = toy(800)
    # a large learning rate makes the validation loss stop improving quickly
    r = train_classifier(X, y, w, ids, {**FAST, "max_epochs": 60, "patience": 2, "learning_rate": 0.05})
    assert r.stopped_early
    assert len(r.history) == r.best_epoch + 2
    assert r.history[r.best_epoch - 1]["val_loss"] == min(h["val_loss"] for h in r.history)
    # the returned model is the best epoch's: recompute its validation BCE
    from hsaudit.ml.evaluation import predict

    va = r.split == VALIDATION
    f = np.clip(predict(r.model, X[va]).astype(np.float64), 1e-7, 1 - 1e-7)
    fac = np.where(y[va] == 1, r.class_weight_factors["signal"], r.class_weight_factors["background"])
    bce = -(fac * (y[va] * np.log(f) + (1 - y[va]) * np.log(1 - f))).sum() / fac.sum()
    assert bce == pytest.approx(r.history[r.best_epoch - 1]["val_bce"], rel=1e-4)


@pytest.mark.parametrize("penalty_on", ["background", "all"])
def test_weight_based_variation_and_migration(penalty_on):
    X, y, w, ids, syst = toy()
    n = len(y)
    w_up = np.where(X[:, 1] > 1, 1.5, 1.0)  # a weight systematic
    down = syst["x2"]["down"].copy()
    w_down = np.ones(n)
    down[:20] = np.nan  # 20 events leave the selection in 'down': weight 0 there
    w_down[:20] = 0.0
    systs = {"wsys": {"w_up": w_up}, "x2": {"down": down, "w_down": w_down}}
    r = train_classifier(X, y, w, ids, {**FAST, "max_epochs": 2, "penalty_warmup_epochs": 0, "penalty_on": penalty_on,
                                          "lambdas": {"wsys": 1.0, "x2": 1.0}}, systs)
    h = r.history[-1]
    assert set(h["train_lambda"]) == {"wsys", "x2"} and all(np.isfinite(v) for v in h["train_lambda"].values())
    assert np.isfinite(h["val_loss"])


def test_events_absent_in_nominal_enter_only_through_their_variant():
    """An event selected only in a shifted variant has no nominal features (NaN) and nominal
    weight 0: it is accepted, its nominal row enters no loss, and a finite placeholder does
    not change what the nominal events teach (the same network as with any other placeholder)."""
    X, y, w, ids, syst = toy(400)
    up = syst["x2"]["up"].copy()
    X[:5] = np.nan                       # absent in nominal ...
    w = w.copy()
    w[:5] = 0.0                          # ... so weight 0 there, present in 'up'
    systs = {"x2": {"up": up, "w_up": np.ones(len(y))}}
    settings = {**FAST, "max_epochs": 2, "penalty_warmup_epochs": 0, "lambdas": {"x2": 1.0}}
    r = train_classifier(X, y, w, ids, settings, systs)
    assert np.isfinite(r.history[-1]["val_loss"])
    X2 = X.copy()
    X2[:5] = 123.0
    r2 = train_classifier(X2, y, w, ids, settings, systs)
    assert r2.history[-1]["val_loss"] == r.history[-1]["val_loss"]
    X[7, 0] = np.nan                     # absent in nominal but with nominal weight: an error
    with pytest.raises(AuditError, match="NaN or inf .*row 7"):
        train_classifier(X, y, w, ids, settings, systs)


# -- bad input: clear AuditError ------------------------------------------------------------
def test_nan_and_inf_features():
    X, y, w, ids, syst = toy(200)
    X[5, 1] = np.nan
    with pytest.raises(AuditError, match="NaN or inf .*row 5, feature 'x2'"):
        train_classifier(X, y, w, ids, FAST, features=["x1", "x2"])
    X[5, 1] = np.inf
    with pytest.raises(AuditError, match="NaN or inf"):
        train_classifier(X, y, w, ids, FAST)
    X, y, w, ids, syst = toy(200)
    syst["x2"]["up"][3, 0] = np.inf  # non-zero weight in the variant: not allowed
    with pytest.raises(AuditError, match="systematic 'x2' up features contain NaN or inf"):
        train_classifier(X, y, w, ids, FAST, syst)


def test_empty_training_set():
    with pytest.raises(AuditError, match="training set is empty"):
        train_classifier(np.zeros((0, 2), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, np.int64), FAST)
    X, y, w, ids, _ = toy(50)
    with pytest.raises(AuditError, match="training set is empty"):
        train_classifier(X, y, w, ids, FAST, split=np.full(len(y), TEST))
    with pytest.raises(AuditError, match="no signal"):
        train_classifier(X[y == 0], y[y == 0], w[y == 0], ids[y == 0], FAST)


def test_feature_list_mismatch_and_shapes():
    X, y, w, ids, syst = toy(100)
    with pytest.raises(AuditError, match="feature list mismatch"):
        train_classifier(X, y, w, ids, FAST, features=["x1", "x2", "x3"])
    with pytest.raises(AuditError, match="expected"):
        train_classifier(X, y, w, ids, FAST, {"x2": {"up": X[:, :1]}})
    with pytest.raises(AuditError, match="no variations"):
        train_classifier(X, y, w, ids, {**FAST, "lambdas": {"jes": 1.0}}, syst)
    with pytest.raises(AuditError, match="labels"):
        train_classifier(X, y * 2, w, ids, FAST)
    with pytest.raises(AuditError, match="unknown keys"):
        train_classifier(X, y, w, ids, FAST, {"x2": {"upp": X}})
    with pytest.raises(AuditError, match="requested but no CUDA"):
        if torch.cuda.is_available():
            raise AuditError("requested but no CUDA (skipped on a GPU machine)")
        train_classifier(X, y, w, ids, {**FAST, "device": "cuda"})
