"""Data-visibility tests: power of shifts. A coherent energy-scale shift is seen with a power
that rises with its size and agrees with event-level toys drawn from the shifted simulation; a
random smearing inside the envelope box is hidden once the MC noise of events crossing bin
edges is removed (and would not be without that correction); control-region looks see
control-region changes; a shift of nothing is exactly nothing."""

import numpy as np
import pytest

from hsaudit.visibility import VisibilitySettings, build_looks, calibrate
from hsaudit.visibility.pseudodata import event_counts
from hsaudit.visibility.statistic import p_values

ALPHA = 0.05


@pytest.fixture(scope="module")
def analysis():
    from hsaudit.visibility.synthetic import make_synthetic

    a = make_synthetic(20000, seed=1)
    x = a.features(0.0)
    reg = a.regions(x)
    nn = a.nn_score(x)
    s = VisibilitySettings(n_toys=500, n_test_toys=200, alpha=ALPHA)
    looks = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions), s, nn_output=nn)
    return a, x, reg, nn, looks, calibrate(looks, x, a.weights, reg, s, seed=21, nn_output=nn)


def _shift(a, looks, k):
    xs = a.features(k)
    return xs, looks.shift(xs, a.regions(xs), a.nn_score(xs))


def _event_toy_power(looks, look, x_after, in_after, nn_after, p_threshold, n_toys=1000, seed=99):
    """Power of one look from event-level toys of the shifted simulation: data drawn from every
    shifted event (b ~ Poisson(1), c ~ Poisson(w b)) and binned with the look, the prediction
    staying the nominal m, s^2."""
    rows = np.nonzero(in_after[look.region])[0]
    cols = [looks.feature_names.index(f) for f in looks.used_features]
    g = looks.global_bins(look.region, x_after[rows][:, cols], nn_after[rows])
    j = looks.region_looks[look.region].index(looks.looks.index(look))
    local = g[j] - look.offset
    onehot = np.zeros((rows.size, look.n_bins), dtype=np.float32)
    onehot[np.arange(rows.size), local] = 1.0
    c = event_counts(looks.weights[rows], seed, 7, range(n_toys))
    sl = slice(look.offset, look.offset + look.n_bins)
    t = ((c @ onehot - looks.m[sl]) ** 2 / looks.var[sl]).sum(axis=1)
    return float(np.mean(p_values(t, look.n_bins) < p_threshold))


def test_coherent_shift_power_curve_rises_and_matches_event_toys(analysis):
    a, x, reg, nn, looks, cal = analysis
    powers = {}
    for k in (0.0, 0.5, 1.0, 2.0):
        xs, sh = _shift(a, looks, k)
        powers[k] = cal.power(sh)
    p = [powers[k].power for k in (0.0, 0.5, 1.0, 2.0)]
    assert p[0] < p[1] < p[2] <= p[3] and p[3] > 0.95, p
    se0 = np.sqrt(ALPHA * (1 - ALPHA) / cal.n_toys)
    assert abs(p[0] - ALPHA) < 2.5 * se0
    assert powers[0.0].hidden and not powers[1.0].hidden
    # asymptotic power of the most visible look vs event-level toys of the shifted sample,
    # for every shift size where that power is not trivially 0 or 1
    checked = 0
    for k in (0.5, 1.0):
        best = powers[k].most_visible
        look = next(lk for lk in looks.looks if lk.id == best["id"])
        xs = a.features(k)
        toy = _event_toy_power(looks, look, xs, a.regions(xs), a.nn_score(xs), cal.p_threshold)
        if 0.02 < best["power"] < 0.98:
            checked += 1
            assert abs(toy - best["power"]) < 0.05, (k, best, toy)
    assert checked >= 1


def test_random_smearing_in_the_box_is_hidden_only_with_the_noise_correction():
    """Events smeared uniformly and independently inside the +-1 sigma box of a 4% energy scale,
    with large weights (10 x: the MC has ~10x fewer events than data, so edge-crossing noise is
    large). The shift of the population is second order in the box width, the MC noise first
    order: the raw shift d looks like a strong signal, the noise-corrected one does not. The
    residual power after the correction (0.1-0.3 over seeds) is the noise of the lambda estimates
    maximised over ~70 looks plus the real second-order smearing, not an alpha-sized null."""
    from hsaudit.visibility.synthetic import make_synthetic

    a = make_synthetic(20000, seed=1, weight_scale=10.0, scale=0.04)
    x = a.features(0.0)
    reg = a.regions(x)
    nn = a.nn_score(x)
    s = VisibilitySettings(n_toys=300, n_test_toys=200, n_bins=20)
    looks = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions), s, nn_output=nn)
    cal = calibrate(looks, x, a.weights, reg, s, seed=3, nn_output=nn)
    up, dn = a.features(1.0), a.features(-1.0)
    lo, hi = np.minimum(np.minimum(up, dn), x), np.maximum(np.maximum(up, dn), x)
    xs = lo + np.random.default_rng(0).random(x.shape) * (hi - lo)
    sh = looks.shift(xs, a.regions(xs), a.nn_score(xs))
    corrected, per_bin, raw = (cal.power(sh, noise_correction=m) for m in ("look", "bin", "none"))
    assert corrected.hidden and corrected.power < 0.3, corrected.power
    assert not raw.hidden and raw.power > 0.8, raw.power
    assert corrected.power < per_bin.power < raw.power
    lam = np.array([r["lambda"] for r in corrected.looks])
    lam_raw = np.array([r["lambda_raw"] for r in corrected.looks])
    assert lam.sum() < 0.4 * lam_raw.sum()
    # the coherent +1 sigma shift of the same systematic stays clearly visible
    xu = a.features(1.0)
    assert cal.power(looks.shift(xu, a.regions(xu), a.nn_score(xu))).power > 0.95


def test_control_region_changes_are_seen_by_control_region_looks(analysis):
    a, x, reg, nn, looks, cal = analysis
    xs = x.copy()
    cr = reg["cr_high"]
    i = a.feature_names.index("tau_pt")
    xs[cr, i] *= 1.06           # only control-region events move (and stay in their region)
    sh = looks.shift(xs, reg, nn)
    lam = sh.lam()
    by_region = {r: lam[looks.region_looks[r]] for r in looks.regions}
    tau_look = looks.ids.index("cr_high/feature:tau_pt")
    assert lam[tau_look] > 5.0
    assert np.all(by_region["sr"] == 0.0) and np.all(by_region["cr_low"] == 0.0)
    res = cal.power(sh)
    assert res.to_dict() == cal.assess(xs, reg, nn).to_dict()
    assert res.most_visible["region"] == "cr_high" and res.power > 0.5
    assert res.regions["cr_high"] == pytest.approx(res.power)
    assert res.regions["sr"] < 0.05 and res.regions["cr_low"] < 0.05


def test_shift_of_nothing_is_exactly_zero(analysis):
    a, x, reg, nn, looks, cal = analysis
    sh = looks.shift(x.copy(), {r: m.copy() for r, m in reg.items()}, nn.copy())
    assert sh.is_null
    assert np.all(sh.d == 0.0) and np.all(sh.v == 0.0) and np.all(sh.lam() == 0.0)
    res = cal.power(sh)
    assert all(r["lambda"] == 0.0 for r in res.looks)
    assert res.power == pytest.approx(np.mean(cal.min_p_cal < cal.p_threshold))


def test_migration_and_evaluation_weights(analysis):
    """Events leaving a region count as leaving their bin; evaluation weights 2w on one half and
    0 on the other estimate the same shift (the attack-on-one-half, evaluate-on-the-other split)."""
    a, x, reg, nn, looks, cal = analysis
    gone = {r: m.copy() for r, m in reg.items()}
    drop = np.nonzero(reg["sr"])[0][:200]
    gone["sr"][drop] = False
    sh = looks.shift(x, gone, nn)
    lk = looks.looks[looks.ids.index("sr/feature:tau_pt")]
    d = sh.d[lk.offset:lk.offset + lk.n_bins]
    assert d.sum() == pytest.approx(-a.weights[drop].sum())
    assert sh.v[lk.offset:lk.offset + lk.n_bins].sum() == pytest.approx((a.weights[drop] ** 2).sum())
    xs, full = _shift(a, looks, 1.0)
    half = np.random.default_rng(0).random(len(x)) < 0.5
    e = np.where(half, 2 * a.weights, 0.0)
    halved = looks.shift(xs, a.regions(xs), a.nn_score(xs), eval_weights=e)
    lf, lh = full.lam(), halved.lam()
    top = np.argsort(lf)[-5:]
    assert np.all(np.abs(lh[top] / lf[top] - 1) < 0.5)
