"""Verdicts as measurements: the look-elsewhere null, the three outcomes with their
explanation and MC-size factor, and the closure gate of the nominal toys."""

import math

import numpy as np
import pytest
from scipy import optimize, stats

from hsaudit.errors import AuditError
from hsaudit.stats.toys import ToyResult
from hsaudit.verdict import closure, closure_settings, decide, null_quantile


def true_max_quantile(m, s, k, q):
    f = lambda x: (stats.norm.cdf((x - m) / s) - stats.norm.cdf((-x - m) / s)) ** k - q  # noqa: E731
    return optimize.brentq(f, 0, abs(m) + 20 * s)


@pytest.mark.parametrize("method, rel", [("gaussian", 0.03), ("order_statistic", 0.06), ("resample", 0.06)])
def test_null_quantile_of_a_known_distribution(method, rel):
    x = np.random.default_rng(1).normal(0.02, 0.04, 5000)
    expected = true_max_quantile(0.02, 0.04, 7, 0.95)
    assert null_quantile(x, 7, 0.95, seed=3, method=method) == pytest.approx(expected, rel=rel)
    # one look: the ordinary 95% quantile of |X|
    assert null_quantile(x, 1, 0.95, method=method) == pytest.approx(true_max_quantile(0.02, 0.04, 1, 0.95), rel=rel)


def test_gaussian_null_from_20_seeds_has_about_the_nominal_false_alarm_rate():
    rng = np.random.default_rng(7)
    alarms = 0
    trials = 400
    for _ in range(trials):
        null = rng.normal(0.01, 0.04, 20)
        fresh_max = np.abs(rng.normal(0.01, 0.04, 7)).max()
        alarms += fresh_max > null_quantile(null, 7, 0.95)
    # nominal 5%; the fitted mean and width from 20 seeds add a little (measured ~7%)
    assert 0.02 < alarms / trials < 0.12


def test_null_input_errors():
    with pytest.raises(AuditError, match="at least 2"):
        null_quantile([0.1], 3)
    with pytest.raises(AuditError, match="NaN"):
        null_quantile([0.1, np.nan], 3)
    with pytest.raises(AuditError, match="n_looks"):
        null_quantile([0.1, 0.2], 0)
    with pytest.raises(AuditError, match="unknown null method"):
        null_quantile([0.1, 0.2], 2, method="max")


def test_planted_shift_of_three_times_the_quoted_impact_is_larger_than_quoted():
    null = np.random.default_rng(2).normal(0.0, 0.03, 20)
    nq = null_quantile(null, 7)
    v = decide(0.30, 0.05, 0.10, 0.02, nq)
    assert v.verdict == "larger than quoted" and v.significance > 3
    assert "exceeds the quoted one" in v.reason and v.mc_scale_needed is None


def test_shift_equal_to_the_quoted_impact_with_large_mc_noise_is_inconclusive():
    v = decide(0.10, 0.08, 0.10, 0.02, 0.05)
    assert v.verdict == "inconclusive" and math.isinf(v.mc_scale_needed)
    v = decide(0.13, 0.08, 0.10, 0.02, 0.05)
    assert v.verdict == "inconclusive"
    s = v.mc_scale_needed
    assert s == pytest.approx((2 * math.hypot(0.08, 0.02) / 0.03) ** 2)
    # with s times the MC the uncertainties shrink by sqrt(s): just above s it decides
    assert decide(0.13, 0.08 / math.sqrt(1.01 * s), 0.10, 0.02 / math.sqrt(1.01 * s), 0.05).verdict == "larger than quoted"
    assert decide(0.13, 0.08 / math.sqrt(0.99 * s), 0.10, 0.02 / math.sqrt(0.99 * s), 0.05).verdict == "inconclusive"
    assert "MC events" in v.reason


def test_zero_attack_is_never_larger_than_quoted():
    rng = np.random.default_rng(0)
    for _ in range(200):
        q, qu, nq = rng.uniform(0, 0.3), rng.uniform(0, 0.1), rng.uniform(-0.1, 0.2)
        assert decide(0.0, rng.uniform(0, 0.1), q, qu, nq).verdict != "larger than quoted"
        assert decide(0.0, 0.0, q, qu, nq).verdict != "larger than quoted"


def test_covered_needs_the_combined_sigma():
    assert decide(0.02, 0.01, 0.20, 0.02, 0.1).verdict == "covered"
    # hidden's own sigma alone (0.01) would say covered; the quoted impact's noise (0.06) does not
    assert decide(0.02, 0.01, 0.14, 0.06, 0.1).verdict == "inconclusive"
    # a paired bootstrap sd of the difference replaces the quadrature sum
    assert decide(0.02, 0.01, 0.14, 0.06, 0.1, difference_unc=0.03).verdict == "covered"


def test_above_quoted_but_inside_the_null_is_inconclusive():
    v = decide(0.30, 0.02, 0.10, 0.02, null_q=0.35)
    assert v.verdict == "inconclusive" and v.hidden_above_null is False and "null" in v.reason
    assert decide(0.30, 0.02, 0.10, 0.02, null_q=None).verdict == "inconclusive"


def test_no_hidden_attack_and_failed_closure():
    v = decide(None, None, 0.20, 0.03, 0.1)
    assert v.verdict == "covered" and v.no_hidden_attack and "nothing hidden" in v.reason
    assert decide(None, None, 0.05, 0.04, 0.1).verdict == "inconclusive"
    assert decide(None, None, 0.20, 0.03, 0.1, no_hidden="inconclusive").verdict == "inconclusive"
    v = decide(0.30, 0.05, 0.10, 0.02, 0.1, closure_ok=False, closure_reason="pull mean -0.43")
    assert v.verdict == "inconclusive" and v.verdict_if_closed == "larger than quoted"
    assert v.reason.startswith("nominal toys do not close: pull mean -0.43")
    with pytest.raises(AuditError, match="hidden impact must be finite"):
        decide(float("nan"), 0.1, 0.1, 0.1, 0.1)
    with pytest.raises(AuditError, match="no_hidden"):
        decide(None, None, 0.1, 0.1, 0.1, no_hidden="maybe")


def toys(mu, sigma, mu_true=1.0):
    n = len(mu)
    z = np.zeros(n)
    return ToyResult(toy_index=np.arange(n), mu_hat=np.asarray(mu), sigma_mu=np.full(n, sigma), converged=np.ones(n, bool),
                     status=z.astype(int), nll=z, q0=z, z=z, params=z[:, None], uncertainties=z[:, None], mu_true=mu_true)


def test_closure_gate():
    rng = np.random.default_rng(3)
    good = closure(toys(rng.normal(1.0, 0.3, 2000), 0.3))
    assert good["passed"] and good["within_gate"] and abs(good["pull_mean"]) < 0.1
    assert good["coverage_68_unc"] == pytest.approx(np.sqrt(0.683 * 0.317 / 2000), rel=0.05)
    biased = closure(toys(rng.normal(1.13, 0.3, 2000), 0.3))  # pull mean 0.43, as the untreated demo
    assert not biased["passed"] and any("pull_mean" in f for f in biased["failing"])
    under = closure(toys(rng.normal(1.0, 0.36, 2000), 0.3))  # sigma_mu underestimated: coverage 0.59
    assert not under["passed"] and any("coverage_68" in f for f in under["failing"])
    # 100 toys: a coverage of 0.64 is outside the gate but within 2 standard errors (0.048)
    u = np.r_[np.tile([0.5, -0.5], 32), np.tile([1.5, -1.5], 18)]  # 64 of 100 covered, symmetric pulls
    few = closure(toys(1.0 + 0.3 * u, 0.3))
    assert few["coverage_68"] == pytest.approx(0.64) and not few["within_gate"] and few["passed"]
    assert not closure(toys(1.0 + 0.3 * u, 0.3), settings={"n_se": 0.5})["passed"]
    with pytest.raises(AuditError, match="unknown key"):
        closure_settings({"pull": 1})
    with pytest.raises(AuditError, match="n_se"):
        closure_settings({"n_se": -1})


def test_end_to_end_planted_and_zero_attacks_through_the_bootstrap():
    """Two-bin counting model with a background normalisation systematic (the quoted
    impact); 20 random controls (events reflected x -> 1 - x: no effect but MC noise) form
    the null; a planted attack moves background into the signal bin with ~3x the quoted
    impact; a zero attack changes nothing."""
    import dataclasses
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_impacts import counting_setup

    from hsaudit.config import Systematic
    from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty

    cfg, sample, outputs = counting_setup(1500, 6000, seed=8)
    cfg = dataclasses.replace(cfg, systematics={"bkg_norm": Systematic("bkg_norm", "normalization", 0.01, processes=["bkg"])},
                              fit={**cfg.fit, "n_bins": 2})
    out = outputs["nominal"].copy()
    out[sample.y == 1] = 0.5 + 0.5 * out[sample.y == 1]  # signal in the upper bin
    outputs = {"nominal": out}
    bkg = np.flatnonzero(sample.y == 0)
    rng = np.random.default_rng(0)
    attacks = {}
    for k in range(20):
        rows = rng.choice(bkg, 300, replace=False)
        attacks[f"random{k}"] = AttackedEvents(rows, 1.0 - out[rows])
    low = bkg[out[bkg] < 0.5]
    attacks["zero"] = AttackedEvents(low[:50], out[low[:50]].copy())
    probe = impacts_with_uncertainty(outputs, sample, cfg, {"probe": AttackedEvents(low[:100], out[low[:100]] + 0.5)},
                                     n_replicas=2, seed=1)
    quoted = probe.standard["bkg_norm"][0]
    n_move = int(round(100 * 3 * quoted / probe.attack["probe"][0]))
    attacks["planted"] = AttackedEvents(low[:n_move], out[low[:n_move]] + 0.5)
    tab = impacts_with_uncertainty(outputs, sample, cfg, attacks, n_replicas=60, seed=2)
    q, qu = tab.standard["bkg_norm"]
    null = np.array([tab.attack_bias[f"random{k}"][0] for k in range(20)])
    nq = null_quantile(null, 3)
    h, hu = tab.attack["planted"]
    assert h == pytest.approx(3 * q, rel=0.1)
    v = decide(h, hu, q, qu, nq, difference_unc=tab.difference_unc("planted", "bkg_norm"))
    assert v.verdict == "larger than quoted", v.reason
    print(f"quoted {q:.4f} +- {qu:.4f}, planted {h:.4f} +- {hu:.4f}, null_q {nq:.4f}, t {v.significance:.1f}")
    z, zu = tab.attack["zero"]
    assert z == 0.0 and decide(z, zu, q, qu, nq).verdict != "larger than quoted"


def test_verdict_dict_is_strict_json():
    import json

    for v in (decide(0.1, 0.08, 0.1, 0.02, 0.05), decide(0.13, 0.08, 0.10, 0.02, 0.05), decide(0.3, 0.0, 0.1, 0.0, 0.1)):
        d = v.to_dict()
        json.dumps(d, allow_nan=False)
        assert d["verdict"] in ("larger than quoted", "covered", "inconclusive") and d["reason"].endswith(".")
    assert decide(0.1, 0.08, 0.1, 0.02, 0.05).to_dict()["decidable_with_more_mc"] is False
    assert decide(0.13, 0.08, 0.10, 0.02, 0.05).to_dict()["decidable_with_more_mc"] is True
