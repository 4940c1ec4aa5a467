"""HiggsML 2014 subset: config, reading, and the tau energy scale propagation checked event by event."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.flat_tables import read_flat_dataset
from hsaudit.higgsml import apply_tau_energy_scale, met_phi_centrality, transverse_mass

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "higgsml"
needs_data = pytest.mark.skipif(
    not (DATA / "higgsml_sig_4999.csv").exists(),
    reason=f"HiggsML subset not found at {DATA} (shared data folder absent in this checkout)",
)
K = 1.03

# features the tau energy scale must leave bit-identical (with vector-MET propagation,
# pt_h and pt_tot are invariant: tau' + MET' = tau + MET)
UNCHANGED = [
    "DER_mass_MMC", "DER_mass_MMC_missing", "DER_pt_h", "DER_deltaeta_jet_jet", "DER_mass_jet_jet",
    "DER_prodeta_jet_jet", "DER_deltar_tau_lep", "DER_pt_tot", "DER_lep_eta_centrality",
    "PRI_tau_eta", "PRI_tau_phi", "PRI_lep_pt", "PRI_lep_eta", "PRI_lep_phi", "PRI_jet_num",
    "PRI_jet_leading_pt", "PRI_jet_leading_eta", "PRI_jet_leading_phi", "PRI_jet_subleading_pt",
    "PRI_jet_subleading_eta", "PRI_jet_subleading_phi", "PRI_jet_all_pt",
]


@pytest.fixture(scope="module")
def raw():
    if not (DATA / "higgsml_sig_4999.csv").exists():
        pytest.skip(f"HiggsML subset not found at {DATA}")
    return {k: pd.read_csv(DATA / f"higgsml_{k}_4999.csv") for k in ("sig", "bkg")}


@pytest.fixture(scope="module")
def tables():
    if not (DATA / "higgsml_sig_4999.csv").exists():
        pytest.skip(f"HiggsML subset not found at {DATA}")
    config = load_config("higgsml")
    return config, {name: read_flat_dataset(ds, config) for name, ds in config.datasets.items()}


def _vis_mass_massless(f):
    return np.sqrt(2 * f.PRI_tau_pt * f.PRI_lep_pt * (np.cosh(f.PRI_tau_eta - f.PRI_lep_eta) - np.cos(f.PRI_tau_phi - f.PRI_lep_phi)))


def _pt_sum(f, jets: bool):
    px = f.PRI_tau_pt * np.cos(f.PRI_tau_phi) + f.PRI_lep_pt * np.cos(f.PRI_lep_phi) + f.PRI_met * np.cos(f.PRI_met_phi)
    py = f.PRI_tau_pt * np.sin(f.PRI_tau_phi) + f.PRI_lep_pt * np.sin(f.PRI_lep_phi) + f.PRI_met * np.sin(f.PRI_met_phi)
    if jets:
        for name, n in (("leading", 1), ("subleading", 2)):
            on = f.PRI_jet_num >= n
            px = px + np.where(on, f[f"PRI_jet_{name}_pt"] * np.cos(f[f"PRI_jet_{name}_phi"]), 0.0)
            py = py + np.where(on, f[f"PRI_jet_{name}_pt"] * np.sin(f[f"PRI_jet_{name}_phi"]), 0.0)
    return np.hypot(px, py)


# -- config and reading ----------------------------------------------------------------------
@needs_data
def test_config_reads_the_real_subset(tables):
    config, t = tables
    assert config.input["kind"] == "flat" and set(config.regions) == {"signal", "control_high_mt"}
    sig, bkg = t["htt"], t["bkg"]
    assert sig.meta.extra["n_rows_read"] == 4999 and bkg.meta.extra["n_rows_read"] == 4999
    assert sig.n_events == 4999 and bkg.n_events == 4999
    assert round(sig.weights().sum(), 2) == 12.84 and round(bkg.weights().sum(), 2) == 3831.14
    assert sig.columns["is_signal"].all() and not bkg.columns["is_signal"].any()
    assert sig.variants == ["nominal", "tau_es_up", "tau_es_down"]
    assert len(sig.features) == 31 and "DER_mass_MMC_missing" in sig.features
    assert (sig.columns["run"] == 1).all() and (sig.columns["luminosityBlock"] == 0).all()
    assert sig.columns["event"][0] == 100000 and np.all(np.diff(sig.columns["event"].astype(np.int64)) > 0)
    assert sig.meta.extra["declared_uncertainties"]["jet_es"]["PRI_jet_leading_pt"] == {"relative": 0.05}


@needs_data
def test_tau_pt_cut_and_migration(tables, raw):
    _, t = tables
    for name, key in (("htt", "sig"), ("bkg", "bkg")):
        f, table = raw[key].sort_values("EventId"), t[name]
        tau, mt = f.PRI_tau_pt.to_numpy(), f.DER_mass_transverse_met_lep.to_numpy()
        assert np.array_equal(table.in_region("signal"), (tau >= 25) & (mt < 50))
        assert np.array_equal(table.in_region("control_high_mt"), (tau >= 25) & (mt >= 70))
        cf = table.meta.extra["cutflow"]
        assert cf["nominal"]["PRI_tau_pt >= 25.0"] == int((tau >= 25).sum())
        assert cf["tau_es_up"]["PRI_tau_pt >= 25.0"] == int((K * tau >= 25).sum())
        assert cf["tau_es_down"]["PRI_tau_pt >= 25.0"] == int((tau * (2 - K) >= 25).sum())
        # events migrate in (up) and out (down) of the selection
        assert cf["tau_es_up"]["PRI_tau_pt >= 25.0"] > cf["nominal"]["PRI_tau_pt >= 25.0"] > cf["tau_es_down"]["PRI_tau_pt >= 25.0"]
    assert t["htt"].meta.extra["cutflow"]["nominal"]["PRI_tau_pt >= 25.0"] == 4400


@needs_data
def test_missing_values_are_filled_and_flagged(tables, raw):
    _, t = tables
    f, table = raw["sig"].sort_values("EventId"), t["htt"]
    mmc_missing = f.DER_mass_MMC.to_numpy() == -999.0
    assert mmc_missing.sum() == 158
    for v in table.variants:
        X = table.features_of(v)
        assert np.isfinite(X).all() and not (X == -999.0).any()
    assert np.array_equal(table.features_of("nominal", ["DER_mass_MMC_missing"])[:, 0], mmc_missing.astype(np.float32))
    assert (table.features_of("nominal", ["DER_mass_MMC"])[:, 0][mmc_missing] == 0).all()
    no_jets = f.PRI_jet_num.to_numpy() == 0
    for col in ("PRI_jet_leading_pt", "PRI_jet_leading_eta", "DER_mass_jet_jet"):
        assert (table.features_of("tau_es_up", [col])[:, 0][no_jets] == 0).all()
    # the filled events stay in the selection (they are 30% of the sample)
    assert table.in_region("signal")[no_jets].sum() > 500


# -- tau energy scale, event by event ----------------------------------------------------------
@needs_data
@pytest.mark.parametrize("key", ["sig", "bkg"])
def test_tes_primaries_and_met_vector(raw, key):
    f = raw[key]
    up = apply_tau_energy_scale(f, K)
    assert np.array_equal(up.PRI_tau_pt, K * f.PRI_tau_pt)
    dpt = (K - 1) * f.PRI_tau_pt
    mx = f.PRI_met * np.cos(f.PRI_met_phi) - dpt * np.cos(f.PRI_tau_phi)
    my = f.PRI_met * np.sin(f.PRI_met_phi) - dpt * np.sin(f.PRI_tau_phi)
    np.testing.assert_allclose(up.PRI_met * np.cos(up.PRI_met_phi), mx, atol=1e-9)
    np.testing.assert_allclose(up.PRI_met * np.sin(up.PRI_met_phi), my, atol=1e-9)
    # the total transverse momentum tau + MET is conserved
    for trig in (np.cos, np.sin):
        np.testing.assert_allclose(up.PRI_tau_pt * trig(up.PRI_tau_phi) + up.PRI_met * trig(up.PRI_met_phi),
                                   f.PRI_tau_pt * trig(f.PRI_tau_phi) + f.PRI_met * trig(f.PRI_met_phi), atol=1e-9)
    np.testing.assert_allclose(up.PRI_met_sumet - f.PRI_met_sumet, dpt, atol=1e-9)
    assert up.PRI_met.std() > 0 and (np.abs(up.PRI_met - f.PRI_met) > 0.1).mean() > 0.5


@needs_data
@pytest.mark.parametrize("key", ["sig", "bkg"])
def test_tes_derived_features_against_direct_computation(raw, key):
    f = raw[key]
    for k in (K, 2 - K):
        up = apply_tau_energy_scale(f, k)
        # visible mass: direct massless computation scales by sqrt(k) exactly ...
        np.testing.assert_allclose(_vis_mass_massless(up) / _vis_mass_massless(f), np.sqrt(k), rtol=1e-12)
        # ... and the shifted published value agrees with the direct one up to the 3-decimal rounding
        np.testing.assert_allclose(up.DER_mass_vis / f.DER_mass_vis, np.sqrt(k), rtol=1e-12)
        assert np.percentile(np.abs(up.DER_mass_vis - _vis_mass_massless(up)), 99) < 0.1
        # transverse mass lepton-MET: shift equals the direct computation's shift
        direct = transverse_mass(up.PRI_lep_pt, up.PRI_lep_phi, up.PRI_met, up.PRI_met_phi)
        before = transverse_mass(f.PRI_lep_pt, f.PRI_lep_phi, f.PRI_met, f.PRI_met_phi)
        unclipped = (f.DER_mass_transverse_met_lep + direct - before) > 0  # mT >= 0 is enforced
        assert unclipped.mean() > 0.99
        np.testing.assert_allclose((up.DER_mass_transverse_met_lep - f.DER_mass_transverse_met_lep)[unclipped],
                                   (direct - before)[unclipped], atol=1e-9)
        assert np.percentile(np.abs(up.DER_mass_transverse_met_lep - direct), 99) < 0.1
        # pT of the Higgs candidate and total pT: direct computation invariant under the shift
        np.testing.assert_allclose(_pt_sum(up, jets=False), _pt_sum(f, jets=False), atol=1e-9)
        np.testing.assert_allclose(_pt_sum(up, jets=True), _pt_sum(f, jets=True), atol=1e-9)
        assert np.array_equal(up.DER_pt_h, f.DER_pt_h) and np.array_equal(up.DER_pt_tot, f.DER_pt_tot)
        np.testing.assert_allclose(up.DER_sum_pt - f.DER_sum_pt, (k - 1) * f.PRI_tau_pt, atol=1e-9)
        np.testing.assert_allclose(up.DER_pt_ratio_lep_tau, f.DER_pt_ratio_lep_tau / k, rtol=1e-12)
        # MET centrality: the shift equals the direct computation's shift (events away from the
        # ill-defined sign of back-to-back pairs and from the sqrt(2) boundary)
        c_up = met_phi_centrality(up.PRI_met_phi, up.PRI_lep_phi, up.PRI_tau_phi)
        c_nom = met_phi_centrality(f.PRI_met_phi, f.PRI_lep_phi, f.PRI_tau_phi)
        clean = (np.abs(c_nom - f.DER_met_phi_centrality) < 0.01) & (
            np.abs(f.DER_met_phi_centrality + c_up - c_nom) <= np.sqrt(2))
        assert clean.mean() > 0.98
        np.testing.assert_allclose((up.DER_met_phi_centrality - f.DER_met_phi_centrality)[clean],
                                   (c_up - c_nom)[clean], atol=1e-9)
        # back-to-back pairs whose published sign is the opposite of the direct one (rounded phi):
        # the shift follows the published convention
        flipped = (np.abs(c_nom + f.DER_met_phi_centrality) < 0.01) & (np.abs(c_nom - f.DER_met_phi_centrality) > 0.02) & (
            np.abs(f.DER_met_phi_centrality - c_up + c_nom) <= np.sqrt(2))
        assert flipped.sum() >= 1
        np.testing.assert_allclose((up.DER_met_phi_centrality - f.DER_met_phi_centrality)[flipped],
                                   -(c_up - c_nom)[flipped], atol=1e-9)
        assert np.abs(up.DER_met_phi_centrality).max() <= np.sqrt(2)
        for col in UNCHANGED:
            if col in f:
                assert np.array_equal(up[col], f[col]), col


@needs_data
def test_collinear_mass_invariance_justifies_fixed_mmc(raw):
    """With vector-MET propagation the collinear di-tau mass does not move (docs/higgsml.md)."""
    f = raw["sig"]
    up = apply_tau_energy_scale(f, K)

    def m_col(g):
        tx, ty = g.PRI_tau_pt * np.cos(g.PRI_tau_phi), g.PRI_tau_pt * np.sin(g.PRI_tau_phi)
        lx, ly = g.PRI_lep_pt * np.cos(g.PRI_lep_phi), g.PRI_lep_pt * np.sin(g.PRI_lep_phi)
        mx, my = g.PRI_met * np.cos(g.PRI_met_phi), g.PRI_met * np.sin(g.PRI_met_phi)
        det = tx * ly - ty * lx
        a1, a2 = (mx * ly - my * lx) / det, (tx * my - ty * mx) / det
        return _vis_mass_massless(g) * np.sqrt(np.abs((1 + a1) * (1 + a2))), (a1 > 0) & (a2 > 0)

    (m0, ok0), (m1, ok1) = m_col(f), m_col(up)
    ok = ok0 & ok1
    assert ok.mean() > 0.4
    np.testing.assert_allclose(m1[ok], m0[ok], rtol=1e-9)


@needs_data
def test_table_variants_match_the_function(tables, raw):
    _, t = tables
    f = raw["sig"].sort_values("EventId").reset_index(drop=True)
    table = t["htt"]
    for variant, k in (("tau_es_up", K), ("tau_es_down", 2 - K)):
        shifted = apply_tau_energy_scale(f, k)
        for col in ("PRI_tau_pt", "PRI_met", "DER_mass_vis", "DER_mass_transverse_met_lep", "DER_met_phi_centrality"):
            assert np.array_equal(table.features_of(variant, [col])[:, 0], shifted[col].to_numpy().astype(np.float32)), col
        for col in UNCHANGED:
            assert np.array_equal(table.features_of(variant, [col]), table.features_of("nominal", [col])), col
        # the mT used for the regions is the shifted one
        mt = shifted.DER_mass_transverse_met_lep.to_numpy()
        assert np.array_equal(table.in_region("signal", variant), (shifted.PRI_tau_pt.to_numpy() >= 25) & (mt < 50))


def test_tes_identity_options_and_errors():
    rng = np.random.default_rng(3)
    n = 50
    frame = {
        "PRI_tau_pt": rng.uniform(20, 80, n), "PRI_tau_phi": rng.uniform(-3, 3, n),
        "PRI_lep_pt": rng.uniform(20, 80, n), "PRI_lep_phi": rng.uniform(-3, 3, n),
        "PRI_met": rng.uniform(0, 80, n), "PRI_met_phi": rng.uniform(-3, 3, n),
        "DER_mass_MMC": np.where(rng.random(n) < 0.2, -999.0, rng.uniform(60, 200, n)),
        "DER_mass_vis": rng.uniform(30, 150, n),
    }
    same = apply_tau_energy_scale(frame, 1.0)
    assert isinstance(same, dict) and all(np.array_equal(same[c], frame[c]) for c in frame)
    scaled = apply_tau_energy_scale(frame, K, mmc="scale_like_mass_vis")
    ok = frame["DER_mass_MMC"] != -999.0
    np.testing.assert_allclose(scaled["DER_mass_MMC"][ok], frame["DER_mass_MMC"][ok] * np.sqrt(K))
    assert (scaled["DER_mass_MMC"][~ok] == -999.0).all()
    assert np.array_equal(apply_tau_energy_scale(frame, K)["DER_mass_MMC"], frame["DER_mass_MMC"])
    for bad in (0.0, -1.0, float("nan"), "1.03"):
        with pytest.raises(AuditError, match="factor"):
            apply_tau_energy_scale(frame, bad)
    with pytest.raises(AuditError, match="PRI_met_phi"):
        apply_tau_energy_scale({k: v for k, v in frame.items() if k != "PRI_met_phi"}, K)
    broken = dict(frame, PRI_tau_pt=np.where(np.arange(n) == 4, -999.0, frame["PRI_tau_pt"]))
    with pytest.raises(AuditError, match="PRI_tau_pt"):
        apply_tau_energy_scale(broken, K)
    with pytest.raises(AuditError, match="mmc|MMC"):
        apply_tau_energy_scale(frame, K, mmc="guess")
