"""Model building, bad-input errors, pyhf workspace export/import, interpolation codes."""

import numpy as np
import pytest

pyhf = pytest.importorskip("pyhf")

from hsaudit.errors import AuditError  # noqa: E402
from hsaudit.stats import Model, from_pyhf_workspace, to_pyhf_workspace  # noqa: E402
from hsaudit.stats.model import pyhf_pars  # noqa: E402


def spec():
    return {
        "poi": "mu", "lumi": {"sigma": 0.017},
        "channels": {
            "SR": {"edges": [0.0, 0.5, 0.8, 1.0], "samples": {
                "signal": {"nominal": [2.0, 6.0, 12.0], "normfactors": ["mu"], "lumi": True, "staterror": [0.4, 0.8, 1.0]},
                "bkg": {"nominal": [90.0, 25.0, 6.0], "lumi": True, "staterror": [3.0, 2.0, 1.5],
                        "normsys": {"xs": {"lo": 0.85, "hi": 1.2}},
                        "histosys": {"tes": {"up": [95.0, 24.0, 4.0], "down": [88.0, 26.5, 7.0]}}},
            }},
            "CR": {"samples": {"bkg": {"nominal": [300.0, 200.0], "lumi": True, "normsys": {"xs": {"lo": 0.85, "hi": 1.2}}}}},
        },
        "observed": {"SR": [95, 30, 20], "CR": [310, 190]},
    }


def test_parameters_order_and_nominal_yields():
    m = Model(spec())
    assert m.par_names == ["mu", "lumi", "xs", "tes", "staterror_SR[0]", "staterror_SR[1]", "staterror_SR[2]"]
    assert m.n_bins == 5 and m.channels == ["SR", "CR"]
    assert np.allclose(m.expected_main(), [92, 31, 18, 300, 200])
    assert np.allclose(m.expected_main(m.param_vector(mu=0.0)), [90, 25, 6, 300, 200])
    assert np.allclose(m.expected_main(m.param_vector(lumi=1.1, mu=0.0)), np.array([90, 25, 6, 300, 200]) * 1.1)
    # normsys at +-1 sigma gives exactly hi / lo; histosys at +-1 the templates
    assert np.allclose(m.expected_main(m.param_vector(mu=0.0, xs=1.0)), np.array([90, 25, 6, 300, 200]) * 1.2)
    assert np.allclose(m.expected_main(m.param_vector(mu=0.0, xs=-1.0)), np.array([90, 25, 6, 300, 200]) * 0.85)
    assert np.allclose(m.expected_main(m.param_vector(mu=0.0, tes=-1.0))[:3], [88, 26.5, 7])
    assert np.allclose(m.expected_main(m.param_vector(mu=0.0, tes=2.0))[:3], [100, 23, 2])


def test_yields_equal_pyhf_at_random_points_including_extrapolation():
    m = Model(spec())
    pm = pyhf.Workspace(m.to_pyhf_workspace()).model()
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = m.param_vector(mu=rng.uniform(0, 3), lumi=rng.uniform(0.95, 1.05), xs=rng.uniform(-3, 3),
                           tes=rng.uniform(-1.4, 1.4), staterror_SR=rng.uniform(0.9, 1.1, 3))
        ours = m.expected_main(p)
        theirs = pm.expected_actualdata(pyhf_pars(m, pm, p))
        ours_pyhf_order = np.concatenate([ours[m.channel_slices[c]] for c in pm.config.channels])
        assert np.allclose(ours_pyhf_order, theirs, rtol=1e-12, atol=1e-10)


def test_workspace_is_schema_valid_and_round_trips():
    m = Model(spec())
    ws = to_pyhf_workspace(m)
    pyhf.schema.validate(ws, "workspace.json")
    w = pyhf.Workspace(ws)
    assert w.model().config.poi_name == "mu"
    assert list(w.data(w.model(), include_auxdata=False)) == [310, 190, 95, 30, 20]  # pyhf sorts channels
    back = from_pyhf_workspace(ws)
    assert back.par_names == m.par_names
    assert np.allclose(back.expected_main(), m.expected_main())
    assert np.allclose(back.aux_sigma, m.aux_sigma) and np.array_equal(back.fixed, m.fixed)
    assert np.allclose(back.observed, m.observed)
    # without observed data the Asimov data at mu = 1 is exported
    s = spec()
    s.pop("observed")
    ws2 = Model(s).to_pyhf_workspace()
    assert ws2["observations"][0]["data"] == [92.0, 31.0, 18.0]


def test_import_of_a_pyhf_simplemodel_and_unsupported_modifiers():
    pm = pyhf.simplemodels.uncorrelated_background(signal=[5.0, 10.0], bkg=[50.0, 60.0], bkg_uncertainty=[5.0, 12.0])
    ws = {"channels": pm.spec["channels"], "observations": [{"name": "singlechannel", "data": [55.0, 65.0]}],
          "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}], "version": "1.0.0"}
    with pytest.raises(AuditError, match="shapesys"):
        from_pyhf_workspace(ws)


def test_bad_inputs_give_clear_errors():
    def broken(edit):
        s = spec()
        edit(s)
        return s

    cases = [
        (lambda s: s["channels"]["SR"]["samples"]["bkg"].__setitem__("nominal", [1.0, 2.0]), "mismatched binning"),
        (lambda s: s["channels"]["SR"]["samples"]["bkg"].__setitem__("nominal", [1.0, np.nan, 2.0]), "NaN"),
        (lambda s: s["channels"]["SR"]["samples"]["bkg"].__setitem__("nominal", [1.0, -2.0, 2.0]), "negative"),
        (lambda s: s["channels"]["CR"]["samples"]["bkg"].__setitem__("nominal", [0.0, 1.0]), "zero total predicted"),
        (lambda s: s["channels"]["SR"]["samples"]["bkg"]["histosys"]["tes"].__setitem__("up", [1.0]), "mismatched"),
        (lambda s: s["channels"]["SR"]["samples"]["bkg"]["normsys"]["xs"].__setitem__("lo", 0.0), "must be > 0"),
        (lambda s: s["channels"]["SR"].__setitem__("edges", [0.0, 0.5, 1.0]), "edges"),
        (lambda s: s.__setitem__("poi", "nope"), "parameter of interest"),
        (lambda s: s.pop("lumi"), "lumi"),
        (lambda s: s.__setitem__("observed", {"SR": [1, 2, 3]}), "observed"),
        (lambda s: s.__setitem__("parameters", {"mu": {"bounds": [2, 1]}}), "lo < hi"),
        (lambda s: s["channels"]["SR"]["samples"]["bkg"].__setitem__("shapesys", [1.0]), "unknown keys"),
    ]
    for edit, match in cases:
        with pytest.raises(AuditError, match=match):
            Model(broken(edit))
