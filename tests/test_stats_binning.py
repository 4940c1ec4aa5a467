"""NN-output binning: every optimised bin keeps enough background MC."""

import numpy as np
import pytest

from hsaudit.errors import AuditError
from hsaudit.stats import check_edges, histogram, optimised_edges, uniform_edges


def sample(seed=0):
    rng = np.random.default_rng(seed)
    sig = rng.beta(5, 1.5, 20000)
    bkg = rng.beta(1.2, 5, 200000)
    return sig, np.full(len(sig), 0.01), bkg, rng.uniform(0.5, 1.5, len(bkg)) * 0.05


def test_uniform_edges_and_histogram():
    e = uniform_edges(4)
    assert np.allclose(e, [0, 0.25, 0.5, 0.75, 1])
    w, w2 = histogram([0.1, 0.3, 1.0, 1.2, -0.1], [1, 2, 3, 4, 5], e)
    assert np.allclose(w, [6, 2, 0, 7]) and np.allclose(w2, [26, 4, 0, 25])  # clipped into the end bins


def test_optimised_edges_satisfy_the_mc_requirements():
    s, sw, b, bw = sample()
    edges = optimised_edges(s, sw, b, bw, n_bins_target=15, min_bkg_yield=5.0, max_rel_stat_unc=0.1)
    assert edges[0] == 0.0 and edges[-1] == 1.0 and np.all(np.diff(edges) > 0)
    assert 3 <= len(edges) - 1 <= 15
    assert check_edges(edges, b, bw, 5.0, 0.1) == []
    # a uniform binning with the same number of bins violates them at high score
    assert check_edges(uniform_edges(len(edges) - 1), b, bw, 5.0, 0.1) != []
    # looser requirements give at least as many bins
    loose = optimised_edges(s, sw, b, bw, n_bins_target=15, min_bkg_yield=0.5, max_rel_stat_unc=0.3)
    assert len(loose) >= len(edges)


def test_binning_errors():
    s, sw, b, bw = sample()
    with pytest.raises(AuditError, match="NaN"):
        optimised_edges(s, sw, np.r_[b[:-1], np.nan], bw)
    with pytest.raises(AuditError, match="weights"):
        histogram([0.1, 0.2], [1.0], uniform_edges(2))
    with pytest.raises(AuditError, match="cannot satisfy"):
        optimised_edges(s, sw, b[:3], bw[:3], min_bkg_yield=100.0)
    with pytest.raises(AuditError, match="increasing"):
        histogram([0.1], [1.0], [0.0, 0.0, 1.0])
