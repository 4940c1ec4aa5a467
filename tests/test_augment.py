"""Augmented workspaces: the worst hidden mismodelling as an extra histosys parameter."""

import json

import numpy as np
import pyhf
import pytest

from hsaudit.errors import AuditError
from hsaudit.stats.augment import attacked_sample_templates, augment_workspace
from hsaudit.stats.from_histograms import build_spec
from hsaudit.stats.model import Model


def workspace():
    hists = {"SR": {"sig": {"nominal": [5.0, 10.0, 20.0], "sumw2": [0.5, 1.0, 2.0]},
                    "bkg": {"nominal": [200.0, 100.0, 40.0], "sumw2": [20.0, 10.0, 4.0],
                            "shapes": {"jes": {"up": [205.0, 99.0, 41.0], "down": [195.0, 101.0, 39.0]}}}},
             "CR": {"bkg": {"nominal": [500.0], "sumw2": [50.0]}}}
    return Model(build_spec(hists, signal_samples=["sig"], lumi_uncertainty=0.02)).to_pyhf_workspace()


def test_augmented_workspace_loads_in_pyhf_and_widens_mu():
    ws = workspace()
    att = {"SR": {"bkg": [200.0, 104.0, 46.0]}}  # the attack pushes background into the signal-like bins
    aug, info = augment_workspace(ws, att, "tau_es")
    model = pyhf.Workspace(json.loads(json.dumps(aug))).model()
    assert "hidden_tau_es" in model.config.parameters
    mods = {m["name"]: m for s in aug["channels"][0]["samples"] if s["name"] == "bkg" for m in s["modifiers"]}
    assert mods["hidden_tau_es"]["data"] == {"hi_data": [200.0, 104.0, 46.0], "lo_data": [200.0, 96.0, 34.0]}
    # measured: sigma_mu 0.389 -> 0.495
    assert info["sigma_mu_with"] > info["sigma_mu_without"] * 1.05
    assert info["affected"] == [{"channel": "SR", "sample": "bkg"}]
    assert ws == workspace()  # the input is not modified


def test_attack_equal_to_nominal_adds_no_uncertainty():
    ws = workspace()
    nominal = {"SR": {"bkg": [200.0, 100.0, 40.0], "sig": [5.0, 10.0, 20.0]}}
    _, info = augment_workspace(ws, nominal, "jet_es")
    assert info["affected"] == []
    assert info["sigma_mu_with"] == pytest.approx(info["sigma_mu_without"], abs=1e-6)
    # a modifier present with hi = lo = nominal: still nothing
    tiny = {"SR": {"bkg": [200.0, 100.0, 40.0 + 1e-12]}}
    _, info = augment_workspace(ws, tiny, "jet_es")
    assert abs(info["sigma_mu_with"] - info["sigma_mu_without"]) < 1e-6


def test_mirror_is_clipped_at_zero():
    aug, _ = augment_workspace(workspace(), {"SR": {"sig": [5.0, 10.0, 45.0]}}, "x")
    sig = [s for s in aug["channels"][0]["samples"] if s["name"] == "sig"][0]
    assert sig["modifiers"][-1]["data"]["lo_data"] == [5.0, 10.0, 0.0]


@pytest.mark.parametrize("att, match", [
    ({"XR": {"bkg": [1.0]}}, "channel 'XR'"), ({"SR": {"ttbar": [1.0, 1.0, 1.0]}}, "sample 'ttbar'"),
    ({"SR": {"bkg": [1.0, 2.0]}}, "mismatched binning"), ({"SR": {"bkg": [1.0, np.nan, 2.0]}}, "NaN"),
])
def test_bad_attacked_templates(att, match):
    with pytest.raises(AuditError, match=match):
        augment_workspace(workspace(), att, "tau_es")


def test_attacked_sample_templates_add_up_to_the_attacked_truth():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_impacts import counting_setup

    from hsaudit.fit_stage import attacked_truth, build_likelihood, row_table
    from hsaudit.stats.impacts import AttackedEvents

    cfg, sample, outputs = counting_setup(300, 900)
    lk = build_likelihood(outputs, sample, cfg)
    rows_info = row_table(outputs["nominal"], sample, cfg)
    rows = np.arange(0, 1200, 7)
    attack = AttackedEvents(rows, outputs["nominal"][rows], {"signal": np.arange(len(rows)) % 2 == 0})
    templates = attacked_sample_templates(lk, rows_info, attack)
    truth = attacked_truth(lk, rows_info, rows, attack.attacked_outputs, attack.regions_after)
    total = sum(np.asarray(v) for v in templates["signal"].values())
    np.testing.assert_allclose(total, truth["signal"])  # mu_true = 1
    ws = Model(lk["spec"]).to_pyhf_workspace()
    _, info = augment_workspace(ws, templates, "x")
    assert {a["sample"] for a in info["affected"]} == {"sig", "bkg"}
    assert info["sigma_mu_with"] >= info["sigma_mu_without"]
