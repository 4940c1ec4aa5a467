"""Pseudo-experiments: statistical correctness, determinism, exact chunk merging."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.stats import Model, ToyResult, generate_toys, merge, run_pseudo_experiments, summarise


def asymptotic_spec():
    """High-statistics model, where the asymptotic (Hessian) pulls must be N(0, 1)."""
    return {
        "poi": "mu", "lumi": {"sigma": 0.02}, "parameters": {"mu": {"bounds": [-5.0, 10.0]}},
        "channels": {"SR": {"samples": {
            "sig": {"nominal": [200.0, 500.0, 900.0], "normfactors": ["mu"], "lumi": True},
            "bkg": {"nominal": [8000.0, 4000.0, 1500.0], "lumi": True, "staterror": [40.0, 30.0, 20.0],
                    "normsys": {"xs": {"lo": 0.98, "hi": 1.02}},
                    "histosys": {"shape": {"up": [8100.0, 3950.0, 1450.0], "down": [7900.0, 4050.0, 1550.0]}}},
        }}},
    }


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_nominal_toys_give_unit_pulls_and_correct_coverage():
    model = Model(asymptotic_spec())
    res = run_pseudo_experiments(model, model.expected_main(), n_toys=5000, seed=42, mu_true=1.0, significance=False)
    s = summarise(res)
    print({k: s[k] for k in ("bias", "bias_unc", "pull_mean", "pull_mean_unc", "pull_width", "pull_width_unc",
                             "coverage_68", "coverage_68_unc")})
    assert s["n_toys"] == 5000 and s["n_failed"] == 0
    # within 2.5 standard deviations of the expectation (a fixed seed makes this deterministic)
    assert abs(s["pull_mean"]) < 2.5 * s["pull_mean_unc"]
    assert abs(s["pull_width"] - 1.0) < 2.5 * s["pull_width_unc"]
    assert abs(s["coverage_68"] - 0.6827) < 2.5 * s["coverage_68_unc"]
    # (asymmetric histosys templates make code4p nonlinear around alpha = 0 and bias
    # mu_hat by a few % of sigma_mu: a property of the model, so this one is symmetric)
    assert abs(s["bias"]) < 2.5 * s["bias_unc"]
    # the uncertainties themselves are the statistical ones
    assert 0.012 < s["pull_mean_unc"] < 0.016 and 0.008 < s["pull_width_unc"] < 0.012


def test_auxiliary_data_are_fluctuated_with_the_constraint_widths():
    model = Model(asymptotic_spec())
    main, aux = generate_toys(model, model.expected_main(), 4000, seed=1)
    assert np.allclose(aux.mean(0), model.aux_nominal, atol=4 * model.aux_sigma / np.sqrt(4000))
    assert np.allclose(aux.std(0), model.aux_sigma, rtol=0.05)
    assert np.allclose(main.mean(0), model.expected_main(), rtol=0.01)
    assert np.allclose(main.var(0), model.expected_main(), rtol=0.1)
    assert np.all(main == np.round(main))


def test_shifted_truth_biases_mu():
    model = Model(asymptotic_spec())
    # truth: background 3% higher in the signal-rich bin than the model allows for
    truth = model.expected_main() + np.array([0.0, 0.0, 0.03 * 1500.0])
    s = summarise(run_pseudo_experiments(model, truth, 1000, seed=3, mu_true=1.0, significance=False))
    assert s["bias"] > 5 * s["bias_unc"]


def test_determinism_and_exact_chunk_merge(tmp_path):
    model = Model(asymptotic_spec())
    truth = model.expected_main()
    whole = run_pseudo_experiments(model, truth, 300, seed=7, mu_true=1.0)
    again = run_pseudo_experiments(model, truth, 300, seed=7, mu_true=1.0)
    assert np.array_equal(whole.mu_hat, again.mu_hat) and np.array_equal(whole.z, again.z)
    other = run_pseudo_experiments(model, truth, 300, seed=8, mu_true=1.0)
    assert not np.allclose(whole.mu_hat, other.mu_hat)
    a = run_pseudo_experiments(model, truth, 120, seed=7, mu_true=1.0)
    b = run_pseudo_experiments(model, truth, 180, seed=7, mu_true=1.0, first_toy=120)
    b.save(tmp_path / "b.npz")
    merged = merge([ToyResult.load(tmp_path / "b.npz"), a])
    assert np.array_equal(merged.toy_index, np.arange(300))
    assert np.allclose(merged.mu_hat, whole.mu_hat, rtol=0, atol=1e-9)
    assert np.allclose(merged.z, whole.z, rtol=0, atol=1e-6)
    s1, s2 = summarise(merged), summarise(whole)
    assert s1["coverage_68"] == s2["coverage_68"] and abs(s1["bias"] - s2["bias"]) < 1e-9
    with pytest.raises(AuditError, match="overlap"):
        merge([a, a])
    with pytest.raises(AuditError, match="different scenarios"):
        merge([a, other])


def test_significance_distribution_and_failures_are_summarised():
    model = Model(asymptotic_spec())
    res = run_pseudo_experiments(model, model.expected_main(), 200, seed=5, mu_true=1.0)
    res.converged[:3] = False  # as if three fits had failed
    s = summarise(res)
    assert s["n_failed"] == 3 and s["n_converged"] == 197
    sig = s["significance"]
    assert sig["q16"] < sig["median"] < sig["q84"] and sig["n"] == 197
    assert np.all(res.z[res.converged] >= 0)


def test_bad_truth_is_refused():
    model = Model(asymptotic_spec())
    with pytest.raises(AuditError, match="mismatched binning"):
        generate_toys(model, [1.0, 2.0], 10, seed=1)
    with pytest.raises(AuditError, match="NaN"):
        generate_toys(model, [1.0, np.nan, 2.0], 10, seed=1)
    with pytest.raises(AuditError, match="negative"):
        generate_toys(model, [1.0, -1.0, 2.0], 10, seed=1)
