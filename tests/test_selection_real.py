"""The coffea selection on real CMS NanoAOD (../shared/data/nano): no schema errors, sane
cutflows and feature values, clear errors for missing collections."""

import warnings

import numpy as np
import pytest
import uproot

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.selection import FEATURE_KINDS, select_chunk, select_files
from hsaudit.selection.objects import TauIdFallbackWarning
from hsaudit.selection.processor import CUTFLOW_STEPS


@pytest.fixture(scope="module")
def full_config():
    return load_config("demo")


@pytest.fixture(scope="module")
def config(full_config):
    """The demo selection without the anti-lepton requirements: the real test files are 40
    Drell-Yan and 40 dimuon-data events, mostly Z -> mumu, exactly what those requirements
    reject, so with them hardly anything would be left to check."""
    import copy

    cfg = copy.deepcopy(full_config)
    for key in ("deeptau_vsmu_min", "deeptau_vse_min"):
        cfg.selection["tau"].pop(key, None)
    cfg.selection.pop("extra_muon_veto", None)
    return cfg


def _nano(shared_data, name):
    path = shared_data / "nano" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


def _check_cutflow(table):
    cutflow = table.meta.extra["cutflow"]
    assert set(cutflow) == set(table.variants)
    for variant, steps in cutflow.items():
        chain = [steps[s] for s in CUTFLOW_STEPS if s in steps]
        assert chain[0] > 0
        assert all(a >= b for a, b in zip(chain, chain[1:])), (variant, steps)
        for region in table.regions:
            assert steps[f"region:{region}"] <= chain[-1]
            # the cutflow agrees with the region columns of the table
            w = table.weights()[table.in_region(region, variant)]
            assert steps[f"region:{region}"] == pytest.approx(w.sum(), rel=1e-9, abs=1e-9)


def _check_features(table):
    for variant in table.variants:
        X = table.features_of(variant).astype(np.float64)
        # rows pass the preselection in some variant; where a row has a pair all features are finite
        has = ~np.isnan(X[:, table.features.index("mu_pt")])
        assert np.isfinite(X[has]).all()
        assert np.isnan(X[~has]).all()
        f = {name: X[has, i] for i, name in enumerate(table.features)}
        assert (f["mu_pt"] > 20).all() and (f["tau_pt"] > 20).all()
        assert (np.abs(f["mu_eta"]) < 2.4).all() and (np.abs(f["tau_eta"]) < 2.3).all()
        assert ((f["delta_phi"] >= 0) & (f["delta_phi"] <= np.pi)).all()
        assert (f["delta_r"] > 0.5).all()
        assert (f["m_vis"] > 0).all() and (f["m_col"] >= f["m_vis"] * (1 - 1e-6)).all()
        assert (f["met_pt"] >= 0).all() and (f["mt_mu"] >= 0).all()
        for name, kind in FEATURE_KINDS.items():
            if kind == "integer":
                assert np.array_equal(f[name], np.round(f[name]))
        assert np.isin(f["tau_decay_mode"], [0, 1, 10, 11]).all()


def test_drell_yan_simulation(shared_data, config):
    path = _nano(shared_data, "nano_dy.root")
    with pytest.warns(TauIdFallbackWarning, match="idDeepTau2017v2p1VSjet"):
        table = select_chunk(path, 0, 40, config.datasets["ztt"], config)
    assert table.n_events >= 1
    _check_cutflow(table)
    _check_features(table)
    gen_weight = uproot.open(path)["Events"]["genWeight"].array(library="np").astype(np.float64)
    assert table.meta.extra["sum_genweight"] == pytest.approx(gen_weight.sum())
    assert table.meta.extra["n_events_processed"] == 40
    assert table.meta.extra["cutflow"]["nominal"]["all"] == pytest.approx(gen_weight.sum())
    # rows are events of the file
    ids = uproot.open(path)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    file_ids = set(zip(ids["run"], ids["luminosityBlock"], ids["event"]))
    assert set(zip(table.columns["run"], table.columns["luminosityBlock"], table.columns["event"])) <= file_ids


def test_anti_lepton_requirements_on_real_nanoaod(shared_data, config, full_config):
    """The legacy 2017v2p1 VSmu/VSe bit masks are read, and the requirements only remove events."""
    path = _nano(shared_data, "nano_dy.root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TauIdFallbackWarning)
        loose = select_chunk(path, 0, 40, config.datasets["ztt"], config)
        tight = select_chunk(path, 0, 40, full_config.datasets["ztt"], full_config)
    assert set(tight.columns["event"]) <= set(loose.columns["event"])
    for region in loose.regions:
        assert tight.in_region(region).sum() <= loose.in_region(region).sum()
    assert tight.in_any_region().sum() < loose.in_any_region().sum()


def test_collision_data_without_genweight(shared_data, config):
    path = _nano(shared_data, "nano_dimuon.root")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TauIdFallbackWarning)
        table = select_files([path], config.datasets["zmm"], config)
    assert table.n_events >= 1
    assert np.all(table.weights() == 1.0)  # data: no genWeight
    assert table.meta.extra["has_gen_weight"] is False
    assert table.meta.extra["sum_genweight"] == 40.0
    assert table.meta.extra["n_events_processed"] == 40
    assert len(table.meta.extra["chunks"]) == 1
    _check_cutflow(table)
    _check_features(table)
    assert (table.columns["run"] == 315267).all()


def test_file_without_tau_collection_names_branch_and_file(shared_data, config):
    path = _nano(shared_data, "nano_tt_v12.root")
    with pytest.raises(AuditError, match=r"nano_tt_v12\.root: missing branches: 'Tau_pt'.*no Tau collection"):
        select_chunk(path, 0, 200, config.datasets["ttbar"], config)
    with pytest.raises(AuditError, match=r"nano_tt_v12\.root: missing branches: 'Tau_pt'.*no Tau collection"):
        select_files([path], config.datasets["ttbar"], config)
