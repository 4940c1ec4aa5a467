"""Bad inputs to the selection end in one AuditError that names the file and what to fix."""

import copy

import awkward as ak
import numpy as np
import pytest
import uproot

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.selection import normalise_weights, plan_chunks, select_chunk, select_files

generate = pytest.importorskip("hsaudit.generate")


@pytest.fixture(scope="module")
def config():
    return load_config("demo")


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("err") / "ztt.root"
    generate.generate_events("ztt", 600, 2, path)
    return path


def _rewrite(src, dst, rename=None, drop=()):
    """Copy a flat NanoAOD file, renaming collection prefixes and dropping some branches."""
    rename = rename or {}
    tree = uproot.open(src)["Events"]
    arrays = tree.arrays(library="ak")
    out = {}
    groups = {}
    for name in arrays.fields:
        if name in drop or name.startswith("n") and name[1:] in {n.split("_")[0] for n in arrays.fields}:
            continue
        prefix, _, field = name.partition("_")
        target = rename.get(prefix, prefix)
        if arrays[name].ndim > 1:
            groups.setdefault(target, {})[field] = arrays[name]
        else:
            out[f"{target}_{field}" if field else name] = arrays[name]
    for prefix, fields in groups.items():
        out[prefix] = ak.zip(fields)
    with uproot.recreate(dst) as f:
        # explicit mktree: plain assignment writes an RNTuple in uproot >= 5.7
        f.mktree("Events", {k: v.type for k, v in out.items()})
        f["Events"].extend(out)
    return dst


def test_missing_and_corrupt_files(tmp_path, config, good_file):
    ds = config.datasets["ztt"]
    with pytest.raises(AuditError, match="does not exist"):
        select_chunk(tmp_path / "nope.root", 0, 10, ds, config)
    corrupt = tmp_path / "corrupt.root"
    corrupt.write_bytes(b"this is not a ROOT file" * 100)
    with pytest.raises(AuditError, match=r"corrupt\.root is corrupt or truncated: it is not a readable ROOT file"):
        select_files([corrupt], ds, config)
    truncated = tmp_path / "truncated.root"
    truncated.write_bytes(good_file.read_bytes()[:5000])
    with pytest.raises(AuditError, match=r"truncated\.root is corrupt or truncated"):
        plan_chunks([truncated], 100)
    other = tmp_path / "other_tree.root"
    with uproot.recreate(other) as f:
        f["Other"] = {"x": np.arange(3)}
    with pytest.raises(AuditError, match=r"other_tree\.root has no 'Events' tree \(found: \['Other'\]\)"):
        select_chunk(other, 0, 3, ds, config)
    with pytest.raises(AuditError, match="outside the 600 events"):
        select_chunk(good_file, 0, 601, ds, config)


def test_missing_branch_names_branch_and_file(tmp_path, config, good_file):
    ds = config.datasets["ztt"]
    pfmet = _rewrite(good_file, tmp_path / "pfmet.root", rename={"MET": "PFMET"})
    # the default mapping reads PFMET (NanoAOD v15) where MET is absent: same events
    via_pfmet = select_chunk(pfmet, 0, 600, ds, config)
    np.testing.assert_array_equal(via_pfmet.columns["met_pt__nominal"],
                                  select_chunk(good_file, 0, 600, ds, config).columns["met_pt__nominal"])
    only_met = copy.deepcopy(config)
    only_met.input["branches"] = {"met": "MET"}
    with pytest.raises(AuditError, match=r"pfmet\.root.*MET_pt / MET_phi: set input\.branches\.met"):
        select_chunk(pfmet, 0, 100, ds, only_met)
    with pytest.raises(AuditError, match=r"pfmet\.root.*input\.branches\.met"):
        select_files([pfmet], ds, only_met, executor="iterative")
    no_tau = _rewrite(good_file, tmp_path / "no_tau.root", rename={"Tau": "Xau"})
    with pytest.raises(AuditError, match=r"no_tau\.root: missing branches: 'Tau_pt'.*no Tau collection"):
        select_chunk(no_tau, 0, 100, ds, config)
    no_iso = _rewrite(good_file, tmp_path / "no_iso.root", drop={"Muon_pfRelIso04_all"})
    with pytest.raises(AuditError, match=r"no_iso\.root: missing branches: 'Muon_pfRelIso04_all'"):
        select_chunk(no_iso, 0, 100, ds, config)
    # the rewritten file itself is fine: same events selected as from the original
    same = _rewrite(good_file, tmp_path / "same.root")
    a = select_chunk(same, 0, 600, ds, config)
    b = select_chunk(good_file, 0, 600, ds, config)
    np.testing.assert_array_equal(a.columns["m_vis__nominal"], b.columns["m_vis__nominal"])


def test_empty_selection(config, good_file):
    cfg = copy.deepcopy(config)
    cfg.selection["preselection"] = {"muon_pt_min": 5000.0, "tau_pt_min": 5000.0}
    cfg.selection["muon"]["pt_min"] = 5000.0
    ds = cfg.datasets["ztt"]
    chunk = select_chunk(good_file, 0, 600, ds, cfg)  # one empty chunk is fine ...
    assert chunk.n_events == 0 and chunk.meta.extra["n_events_processed"] == 600
    with pytest.raises(AuditError, match="empty selection.*600 events of dataset 'ztt'"):
        select_files([good_file], ds, cfg)  # ... an empty dataset is not
    with pytest.raises(AuditError, match="empty selection"):
        normalise_weights(chunk, 1.0, 1.0)


def test_bad_arguments(config, good_file):
    ds = config.datasets["ztt"]
    with pytest.raises(AuditError, match="unknown executor 'spark'"):
        select_files([good_file], ds, config, executor="spark")
    with pytest.raises(AuditError, match="chunk_size must be a positive integer"):
        plan_chunks([good_file], 0)
    with pytest.raises(AuditError, match="no input files"):
        plan_chunks([], 10)
    table = select_chunk(good_file, 0, 600, ds, config)
    with pytest.raises(AuditError, match="cross section must be a positive number"):
        normalise_weights(table, -1.0, 100.0)
    with pytest.raises(AuditError, match="luminosity must be a positive number"):
        normalise_weights(table, 1.0, float("nan"))


def test_damaged_baskets_are_reported_as_corrupt_naming_the_file(tmp_path, config, good_file):
    """Zeroed bytes inside the file: the header opens, a basket fails to decompress inside
    coffea; the message says corrupt or truncated and names the file, not coffea's WorkItem."""
    data = good_file.read_bytes()
    failures = 0
    for frac in (0.2, 0.3, 0.4, 0.6):
        damaged = tmp_path / f"damaged_{int(frac * 10)}.root"
        blob = bytearray(data)
        start = int(len(blob) * frac)
        blob[start:start + 4000] = b"\0" * 4000
        damaged.write_bytes(bytes(blob))
        try:
            select_files([damaged], config.datasets["ztt"], config, require=False)
        except AuditError as err:
            failures += 1
            text = str(err)
            assert "corrupt or truncated" in text and damaged.name in text and "WorkItem" not in text, text
            assert "\n" not in text
    assert failures >= 1
