"""Asimov significance against the closed formula and against pyhf."""

import numpy as np
import pytest
import torch

from hsaudit.stats import Model, asimov_significance
from hsaudit.stats.significance import asimov_data, discovery_q0

pyhf = pytest.importorskip("pyhf")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def counting(s, b):
    return Model({"poi": "mu", "channels": {"SR": {"samples": {
        "sig": {"nominal": list(s), "normfactors": ["mu"]}, "bkg": {"nominal": list(b)}}}}})


def test_asimov_significance_equals_the_closed_formula_without_systematics():
    s, b = np.array([3.0, 10.0, 25.0]), np.array([100.0, 40.0, 10.0])
    z = asimov_significance(counting(s, b))
    expected = np.sqrt(np.sum(2 * ((s + b) * np.log(1 + s / b) - s)))
    assert abs(z - expected) < 1e-6
    assert asimov_significance(counting(s, b), mu=2.0) > z


def test_asimov_significance_with_systematics_matches_pyhf_and_is_smaller():
    spec = {"poi": "mu", "lumi": {"sigma": 0.02}, "channels": {"SR": {"samples": {
        "sig": {"nominal": [3.0, 10.0, 25.0], "normfactors": ["mu"], "lumi": True},
        "bkg": {"nominal": [100.0, 40.0, 10.0], "lumi": True, "staterror": [5.0, 3.0, 2.0],
                "normsys": {"xs": {"lo": 0.9, "hi": 1.1}}}}}}}
    model = Model(spec)
    z = asimov_significance(model)
    pyhf.set_backend("numpy", "scipy")
    pm = pyhf.Workspace(model.to_pyhf_workspace()).model()
    main, aux = asimov_data(model)
    from hsaudit.stats.model import pyhf_data

    q0 = pyhf.infer.test_statistics.q0(0.0, pyhf_data(model, pm, main, aux), pm, pm.config.suggested_init(),
                                       pm.config.suggested_bounds(), pm.config.suggested_fixed())
    assert abs(z - np.sqrt(float(q0))) < 1e-3
    assert z < asimov_significance(counting([3.0, 10.0, 25.0], [100.0, 40.0, 10.0]))


def test_q0_is_zero_for_downward_fluctuations():
    model = Model({"poi": "mu", "parameters": {"mu": {"bounds": [-5, 10]}}, "channels": {"SR": {"samples": {
        "sig": {"nominal": [10.0, 20.0], "normfactors": ["mu"]}, "bkg": {"nominal": [100.0, 50.0]}}}}})
    q0, z = discovery_q0(model, np.array([[90.0, 40.0], [130.0, 80.0]]))
    assert q0[0] == 0.0 and q0[1] > 9
