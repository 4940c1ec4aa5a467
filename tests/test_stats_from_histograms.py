"""Model from NN-output histograms: norm/shape split, lumi, mu, negative yields, errors."""

import numpy as np
import pytest
import torch

pyhf = pytest.importorskip("pyhf")

from hsaudit.errors import AuditError  # noqa: E402
from hsaudit.stats import fit_toys, model_from_histograms, truth_from_histograms  # noqa: E402


def hists():
    nom = np.array([100.0, 50.0, 20.0])
    return {
        "SR": {
            "signal": {"nominal": [2.0, 8.0, 15.0], "sumw2": [0.1, 0.4, 0.9]},
            "bkg": {"nominal": nom.tolist(), "sumw2": [25.0, 9.0, 4.0], "shapes": {
                "tes": {"up": [104.0, 50.0, 18.0], "down": [97.0, 51.0, 21.5]},
                "pure_norm": {"up": (nom * 1.05).tolist(), "down": (nom * 0.96).tolist()},
                "nothing": {"up": nom.tolist(), "down": nom.tolist()},
            }},
        },
        "CR": {"bkg": {"nominal": [400.0, 300.0], "sumw2": [40.0, 30.0]}},
    }


def test_shapes_split_into_normsys_plus_histosys_sharing_one_parameter():
    torch.set_num_threads(1)
    m = model_from_histograms(hists(), signal_samples=["signal"], lumi_uncertainty=0.02,
                              norm_systs={"bkg_xs": {"samples": ["bkg"], "lo": 0.9, "hi": 1.1}})
    bkg = m.spec["channels"]["SR"]["samples"]["bkg"]
    assert bkg["normsys"]["tes"] == pytest.approx({"lo": 169.5 / 170, "hi": 172 / 170})
    assert np.isclose(sum(bkg["histosys"]["tes"]["up"]), 170.0)
    assert bkg["normsys"]["pure_norm"] == pytest.approx({"lo": 0.96, "hi": 1.05})
    assert np.allclose(bkg["histosys"]["pure_norm"]["up"], [100, 50, 20])  # pure normalisation: zero-effect histosys
    assert "nothing" not in bkg["normsys"] and "nothing" not in m.par_names
    assert m.par_names[:5] == ["mu", "lumi", "bkg_xs", "tes", "pure_norm"]
    # +-1 sigma of the shared parameter reproduces the input templates exactly
    up = m.expected_by_sample(m.param_vector(tes=1.0))[m.samples.index("bkg"), :3]
    dn = m.expected_by_sample(m.param_vector(tes=-1.0))[m.samples.index("bkg"), :3]
    assert np.allclose(up, [104, 50, 18]) and np.allclose(dn, [97, 51, 21.5])
    # staterror from sumw2, pyhf-valid workspace, truth helpers
    assert np.allclose(m.spec["channels"]["SR"]["samples"]["bkg"]["staterror"], [5, 3, 2])
    pyhf.Workspace(m.to_pyhf_workspace())
    truth = truth_from_histograms(m, hists(), signal_samples=["signal"], variation="tes", direction="up")
    assert np.allclose(truth[:3], [106, 58, 33]) and np.allclose(truth[3:], [400, 300])
    assert np.allclose(truth_from_histograms(m, hists(), signal_samples="signal"), m.expected_main())
    assert fit_toys(m, truth).converged.all()


def test_a_variation_that_empties_a_sample_is_floored_not_an_error():
    # a few MC events in a control region all migrate out under the shift
    h = hists()
    h["CR"]["rare"] = {"nominal": [0.0, 3.0], "sumw2": [0.0, 9.0],
                       "shapes": {"tes": {"up": [0.0, 0.0], "down": [0.0, 4.0]}}}
    m = model_from_histograms(h, signal_samples="signal")
    rare = m.spec["channels"]["CR"]["samples"]["rare"]
    assert rare["normsys"]["tes"] == pytest.approx({"lo": 4.0 / 3.0, "hi": 1e-3})
    assert rare["histosys"]["tes"]["up"] == [0.0, 3.0]  # nominal shape on the empty side
    up = m.expected_by_sample(m.param_vector(tes=1.0))[m.samples.index("rare"), 3:]
    assert np.allclose(up, [0.0, 3e-3])
    assert fit_toys(m, m.expected_main()).converged.all()


def test_negative_yields_error_or_clip():
    h = hists()
    h["SR"]["bkg"]["nominal"][2] = -1.0
    with pytest.raises(AuditError, match="negative yield"):
        model_from_histograms(h, signal_samples="signal")
    m = model_from_histograms(h, signal_samples="signal", negative_yields="clip")
    assert m.spec["channels"]["SR"]["samples"]["bkg"]["nominal"][2] == 0.0


def test_bad_histograms():
    h = hists()
    h["CR"]["bkg"]["nominal"] = [0.0, 0.0]
    with pytest.raises(AuditError, match="zero total predicted"):
        model_from_histograms(h, signal_samples="signal")
    h = hists()
    h["SR"]["bkg"]["shapes"]["tes"]["up"] = [1.0, 2.0]
    with pytest.raises(AuditError, match="mismatched binning"):
        model_from_histograms(h, signal_samples="signal")
    h = hists()
    h["SR"]["signal"]["sumw2"] = [0.1, np.nan, 0.2]
    with pytest.raises(AuditError, match="NaN"):
        model_from_histograms(h, signal_samples="signal")
    with pytest.raises(AuditError, match="signal samples"):
        model_from_histograms(hists(), signal_samples="higgs")
    with pytest.raises(AuditError, match="unknown samples"):
        model_from_histograms(hists(), signal_samples="signal", norm_systs={"x": {"samples": ["zz"], "lo": 0.9, "hi": 1.1}})
