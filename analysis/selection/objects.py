"""Physics objects of the mu + tau_h selection: reading NanoAOD collections and object selection.

Reads the muon, tau, jet and MET branches of one chunk of NanoAOD events (coffea NanoEvents,
``NanoAODSchema``) into flat numpy arrays (:class:`Collection`) and applies the object-level
selection of the configuration's ``selection`` section. The selection follows the CMS
H -> tau tau mu + tau_h analyses (CMS Collaboration, "Measurement of Higgs boson production in
the decay channel with a pair of tau leptons", Eur. Phys. J. C 83 (2023) 562):

* muon: pt, |eta|, relative PF isolation (``pfRelIso04_all``), tight ID;
* tau_h: pt, |eta|, DeepTau 2018v2p5 VSjet working point index (``idDeepTau2018v2p5VSjet
  >= deeptau_vsjet_min``, 1 = VVVLoose ... 8 = VVTight) and decay modes. Old NanoAOD
  (v9 and earlier) only has the cumulative bit mask ``idDeepTau2017v2p1VSjet`` (1 = VVVLoose,
  2 = VVLoose, ..., 128 = VVTight); its number of set bits is the same working point index,
  used as a fallback with a warning;
* jets: pt, |eta|, ``jetId >= jet_id_min``, Delta R to the selected muon and tau;
  b-tagged jets (``btagDeepFlavB``) for the b-veto.

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

from analysis.errors import AuditError

# branches read per collection (NanoAOD name = <collection>_<field>)
MUON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "pfRelIso04_all", "tightId")
TAU_FIELDS = ("pt", "eta", "phi", "mass", "charge", "decayMode")
JET_FIELDS = ("pt", "eta", "phi", "mass", "jetId", "btagDeepFlavB")
MET_FIELDS = ("pt", "phi")
ID_BRANCHES = ("run", "luminosityBlock", "event")
TAU_ID = "idDeepTau2018v2p5VSjet"
TAU_ID_LEGACY = "idDeepTau2017v2p1VSjet"


class TauIdFallbackWarning(UserWarning):
    """The file only has the legacy DeepTau 2017v2p1 discriminator."""


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
def _missing(branch: str, filename: str, hint: str = "") -> AuditError:
    return AuditError(
        f"branch '{branch}' is missing in file {filename}: the mu + tau_h selection needs it"
        + (f" ({hint})" if hint else "")
        + "; give NanoAOD files that contain it"
    )


def _collection(
    events, name: str, fields, filename: str, hints: dict | None = None, extra=None
) -> Collection:
    """Read a collection; ``extra(events)`` may add derived flat fields (same object order)."""
    hints = hints or {}
    if name not in events.fields:
        raise _missing(f"{name}_{fields[0]}", filename, hints.get(name, ""))
    coll = events[name]
    for f in fields:
        if f not in coll.fields:
            raise _missing(f"{name}_{f}", filename)
    pt = coll["pt"]
    counts = ak.to_numpy(ak.num(pt, axis=1)).astype(np.int64)
    flat = {f: ak.to_numpy(ak.flatten(coll[f], axis=1)) for f in fields}
    if extra is not None:
        flat.update(extra(events))
    return _sorted_by_pt(Collection(counts, flat))


def _sorted_by_pt(coll: Collection) -> Collection:
    """Order objects within each event by decreasing pt (stable), NanoAOD usually is already."""
    if coll.n_objects == 0:
        return coll
    order = np.lexsort((-coll["pt"].astype(np.float64), coll.event_index))
    if np.array_equal(order, np.arange(len(order))):
        return coll
    return Collection(coll.counts, {k: v[order] for k, v in coll.fields.items()})


def _tau_wp(events, filename: str, against: str = "jet", required: bool = True) -> np.ndarray | None:
    """DeepTau working-point index against jets, muons or electrons; legacy bit masks
    (2017v2p1) count their set bits. None if absent and not ``required``."""
    taus = events["Tau"]
    new, legacy = f"idDeepTau2018v2p5VS{against}", f"idDeepTau2017v2p1VS{against}"
    if new in taus.fields:
        return ak.to_numpy(ak.flatten(taus[new], axis=1)).astype(np.int64)
    if legacy in taus.fields:
        warnings.warn(
            f"{filename}: no Tau_{new}; using the legacy Tau_{legacy} bit mask "
            "(working point index = number of set bits)",
            TauIdFallbackWarning,
            stacklevel=3,
        )
        bits = ak.to_numpy(ak.flatten(taus[legacy], axis=1)).astype(np.uint8)
        return np.unpackbits(bits[:, None], axis=1).sum(axis=1).astype(np.int64)
    if not required:
        return None
    raise _missing(f"Tau_{new}", filename, f"nor the legacy Tau_{legacy}")


def _tau_vsjet_wp(events, filename: str) -> np.ndarray:
    return _tau_wp(events, filename, "jet")


def _tau_extra(events, filename: str) -> dict:
    out = {"vsjet_wp": _tau_vsjet_wp(events, filename)}
    for against in ("mu", "e"):
        wp = _tau_wp(events, filename, against, required=False)
        if wp is not None:
            out[f"vs{against}_wp"] = wp
    return out


def load_content(events, filename: str) -> EventContent:
    """Materialise the branches of one chunk (NanoEvents in any mode) as numpy arrays.

    Raises AuditError naming the branch and the file when something needed is missing.
    """
    for b in ID_BRANCHES:
        if b not in events.fields:
            raise _missing(b, filename)
    muons = _collection(events, "Muon", MUON_FIELDS, filename)
    tau_hint = {"Tau": "the file has no tau collection at all"}
    taus = _collection(
        events, "Tau", TAU_FIELDS, filename, tau_hint,
        extra=lambda ev: _tau_extra(ev, filename),
    )
    jets = _collection(events, "Jet", JET_FIELDS, filename)
    met_name = "MET"
    if met_name not in events.fields:
        hint = "NanoAOD v15 calls it PFMET_pt; the selection reads MET_pt" if "PFMET" in events.fields else ""
        raise _missing("MET_pt", filename, hint)
    for f in MET_FIELDS:
        if f not in events[met_name].fields:
            raise _missing(f"MET_{f}", filename)
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
        met_pt=ak.to_numpy(events[met_name]["pt"]).astype(np.float64),
        met_phi=ak.to_numpy(events[met_name]["phi"]).astype(np.float64),
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
    if sel.get("tight_id", True):
        ok &= muons["tightId"].astype(bool)
    return ok


def veto_muons(muons: Collection, sel: dict | None) -> np.ndarray | None:
    """Muons that count for the extra-muon veto (pt-independent part), or None without veto."""
    if not sel:
        return None
    return (np.abs(muons["eta"]) < float(sel.get("abs_eta_max", 2.4))) & (
        muons["pfRelIso04_all"] < float(sel.get("iso_max", 0.3)))


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


def delta_phi(phi1, phi2):
    """phi1 - phi2 wrapped into [-pi, pi)."""
    return (np.asarray(phi1) - np.asarray(phi2) + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), delta_phi(phi1, phi2))


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


def required_branches() -> list[tuple[str, ...]]:
    """Branch groups the selection reads; one branch of each group must exist."""
    groups = [(b,) for b in ID_BRANCHES]
    groups += [(f"Muon_{f}",) for f in MUON_FIELDS]
    groups += [(f"Tau_{f}",) for f in TAU_FIELDS]
    groups += [(f"Tau_{TAU_ID}", f"Tau_{TAU_ID_LEGACY}")]
    groups += [(f"Jet_{f}",) for f in JET_FIELDS]
    groups += [(f"MET_{f}",) for f in MET_FIELDS]
    return groups
