"""Physics objects of the mu + tau_h selection: reading NanoAOD collections and object selection.

Reads the muon, tau, jet and MET branches of one chunk of NanoAOD events (coffea NanoEvents,
``NanoAODSchema``) into flat numpy arrays (:class:`Collection`) and applies the object-level
selection of the configuration's ``selection`` section. The selection follows the CMS
H -> tau tau mu + tau_h analyses (CMS Collaboration, "Measurement of Higgs boson production in
the decay channel with a pair of tau leptons", Eur. Phys. J. C 83 (2023) 562):

* muon: pt, |eta|, relative PF isolation (``pfRelIso04_all``), tight ID;
* tau_h: pt, |eta|, DeepTau VSjet working point index (``deeptau_vsjet_min``, 1 = VVVLoose
  ... 8 = VVTight) and decay modes;
* jets: pt, |eta|, ``jetId >= jet_id_min``, Delta R to the selected muon and tau;
  b-tagged jets (``btagDeepFlavB``) for the b-veto.

NanoAOD versions (v9 ... v15) name a few inputs differently. The configuration's
``input.branches`` maps each of them (:data:`BRANCH_MAP`); every entry is one name or a list
of candidates, the first one present in a file is used, so one dataset may mix versions:

* ``met``: the missing-energy collection, ``MET`` (v9-v14) or ``PFMET`` (v15);
* ``jet_id``: the jet-ID branch (``Jet_jetId``) or ``recompute``: NanoAOD v15 no longer
  stores it, and the JetMET group's recommendation is to recompute it from the jet's stored
  energy fractions and constituent multiplicities (:func:`recompute_jet_id`);
* ``tau_id_vsjet`` / ``tau_id_vsmu`` / ``tau_id_vse``: the tau-ID working-point branches,
  DeepTau 2018v2p5 (an index 1..8, NanoAOD v12+) or 2017v2p1. The encoding is read from the
  branch's documentation string: a cumulative bit mask (v9 and earlier: 1 = VVVLoose,
  2 = VVLoose, ..., 128 = VVTight, whose number of set bits is the same index) or an index.
  Pre-DeepTau files can name another working-point branch (e.g. ``Tau_idMVAoldDM2017v2``);
  its working points are those of that discriminator, so choose ``deeptau_vsjet_min`` for it;
* ``btag``: the b-tag discriminant of the b-veto (``Jet_btagDeepFlavB``).

Every branch a file lacks is reported at once, each with the mapping key that fixes it
(:func:`missing_branches`).

Within every event the objects of a collection are ordered by decreasing nominal pt once, at
load. All object-level shifts (shifts.py) scale a whole collection by one factor, which keeps
that order, so "the leading candidate" is the first candidate in every variant.

The mu + tau pair: the highest-pt muon candidate, and the highest-pt tau candidate separated
from it by Delta R > ``pair_delta_r_min``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import awkward as ak
import numpy as np

from hsaudit.errors import AuditError
from hsaudit.fourvectors import delta_r

# branches read per collection (NanoAOD name = <collection>_<field>)
MUON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all", "tightId")
TAU_FIELDS = ("pt", "eta", "phi", "mass", "charge", "decayMode")
JET_FIELDS = ("pt", "eta", "phi", "mass")
MET_FIELDS = ("pt", "phi")
ID_BRANCHES = ("run", "luminosityBlock", "event")
TAU_ID = "idDeepTau2018v2p5VSjet"
TAU_ID_LEGACY = "idDeepTau2017v2p1VSjet"
RECOMPUTE = "recompute"

# input.branches key -> default candidates (first present in a file wins) and what it is
BRANCH_MAP = {
    "met": (("MET", "PFMET"), "the missing-energy collection (MET in NanoAOD v9-v14, PFMET in v15)"),
    "jet_id": (("Jet_jetId", RECOMPUTE), "the jet-ID branch, or 'recompute' from the jet's energy "
                                         "fractions and multiplicities (NanoAOD v15)"),
    "tau_id_vsjet": (("Tau_idDeepTau2018v2p5VSjet", "Tau_idDeepTau2017v2p1VSjet"),
                     "the tau-ID working-point branch against jets"),
    "tau_id_vsmu": (("Tau_idDeepTau2018v2p5VSmu", "Tau_idDeepTau2017v2p1VSmu"),
                    "the tau-ID working-point branch against muons"),
    "tau_id_vse": (("Tau_idDeepTau2018v2p5VSe", "Tau_idDeepTau2017v2p1VSe"),
                   "the tau-ID working-point branch against electrons"),
    "btag": (("Jet_btagDeepFlavB",), "the b-tag discriminant of the b-veto"),
}
# read when a file has it even without a b-veto (the table keeps the column)
DEFAULT_BTAG = BRANCH_MAP["btag"][0][0]
# collection each mapped branch belongs to (met names a collection itself)
_MAPPED_COLLECTION = {"jet_id": "Jet", "tau_id_vsjet": "Tau", "tau_id_vsmu": "Tau",
                      "tau_id_vse": "Tau", "btag": "Jet"}
# stored variables the recomputed jet ID reads
JET_ID_INPUTS = ("neHEF", "neEmEF", "chHEF", "muEF", "chEmEF", "chMultiplicity", "neMultiplicity")


class TauIdFallbackWarning(UserWarning):
    """The file only has the legacy DeepTau 2017v2p1 discriminator."""


def branch_candidates(input_section: dict | None) -> dict[str, tuple[str, ...]]:
    """``input.branches`` merged over :data:`BRANCH_MAP`: key -> candidate names.
    AuditError naming the key for unknown keys or values that are not names."""
    user = (input_section or {}).get("branches") or {}
    if not isinstance(user, dict):
        raise AuditError("input.branches: expected a mapping key -> branch name(s) "
                         f"(keys: {sorted(BRANCH_MAP)})")
    out = {k: v[0] for k, v in BRANCH_MAP.items()}
    for key, value in user.items():
        if key not in BRANCH_MAP:
            raise AuditError(f"input.branches.{key}: unknown key (known: {sorted(BRANCH_MAP)})")
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise AuditError(f"input.branches.{key}: expected a branch name or a list of candidates, got {value!r}")
        coll = _MAPPED_COLLECTION.get(key)
        for n in names:
            if coll and n != RECOMPUTE and not n.startswith(f"{coll}_"):
                raise AuditError(f"input.branches.{key}: '{n}' must be a {coll}_* branch")
            if n == RECOMPUTE and key != "jet_id":
                raise AuditError(f"input.branches.{key}: only jet_id can be recomputed")
        out[key] = tuple(names)
    return out


def needed_keys(selection: dict | None) -> list[str]:
    """The mapped inputs a selection section needs."""
    sel = selection or {}
    keys = ["met", "jet_id", "tau_id_vsjet"]
    tau = sel.get("tau") or {}
    if "deeptau_vsmu_min" in tau:
        keys.append("tau_id_vsmu")
    if "deeptau_vse_min" in tau:
        keys.append("tau_id_vse")
    if sel.get("b_veto"):  # absent: no selection section (inspect_file without a config)
        keys.append("btag")
    return keys


def _candidate_present(key: str, name: str, available: set) -> bool:
    if key == "met":
        return all(f"{name}_{f}" in available for f in MET_FIELDS)
    if name == RECOMPUTE:
        return all(f"Jet_{f}" in available for f in JET_ID_INPUTS)
    return name in available


def resolve_branches(available, input_section: dict | None, selection: dict | None):
    """(chosen, missing) for one file: ``chosen`` maps each needed key to the first candidate
    the file has; ``missing`` lists one line per problem, each naming the branches and the
    configuration key that fixes it (empty when the file has everything)."""
    available = set(available)
    cands = branch_candidates(input_section)
    user = set(((input_section or {}).get("branches") or {}))
    missing: list[str] = []
    absent = [b for b in ID_BRANCHES if b not in available]
    if absent:
        missing.append(_quote(absent) + " (event ids)")
    for coll, fields in (("Muon", MUON_FIELDS), ("Tau", TAU_FIELDS), ("Jet", JET_FIELDS)):
        absent = [f"{coll}_{f}" for f in fields if f"{coll}_{f}" not in available]
        if not absent:
            continue
        if len(absent) == len(fields):
            missing.append(f"{_quote(absent)} (the file has no {coll} collection: the mu + tau_h "
                           "selection cannot run on it)")
        else:
            missing.append(_quote(absent) + " (no mapping: give NanoAOD files that contain them)")
    has_tau = any(f"Tau_{f}" in available for f in TAU_FIELDS)
    chosen = {}
    for key in needed_keys(selection):
        if key.startswith("tau_id") and not has_tau:
            continue
        names = cands[key]
        hit = next((n for n in names if _candidate_present(key, n, available)), None)
        if hit is not None:
            chosen[key] = hit
            continue
        wanted = []
        for n in names:
            if key == "met":
                wanted += [f"{n}_{f}" for f in MET_FIELDS]
            elif n == RECOMPUTE:
                wanted.append("Jet_{" + ",".join(JET_ID_INPUTS) + "} (to recompute the jet ID)")
            else:
                wanted.append(n)
        how = "" if key in user else " (default)"
        prefix = "Tau_id" if key.startswith("tau_id") else ("Jet_btag" if key == "btag" else None)
        present = sorted(b for b in available if prefix and b.startswith(prefix))
        has = f"; this file has {', '.join(present[:8])}" if present else ""
        missing.append(
            f"none of {' / '.join(wanted)}: set input.branches.{key} to {BRANCH_MAP[key][1]} "
            f"of this file (tried {list(names)}{how}{has})"
        )
    return chosen, missing


def _quote(names) -> str:
    return ", ".join(f"'{n}'" for n in names)


def missing_branches_error(path, missing: list[str]) -> AuditError:
    return AuditError(f"{path}: missing branches: " + "; ".join(missing))


def warn_legacy_tau_id(chosen: dict, input_section: dict | None, filename: str) -> None:
    user = set(((input_section or {}).get("branches") or {}))
    for key in ("tau_id_vsjet", "tau_id_vsmu", "tau_id_vse"):
        name = chosen.get(key, "")
        if "2017v2p1" in name and key not in user:
            warnings.warn(
                f"{filename}: no {BRANCH_MAP[key][0][0]}; using the legacy {name} "
                f"(set input.branches.{key} to silence this)",
                TauIdFallbackWarning, stacklevel=3,
            )


def recompute_jet_id(eta, neHEF, neEmEF, chHEF, muEF, chEmEF, chMultiplicity, neMultiplicity) -> np.ndarray:
    """The Run-3 AK4 PUPPI jet ID from the jet's stored energy fractions and multiplicities,
    encoded as NanoAOD's ``Jet_jetId`` was (2 = tight, 6 = tight and tightLepVeto).

    NanoAOD v15 stores no ``Jet_jetId``; the JetMET physics object group recommends computing
    it from these variables (CMS JetMET POG, "Jet identification for Run 3 (13.6 TeV)",
    https://twiki.cern.ch/twiki/bin/view/CMS/JetID13p6TeV, section "nanoAOD flags";
    the same criteria are shipped as the ``jetid`` correctionlib sets of jsonpog-integration):

    * tight, |eta| <= 2.6: neHEF < 0.99, neEmEF < 0.9, chMultiplicity + neMultiplicity > 1,
      chHEF > 0.01, chMultiplicity > 0;
      2.6 < |eta| <= 2.7: neHEF < 0.90, neEmEF < 0.99; 2.7 < |eta| <= 3.0: neHEF < 0.99;
      |eta| > 3.0: neMultiplicity >= 2, neEmEF < 0.4;
    * tightLepVeto: tight and, for |eta| <= 2.7, muEF < 0.8 and chEmEF < 0.8.
    """
    a = np.abs(np.asarray(eta, dtype=np.float64))
    ch = np.asarray(chMultiplicity, dtype=np.int64)
    ne = np.asarray(neMultiplicity, dtype=np.int64)
    neHEF, neEmEF, chHEF = (np.asarray(x, dtype=np.float64) for x in (neHEF, neEmEF, chHEF))
    muEF, chEmEF = np.asarray(muEF, dtype=np.float64), np.asarray(chEmEF, dtype=np.float64)
    central = a <= 2.6
    tight = np.where(
        central, (neHEF < 0.99) & (neEmEF < 0.9) & (ch + ne > 1) & (chHEF > 0.01) & (ch > 0),
        np.where(a <= 2.7, (neHEF < 0.90) & (neEmEF < 0.99),
                 np.where(a <= 3.0, neHEF < 0.99, (ne >= 2) & (neEmEF < 0.4))))
    lep_veto = tight & ((a > 2.7) | ((muEF < 0.8) & (chEmEF < 0.8)))
    return (2 * tight.astype(np.int64) + 4 * lep_veto.astype(np.int64)).astype(np.int64)


def _is_bitmask(values: np.ndarray, doc: str) -> bool:
    """Working points stored as a cumulative bit mask (NanoAOD <= v9) or as an index."""
    doc = (doc or "").lower()
    if "bitmask" in doc or "bit mask" in doc:
        return True
    if "1 = vvvloose, 2 = vvloose, 3 =" in doc or "1 = vvloose, 2 = vloose, 3 =" in doc:
        return False
    return bool(len(values)) and int(values.max()) > 8


@dataclass
class Collection:
    """A jagged collection as flat numpy arrays: ``counts[i]`` objects in event ``i``, stored in
    ``fields[name][starts[i]:starts[i] + counts[i]]`` ordered by decreasing nominal pt."""

    counts: np.ndarray
    fields: dict

    def __post_init__(self):
        self.counts = np.asarray(self.counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)
        self.event_index = np.repeat(np.arange(len(self.counts)), self.counts)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    @property
    def n_objects(self) -> int:
        return int(self.counts.sum())


@dataclass
class EventContent:
    """What the selection needs from one chunk of events."""

    filename: str
    run: np.ndarray
    luminosityBlock: np.ndarray
    event: np.ndarray
    gen_weight: np.ndarray  # float64; 1.0 for collision data without genWeight
    has_gen_weight: bool
    muons: Collection
    taus: Collection
    jets: Collection
    met_pt: np.ndarray
    met_phi: np.ndarray

    @property
    def n_events(self) -> int:
        return len(self.run)


# -- reading ---------------------------------------------------------------------------------
def available_branches(events) -> set:
    """Flat NanoAOD branch names (``<collection>_<field>`` and plain branches) of NanoEvents."""
    out = set()
    for name in events.fields:
        try:
            sub = events[name].fields
        except Exception:  # noqa: BLE001 - plain branches have no fields
            sub = []
        if sub:
            out.update(f"{name}_{f}" for f in sub)
        else:
            out.add(name)
    return out


def _doc(array) -> str:
    layout = array.layout
    for node in (layout, getattr(layout, "content", None)):
        if node is not None and node.parameters.get("__doc__"):
            return str(node.parameters["__doc__"])
    return ""


def _buffer(data) -> np.ndarray:
    """A layout's buffer as a numpy array (materialising a virtual one)."""
    return data.materialize() if hasattr(data, "materialize") else np.asarray(data)


def _flat_fields(coll, fields) -> tuple[np.ndarray, dict] | None:
    """(counts, {field: flat values}) straight from the buffers of a list-of-records layout
    (what ak.num / ak.flatten return, without their per-call dispatch); None for any other
    layout."""
    layout = coll.layout
    if not (isinstance(layout, ak.contents.ListOffsetArray) and isinstance(layout.content, ak.contents.RecordArray)):
        return None
    record = layout.content
    if not all(f in record.fields and isinstance(record.content(f), ak.contents.NumpyArray) for f in fields):
        return None
    offsets = _buffer(layout.offsets.data)
    start, stop = int(offsets[0]), int(offsets[-1])
    counts = np.diff(offsets).astype(np.int64)
    return counts, {f: _buffer(record.content(f).data)[start:stop] for f in fields}


def _collection(events, name: str, fields, extra=None) -> Collection:
    """Read a collection; ``extra(coll)`` may add derived flat fields (same object order)."""
    coll = events[name]
    fast = _flat_fields(coll, fields)
    if fast is not None:
        counts, flat = fast
    else:
        counts = ak.to_numpy(ak.num(coll["pt"], axis=1)).astype(np.int64)
        flat = {f: ak.to_numpy(ak.flatten(coll[f], axis=1)) for f in fields}
    if extra is not None:
        flat.update(extra(coll, flat))
    return _sorted_by_pt(Collection(counts, flat))


def _sorted_by_pt(coll: Collection) -> Collection:
    """Order objects within each event by decreasing pt (stable), NanoAOD usually is already.

    The order is checked in one pass (each object's pt at most its predecessor's in the same
    event; NaN fails the check); only a collection out of order is sorted."""
    if coll.n_objects == 0:
        return coll
    pt = coll["pt"]
    ev = coll.event_index
    with np.errstate(invalid="ignore"):
        if not np.any((ev[1:] == ev[:-1]) & ~(pt[1:] <= pt[:-1])):
            return coll
    order = np.lexsort((-pt.astype(np.float64), ev))
    return Collection(coll.counts, {k: v[order] for k, v in coll.fields.items()})


def _tau_wp(taus, branch: str) -> np.ndarray:
    """Working-point index of a tau-ID branch: bit masks count their set bits."""
    field = branch[len("Tau_"):]
    values = ak.to_numpy(ak.flatten(taus[field], axis=1)).astype(np.int64)
    if _is_bitmask(values, _doc(taus[field])):
        bits = values.astype(np.uint8)
        return np.unpackbits(bits[:, None], axis=1).sum(axis=1).astype(np.int64)
    return values


def load_content(events, filename: str, input_section: dict | None = None,
                 selection: dict | None = None) -> EventContent:
    """Materialise the branches of one chunk (NanoEvents in any mode) as numpy arrays, reading
    the version-dependent ones through ``input.branches`` (module doc).

    Raises one AuditError naming the file, every missing branch and the key that fixes it.
    """
    chosen, missing = resolve_branches(available_branches(events), input_section, selection)
    if missing:
        raise missing_branches_error(filename, missing)
    warn_legacy_tau_id(chosen, input_section, filename)
    muons = _collection(events, "Muon", MUON_FIELDS)

    def tau_extra(coll, flat):
        out = {"vsjet_wp": _tau_wp(coll, chosen["tau_id_vsjet"])}
        for against in ("mu", "e"):
            if f"tau_id_vs{against}" in chosen:
                out[f"vs{against}_wp"] = _tau_wp(coll, chosen[f"tau_id_vs{against}"])
        return out

    taus = _collection(events, "Tau", TAU_FIELDS, extra=tau_extra)

    def jet_extra(coll, flat):
        out = {}
        if chosen["jet_id"] == RECOMPUTE:
            inputs = {f: ak.to_numpy(ak.flatten(coll[f], axis=1)) for f in JET_ID_INPUTS}
            out["jetId"] = recompute_jet_id(flat["eta"], **inputs)
        else:
            out["jetId"] = ak.to_numpy(ak.flatten(coll[chosen["jet_id"][len("Jet_"):]], axis=1))
        btag = chosen.get("btag", DEFAULT_BTAG)
        if btag[len("Jet_"):] in coll.fields:
            out["btagDeepFlavB"] = ak.to_numpy(ak.flatten(coll[btag[len("Jet_"):]], axis=1))
        else:  # not needed without a b-veto
            out["btagDeepFlavB"] = np.zeros(len(flat["pt"]))
        return out

    jets = _collection(events, "Jet", JET_FIELDS, extra=jet_extra)
    met = events[chosen["met"]]
    has_gw = "genWeight" in events.fields
    n = len(events)
    gw = ak.to_numpy(events["genWeight"]).astype(np.float64) if has_gw else np.ones(n)
    return EventContent(
        filename=filename,
        run=ak.to_numpy(events["run"]).astype(np.uint32),
        luminosityBlock=ak.to_numpy(events["luminosityBlock"]).astype(np.uint32),
        event=ak.to_numpy(events["event"]).astype(np.uint64),
        gen_weight=gw,
        has_gen_weight=has_gw,
        muons=muons,
        taus=taus,
        jets=jets,
        met_pt=ak.to_numpy(met["pt"]).astype(np.float64),
        met_phi=ak.to_numpy(met["phi"]).astype(np.float64),
    )


# -- object selection ------------------------------------------------------------------------
def _get(section: dict, key: str, where: str):
    if key not in section:
        raise AuditError(f"config selection.{where}.{key}: missing")
    return section[key]


def muon_quality(muons: Collection, sel: dict) -> np.ndarray:
    """The pt-independent part of the muon selection (|eta|, isolation, tight ID)."""
    ok = np.abs(muons["eta"]) < _get(sel, "abs_eta_max", "muon")
    ok &= muons["pfRelIso04_all"] < _get(sel, "iso_max", "muon")
    if sel["tight_id"]:
        ok &= muons["tightId"].astype(bool)
    return ok


def veto_muons(muons: Collection, sel: dict | None) -> np.ndarray | None:
    """Muons that count for the extra-muon veto (pt-independent part), or None without veto."""
    if not sel:
        return None
    return (np.abs(muons["eta"]) < float(sel["abs_eta_max"])) & (muons["pfRelIso04_all"] < float(sel["iso_max"]))


def tau_quality(taus: Collection, sel: dict) -> np.ndarray:
    """The pt-independent part of the tau_h selection (|eta|, DeepTau VSjet WP, decay modes)."""
    ok = np.abs(taus["eta"]) < _get(sel, "abs_eta_max", "tau")
    ok &= taus["vsjet_wp"] >= _get(sel, "deeptau_vsjet_min", "tau")
    # optional discriminators against muons and electrons faking a tau_h
    for against, key in (("mu", "deeptau_vsmu_min"), ("e", "deeptau_vse_min")):
        if key in sel:
            if f"vs{against}_wp" not in taus.fields:
                raise AuditError(f"config selection.tau.{key} needs the branch Tau_idDeepTau2018v2p5VS{against} "
                                 f"(or the legacy Tau_idDeepTau2017v2p1VS{against}), which the input lacks")
            ok &= taus[f"vs{against}_wp"] >= sel[key]
    modes = sel.get("decay_modes")
    if modes is not None:
        ok &= np.isin(taus["decayMode"], np.asarray(modes))
    return ok


def jet_quality(jets: Collection, sel: dict) -> np.ndarray:
    """The pt-independent part of the jet selection (|eta|, jet ID)."""
    ok = np.abs(jets["eta"]) < _get(sel, "abs_eta_max", "jet")
    ok &= jets["jetId"].astype(np.int64) >= _get(sel, "jet_id_min", "jet")
    return ok


def first_per_event(coll: Collection, mask: np.ndarray, n_events: int) -> np.ndarray:
    """Flat index of the first (highest-pt) object passing ``mask`` in each event, -1 if none."""
    out = np.full(n_events, -1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    ev = coll.event_index[idx]
    first = np.ones(len(idx), dtype=bool)
    first[1:] = ev[1:] != ev[:-1]
    out[ev[first]] = idx[first]
    return out


def nth_per_event(coll: Collection, mask: np.ndarray, n_events: int, n: int) -> np.ndarray:
    """Flat index of the n-th (0-based, pt-ordered) object passing ``mask``, -1 if none."""
    out = np.full(n_events, -1, dtype=np.int64)
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        return out
    ev = coll.event_index[idx]
    # position of each passing object within its event's list of passing objects
    group_start = np.flatnonzero(np.r_[True, ev[1:] != ev[:-1]])
    sizes = np.diff(np.r_[group_start, len(idx)])
    rank = np.arange(len(idx)) - np.repeat(group_start, sizes)
    pick = rank == n
    out[ev[pick]] = idx[pick]
    return out


def leading_pair(
    muons: Collection, mu_ok: np.ndarray, taus: Collection, tau_ok: np.ndarray,
    n_events: int, dr_min: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(muon index, tau index) of the pair per event (flat indices, -1 where there is none):
    the leading muon candidate and the leading tau candidate with Delta R > dr_min to it."""
    imu = first_per_event(muons, mu_ok, n_events)
    has_mu = imu >= 0
    # broadcast the chosen muon to every tau of its event
    mu_eta_ev = np.where(has_mu, muons["eta"][np.maximum(imu, 0)] if muons.n_objects else 0.0, np.nan)
    mu_phi_ev = np.where(has_mu, muons["phi"][np.maximum(imu, 0)] if muons.n_objects else 0.0, np.nan)
    ev = taus.event_index
    dr = delta_r(taus["eta"], taus["phi"], mu_eta_ev[ev], mu_phi_ev[ev])
    itau = first_per_event(taus, tau_ok & (dr > dr_min), n_events)  # NaN compares False
    has_pair = has_mu & (itau >= 0)
    return np.where(has_pair, imu, -1), np.where(has_pair, itau, -1)


def branches_read(available, input_section: dict | None = None, selection: dict | None = None) -> list[str]:
    """The branches :func:`load_content` reads from a file with branches ``available`` (for
    reading them in one bulk request, coffea's ``preload``); the object counts included."""
    available = set(available)
    chosen, _ = resolve_branches(available, input_section, selection)
    names = list(ID_BRANCHES) + ["genWeight", "nMuon", "nTau", "nJet"]
    names += [f"Muon_{f}" for f in MUON_FIELDS] + [f"Tau_{f}" for f in TAU_FIELDS] + [f"Jet_{f}" for f in JET_FIELDS]
    for key, name in chosen.items():
        if key == "met":
            names += [f"{name}_{f}" for f in MET_FIELDS]
        elif name == RECOMPUTE:
            names += [f"Jet_{f}" for f in JET_ID_INPUTS]
        else:
            names.append(name)
    names.append(chosen.get("btag", DEFAULT_BTAG))
    return [n for n in dict.fromkeys(names) if n in available]


def required_branches(input_section: dict | None = None, selection: dict | None = None) -> list[tuple[str, ...]]:
    """Branch groups the selection reads; one branch of each group must exist (mapped keys
    list their candidates; a recomputed jet ID is not a branch)."""
    groups = [(b,) for b in ID_BRANCHES]
    groups += [(f"Muon_{f}",) for f in MUON_FIELDS]
    groups += [(f"Tau_{f}",) for f in TAU_FIELDS]
    groups += [(f"Jet_{f}",) for f in JET_FIELDS]
    cands = branch_candidates(input_section)
    for key in needed_keys(selection if selection is not None else {"b_veto": True}):
        names = [n for n in cands[key] if n != RECOMPUTE]
        if key == "met":
            for f in MET_FIELDS:
                groups.append(tuple(f"{n}_{f}" for n in names))
        elif names:
            groups.append(tuple(names))
    return groups
