"""Systematic shifts on generated events: propagation to MET and every feature, bit-identical
unaffected features, migration, event matching, weight variations."""

from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.selection import FEATURE_KINDS, select_chunk
from hsaudit.selection.features import FEATURES, resolve_features
from hsaudit.tables import FeatureTable, feature_column, region_column

generate = pytest.importorskip("hsaudit.generate")

N_EVENTS = 4000
REPO = Path(__file__).resolve().parent.parent
MUON_MASS = 0.1056583745  # the generator writes the PDG muon mass; NanoAOD does too

# features that do not depend on the shifted object (for events with a pair in both variants)
TAU_FREE = ["mu_pt", "mu_eta", "tau_eta", "tau_decay_mode", "delta_r", "delta_phi", "n_jets",
            "jet1_pt", "jet1_eta", "jet2_pt", "m_jj", "delta_eta_jj"]
MET_DEPENDENT = ["met_pt", "mt_mu", "mt_tau", "pt_tt", "m_col", "d_zeta"]
JET_FEATURES = ["n_jets", "jet1_pt", "jet1_eta", "jet2_pt", "m_jj", "delta_eta_jj"]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    # the demo configuration with every feature the selection can compute (the demo itself
    # leaves tau_mass out), so that each feature's shift propagation is tested
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["features"] = list(dict.fromkeys(raw["features"] + list(FEATURES)))
    path = tmp_path_factory.mktemp("cfg") / "demo_all_features.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


@pytest.fixture(scope="module")
def ztt(tmp_path_factory, config):
    path = tmp_path_factory.mktemp("gen") / "ztt.root"
    generate.generate_events("ztt", N_EVENTS, 7, path)
    return path, select_chunk(path, 0, N_EVENTS, config.datasets["ztt"], config)


def _f(table, name, variant="nominal"):
    return table.columns[feature_column(name, variant)].astype(np.float64)


def _both(table, variant):
    return ~np.isnan(_f(table, "mu_pt")) & ~np.isnan(_f(table, "mu_pt", variant))


def _m_vis_direct(mu_pt, mu_eta, tau_pt, tau_eta, tau_mass, dphi):
    """Invariant mass from pt, eta and the azimuthal opening angle, independent of the code."""
    e1 = np.sqrt((mu_pt * np.cosh(mu_eta)) ** 2 + MUON_MASS**2)
    e2 = np.sqrt((tau_pt * np.cosh(tau_eta)) ** 2 + tau_mass**2)
    p1p2 = mu_pt * tau_pt * (np.cos(dphi) + np.sinh(mu_eta) * np.sinh(tau_eta))
    return np.sqrt(MUON_MASS**2 + tau_mass**2 + 2 * (e1 * e2 - p1p2))


def test_tau_energy_scale_moves_visible_mass_and_met(ztt):
    _, t = ztt
    both = _both(t, "tau_es_up")
    assert both.sum() > 150
    g = lambda name, v="nominal": _f(t, name, v)[both]  # noqa: E731
    # tau pt and mass scaled by exactly 1.03 (float32 storage)
    np.testing.assert_allclose(g("tau_pt", "tau_es_up"), 1.03 * g("tau_pt"), rtol=1e-6)
    np.testing.assert_allclose(g("tau_mass", "tau_es_up"), 1.03 * g("tau_mass"), rtol=1e-6)
    # m_vis event by event from the table's own kinematics, in both variants
    for v, s in (("nominal", 1.0), ("tau_es_up", 1.03)):
        direct = _m_vis_direct(g("mu_pt"), g("mu_eta"), s * g("tau_pt"), g("tau_eta"), s * g("tau_mass"), g("delta_phi"))
        np.testing.assert_allclose(g("m_vis", v), direct, rtol=2e-5)
    ratio = g("m_vis", "tau_es_up") / g("m_vis")
    assert (ratio > 1.0).all() and (ratio < 1.03 + 1e-5).all()  # m_vis grows, by less than 3 %
    # MET changes by -0.03 * p_T(tau): |MET'|^2 = MET^2 + (0.03 tau)^2 - 2 (0.03 tau) MET cos dphi(tau, MET)
    met, tau_pt, mt_tau = g("met_pt"), g("tau_pt"), g("mt_tau")
    cos_dphi = 1.0 - mt_tau**2 / (2.0 * tau_pt * met)
    d = 0.03 * tau_pt
    expected = np.sqrt(np.maximum(met**2 + d**2 - 2 * d * met * cos_dphi, 0.0))
    np.testing.assert_allclose(g("met_pt", "tau_es_up"), expected, rtol=1e-4, atol=2e-3)
    assert not np.array_equal(g("met_pt", "tau_es_up"), met)


@pytest.mark.parametrize("variant", ["tau_es_up", "tau_es_down"])
def test_tau_shift_leaves_tau_free_features_bit_identical(ztt, variant):
    _, t = ztt
    both = _both(t, variant)
    for name in TAU_FREE:
        assert np.array_equal(_f(t, name)[both], _f(t, name, variant)[both]), name
    for name in ["tau_pt", "m_vis", "met_pt", "mt_mu"]:
        assert not np.array_equal(_f(t, name)[both], _f(t, name, variant)[both]), name


def test_jet_energy_scale(ztt):
    _, t = ztt
    both = _both(t, "jet_es_up")
    has_jet = both & (_f(t, "n_jets") >= 1)
    assert has_jet.sum() > 50
    np.testing.assert_allclose(_f(t, "jet1_pt", "jet_es_up")[has_jet], 1.05 * _f(t, "jet1_pt")[has_jet], rtol=1e-6)
    assert (_f(t, "n_jets", "jet_es_up")[both] >= _f(t, "n_jets")[both]).all()  # jets cross 30 GeV upwards
    assert (_f(t, "n_jets", "jet_es_down")[both] <= _f(t, "n_jets")[both]).all()
    for name in ["mu_pt", "tau_pt", "m_vis", "pt_vis", "delta_r", "tau_mass"]:
        assert np.array_equal(_f(t, name)[both], _f(t, name, "jet_es_up")[both]), name
    assert not np.array_equal(_f(t, "met_pt")[has_jet], _f(t, "met_pt", "jet_es_up")[has_jet])


def test_muon_scale_and_unclustered_met(ztt):
    _, t = ztt
    both = _both(t, "muon_es_up")
    np.testing.assert_allclose(_f(t, "mu_pt", "muon_es_up")[both], 1.01 * _f(t, "mu_pt")[both], rtol=1e-6)
    for name in ["tau_pt", "tau_eta", "tau_mass", "n_jets", "jet1_pt"]:
        assert np.array_equal(_f(t, name)[both], _f(t, name, "muon_es_up")[both]), name
    # unclustered MET: only MET-derived features move, and the pair never changes
    assert np.array_equal(np.isnan(_f(t, "mu_pt")), np.isnan(_f(t, "mu_pt", "met_uncl_up")))
    both = _both(t, "met_uncl_up")
    for name in t.features:
        same = np.array_equal(_f(t, name)[both], _f(t, name, "met_uncl_up")[both])
        assert same == (name not in MET_DEPENDENT), name


def test_events_migrate_consistently_with_the_cutflow(ztt, config):
    _, t = ztt
    cutflow = t.meta.extra["cutflow"]
    w = t.weights()
    for variant in t.variants:
        for region in t.regions:
            assert w[t.in_region(region, variant)].sum() == pytest.approx(cutflow[variant][f"region:{region}"])
    nominal, up, down = (t.in_region("signal", v) for v in ("nominal", "tau_es_up", "tau_es_down"))
    enter_up, leave_up = (up & ~nominal).sum(), (nominal & ~up).sum()
    enter_down, leave_down = (down & ~nominal).sum(), (nominal & ~down).sum()
    assert enter_up > 0 and leave_down > 0  # events cross the tau pt threshold
    assert leave_up < enter_up and enter_down < leave_down
    # region counts change exactly by the migrations
    assert up.sum() - nominal.sum() == enter_up - leave_up
    # the preselection row set is the union over variants
    any_pair = np.zeros(t.n_events, dtype=bool)
    for v in t.variants:
        any_pair |= ~np.isnan(_f(t, "mu_pt", v))
    assert any_pair.all()
    only_shifted = np.isnan(_f(t, "mu_pt"))
    assert only_shifted.sum() > 0  # rows that exist only because a shifted variant selects them
    assert not t.in_any_region("nominal")[only_shifted].any()


def test_event_matching_and_chunking(ztt, config):
    path, t = ztt
    ids = uproot.open(path)["Events"].arrays(["run", "luminosityBlock", "event"], library="np")
    ev = t.event_ids()
    assert len(np.unique(ev)) == t.n_events  # one row per event
    index = {tuple(x): i for i, x in enumerate(zip(ids["run"], ids["luminosityBlock"], ids["event"]))}
    rows = np.array([index[tuple(x)] for x in ev.tolist()])
    # the row's muon is the file's event's muon: compare with the raw branches
    mu_pt = uproot.open(path)["Events"]["Muon_pt"].array()
    nominal = ~np.isnan(_f(t, "mu_pt"))
    raw_max = np.array([max(mu_pt[r], default=np.nan) for r in rows[nominal]])
    assert (np.float32(_f(t, "mu_pt")[nominal]) <= raw_max).all()
    # the same table from three chunks
    ds = config.datasets["ztt"]
    parts = [select_chunk(path, a, b, ds, config) for a, b in ((0, 1500), (1500, 2600), (2600, N_EVENTS))]
    merged = FeatureTable.concat(parts)
    assert merged.n_events == t.n_events
    order = np.lexsort((t.columns["event"], t.columns["luminosityBlock"], t.columns["run"]))
    for name, col in t.columns.items():
        np.testing.assert_array_equal(merged.columns[name], col[order], err_msg=name)
    assert merged.meta.extra["sum_genweight"] == pytest.approx(t.meta.extra["sum_genweight"])
    assert merged.meta.extra["n_events_processed"] == N_EVENTS
    assert merged.meta.extra["cutflow"]["nominal"]["region:signal"] == pytest.approx(
        t.meta.extra["cutflow"]["nominal"]["region:signal"]
    )


def test_weight_variations(ztt, tmp_path, config):
    _, t = ztt
    nominal = ~np.isnan(_f(t, "tau_pt"))
    rel = t.weights("tau_id_up")[nominal] / t.weights()[nominal] - 1
    np.testing.assert_allclose(rel, 0.03 + 0.0002 * (_f(t, "tau_pt")[nominal] - 25), rtol=1e-5)
    np.testing.assert_allclose(t.weights("tau_id_down") + t.weights("tau_id_up"), 2 * t.weights(), rtol=1e-12)
    np.testing.assert_allclose(t.weights("muon_id_up"), 1.01 * t.weights(), rtol=1e-12)
    # tau_id applies to ggH/VBF/Z->tautau only
    path = tmp_path / "zmm.root"
    generate.generate_events("zmm", 1500, 3, path)
    zmm = select_chunk(path, 0, 1500, config.datasets["zmm"], config)
    assert zmm.n_events > 0
    np.testing.assert_array_equal(zmm.weights("tau_id_up"), zmm.weights())
    assert not np.array_equal(zmm.weights("muon_id_up"), zmm.weights())


def test_feature_registry(config, ztt):
    _, t = ztt
    assert set(config.feature_names) <= set(FEATURE_KINDS)
    assert set(FEATURE_KINDS.values()) <= {"momentum", "angle", "integer", "other"}
    assert FEATURE_KINDS["n_jets"] == "integer" and FEATURE_KINDS["delta_phi"] == "angle"
    with pytest.raises(AuditError, match="unknown feature.*'tau_ptt'.*known features: mu_pt"):
        resolve_features(["mu_pt", "tau_ptt"])
    # jets missing -> documented defaults 0; collinear mass falls back to m_vis, never below it
    no_jet = _f(t, "n_jets") == 0
    for name in ["jet1_pt", "jet1_eta", "jet2_pt", "m_jj", "delta_eta_jj"]:
        assert (_f(t, name)[no_jet] == 0).all(), name
    has = ~np.isnan(_f(t, "m_vis"))
    m_col, m_vis = _f(t, "m_col")[has], _f(t, "m_vis")[has]
    assert (m_col >= m_vis).all()
    assert 0 < (m_col == m_vis).mean() < 0.8  # fallback happens, but not for most events
    # Z -> tau tau: the collinear mass peaks near the Z mass, the visible mass well below
    assert 60 < np.median(m_col) < 120 and np.median(m_vis) < np.median(m_col)
    assert FEATURES["d_zeta"].kind == "momentum"


def test_subset_of_features_from_config(tmp_path, config):
    import copy

    cfg = copy.deepcopy(config)
    cfg.features = [f for f in cfg.features if f.name in ("m_vis", "n_jets")]
    path = tmp_path / "ggh.root"
    generate.generate_events("ggH_htt", 800, 5, path)
    t = select_chunk(path, 0, 800, cfg.datasets["ggH_htt"], cfg)
    assert t.features == ["m_vis", "n_jets"]
    assert feature_column("mu_pt") not in t.columns and region_column("signal", "jet_es_up") in t.columns
    assert t.columns["is_signal"].all()
    cfg.features = cfg.features + [type(cfg.features[0])(name="bogus")]
    with pytest.raises(AuditError, match="bogus"):
        select_chunk(path, 0, 800, cfg.datasets["ggH_htt"], cfg)
