"""Real NanoAOD of several versions (../shared/data/nano) through the branch map
(``input.branches``): v15 (PFMET, no stored jet ID), legacy DeepTau bit masks, pre-DeepTau
working points, files with zero entries, every missing branch reported at once."""

import copy
import functools
import warnings

import numpy as np
import pytest

from hsaudit.config import load_config, resolve_dataset_files
from hsaudit.errors import AuditError
from hsaudit.selection.objects import (
    BRANCH_MAP,
    TauIdFallbackWarning,
    branch_candidates,
    load_content,
    recompute_jet_id,
    resolve_branches,
)
from hsaudit.selection.run import InputFileWarning, inspect_file, plan_chunks, select_files


@pytest.fixture(scope="module")
def config():
    return load_config("ci")


@pytest.fixture(scope="module")
def loose(config):
    """The ci selection without the anti-lepton requirements and the extra-muon veto: the real
    files are mostly Z -> mumu, which those requirements reject."""
    cfg = copy.deepcopy(config)
    for key in ("deeptau_vsmu_min", "deeptau_vse_min"):
        cfg.selection["tau"].pop(key)
    cfg.selection.pop("extra_muon_veto")
    return cfg


def _nano(shared_data, name):
    path = shared_data / "nano" / name
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path


@functools.lru_cache(maxsize=8)
def _events(path):
    """NanoEvents of a file, built once per module (the v15 schema alone has 2,600 branches)."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NanoEventsFactory.from_root({str(path): "Events"}, schemaclass=NanoAODSchema,
                                           mode="virtual").events()


def test_every_real_file_is_read_or_refused_with_a_reason(shared_data, config):
    """Each file in the folder either loads (all needed inputs found through the default map)
    or names what it lacks: nothing ends in a traceback."""
    folder = shared_data / "nano"
    files = sorted(folder.glob("*.root"))
    if not files:
        pytest.skip(f"no NanoAOD files in {folder}")
    outcomes = {}
    for path in files:
        try:
            n = inspect_file(path, config)
        except AuditError as err:
            outcomes[path.name] = str(err)
            continue
        if n == 0:
            outcomes[path.name] = "empty"
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TauIdFallbackWarning)
            content = load_content(_events(str(path)), str(path), config.input, config.selection)
        assert content.n_events == n
        assert np.isfinite(content.met_pt).all() and (content.met_pt >= 0).all()
        assert set(np.unique(content.jets["jetId"])) <= {0, 2, 4, 6}
        assert content.taus["vsjet_wp"].min() >= 0 and content.taus["vsjet_wp"].max() <= 8
        outcomes[path.name] = "ok"
    expected = {"nano_dy.root": "ok", "nano_dimuon.root": "ok", "nano_tt_v15.root": "ok",
                "nano_dy_empty.root": "empty"}
    for name, outcome in expected.items():
        if name in outcomes:
            assert outcomes[name] == outcome, (name, outcome)
    if "nano_tt_v12.root" in outcomes:  # this v12 test file has no tau collection at all
        assert "no Tau collection" in outcomes["nano_tt_v12.root"]


def test_v15_pfmet_and_recomputed_jet_id(shared_data, config):
    path = _nano(shared_data, "nano_tt_v15.root")
    content = load_content(_events(str(path)), str(path), config.input, config.selection)
    import uproot

    tree = uproot.open(path)["Events"]
    assert "Jet_jetId" not in tree and "MET_pt" not in tree
    np.testing.assert_allclose(content.met_pt, tree["PFMET_pt"].array(library="np"), rtol=1e-6)
    jets = content.jets
    central = (np.abs(jets["eta"]) < 2.4) & (jets["pt"] > 30)
    # real jets above 30 GeV are almost all genuine: the recomputed tight ID keeps > 95 %
    assert (jets["jetId"][central] >= 2).mean() > 0.95
    assert (jets["jetId"] < 2).any()  # and it is not a constant
    # DeepTau 2018v2p5 is an index 1..8 in v15, read as is
    assert set(np.unique(content.taus["vsjet_wp"])) <= set(range(9))


def test_recompute_jet_id_criteria():
    """The Run-3 tight / tightLepVeto criteria per |eta| range (JetID13p6TeV)."""
    base = dict(neHEF=0.1, neEmEF=0.1, chHEF=0.5, muEF=0.0, chEmEF=0.1, chMultiplicity=5, neMultiplicity=5)

    def jid(eta, **change):
        args = {k: np.array([v]) for k, v in {**base, **change}.items()}
        return int(recompute_jet_id(np.array([eta]), **args)[0])

    assert jid(0.5) == 6
    assert jid(0.5, neHEF=0.995) == 0
    assert jid(0.5, chMultiplicity=0) == 0
    assert jid(0.5, chHEF=0.005) == 0
    assert jid(0.5, muEF=0.9) == 2  # tight, but not tightLepVeto
    assert jid(2.65, neHEF=0.95) == 0 and jid(2.65, neHEF=0.85) == 6
    assert jid(2.65, chMultiplicity=0) == 6  # no charged-multiplicity requirement outside the tracker
    assert jid(2.85, neEmEF=0.995, chMultiplicity=0) == 6  # lepton veto only up to |eta| 2.7
    assert jid(2.85, neHEF=0.995) == 0
    assert jid(3.5, neMultiplicity=1) == 0 and jid(3.5, neEmEF=0.5) == 0
    assert jid(-3.5, neMultiplicity=2, neEmEF=0.3, chMultiplicity=0, muEF=0.9) == 6


def test_legacy_bitmask_decoded_from_branch_doc(shared_data, config):
    path = _nano(shared_data, "nano_dy.root")
    import uproot

    raw = uproot.open(path)["Events"]["Tau_idDeepTau2017v2p1VSjet"].array(library="np")
    with pytest.warns(TauIdFallbackWarning, match="idDeepTau2017v2p1VSjet"):
        content = load_content(_events(str(path)), str(path), config.input, config.selection)
    flat = np.concatenate(list(raw)).astype(np.uint8)
    expected = np.unpackbits(flat[:, None], axis=1).sum(axis=1)
    np.testing.assert_array_equal(np.sort(content.taus["vsjet_wp"]), np.sort(expected))
    assert content.taus["vsjet_wp"].max() == 8  # 255 = all eight working points
    # an explicit mapping is not warned about
    explicit = {**config.input, "branches": {"tau_id_vsjet": "Tau_idDeepTau2017v2p1VSjet",
                                             "tau_id_vsmu": "Tau_idDeepTau2017v2p1VSmu",
                                             "tau_id_vse": "Tau_idDeepTau2017v2p1VSe"}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", TauIdFallbackWarning)
        load_content(_events(str(path)), str(path), explicit, config.selection)


def test_pre_deeptau_working_points_through_the_map(shared_data, loose):
    """A file without DeepTau can name another discriminator's working-point branch."""
    path = _nano(shared_data, "nano_dy.root")
    inp = {**loose.input, "branches": {"tau_id_vsjet": "Tau_idMVAoldDM2017v2"}}
    content = load_content(_events(str(path)), str(path), inp, loose.selection)
    # 7 MVA working points stored as a bit mask: the index is the number of set bits
    assert 1 <= content.taus["vsjet_wp"].min() and content.taus["vsjet_wp"].max() <= 7


def test_all_missing_branches_reported_at_once_with_their_keys(shared_data, config):
    path = _nano(shared_data, "nano_tt_v15.root")
    cfg = copy.deepcopy(config)
    cfg.input["branches"] = {"met": "MET", "jet_id": "Jet_jetId", "tau_id_vsjet": "Tau_idDeepTau2017v2p1VSjet"}
    with pytest.raises(AuditError) as err:
        inspect_file(path, cfg)
    text = str(err.value)
    assert "\n" not in text and "nano_tt_v15.root" in text
    for key in ("input.branches.met", "input.branches.jet_id", "input.branches.tau_id_vsjet"):
        assert key in text
    assert "MET_pt / MET_phi" in text and "Jet_jetId" in text


def test_branch_map_validation():
    assert branch_candidates(None) == {k: v[0] for k, v in BRANCH_MAP.items()}
    assert branch_candidates({"branches": {"met": "PFMET"}})["met"] == ("PFMET",)
    for bad, match in (({"mett": "MET"}, "input.branches.mett: unknown key"),
                       ({"met": 3}, "input.branches.met: expected a branch name"),
                       ({"jet_id": "Muon_x"}, "must be a Jet_"),
                       ({"tau_id_vsjet": "recompute"}, "only jet_id can be recomputed")):
        with pytest.raises(AuditError, match=match):
            branch_candidates({"branches": bad})
    chosen, missing = resolve_branches({"PFMET_pt", "PFMET_phi"}, {}, {})
    assert chosen["met"] == "PFMET"
    assert any("event ids" in m for m in missing)


def test_dataset_with_an_empty_file(shared_data, loose, tmp_path):
    good = _nano(shared_data, "nano_dy.root")
    empty = _nano(shared_data, "nano_dy_empty.root")
    assert plan_chunks([good, empty], 100, loose) == [(str(good), 0, 40)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TauIdFallbackWarning)
        with pytest.warns(InputFileWarning, match=r"skipping .*nano_dy_empty\.root: it has zero entries"):
            table = select_files([good, empty], loose.datasets["ztt"], loose)
        alone = select_files([good], loose.datasets["ztt"], loose)
    assert table.n_events == alone.n_events >= 1
    assert table.meta.extra["sum_genweight"] == alone.meta.extra["sum_genweight"]
    assert [f["n_events"] for f in table.meta.extra["files"]] == [40, 0]
    # only empty files: the dataset fails, naming its files
    with pytest.raises(AuditError, match=r"empty selection.*nano_dy_empty\.root"):
        select_files([empty], loose.datasets["ztt"], loose)


def test_nanoaod_paths_resolve_like_flat_inputs(shared_data, tmp_path, monkeypatch, write_config):
    nano = shared_data / "nano"
    monkeypatch.setenv("AUDIT_TEST_NANO", str(nano))
    monkeypatch.chdir(tmp_path)

    def edit(raw):
        raw["datasets"]["ztt"] = {"process": "ztt", "is_signal": False, "cross_section": 1.0,
                                  "files": ["${AUDIT_TEST_NANO}/nano_dy*.root"]}
        raw["datasets"]["zmm"] = {"process": "zmm", "is_signal": False, "cross_section": 1.0,
                                  "files": ["data/local.root"]}

    path = write_config(edit=edit)
    (path.parent / "data").mkdir()
    (path.parent / "data" / "local.root").write_bytes(b"x")
    cfg = load_config(path)
    assert resolve_dataset_files(cfg.datasets["ztt"], cfg) == [(nano / "nano_dy.root").resolve(),
                                                              (nano / "nano_dy_empty.root").resolve()]
    # relative to the config's folder, not the working directory
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    assert resolve_dataset_files(cfg.datasets["zmm"], cfg) == [(path.parent / "data" / "local.root").resolve()]
    cfg.datasets["zmm"].raw_files = ["nothing/*.root"]
    with pytest.raises(AuditError, match=r"datasets\.zmm\.files: no file matches"):
        resolve_dataset_files(cfg.datasets["zmm"], cfg)


def test_pre_deeptau_file_names_the_key_and_what_the_file_has():
    """A file without DeepTau: the message lists the tau-ID branches it does have."""
    available = {"run", "luminosityBlock", "event", "MET_pt", "MET_phi", "Jet_jetId",
                 "Tau_idMVAoldDM2017v2", "Tau_idAntiMu"}
    available |= {f"Muon_{f}" for f in ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all", "tightId")}
    available |= {f"Tau_{f}" for f in ("pt", "eta", "phi", "mass", "charge", "decayMode")}
    available |= {f"Jet_{f}" for f in ("pt", "eta", "phi", "mass")}
    chosen, missing = resolve_branches(available, {}, {"tau": {}})
    assert len(missing) == 1 and "input.branches.tau_id_vsjet" in missing[0]
    assert "this file has Tau_idAntiMu, Tau_idMVAoldDM2017v2" in missing[0]
    chosen, missing = resolve_branches(available, {"branches": {"tau_id_vsjet": "Tau_idMVAoldDM2017v2"}}, {"tau": {}})
    assert missing == [] and chosen["tau_id_vsjet"] == "Tau_idMVAoldDM2017v2"
