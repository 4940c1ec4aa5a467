"""Data-visibility tests: the toy-calibrated global test has its nominal false-alarm rate, every
look's asymptotic chi2 p-value is calibrated, and the calibration is deterministic and cached."""

import json

import numpy as np
import pytest

from hsaudit.visibility import Calibration, VisibilitySettings, build_looks, calibrate
from hsaudit.visibility.synthetic import make_synthetic

ALPHA = 0.05


@pytest.fixture(scope="module")
def calibrated():
    a = make_synthetic(20000, seed=1)
    x = a.features(0.0)
    reg = a.regions(x)
    nn = a.nn_score(x)
    s = VisibilitySettings(n_toys=500, n_test_toys=500, alpha=ALPHA)
    looks = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions), s, nn_output=nn)
    return a, x, reg, nn, looks, calibrate(looks, x, a.weights, reg, s, seed=11, nn_output=nn)


def test_global_false_alarm_rate_is_alpha_on_independent_toys(calibrated):
    """The rate is measured on 500 null toys independent of the 500 that fixed p*. Its deviation
    from alpha has two honest sources of noise: the binomial noise of the 500 test toys and the
    noise of p* itself (an order statistic of 500 toys: its true rate scatters by
    sqrt(alpha (1 - alpha) / 500)); the test allows 2.5 of the combined standard error."""
    *_, looks, cal = calibrated
    assert cal.n_toys == 500 and cal.n_test_toys == 500
    se = np.sqrt(ALPHA * (1 - ALPHA) * (1 / cal.n_toys + 1 / cal.n_test_toys))
    assert abs(cal.false_alarm_rate - ALPHA) < 2.5 * se, (cal.false_alarm_rate, se)
    assert cal.false_alarm_unc == pytest.approx(np.sqrt(cal.false_alarm_rate * (1 - cal.false_alarm_rate) / 500))
    # the global threshold is far below alpha: many looks (a naive "any look p < alpha" would fire often)
    assert cal.p_threshold < ALPHA / 10
    naive = float(np.mean(cal.min_p_test < ALPHA))
    assert naive > 0.5


def test_every_look_has_its_nominal_false_alarm_rate(calibrated):
    """Each look's asymptotic chi2 p-value, tested at alpha on the 500 independent toys.

    Looks share events, so their rates are correlated and the count of looks outside 2.5
    binomial SE does not follow a binomial of the number of looks (1.2% expected if they were
    independent): the test allows 10%. The mean rate over looks is compared with alpha using the
    standard error measured from the toys themselves (the spread over toys of the fraction of
    looks that reject), which includes the correlations; and no single look may be off by more
    than 4.5 SE (a real miscalibration of one binning, not a fluctuation among ~65 looks)."""
    *_, looks, cal = calibrated
    n = cal.n_test_toys
    rates = np.array(list(cal.per_look_false_alarm.values()))
    assert len(rates) == len(looks) > 50
    se = np.sqrt(ALPHA * (1 - ALPHA) / n)
    outside = float(np.mean(np.abs(rates - ALPHA) > 2.5 * se))
    assert outside <= 0.10, outside
    assert np.max(np.abs(rates - ALPHA)) < 4.5 * se
    summary = cal.summary()
    mean, mean_se = summary["per_look_mean_false_alarm"], summary["per_look_mean_false_alarm_unc"]
    assert mean == pytest.approx(rates.mean())
    assert abs(mean - ALPHA) < 2.5 * mean_se, (mean, mean_se)
    assert summary["per_look_fraction_outside_2p5_se"] == pytest.approx(outside)
    # each region's share of the global false alarms: below the global rate, above zero
    per_region = summary["per_region_false_alarm"]
    assert set(per_region) == set(looks.regions)
    assert all(0.0 < v <= cal.false_alarm_rate for v in per_region.values())


def test_looks_cover_the_kinds_and_bins_expect_enough_events(calibrated):
    a, x, reg, nn, looks, cal = calibrated
    kinds = {lk.kind for lk in looks.looks}
    assert kinds == {"feature", "pair", "nn_output"}
    assert np.all(looks.m >= looks.settings.min_expected)
    assert np.all(looks.m ** 2 / looks.s2 >= looks.settings.min_effective)
    # equal population: the tau_pt bins of the signal region expect (nearly) the same yield
    lk = next(lk for lk in looks.looks if lk.id == "sr/feature:tau_pt")
    m = looks.m[lk.offset:lk.offset + lk.n_bins]
    assert lk.n_bins == 10 and m.max() / m.min() < 1.2
    # the integer feature gets unique edges only: fewer bins, never a split integer
    nj = next(lk for lk in looks.looks if lk.id == "sr/feature:n_jets")
    assert 2 <= nj.n_bins < 10 and np.all(nj.edges[0] == np.round(nj.edges[0]))
    json.dumps(cal.summary())


def test_signal_region_nn_output_is_never_a_look(calibrated):
    a, x, reg, nn, looks, cal = calibrated
    nn_looks = [lk for lk in looks.looks if "nn_output" in lk.axes]
    assert sorted(lk.region for lk in nn_looks) == sorted(a.control_regions)
    assert not any(lk.region == "sr" and "nn_output" in lk.axes for lk in looks.looks)
    none = build_looks(x, a.weights, reg, a.feature_names, [], VisibilitySettings(), nn_output=nn)
    assert not any("nn_output" in lk.axes for lk in none.looks)


def test_same_seed_same_toys_other_seed_other_toys_block_size_irrelevant():
    """Counter-based toys: the numbers depend on (seed, toy) only, not on the block size, the
    number of threads or the size of the one-hot chunks."""
    a = make_synthetic(3000, seed=2)
    x = a.features(0.0)
    reg = a.regions(x)
    s = VisibilitySettings(n_toys=200, n_test_toys=200, looks=("feature", "pair"))
    looks = build_looks(x, a.weights, reg, a.feature_names, [], s)
    c1 = calibrate(looks, x, a.weights, reg, s, seed=4)
    c2 = calibrate(looks, x, a.weights, reg, s, seed=4)
    c3 = calibrate(looks, x, a.weights, reg, s, seed=5)
    s7 = VisibilitySettings(n_toys=200, n_test_toys=200, looks=("feature", "pair"), toy_block=7, n_threads=1)
    c4 = calibrate(looks, x, a.weights, reg, s7, seed=4)
    s3 = VisibilitySettings(n_toys=200, n_test_toys=200, looks=("feature", "pair"), n_threads=3, max_matrix_mb=0.5)
    c5 = calibrate(looks, x, a.weights, reg, s3, seed=4)
    assert np.array_equal(c1.residuals, c2.residuals) and c1.p_threshold == c2.p_threshold
    assert np.array_equal(c1.min_p_test, c2.min_p_test)
    assert not np.array_equal(c1.residuals, c3.residuals)
    assert np.array_equal(c1.residuals, c4.residuals) and np.array_equal(c1.residuals, c5.residuals)
    # residuals are integer counts minus the prediction, with the variance m + s^2 of the denominator
    ratio = c1.residuals.var(axis=0) / looks.var
    assert 0.85 < ratio.mean() < 1.15


def test_save_and_load_give_the_same_numbers(calibrated, tmp_path):
    a, x, reg, nn, looks, cal = calibrated
    path = tmp_path / "calibration.npz"
    cal.save(path)
    back = Calibration.load(path)
    assert back.p_threshold == cal.p_threshold and back.false_alarm_rate == cal.false_alarm_rate
    assert back.settings == cal.settings and back.summary() == cal.summary()
    assert back.looks.ids == looks.ids and np.array_equal(back.looks.m, looks.m)
    xs = a.features(1.0)
    r1 = cal.power(looks.shift(xs, a.regions(xs), a.nn_score(xs)))
    r2 = back.power(back.looks.shift(xs, a.regions(xs), a.nn_score(xs)))
    assert r1.to_dict() == r2.to_dict()
    json.dumps(r2.to_dict())


def test_negative_weights_toy_variance_and_global_rate():
    """With negative weights the toys' bin variance is sum |w| + sum w^2 (documented
    approximation, larger than the denominator m + s^2); the toy-calibrated global test keeps
    its false-alarm rate."""
    a = make_synthetic(12000, seed=3)
    neg = np.random.default_rng(0).random(len(a.weights)) < 0.1
    a.weights = np.where(neg, -a.weights, a.weights)
    x = a.features(0.0)
    reg = a.regions(x)
    s = VisibilitySettings(n_toys=400, n_test_toys=400, looks=("feature", "pair"))
    looks = build_looks(x, a.weights, reg, a.feature_names, [], s)
    cal = calibrate(looks, x, a.weights, reg, s, seed=8)
    abs_sum = np.zeros(looks.n_bins_total)
    for r in looks.regions:
        rows, g = looks.nominal_bins(r)
        abs_sum += np.bincount(g.ravel(), np.broadcast_to(np.abs(a.weights[rows]), g.shape).ravel(),
                               minlength=looks.n_bins_total)
    expected = (abs_sum + looks.s2) / looks.var
    measured = cal.residuals.var(axis=0) / looks.var
    assert expected.mean() > 1.04
    assert measured.mean() == pytest.approx(expected.mean(), rel=0.03)
    se = np.sqrt(ALPHA * (1 - ALPHA) * (1 / 400 + 1 / 400))
    assert abs(cal.false_alarm_rate - ALPHA) < 2.5 * se


def test_marginal_bin_counter_equals_the_dense_one_hot_product(calibrated):
    """The pair grids rebuilt from marginals are exactly the dense one-hot counts, including
    pairs whose cells were merged (large min_expected) and tiny event chunks."""
    from hsaudit.visibility.pseudodata import BinCounter, event_counts

    a, x, reg, nn, looks, cal = calibrated
    merged = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions),
                         VisibilitySettings(min_expected=150.0), nn_output=nn)
    assert any(lk.kind == "pair" and lk.n_bins < len(lk.cellmap) for lk in merged.looks)
    for lk in (looks, merged):
        dense, marginal = BinCounter(lk, method="dense"), BinCounter(lk, max_matrix_mb=0.3)
        c = event_counts(lk.weights[dense.active], 5, 1, range(30))
        assert np.array_equal(dense.counts(c), marginal.counts(c))


def test_heavy_events_do_not_make_a_bin():
    """Bins need >= min_effective effective MC events, not only >= min_expected expected events:
    a region of 40 events of weight 25 (1000 expected) gets at most 4 bins per feature."""
    from hsaudit.visibility.binning import merge_cells

    assert merge_cells(np.full(10, 100.0), 10.0, np.full(10, 2500.0), 10.0).max() + 1 == 2
    assert merge_cells(np.full(10, 100.0), 10.0, np.full(10, 2500.0), 0.0).max() + 1 == 10
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    reg = {"heavy": np.arange(400) < 40, "light": np.arange(400) >= 40}
    w = np.where(reg["light"], 1.0, 25.0)
    looks = build_looks(x, w, reg, ["a", "b"], [], VisibilitySettings(looks=("feature",)))
    heavy = [lk for lk in looks.looks if lk.region == "heavy"]
    assert all(lk.n_bins <= 4 for lk in heavy)
    assert np.all(looks.m ** 2 / looks.s2 >= 10.0 - 1e-9)
