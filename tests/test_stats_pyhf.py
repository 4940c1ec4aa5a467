"""Cross-check of the batched engine against pyhf on the same workspace.

NLL equal (here even including constants) at random parameter points; mu_hat within
1e-4 of pyhf (numpy backend, scipy optimiser) on 200 toys; Hessian uncertainties within
1% of pyhf+MINUIT (HESSE) and within 1e-6 of the exact Hessian of pyhf's own likelihood
(pyhf pytorch backend, autograd); q0 equal to pyhf's test statistic.
"""

import numpy as np
import pytest
import torch

pyhf = pytest.importorskip("pyhf")

from hsaudit.stats import Model, fit_toys, generate_toys, nll  # noqa: E402
from hsaudit.stats.model import pars_from_pyhf, pyhf_data, pyhf_pars  # noqa: E402
from hsaudit.stats.significance import discovery_q0  # noqa: E402


def cross_check_spec():
    """Two channels, every modifier type, a shared normsys+histosys, a fixed gamma."""
    return {
        "poi": "mu",
        "lumi": {"sigma": 0.02},
        "parameters": {"mu": {"bounds": [-3.0, 10.0]}},
        "channels": {
            "SR": {"samples": {
                "signal": {"nominal": [5.0, 10.0, 20.0, 8.0], "normfactors": ["mu"], "lumi": True,
                           "staterror": [1.0, 1.5, 2.0, 1.0], "normsys": {"sig_xs": {"lo": 0.9, "hi": 1.15}}},
                "bkg": {"nominal": [100.0, 60.0, 30.0, 10.0], "lumi": True, "staterror": [5.0, 4.0, 3.0, 0.0],
                        "normsys": {"jes": {"lo": 0.95, "hi": 1.07}, "bkg_xs": {"lo": 0.8, "hi": 1.3}},
                        "histosys": {"jes": {"up": [104.0, 62.0, 29.0, 9.0], "down": [97.0, 57.0, 31.0, 11.5]}}},
                "bkg2": {"nominal": [20.0, 10.0, 5.0, 0.0], "normfactors": ["k_bkg2"]},
            }},
            "CR": {"samples": {
                "bkg": {"nominal": [500.0, 300.0, 100.0], "lumi": True, "staterror": [10.0, 0.0, 5.0],
                        "normsys": {"bkg_xs": {"lo": 0.8, "hi": 1.3}},
                        "histosys": {"jes": {"up": [520.0, 290.0, 98.0], "down": [480.0, 305.0, 103.0]}}},
                "bkg2": {"nominal": [50.0, 100.0, 200.0], "normfactors": ["k_bkg2"]},
            }},
        },
    }


def small_spec():
    """One channel, 6 parameters: small enough for 200 pyhf (scipy) fits in a test."""
    return {
        "poi": "mu", "lumi": {"sigma": 0.02}, "parameters": {"mu": {"bounds": [-3.0, 10.0]}},
        "channels": {"SR": {"samples": {
            "signal": {"nominal": [4.0, 10.0, 25.0], "normfactors": ["mu"], "lumi": True},
            "bkg": {"nominal": [120.0, 50.0, 20.0], "lumi": True, "staterror": [6.0, 4.0, 3.0],
                    "normsys": {"jes": {"lo": 0.93, "hi": 1.08}},
                    "histosys": {"jes": {"up": [125.0, 49.0, 18.0], "down": [114.0, 51.0, 22.0]}}},
        }}},
    }


@pytest.fixture
def setup():
    torch.set_num_threads(1)
    pyhf.set_backend("numpy", "scipy")
    model = Model(cross_check_spec())
    ws = pyhf.Workspace(model.to_pyhf_workspace())
    yield model, ws.model()
    pyhf.set_backend("numpy", "scipy")


def random_points(model, rng, n):
    lo, hi = model.bounds[:, 0], model.bounds[:, 1]
    centre = model.init
    width = np.array([0.9 if ps.kind == "normfactor" else 2.5 if ps.kind == "alpha" else 0.06 if ps.kind == "lumi"
                      else 0.2 for ps in model.param_sets for _ in range(ps.n)])
    pts = centre + rng.uniform(-1, 1, (n, model.n_pars)) * width
    pts = np.clip(pts, lo + 1e-3, hi - 1e-3)
    pts[:, model.fixed] = model.init[model.fixed]
    return pts


def test_fixed_gamma_and_parameter_conventions_match_pyhf(setup):
    model, pm = setup
    # CR bin 1 has zero MC uncertainty: pyhf fixes that gamma, so do we
    assert list(pyhf_pars(model, pm, model.fixed.astype(float)).astype(bool)) == list(pm.config.suggested_fixed())
    assert np.allclose(pyhf_pars(model, pm, model.init), pm.config.suggested_init())
    b = pyhf_pars(model, pm, model.bounds.T).T
    assert np.allclose(b, np.array(pm.config.suggested_bounds()))
    # constraint widths: staterror sigma = sqrt(sum unc^2) / sum nominal, lumi sigma as configured
    sig_sr = model.aux_sigma[model.par_slice("staterror_SR").start - model.n_normfactors:][:4]
    expected = np.sqrt(np.array([1, 1.5, 2, 1]) ** 2 + np.array([5, 4, 3, 0]) ** 2) / np.array([105, 70, 50, 18])
    assert np.allclose(sig_sr, expected)
    assert model.aux_sigma[0] == 0.02 and model.aux_nominal[0] == 1.0


def test_nll_agrees_with_pyhf_at_random_points(setup):
    model, pm = setup
    rng = np.random.default_rng(11)
    pts = random_points(model, rng, 40)
    main, aux = generate_toys(model, model.expected_main(), 40, seed=5)
    ours = nll(model, pts, main, aux)
    theirs = np.array([-pm.logpdf(pyhf_pars(model, pm, p), pyhf_data(model, pm, d, a))[0]
                       for p, d, a in zip(pts, main, aux)])
    assert np.isfinite(ours).all() and np.isfinite(theirs).all()
    diff = ours - theirs
    # "up to a constant": here the constant is zero, both include every term
    assert np.abs(diff - diff.mean()).max() < 1e-9
    assert np.abs(diff).max() < 1e-9
    # and at the same data, at different points, differences of NLL agree
    assert np.ptp(ours) > 10


@pytest.mark.slow
def test_mu_hat_agrees_with_pyhf_on_200_toys(setup):
    model = Model(small_spec())
    pm = pyhf.Workspace(model.to_pyhf_workspace()).model()
    n = 200
    main, aux = generate_toys(model, model.expected_main(model.param_vector(mu=1.0)), n, seed=2024)
    ours = fit_toys(model, main, aux)
    assert ours.converged.all()
    mu_pyhf = np.empty(n)
    for i in range(n):
        best = pyhf.infer.mle.fit(pyhf_data(model, pm, main[i], aux[i]), pm, tolerance=1e-10)
        mu_pyhf[i] = best[pm.config.poi_index]
    diff = np.abs(ours.mu_hat - mu_pyhf)
    print(f"max |mu_hat - mu_hat_pyhf| over {n} toys: {diff.max():.2e}")
    assert diff.max() < 1e-4
    # the engine's minimum is at least as low as pyhf's (up to pyhf's convergence)
    pyhf_nll = np.array([
        -pm.logpdf(pyhf.infer.mle.fit(pyhf_data(model, pm, main[i], aux[i]), pm, tolerance=1e-10),
                   pyhf_data(model, pm, main[i], aux[i]))[0] for i in range(5)])
    assert np.all(ours.nll[:5] <= pyhf_nll + 1e-7)


def test_hessian_uncertainties_agree_with_pyhf(setup):
    model, pm = setup
    main, aux = generate_toys(model, model.expected_main(), 4, seed=77)
    ours = fit_toys(model, main, aux)
    assert ours.converged.all()
    free = ~model.fixed
    # (a) exact: Hessian of pyhf's own NLL (pytorch backend, autograd) at our minimum
    pyhf.set_backend("pytorch", precision="64b")
    pm_t = pyhf.Workspace(model.to_pyhf_workspace()).model()
    for i in range(len(main)):
        data = torch.tensor(pyhf_data(model, pm_t, main[i], aux[i]))
        x0 = torch.tensor(pyhf_pars(model, pm_t, ours.params[i]))
        H = torch.autograd.functional.hessian(lambda p: -pm_t.logpdf(p, data)[0], x0).numpy()
        Hm = pars_from_pyhf(model, pm_t, pars_from_pyhf(model, pm_t, H).T).T  # reorder rows, cols
        cov = np.linalg.inv(Hm[np.ix_(free, free)])
        sig = np.sqrt(np.diag(cov))
        assert np.allclose(ours.uncertainties[i][free], sig, rtol=1e-6)
    # (b) pyhf's fit with MINUIT's HESSE (numerical second derivatives): within 1%
    pyhf.set_backend("numpy", pyhf.optimize.minuit_optimizer(tolerance=1e-6, strategy=2))
    for i in range(2):
        best = pyhf.infer.mle.fit(pyhf_data(model, pm, main[i], aux[i]), pm, return_uncertainties=True)
        unc = pars_from_pyhf(model, pm, best[:, 1])
        assert abs(best[pm.config.poi_index, 0] - ours.mu_hat[i]) < 1e-3
        assert np.allclose(unc[free], ours.uncertainties[i][free], rtol=0.01), (unc[free], ours.uncertainties[i][free])


def test_q0_agrees_with_pyhf_test_statistic(setup):
    model, pm = setup
    spec = cross_check_spec()
    spec["parameters"] = {"mu": {"bounds": [0.0, 10.0]}}
    model = Model(spec)
    pm = pyhf.Workspace(model.to_pyhf_workspace()).model()
    main, aux = generate_toys(model, model.expected_main(model.param_vector(mu=1.5)), 3, seed=3)
    q0, z = discovery_q0(model, main, aux)
    for i in range(3):
        d = pyhf_data(model, pm, main[i], aux[i])
        ref = pyhf.infer.test_statistics.q0(0.0, d, pm, pm.config.suggested_init(), pm.config.suggested_bounds(),
                                            pm.config.suggested_fixed())
        assert abs(float(ref) - q0[i]) < 2e-4 * max(1.0, q0[i])
    assert np.allclose(z, np.sqrt(q0))
