"""Systematics-aware penalty (Wunsch et al. 2020) against a direct numpy computation."""

import numpy as np
import pytest
import torch

from hsaudit.ml.penalty import (
    relative_deviation,
    soft_histogram,
    variation_penalty,
    variation_penalty_numpy,
)


def _numpy_hist(f, w, n_bins):
    c = (np.arange(n_bins) + 0.5) / n_bins
    sigma = 0.5 / n_bins
    return np.array([np.sum(w * np.exp(-((f - ck) ** 2) / (2 * sigma**2))) for ck in c])


def test_soft_histogram_gaussians_peak_one():
    # one event exactly at a bin centre contributes 1 (times its weight) to that bin,
    # exp(-2) to the neighbours (distance one bin = two sigma)
    f = torch.tensor([0.25], dtype=torch.float64)
    h = soft_histogram(f, torch.tensor([3.0], dtype=torch.float64), 10)
    assert h.shape == (10,)
    assert float(h[2]) == pytest.approx(3.0)
    assert float(h[1]) == pytest.approx(3.0 * np.exp(-2.0))
    assert float(h[3]) == pytest.approx(3.0 * np.exp(-2.0))


def test_soft_histogram_matches_numpy_and_batches():
    rng = np.random.default_rng(0)
    f = rng.uniform(size=(3, 200))
    w = rng.uniform(0.5, 2, size=(3, 200))
    h = soft_histogram(torch.from_numpy(f), torch.from_numpy(w), 7).numpy()
    for v in range(3):
        np.testing.assert_allclose(h[v], _numpy_hist(f[v], w[v], 7), rtol=1e-12)


@pytest.mark.parametrize("n_bins", [10, 20])
def test_penalty_matches_numpy_shift_and_weights(n_bins):
    rng = np.random.default_rng(n_bins)
    n = 500
    f0 = rng.uniform(0, 1, n)  # every bin populated: the eps floor plays no role
    fu = np.clip(f0 + rng.normal(0.05, 0.02, n), 0, 1)
    fd = np.clip(f0 - rng.normal(0.05, 0.02, n), 0, 1)
    w0 = rng.uniform(0.5, 1.5, n)
    wu = w0 * rng.uniform(0.9, 1.3, n)
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    # shifted features (outputs change, weights do not)
    got = variation_penalty(t(f0), t(w0), t(fu), None, t(fd), None, n_bins=n_bins)
    ref = variation_penalty_numpy(f0, w0, fu, None, fd, None, n_bins=n_bins)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    # direct formula, written out once more here
    h0, hu, hd = (_numpy_hist(f, w0, n_bins) for f in (f0, fu, fd))
    direct = np.mean(((h0 - hu) / h0) ** 2) + np.mean(((h0 - hd) / h0) ** 2)
    assert ref == pytest.approx(direct, rel=1e-12)
    assert direct > 0.01
    # weight-based variation, up only
    got_w = variation_penalty(t(f0), t(w0), None, t(wu), n_bins=n_bins)
    hw = _numpy_hist(f0, wu, n_bins)
    assert float(got_w) == pytest.approx(np.mean(((h0 - hw) / h0) ** 2), rel=1e-10)


def test_penalty_zero_without_change_and_differentiable():
    rng = np.random.default_rng(1)
    f0 = torch.tensor(rng.uniform(size=300), requires_grad=True)
    w = torch.ones(300, dtype=torch.float64)
    assert float(variation_penalty(f0, w, f0, None, f0, None)) == 0.0
    assert float(variation_penalty(f0, w)) == 0.0  # no variation given
    fu = (f0 * 0.9).clamp(0, 1)
    lam = variation_penalty(f0, w, fu, None, n_bins=10)
    lam.backward()
    assert float(lam) > 0
    assert torch.isfinite(f0.grad).all() and float(f0.grad.abs().sum()) > 0


def test_empty_nominal_bin_stays_finite():
    f0 = torch.full((50,), 0.05)
    fu = torch.full((50,), 0.95)  # every event moves to a bin that is empty in nominal
    w = torch.ones(50)
    lam = relative_deviation(soft_histogram(f0, w, 10), soft_histogram(fu, w, 10))
    assert torch.isfinite(lam)
    assert float(lam) > 1.0  # large but finite
