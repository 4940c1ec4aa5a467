"""Tests of the demo NanoAOD generator (hsaudit/generate.py).

Determinism, NanoAOD branch names and types (checked against real NanoAOD files),
coffea NanoEvents readability, unique event ids, bad arguments, atomic writes, and the
physics the downstream selection and classifier rely on.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

import hsaudit.generate as gen
from hsaudit.errors import AuditError
from hsaudit.generate import PROCESSES, generate_events

REAL_NANO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "nano"
N_PHYS = 20_000

EXPECTED_TYPES = {
    "run": "uint32", "luminosityBlock": "uint32", "event": "uint64", "genWeight": "float32",
    "MET_pt": "float32", "MET_phi": "float32",
    "nMuon": "int32", "Muon_pt": "float32", "Muon_eta": "float32", "Muon_phi": "float32",
    "Muon_mass": "float32", "Muon_charge": "int32", "Muon_pfRelIso04_all": "float32",
    "Muon_tightId": "bool", "Muon_mediumId": "bool", "Muon_looseId": "bool", "Muon_jetIdx": "int16",
    "Muon_dxy": "float32", "Muon_dz": "float32", "Tau_dz": "float32",
    "nTau": "int32", "Tau_pt": "float32", "Tau_eta": "float32", "Tau_phi": "float32",
    "Tau_mass": "float32", "Tau_charge": "int32", "Tau_decayMode": "int32",
    "Tau_idDeepTau2018v2p5VSjet": "uint8", "Tau_jetIdx": "int16",
    "nJet": "int32", "Jet_pt": "float32", "Jet_eta": "float32", "Jet_phi": "float32",
    "Jet_mass": "float32", "Jet_btagDeepFlavB": "float32", "Jet_jetId": "uint8",
}


def _dtype_of(branch) -> str:
    interp = branch.interpretation
    inner = getattr(interp, "content", interp)
    return np.dtype(inner.to_dtype).newbyteorder("=").name


def _read(path) -> ak.Array:
    return uproot.open(path)["Events"].arrays()


def _assert_same_arrays(a: ak.Array, b: ak.Array) -> None:
    assert a.fields == b.fields
    for f in a.fields:
        x, y = a[f], b[f]
        if x.ndim > 1:
            assert ak.all(ak.num(x) == ak.num(y)), f
            x, y = ak.flatten(x), ak.flatten(y)
        assert np.array_equal(ak.to_numpy(x), ak.to_numpy(y)), f


# --------------------------------------------------------------------------------------
# files shared by the physics tests
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("demo")
    out = {}
    for process in PROCESSES:
        path = folder / f"{process}.root"
        summary = generate_events(process, N_PHYS, seed=7, path=path)
        out[process] = (path, _read(path), summary)
    return out


def _mu_tau_pairs(events: ak.Array, tau_flav=None):
    """Leading isolated muon + leading tau (pt > 20) per event, as numpy four-vector parts."""
    mu_ok = (events.Muon_pt > 20) & (np.abs(events.Muon_eta) < 2.4) & (events.Muon_pfRelIso04_all < 0.15)
    tau_ok = (events.Tau_pt > 20) & (events.Tau_idDeepTau2018v2p5VSjet >= 5)
    if tau_flav is not None:
        tau_ok = tau_ok & (events.Tau_genPartFlav == tau_flav)
    has = (ak.sum(mu_ok, axis=1) >= 1) & (ak.sum(tau_ok, axis=1) >= 1)
    ev = events[has]
    mu_ok, tau_ok = mu_ok[has], tau_ok[has]

    def first(name, mask):
        return ak.to_numpy(ak.fill_none(ak.firsts(ev[name][mask]), np.nan)).astype(np.float64)

    mu = {k: first(f"Muon_{k}", mu_ok) for k in ("pt", "eta", "phi", "mass", "charge")}
    tau = {k: first(f"Tau_{k}", tau_ok) for k in ("pt", "eta", "phi", "mass", "charge")}
    met = {"pt": ak.to_numpy(ev.MET_pt).astype(float), "phi": ak.to_numpy(ev.MET_phi).astype(float)}
    return mu, tau, met


def _p4(o):
    px, py, pz = o["pt"] * np.cos(o["phi"]), o["pt"] * np.sin(o["phi"]), o["pt"] * np.sinh(o["eta"])
    return np.stack([np.sqrt(px**2 + py**2 + pz**2 + o["mass"] ** 2), px, py, pz])


def _mass(p):
    return np.sqrt(np.maximum(p[0] ** 2 - p[1] ** 2 - p[2] ** 2 - p[3] ** 2, 0))


def _visible_mass(mu, tau):
    return _mass(_p4(mu) + _p4(tau))


def _collinear_mass(mu, tau, met):
    """Collinear approximation; returns the mass and the mask of physical solutions."""
    mx, my = mu["pt"] * np.cos(mu["phi"]), mu["pt"] * np.sin(mu["phi"])
    tx, ty = tau["pt"] * np.cos(tau["phi"]), tau["pt"] * np.sin(tau["phi"])
    ex, ey = met["pt"] * np.cos(met["phi"]), met["pt"] * np.sin(met["phi"])
    det = mx * ty - my * tx
    with np.errstate(divide="ignore", invalid="ignore"):
        x_mu = det / (det + ex * ty - ey * tx)
        x_tau = det / (det + mx * ey - my * ex)
        ok = (x_mu > 0) & (x_mu < 1) & (x_tau > 0) & (x_tau < 1)
        m = _visible_mass(mu, tau) / np.sqrt(np.where(ok, x_mu * x_tau, 1.0))
    return m, ok


# --------------------------------------------------------------------------------------
# determinism
# --------------------------------------------------------------------------------------


def test_same_seed_gives_identical_arrays_independent_of_chunk_size(tmp_path):
    n = 3000
    s1 = generate_events("ztt", n, seed=11, path=tmp_path / "a.root")
    s2 = generate_events("ztt", n, seed=11, path=tmp_path / "b.root", chunk_size=700)
    a, b = _read(tmp_path / "a.root"), _read(tmp_path / "b.root")
    assert len(a) == len(b) == n
    _assert_same_arrays(a, b)
    assert s1["sum_genweight"] == s2["sum_genweight"]


def test_more_events_extend_the_same_stream(tmp_path):
    # the first k events do not depend on n_events (blocks are seeded by their position)
    n_small, n_big = 1000, gen._BLOCK + 500
    generate_events("wjets", n_small, seed=3, path=tmp_path / "small.root")
    generate_events("wjets", n_big, seed=3, path=tmp_path / "big.root", chunk_size=4000)
    small, big = _read(tmp_path / "small.root"), _read(tmp_path / "big.root")
    _assert_same_arrays(small, big[:n_small])


def test_different_seed_gives_different_events(tmp_path):
    generate_events("ttbar", 2000, seed=1, path=tmp_path / "a.root")
    generate_events("ttbar", 2000, seed=2, path=tmp_path / "b.root")
    a, b = _read(tmp_path / "a.root"), _read(tmp_path / "b.root")
    assert not np.array_equal(ak.to_numpy(a.MET_pt), ak.to_numpy(b.MET_pt))
    # same ids, different content
    assert np.array_equal(ak.to_numpy(a.event), ak.to_numpy(b.event))


def test_different_first_event_gives_different_events(tmp_path):
    generate_events("ztt", 1000, seed=1, path=tmp_path / "a.root", first_event=0)
    generate_events("ztt", 1000, seed=1, path=tmp_path / "b.root", first_event=1000)
    a, b = _read(tmp_path / "a.root"), _read(tmp_path / "b.root")
    assert not np.array_equal(ak.to_numpy(a.MET_pt), ak.to_numpy(b.MET_pt))


# --------------------------------------------------------------------------------------
# format
# --------------------------------------------------------------------------------------


def test_ttree_with_nanoaod_branch_names_and_types(samples):
    path = samples["ttbar"][0]
    with uproot.open(path) as f:
        assert f.classnames() == {"Events;1": "TTree"}  # not an RNTuple
        tree = f["Events"]
        types = {k: _dtype_of(tree[k]) for k in tree.keys()}
    for name, dtype in EXPECTED_TYPES.items():
        assert types.get(name) == dtype, (name, types.get(name), dtype)
    # counters are shared per collection, no per-branch counters such as nJet_pt
    assert not [k for k in types if k.startswith("n") and "_" in k]


def test_types_match_real_nanoaod(samples):
    real = REAL_NANO / "nano_tt_v12.root"
    if not real.exists():
        pytest.skip(f"{real} not available")
    ours = uproot.open(samples["ttbar"][0])["Events"]
    theirs = uproot.open(real)["Events"]
    shared = [k for k in ours.keys() if k in theirs.keys() and not k.startswith("n")]
    assert len(shared) >= 20
    mismatched = {k: (_dtype_of(ours[k]), _dtype_of(theirs[k])) for k in shared
                  if _dtype_of(ours[k]) != _dtype_of(theirs[k])}
    assert not mismatched


def test_tau_branches_match_older_real_nanoaod(samples):
    # the v12 sample has no taus; an older real file has Tau_charge/decayMode as int32 too
    real = REAL_NANO / "nano_dy.root"
    if not real.exists():
        pytest.skip(f"{real} not available")
    ours = uproot.open(samples["ztt"][0])["Events"]
    theirs = uproot.open(real)["Events"]
    for k in ("Tau_pt", "Tau_eta", "Tau_phi", "Tau_mass", "Tau_charge", "Tau_decayMode", "MET_pt"):
        assert _dtype_of(ours[k]) == _dtype_of(theirs[k]), k


def test_readable_by_coffea_nanoevents(samples):
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path = samples["ttbar"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing cross-references (Photon, FsrPhoton, ...) warn
        events = NanoEventsFactory.from_root(
            {str(path): "Events"}, schemaclass=NanoAODSchema, mode="eager"
        ).events()
    assert len(events) == N_PHYS
    for coll in ("Muon", "Tau", "Jet", "MET", "Electron"):
        assert coll in events.fields
    # cross-references resolve: a tau's matched jet is at least as hard as the tau is visible
    matched = events.Tau.matched_jet
    has = ~ak.is_none(matched, axis=1)
    tau_pt = ak.to_numpy(ak.flatten(events.Tau.pt[has]))
    jet_pt = ak.to_numpy(ak.fill_none(ak.flatten(matched.pt[has]), 0.0))
    assert len(tau_pt) > 1000
    assert np.median(jet_pt / tau_pt) > 1.0
    # four-vector behaviour works on our branches
    both = events[(ak.num(events.Muon) > 0) & (ak.num(events.Tau) > 0)]
    mass = (both.Muon[:, 0] + both.Tau[:, 0]).mass
    assert len(mass) > 1000 and ak.all(mass > 0)


def test_collections_sorted_by_pt_and_within_acceptance(samples):
    ev = samples["ggH_htt"][1]
    for coll, eta_max in (("Muon", 2.4), ("Tau", 2.5), ("Jet", 4.7)):
        pt = ev[f"{coll}_pt"]
        assert ak.all(pt[:, :-1] >= pt[:, 1:]), coll
        assert ak.all(np.abs(ev[f"{coll}_eta"]) < eta_max + 0.05), coll
    assert ak.all(ev.nMuon == ak.num(ev.Muon_pt))
    # thresholds apply before the NanoAOD-like mantissa rounding (10 bits: 0.016 GeV at 18 GeV)
    assert ak.all(ev.Tau_pt > 17.95) and ak.all(ev.Jet_pt > 14.95)
    dm = np.unique(ak.to_numpy(ak.flatten(ev.Tau_decayMode)))
    assert set(dm) == {0, 1, 10, 11}
    wp = ak.to_numpy(ak.flatten(ev.Tau_idDeepTau2018v2p5VSjet))
    assert wp.min() >= 0 and wp.max() == 8


# --------------------------------------------------------------------------------------
# event ids, weights, summary
# --------------------------------------------------------------------------------------


def test_event_ids_unique_across_files_of_a_process(tmp_path):
    generate_events("zmm", 2500, seed=5, path=tmp_path / "a.root", first_event=0, run=1)
    generate_events("zmm", 2500, seed=5, path=tmp_path / "b.root", first_event=2500, run=1)
    a, b = _read(tmp_path / "a.root"), _read(tmp_path / "b.root")
    ids = np.concatenate([
        np.stack([ak.to_numpy(x.run).astype(np.uint64), ak.to_numpy(x.luminosityBlock).astype(np.uint64),
                  ak.to_numpy(x.event)], axis=1)
        for x in (a, b)
    ])
    assert len(np.unique(ids, axis=0)) == 5000
    assert ak.to_numpy(a.event)[0] == 1 and ak.to_numpy(b.event)[-1] == 5000
    assert set(np.unique(ak.to_numpy(a.run))) == {1}
    assert ak.to_numpy(b.luminosityBlock).max() == 5  # 1000 events per luminosity block


def test_summary_and_weights(samples):
    for process, (_, ev, summary) in samples.items():
        w = ak.to_numpy(ev.genWeight).astype(np.float64)
        assert summary["n_events"] == N_PHYS == len(w)
        assert summary["sum_genweight"] == pytest.approx(w.sum())
        assert summary["is_signal"] == PROCESSES[process]["is_signal"]
        assert set(np.unique(w)) <= {-1.0, 1.0}
    neg = np.mean(ak.to_numpy(samples["wjets"][1].genWeight) < 0)
    assert 0.07 < neg < 0.13  # NLO-like negative weights
    assert np.all(ak.to_numpy(samples["ggH_htt"][1].genWeight) == 1)


def test_processes_registry():
    assert set(PROCESSES) == {"ggH_htt", "vbf_htt", "ztt", "zmm", "wjets", "ttbar"}
    assert {p for p, d in PROCESSES.items() if d["is_signal"]} == {"ggH_htt", "vbf_htt"}
    for d in PROCESSES.values():
        assert d["description"] and d["cross_section_pb"] > 0


# --------------------------------------------------------------------------------------
# bad arguments and atomic writes
# --------------------------------------------------------------------------------------


def test_unknown_process_lists_known_ones(tmp_path):
    with pytest.raises(AuditError, match="unknown demo process 'htt'.*ggH_htt.*ztt"):
        generate_events("htt", 10, seed=1, path=tmp_path / "x.root")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_events": 0}, "n_events must be >= 1"),
        ({"n_events": -5}, "n_events must be >= 1"),
        ({"n_events": 2.5}, "n_events must be an integer"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"first_event": -1}, "first_event must be >= 0"),
        ({"chunk_size": 0}, "chunk_size must be >= 1"),
        ({"run": 0}, "run must be >= 1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    args = {"process": "ztt", "n_events": 10, "seed": 1, "path": tmp_path / "x.root", **kwargs}
    with pytest.raises(AuditError, match=message):
        generate_events(**args)
    assert not list(tmp_path.iterdir())


def test_directory_as_path(tmp_path):
    with pytest.raises(AuditError, match="is a directory"):
        generate_events("ztt", 10, seed=1, path=tmp_path)


def test_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out.root"
    path.write_bytes(b"previous content")
    real = gen._generate_block
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("interrupted")
        return real(*args, **kwargs)

    monkeypatch.setattr(gen, "_generate_block", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        generate_events("ztt", gen._BLOCK + 10, seed=1, path=path, chunk_size=1000)
    # the old file is untouched and no temporary file is left behind
    assert path.read_bytes() == b"previous content"
    assert [p.name for p in tmp_path.iterdir()] == ["out.root"]


# --------------------------------------------------------------------------------------
# physics
# --------------------------------------------------------------------------------------


def test_ztt_visible_mass_peaks_well_below_mz(samples):
    mu, tau, _ = _mu_tau_pairs(samples["ztt"][1], tau_flav=5)
    mvis = _visible_mass(mu, tau)
    assert len(mvis) > 300
    hist, edges = np.histogram(mvis, bins=np.arange(20, 130, 5))
    peak = edges[np.argmax(hist)] + 2.5
    assert 50 < peak < 80, peak
    assert 55 < np.median(mvis) < 80


def test_higgs_heavier_than_z_but_overlapping(samples):
    m = {}
    for p in ("ggH_htt", "ztt"):
        mu, tau, met = _mu_tau_pairs(samples[p][1], tau_flav=5)
        os_ = mu["charge"] * tau["charge"] < 0
        m[p] = {"vis": _visible_mass(mu, tau)[os_]}
        mcol, ok = _collinear_mass(mu, tau, met)
        # the collinear approximation is singular for back-to-back taus: use the others
        dphi = np.abs((mu["phi"] - tau["phi"] + np.pi) % (2 * np.pi) - np.pi)
        m[p]["col"] = mcol[os_ & ok & (dphi < 2.8)]
    # visible mass: H above Z by roughly the mass ratio
    ratio = np.median(m["ggH_htt"]["vis"]) / np.median(m["ztt"]["vis"])
    assert 1.1 < ratio < 1.45, ratio
    # collinear mass: different medians (near 125 vs near 91) but overlapping distributions
    med_h, med_z = np.median(m["ggH_htt"]["col"]), np.median(m["ztt"]["col"])
    assert len(m["ztt"]["col"]) > 100
    assert med_h - med_z > 20, (med_h, med_z)
    assert 85 < med_z < 125 and 115 < med_h < 160, (med_h, med_z)
    lo, hi = np.percentile(m["ztt"]["col"], [25, 75])
    inside = np.mean((m["ggH_htt"]["col"] > lo) & (m["ggH_htt"]["col"] < hi))
    assert 0.1 < inside < 0.5  # overlap: not separable by one cut


def test_missing_energy_by_process(samples):
    met = {p: np.mean(ak.to_numpy(ev.MET_pt)) for p, (_, ev, _) in samples.items()}
    assert met["wjets"] > met["zmm"] + 15, met
    assert met["ttbar"] > met["ztt"], met
    # MET resolution from pileup and unclustered energy: no-neutrino Z->mumu has 10-35 GeV
    assert 10 < met["zmm"] < 35, met


def test_transverse_mass_separates_w_from_ztt(samples):
    def mt(p):
        mu, _, met = _mu_tau_pairs(samples[p][1])
        return np.sqrt(2 * mu["pt"] * met["pt"] * (1 - np.cos(mu["phi"] - met["phi"])))

    assert np.median(mt("wjets")) > 50 > np.median(mt("ztt"))


def test_ttbar_has_b_jets(samples):
    def frac_btag(p):
        ev = samples[p][1]
        tagged = (ev.Jet_btagDeepFlavB > 0.3) & (ev.Jet_pt > 25) & (np.abs(ev.Jet_eta) < 2.5)
        return np.mean(ak.to_numpy(ak.sum(tagged, axis=1) >= 1))

    assert frac_btag("ttbar") > 0.75
    assert frac_btag("ztt") < 0.15 and frac_btag("wjets") < 0.15
    ev = samples["ttbar"][1]
    assert np.mean(ak.to_numpy(ev.nJet)) > 4


def test_vbf_forward_jets_with_large_rapidity_gap(samples):
    def dijet(p):
        ev = samples[p][1]
        ok = ev.Jet_pt > 30
        eta = ev.Jet_eta[ok]
        two = ak.num(eta) >= 2
        return ak.to_numpy(np.abs(eta[two][:, 0] - eta[two][:, 1])), np.mean(ak.to_numpy(two))

    deta_vbf, f_vbf = dijet("vbf_htt")
    deta_ggh, f_ggh = dijet("ggH_htt")
    assert f_vbf > 0.5 and f_vbf > 2 * f_ggh
    assert np.median(deta_vbf) > 3.0
    assert np.median(deta_vbf) > np.median(deta_ggh) + 1.0


def test_tau_id_higher_for_genuine_taus(samples):
    ev = samples["ttbar"][1]  # has genuine taus and jet fakes
    wp = ak.to_numpy(ak.flatten(ev.Tau_idDeepTau2018v2p5VSjet))
    flav = ak.to_numpy(ak.flatten(ev.Tau_genPartFlav))
    genuine, fake = wp[flav == 5], wp[flav == 0]
    assert len(genuine) > 200 and len(fake) > 1000
    assert np.mean(genuine >= 5) > 0.75  # Medium
    assert np.mean(fake >= 5) < 0.2
    # fake taus are softer than the jets they come from
    has = ev.Tau_jetIdx >= 0
    fake_mask = has & (ev.Tau_genPartFlav == 0)
    jet_pt = ev.Jet_pt[ak.where(fake_mask, ev.Tau_jetIdx, 0)][fake_mask]
    assert np.median(ak.to_numpy(ak.flatten(ev.Tau_pt[fake_mask] / jet_pt))) < 0.8


def test_muon_isolation_prompt_vs_nonprompt(samples):
    ev = samples["ttbar"][1]
    iso = ak.to_numpy(ak.flatten(ev.Muon_pfRelIso04_all))
    flav = ak.to_numpy(ak.flatten(ev.Muon_genPartFlav))
    prompt, nonprompt = iso[flav == 1], iso[flav == 5]
    assert len(nonprompt) > 300
    assert np.mean(prompt < 0.15) > 0.85
    assert np.mean(nonprompt < 0.15) < 0.3
    # b-hadron flight: non-prompt muons have larger impact parameters
    dxy = np.abs(ak.to_numpy(ak.flatten(ev.Muon_dxy)))
    assert np.median(dxy[flav == 5]) > 3 * np.median(dxy[flav == 1])


def test_charge_ordering_os_for_genuine_ss_populated_for_fakes(samples):
    mu, tau, _ = _mu_tau_pairs(samples["ztt"][1], tau_flav=5)
    assert np.mean(mu["charge"] * tau["charge"] < 0) > 0.95
    mu, tau, _ = _mu_tau_pairs(samples["wjets"][1], tau_flav=0)
    ss = np.mean(mu["charge"] * tau["charge"] > 0)
    assert 0.3 < ss < 0.55  # fakes: roughly half same-sign


def test_cutflow_has_failing_events(samples):
    # not every ztt event is a clean mu + tau_h event: mu+e, mu+mu, soft or lost objects
    ev = samples["ztt"][1]
    n_mu = ak.to_numpy(ak.sum((ev.Muon_pt > 10) & (ev.Muon_pfRelIso04_all < 0.3), axis=1))
    n_tau = ak.to_numpy(ak.sum(ev.Tau_pt > 20, axis=1))
    assert 0.01 < np.mean(n_mu >= 2) < 0.2
    assert 0.2 < np.mean(n_tau == 0) < 0.9
    assert np.mean(ak.to_numpy(ev.nElectron) > 0) > 0.1
    # W+jets: the tau must come from a jet, so a genuine-looking mu+tau pair is rare
    mu, _, _ = _mu_tau_pairs(samples["wjets"][1])
    assert len(mu) < 0.05 * N_PHYS


def test_identical_across_interpreter_runs(tmp_path):
    # law runs GenerateEvents in other processes: nothing may depend on Python's hash seed
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    code = (
        "import sys; from hsaudit.generate import generate_events; "
        "generate_events('vbf_htt', 500, seed=9, path=sys.argv[1])"
    )
    for name, hash_seed in (("a.root", "1"), ("b.root", "2")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / name)], check=True, env=env, cwd=root)
    _assert_same_arrays(_read(tmp_path / "a.root"), _read(tmp_path / "b.root"))
