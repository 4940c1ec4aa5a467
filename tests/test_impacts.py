"""Impacts with MC-statistics uncertainties: the Poisson bootstrap against analytic error
propagation, a zero attack, determinism of the multipliers, and the toy cross-check."""

import dataclasses

import numpy as np
import pytest
import torch

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.samples import EventSample
from hsaudit.stats.impacts import (AttackedEvents, event_keys, impacts_with_uncertainty, poisson_multipliers,
                                    standard_impacts, toy_difference)
from hsaudit.tables import NOMINAL

torch.set_num_threads(1)


def counting_setup(n_sig=2000, n_bkg=6000, seed=4):
    """One channel, one bin, mu the only parameter: mu_hat = (n - B)/S exactly."""
    rng = np.random.default_rng(seed)
    cfg = load_config("ci")
    cfg = dataclasses.replace(cfg, systematics={}, fit={**cfg.fit, "channels": ["signal"], "binning": "uniform",
                                                        "n_bins": 1, "mc_stat_uncertainty": False})
    n = n_sig + n_bkg
    y = np.r_[np.ones(n_sig), np.zeros(n_bkg)].astype(np.int8)
    w = np.where(y == 1, rng.uniform(0.2, 1.0, n), rng.uniform(0.5, 1.5, n))
    region = {(r, NOMINAL): np.zeros(n, bool) for r in cfg.regions}
    region[("signal", NOMINAL)] = np.ones(n, bool)
    out = rng.random(n)
    sample = EventSample(features=["x"], variants=[NOMINAL], regions=list(cfg.regions),
                         X={NOMINAL: out[:, None].astype(np.float32)}, y=y, weight=w, weight_variations={},
                         region=region, event_id=np.arange(n), dataset=(1 - y).astype(np.int64),
                         datasets=["sig", "bkg"], processes=["sig", "bkg"])
    return cfg, sample, {NOMINAL: out}


def test_bootstrap_uncertainty_matches_error_propagation():
    cfg, sample, outputs = counting_setup()
    w, y = sample.weight, sample.y
    moved = np.flatnonzero(y == 0)[:300]  # these background events leave the channel
    attack = AttackedEvents(moved, outputs[NOMINAL][moved], {"signal": np.zeros(len(moved), bool)})
    zero = AttackedEvents(moved, outputs[NOMINAL][moved].copy())
    tab = impacts_with_uncertainty(outputs, sample, cfg, {"move": attack, "zero": zero}, n_replicas=400, seed=11,
                                   parameters=[])
    S, D = w[y == 1].sum(), w[moved].sum()
    assert tab.attack_bias["move"][0] == pytest.approx(-D / S, rel=1e-6)
    analytic = np.sqrt((w[moved] ** 2).sum() / S ** 2 + D ** 2 * (w[y == 1] ** 2).sum() / S ** 4)
    # measured: bootstrap sd within a few per cent of the analytic one (400 replicas: +-3.5%)
    assert tab.attack["move"][1] == pytest.approx(analytic, rel=0.10)
    # a zero attack: impact 0 within its uncertainty (here exactly 0 in every replica)
    value, unc = tab.attack["zero"]
    assert abs(value) <= 2 * unc + 1e-9 and abs(value) < 1e-9
    assert tab.nominal_mu_hat[0] == pytest.approx(1.0, abs=1e-6)
    assert tab.n_failed_replicas == 0
    d = tab.to_dict()
    assert d["attack"]["move"]["mc_unc"] > 0 and d["n_replicas"] == 400


def test_multipliers_are_poisson_deterministic_and_order_free():
    cfg, sample, _ = counting_setup()
    keys = event_keys(sample)
    b = poisson_multipliers(keys, 3, 0)
    assert b.mean() == pytest.approx(1.0, abs=0.04) and b.var() == pytest.approx(1.0, abs=0.06)
    np.testing.assert_array_equal(b, poisson_multipliers(keys, 3, 0))
    perm = np.random.default_rng(0).permutation(len(keys))
    np.testing.assert_array_equal(poisson_multipliers(keys[perm], 3, 0), b[perm])
    assert np.corrcoef(b, poisson_multipliers(keys, 3, 1))[0, 1] < 0.05
    assert np.corrcoef(b, poisson_multipliers(keys, 4, 0))[0, 1] < 0.05
    assert len(np.unique(keys)) == len(keys)


def test_standard_impact_is_the_refit_impact():
    from hsaudit.stats.fit import fit_toys
    from hsaudit.stats.model import Model

    spec = {"poi": "mu", "parameters": {"mu": {"bounds": [-5, 10]}}, "channels": {"SR": {"samples": {
        "s": {"nominal": [5.0, 20.0], "normfactors": ["mu"]},
        "b": {"nominal": [100.0, 50.0], "normsys": {"xs": {"lo": 0.9, "hi": 1.1}},
              "histosys": {"sh": {"up": [104.0, 47.0], "down": [96.0, 53.0]}}}}}}}
    m = Model(spec)
    data = m.expected_main()
    imp = standard_impacts(m, data, ["xs", "sh", "missing"])
    assert imp["missing"] == 0.0
    free = fit_toys(m, data[None])
    j = m.par_names.index("xs")
    refit = fit_toys(m, data[None], fixed={"xs": free.params[0, j] + free.uncertainties[0, j]})
    refit_dn = fit_toys(m, data[None], fixed={"xs": free.params[0, j] - free.uncertainties[0, j]})
    expected = max(abs(refit.mu_hat[0] - free.mu_hat[0]), abs(refit_dn.mu_hat[0] - free.mu_hat[0]))
    assert imp["xs"] == pytest.approx(expected, rel=1e-5)
    assert imp["xs"] > 0.05 and imp["sh"] > 0.05


def test_toy_difference_uses_common_toys():
    from hsaudit.stats.toys import ToyResult

    def res(mu, idx, conv):
        n = len(idx)
        z = np.zeros(n)
        return ToyResult(toy_index=np.asarray(idx), mu_hat=np.asarray(mu, float), sigma_mu=z + 1, converged=np.asarray(conv),
                         status=z.astype(int), nll=z, q0=z, z=z, params=z[:, None], uncertainties=z[:, None])

    nom = res([1.0, 1.1, 0.9, 1.2], [0, 1, 2, 3], [True, True, True, False])
    att = res([1.3, 1.2, 1.4, 1.1], [1, 2, 3, 4], [True, True, True, True])
    out = toy_difference(nom, att)
    # toys 1, 2 in both and converged in both: differences 1.3 - 1.1, 1.2 - 0.9
    assert out["n"] == 2 and out["mean"] == pytest.approx(0.25)
    assert out["se"] == pytest.approx(np.std([0.2, 0.3], ddof=1) / np.sqrt(2))
    with pytest.raises(AuditError, match="share no toy index"):
        toy_difference(nom, res([1.0], [9], [True]))


def test_bad_inputs_are_refused():
    cfg, sample, outputs = counting_setup(200, 600)
    with pytest.raises(AuditError, match="n_replicas"):
        impacts_with_uncertainty(outputs, sample, cfg, {}, n_replicas=1)
    with pytest.raises(AuditError, match="outside the sample"):
        impacts_with_uncertainty(outputs, sample, cfg, {"a": AttackedEvents(np.array([10_000]), np.array([0.5]))},
                                 n_replicas=2)
    with pytest.raises(AuditError, match="NaN"):
        impacts_with_uncertainty(outputs, sample, cfg, {"a": AttackedEvents(np.array([1]), np.array([np.nan]))},
                                 n_replicas=2)
    with pytest.raises(AuditError, match="AttackedEvents"):
        impacts_with_uncertainty(outputs, sample, cfg, {"a": (1, 2)}, n_replicas=2)
