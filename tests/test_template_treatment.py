"""Shape-template treatment: symmetrisation, smoothing, pruning against MC noise, and the
closure of nominal toys that it restores on a model with noisy templates."""

import numpy as np
import pytest

from hsaudit.errors import AuditError
from hsaudit.fit_stage import _bin_index, _shape_noise
from hsaudit.stats.from_histograms import build_spec
from hsaudit.stats.model import Model
from hsaudit.stats.template_treatment import (shape_noise_test, smooth_relative, treat_templates,
                                               treatment_settings)
from hsaudit.stats.toys import run_pseudo_experiments, summarise


def noisy_histograms(seed=0, nb=8, common=0.08, nsyst=3):
    """Background shape systematics whose up and down move each bin the same way (MC-noise
    like, 8% per bin) with a tiny genuine anti-correlated part."""
    rng = np.random.default_rng(seed)
    x = (np.arange(nb) + 0.5) / nb
    bkg = 400 * np.exp(-2 * x)
    sig = 30 * np.exp(-3 * (1 - x))
    shapes = {}
    for k in range(nsyst):
        c = rng.normal(0, common, nb)
        e = rng.normal(0, 0.01, nb)
        shapes[f"s{k}"] = {"up": bkg * (1 + c + e), "down": bkg * (1 + c - e)}
    return {"SR": {"sig": {"nominal": sig, "sumw2": sig * 0.01},
                   "bkg": {"nominal": bkg, "sumw2": bkg * 0.05, "shapes": shapes}}}


def closure(hists, seed):
    m = Model(build_spec(hists, signal_samples=["sig"], poi_bounds=(-5, 10), staterror=False))
    truth = sum(np.asarray(s["nominal"]) for s in noisy_histograms()["SR"].values())
    return summarise(run_pseudo_experiments(m, truth, 1000, seed, significance=False))


def test_treatment_restores_closure_of_noisy_templates():
    raw = closure(treat_templates(noisy_histograms(), False)[0], seed=2)
    # raw templates: measured pull mean -0.62, coverage 0.62
    assert raw["pull_mean"] < -0.3 and raw["coverage_68"] < 0.65
    treated_h, record = treat_templates(noisy_histograms(), None)
    treated = closure(treated_h, seed=2)
    # treated: measured pull mean -0.06 +- 0.03, coverage 0.682 +- 0.015
    assert abs(treated["pull_mean"]) < 0.1
    assert abs(treated["coverage_68"] - 0.683) < 0.035
    assert record["summary"]["n_shapes_pruned"] == 3
    assert record["summary"]["n_tested_with_conservative_variance"] == 3


def test_symmetrisation_keeps_the_half_difference_and_caps_it():
    nom = np.array([10.0, 20.0, 5.0])
    up, down = np.array([12.0, 25.0, 30.0]), np.array([11.0, 14.0, 0.0])
    h = {"SR": {"b": {"nominal": nom, "sumw2": nom, "shapes": {"s": {"up": up, "down": down}}}}}
    out, _ = treat_templates(h, {"prune": False})
    s = out["SR"]["b"]["shapes"]["s"]
    np.testing.assert_allclose(s["up"] + s["down"], 2 * nom)
    np.testing.assert_allclose(s["up"] - nom, [0.5, 5.5, 5.0])  # last bin capped at 100%
    assert (s["down"] >= 0).all()
    assert "shape_noise" not in out["SR"]["b"] and h["SR"]["b"]["shapes"]["s"]["up"] is up


def test_pruned_shape_keeps_only_its_normalisation():
    nom = np.full(5, 100.0)
    up, down = nom * np.array([1.12, 1.08, 1.10, 1.11, 1.09]), nom * np.array([0.9, 0.91, 0.89, 0.9, 0.9])
    big = {"up": nom * np.linspace(0.5, 1.5, 5), "down": nom * np.linspace(1.5, 0.5, 5)}
    h = {"SR": {"b": {"nominal": nom, "sumw2": nom, "shapes": {"s": {"up": up, "down": down}, "big": big}}}}
    out, rec = treat_templates(h, None)
    s = out["SR"]["b"]["shapes"]["s"]
    np.testing.assert_allclose(s["up"] / nom, s["up"].sum() / nom.sum())
    np.testing.assert_allclose(s["up"].sum() - nom.sum(), 0.5 * (up.sum() - down.sum()))
    actions = {e["systematic"]: e["action"] for e in rec["shapes"]}
    assert actions == {"s": "pruned: normalisation kept", "big": "kept (symmetrised)"}
    out2, _ = treat_templates(h, {"keep_normalisation": False})
    np.testing.assert_allclose(out2["SR"]["b"]["shapes"]["s"]["up"], nom)


def test_event_noise_covariance_matches_a_direct_sum():
    rng = np.random.default_rng(1)
    edges = np.linspace(0, 1, 6)
    x = rng.random(300)
    w = rng.uniform(0.5, 2.0, 300)
    xu, xd = x + rng.normal(0, 0.05, 300), x - rng.normal(0, 0.05, 300)
    ru, rd = np.flatnonzero(xu < 0.9), np.flatnonzero(xd > 0.05)  # some events leave the channel
    bu, bd = _bin_index(xu[ru], edges), _bin_index(xd[rd], edges)
    C = _shape_noise(5, (ru, bu), (rd, bd), w[ru], w[rd])
    direct = np.zeros((5, 5))
    for i in range(300):
        a = np.zeros(5)
        if i in ru:
            a[bu[list(ru).index(i)]] += w[i]
        if i in rd:
            a[bd[list(rd).index(i)]] -= w[i]
        direct += np.outer(a, a)
    np.testing.assert_allclose(C, direct, rtol=1e-12, atol=1e-12)
    assert _bin_index(np.array([0.0, 1.0, np.nan, 2.0]), edges).tolist() == [0, 4, -1, 4]


def test_noise_only_shapes_give_uniform_pvalues():
    """Events shifted by a random +-delta (wrapped around, so no net shape): the test of the
    shape part against the events' noise covariance rejects at its nominal rate."""
    rng = np.random.default_rng(5)
    edges = np.linspace(0, 1, 9)
    pvals = []
    for _ in range(300):
        x = rng.random(2000)
        step = 0.04 * rng.choice([-1.0, 1.0], 2000)
        xu, xd = (x + step) % 1.0, (x - step) % 1.0
        rows = np.arange(2000)
        bu, bd, bn = _bin_index(xu, edges), _bin_index(xd, edges), _bin_index(x, edges)
        w = np.ones(2000)
        nom = np.bincount(bn, minlength=8).astype(float)
        d = 0.5 * (np.bincount(bu, minlength=8) - np.bincount(bd, minlength=8))
        C = _shape_noise(8, (rows, bu), (rows, bd), w, w) / 4
        pvals.append(shape_noise_test(nom, d, C)["pvalue"])
    frac = np.mean(np.array(pvals) < 0.05)
    assert 0.015 < frac < 0.10, frac
    assert 0.35 < np.mean(pvals) < 0.65


def test_smoothing_keeps_the_normalisation_and_reduces_bin_to_bin_noise():
    rng = np.random.default_rng(2)
    nom = np.full(10, 50.0)
    d = nom * (0.05 + rng.normal(0, 0.03, 10))
    ds = smooth_relative(nom, d, 3)
    assert ds.sum() == pytest.approx(d.sum())
    assert np.std(np.diff(ds / nom)) < 0.6 * np.std(np.diff(d / nom))
    h = {"SR": {"b": {"nominal": nom, "sumw2": nom * 0.0 + 1e-6,
                      "shapes": {"s": {"up": nom + d, "down": nom - d}}}}}
    out, _ = treat_templates(h, {"smoothing": "running_mean", "prune": False})
    np.testing.assert_allclose(out["SR"]["b"]["shapes"]["s"]["up"] - nom, ds)


@pytest.mark.parametrize("raw, key", [
    ({"prune_pvalue": 2.0}, "prune_pvalue"), ({"symmetrise": "yes"}, "symmetrise"),
    ({"smoothing": "kernel"}, "smoothing"), ({"smoothing_width": 4}, "smoothing_width"),
    ({"pruning": True}, "unknown key"), ("on", "must be a mapping"),
])
def test_bad_settings_name_the_key(raw, key):
    with pytest.raises(AuditError, match=key):
        treatment_settings(raw)


def test_mismatched_template_is_refused():
    h = {"SR": {"b": {"nominal": np.ones(3), "sumw2": np.ones(3), "shapes": {"s": {"up": np.ones(4), "down": np.ones(3)}}}}}
    with pytest.raises(AuditError, match="shape 's'"):
        treat_templates(h, None)


def test_imposed_pruning_decisions_override_the_test():
    from hsaudit.stats.template_treatment import pruning_decisions

    nom = np.full(5, 100.0)
    big = {"up": nom * np.linspace(0.5, 1.5, 5), "down": nom * np.linspace(1.5, 0.5, 5)}
    h = {"SR": {"b": {"nominal": nom, "sumw2": nom, "shapes": {"big": big}}}}
    out, rec = treat_templates(h, None)
    assert pruning_decisions(rec) == {"SR/b/big": False}
    forced, rec2 = treat_templates(h, None, {"SR/b/big": True})
    np.testing.assert_allclose(forced["SR"]["b"]["shapes"]["big"]["up"], nom)
    assert pruning_decisions(rec2) == {"SR/b/big": True}
