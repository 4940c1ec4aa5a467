"""A frozen copy of the straightforward selection: every variant recomputed from scratch.

Kept as the reference the optimised selection (hsaudit.selection) must reproduce bit for bit:
per variant the objects are re-selected, the pair, jet cleaning and MET re-evaluated and every
feature recomputed, exactly as the selection did before objects untouched by a shift were
shared between variants. Not used by the package; only tests/test_selection_identity.py
imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import awkward as ak
import numpy as np

from hsaudit.config import AnalysisConfig, Dataset
from hsaudit.errors import AuditError
from hsaudit.selection.objects import (
    JET_FIELDS, JET_ID_INPUTS, MUON_FIELDS, RECOMPUTE, TAU_FIELDS, Collection, EventContent,
    _tau_wp, available_branches, missing_branches_error, recompute_jet_id, resolve_branches,
    warn_legacy_tau_id,
)
from hsaudit.selection.shifts import Variant, build_variants
from hsaudit.tables import feature_column, region_column, weight_column


def resolve_features(names):
    return [FEATURES[n] for n in names]


# ---- from hsaudit/selection/objects.py ----------------------------------------

def _collection(events, name: str, fields, extra=None) -> Collection:
    """Read a collection; ``extra(coll)`` may add derived flat fields (same object order)."""
    coll = events[name]
    pt = coll["pt"]
    counts = ak.to_numpy(ak.num(pt, axis=1)).astype(np.int64)
    flat = {f: ak.to_numpy(ak.flatten(coll[f], axis=1)) for f in fields}
    if extra is not None:
        flat.update(extra(coll, flat))
    return _sorted_by_pt(Collection(counts, flat))


def _sorted_by_pt(coll: Collection) -> Collection:
    """Order objects within each event by decreasing pt (stable), NanoAOD usually is already."""
    if coll.n_objects == 0:
        return coll
    order = np.lexsort((-coll["pt"].astype(np.float64), coll.event_index))
    if np.array_equal(order, np.arange(len(order))):
        return coll
    return Collection(coll.counts, {k: v[order] for k, v in coll.fields.items()})


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
        btag = chosen.get("btag", "Jet_btagDeepFlavB")
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


# ---- from hsaudit/selection/features.py ----------------------------------------

D_ZETA_VIS_COEFFICIENT = 0.85


COLLINEAR_MIN_SIN_DPHI = 1e-3


@dataclass
class PairKinematics:
    """Per-event inputs of the features in one variant (float64; NaN where absent)."""

    has_pair: np.ndarray
    mu_pt: np.ndarray
    mu_eta: np.ndarray
    mu_phi: np.ndarray
    mu_mass: np.ndarray
    tau_pt: np.ndarray
    tau_eta: np.ndarray
    tau_phi: np.ndarray
    tau_mass: np.ndarray
    tau_decay_mode: np.ndarray
    met_px: np.ndarray
    met_py: np.ndarray
    n_jets: np.ndarray
    jet1_pt: np.ndarray
    jet1_eta: np.ndarray
    jet1_phi: np.ndarray
    jet1_mass: np.ndarray
    jet2_pt: np.ndarray
    jet2_eta: np.ndarray
    jet2_phi: np.ndarray
    jet2_mass: np.ndarray

    # four-vector helpers, computed once per variant
    @cached_property
    def mu_p4(self):
        return _p4(self.mu_pt, self.mu_eta, self.mu_phi, self.mu_mass)

    @cached_property
    def tau_p4(self):
        return _p4(self.tau_pt, self.tau_eta, self.tau_phi, self.tau_mass)

    @cached_property
    def vis_p4(self):
        return tuple(a + b for a, b in zip(self.mu_p4, self.tau_p4))

    @cached_property
    def met_pt(self):
        return np.hypot(self.met_px, self.met_py)

    @cached_property
    def met_phi(self):
        return np.arctan2(self.met_py, self.met_px)

    @cached_property
    def m_vis(self):
        return _mass(self.vis_p4)


def _p4(pt, eta, phi, mass):
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + mass * mass)
    return px, py, pz, e


def _mass(p4):
    px, py, pz, e = p4
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def _mt(pt, phi, k: PairKinematics):
    return np.sqrt(np.maximum(2.0 * pt * k.met_pt * (1.0 - np.cos(delta_phi(phi, k.met_phi))), 0.0))


def _m_col(k: PairKinematics):
    mpx, mpy = k.mu_p4[0], k.mu_p4[1]
    tpx, tpy = k.tau_p4[0], k.tau_p4[1]
    det = mpx * tpy - mpy * tpx  # = pt_mu pt_tau sin(dphi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.abs(det) > COLLINEAR_MIN_SIN_DPHI * k.mu_pt * k.tau_pt
        safe = np.where(ok, det, 1.0)
        nu_mu = (k.met_px * tpy - k.met_py * tpx) / safe  # 1/x_mu - 1
        nu_tau = (mpx * k.met_py - mpy * k.met_px) / safe  # 1/x_tau - 1
        ok &= (nu_mu >= 0) & (nu_tau >= 0)
        x_prod = 1.0 / ((1.0 + nu_mu) * (1.0 + nu_tau))
        return np.where(ok, k.m_vis / np.sqrt(np.where(ok, x_prod, 1.0)), k.m_vis)


def _d_zeta(k: PairKinematics):
    ux = np.cos(k.mu_phi) + np.cos(k.tau_phi)
    uy = np.sin(k.mu_phi) + np.sin(k.tau_phi)
    norm = np.hypot(ux, uy)
    # back-to-back leptons have no bisector: take the direction perpendicular to the muon
    back = norm < 1e-9
    ux = np.where(back, -np.sin(k.mu_phi), ux)
    uy = np.where(back, np.cos(k.mu_phi), uy)
    norm = np.where(back, 1.0, norm)
    zx, zy = ux / norm, uy / norm
    p_miss = k.met_px * zx + k.met_py * zy
    p_vis = (k.mu_p4[0] + k.tau_p4[0]) * zx + (k.mu_p4[1] + k.tau_p4[1]) * zy
    return p_miss - D_ZETA_VIS_COEFFICIENT * p_vis


def _zero_if_nan(x):
    return np.where(np.isnan(x), 0.0, x)


def _m_jj(k: PairKinematics):
    j1 = _p4(k.jet1_pt, k.jet1_eta, k.jet1_phi, k.jet1_mass)
    j2 = _p4(k.jet2_pt, k.jet2_eta, k.jet2_phi, k.jet2_mass)
    return _zero_if_nan(_mass(tuple(a + b for a, b in zip(j1, j2))))


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    compute: Callable[[PairKinematics], np.ndarray]
    description: str


_REGISTRY = [
    Feature("mu_pt", "momentum", lambda k: k.mu_pt, "muon pt"),
    Feature("mu_eta", "angle", lambda k: k.mu_eta, "muon pseudorapidity"),
    Feature("tau_pt", "momentum", lambda k: k.tau_pt, "tau_h visible pt"),
    Feature("tau_eta", "angle", lambda k: k.tau_eta, "tau_h pseudorapidity"),
    Feature("tau_mass", "momentum", lambda k: k.tau_mass, "tau_h visible mass"),
    Feature("tau_decay_mode", "integer", lambda k: k.tau_decay_mode, "tau_h decay mode"),
    Feature("met_pt", "momentum", lambda k: k.met_pt, "missing transverse momentum"),
    Feature("mt_mu", "momentum", lambda k: _mt(k.mu_pt, k.mu_phi, k), "transverse mass (mu, MET)"),
    Feature("mt_tau", "momentum", lambda k: _mt(k.tau_pt, k.tau_phi, k), "transverse mass (tau, MET)"),
    Feature("m_vis", "momentum", lambda k: k.m_vis, "visible di-tau mass"),
    Feature("pt_vis", "momentum", lambda k: np.hypot(k.vis_p4[0], k.vis_p4[1]), "visible di-tau pt"),
    Feature(
        "pt_tt", "momentum",
        lambda k: np.hypot(k.vis_p4[0] + k.met_px, k.vis_p4[1] + k.met_py), "pt of mu + tau + MET",
    ),
    Feature(
        "delta_r", "angle",
        lambda k: np.hypot(k.mu_eta - k.tau_eta, delta_phi(k.mu_phi, k.tau_phi)), "Delta R(mu, tau)",
    ),
    Feature("delta_phi", "angle", lambda k: np.abs(delta_phi(k.mu_phi, k.tau_phi)), "|Delta phi(mu, tau)|"),
    Feature("m_col", "momentum", _m_col, "collinear-approximation di-tau mass (fallback m_vis)"),
    Feature("d_zeta", "momentum", _d_zeta, "D_zeta = p_zeta^miss - 0.85 p_zeta^vis"),
    Feature("n_jets", "integer", lambda k: k.n_jets, "number of selected jets"),
    Feature("jet1_pt", "momentum", lambda k: _zero_if_nan(k.jet1_pt), "leading jet pt (0: none)"),
    Feature("jet1_eta", "angle", lambda k: _zero_if_nan(k.jet1_eta), "leading jet eta (0: none)"),
    Feature("jet2_pt", "momentum", lambda k: _zero_if_nan(k.jet2_pt), "subleading jet pt (0: none)"),
    Feature("m_jj", "momentum", _m_jj, "dijet mass (0: fewer than 2 jets)"),
    Feature(
        "delta_eta_jj", "angle",
        lambda k: _zero_if_nan(np.abs(k.jet1_eta - k.jet2_eta)), "|Delta eta(j1, j2)| (0: fewer than 2 jets)",
    ),
]


FEATURES: dict[str, Feature] = {f.name: f for f in _REGISTRY}


def compute_features(kin: PairKinematics, features: list[Feature]) -> dict[str, np.ndarray]:
    """{name: float32 array}; NaN for events without a pair."""
    out = {}
    with np.errstate(invalid="ignore"):
        for f in features:
            values = np.asarray(f.compute(kin), dtype=np.float64)
            out[f.name] = np.where(kin.has_pair, values, np.nan).astype(np.float32)
    return out


# ---- from hsaudit/selection/shifts.py ----------------------------------------

MET_JET_PT_MIN = 15.0  # GeV, jets that enter the type-1 MET correction


WEIGHT_PT_PIVOT = 25.0  # GeV, where a pt-dependent scale-factor uncertainty equals `uncertainty`


def shifted_met(
    met_px: np.ndarray, met_py: np.ndarray, variant: Variant, *,
    mu_px_nom, mu_py_nom, tau_px_nom, tau_py_nom, jets_px_nom, jets_py_nom,
) -> tuple[np.ndarray, np.ndarray]:
    """MET (px, py) in a variant, per event, from the nominal MET and the nominal transverse
    momenta of the selected objects of that variant (pair muon, pair tau, summed MET jets;
    0 where absent).

    An object scaled by ``f`` changes its momentum by ``(f - 1) p``; MET changes by the
    opposite. The unclustered part is ``U = -(MET + p_mu + p_tau + sum p_jets)``; scaling it
    by ``f`` moves MET to ``MET - (f - 1) U``.
    """
    d = variant.factor - 1.0
    if variant.object is None or d == 0.0:
        return met_px, met_py
    if variant.object == "tau":
        return met_px - d * tau_px_nom, met_py - d * tau_py_nom
    if variant.object == "muon":
        return met_px - d * mu_px_nom, met_py - d * mu_py_nom
    if variant.object == "jet":
        return met_px - d * jets_px_nom, met_py - d * jets_py_nom
    if variant.object == "met_unclustered":
        ux = -(met_px + mu_px_nom + tau_px_nom + jets_px_nom)
        uy = -(met_py + mu_py_nom + tau_py_nom + jets_py_nom)
        return met_px - d * ux, met_py - d * uy
    raise AuditError(f"cannot shift object '{variant.object}'")


def weight_variations(
    config: AnalysisConfig, process: str, weight: np.ndarray, object_pt: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``weight__<name>_up/down`` columns for every ``type: weight`` systematic.

    ``object_pt[obj]`` is the pt of the pair muon / tau per event (NaN where it has none in
    any variant: then the pt-dependent term is dropped).
    """
    out = {}
    for syst in config.systematics_of_type("weight"):
        if syst.uncertainty < 0:
            raise AuditError(f"systematic '{syst.name}': negative uncertainty {syst.uncertainty}")
        if not syst.applies_to(process):
            rel = np.zeros_like(weight)
        else:
            rel = np.full_like(weight, syst.uncertainty, dtype=np.float64)
            if syst.pt_slope:
                if syst.object not in object_pt:
                    raise AuditError(
                        f"systematic '{syst.name}': a pt-dependent weight needs object tau or muon, "
                        f"got '{syst.object}'"
                    )
                pt = object_pt[syst.object]
                rel = rel + np.where(np.isfinite(pt), syst.pt_slope * (pt - WEIGHT_PT_PIVOT), 0.0)
            rel = np.maximum(rel, 0.0)
        out[weight_column(f"{syst.name}_up")] = weight * (1.0 + rel)
        out[weight_column(f"{syst.name}_down")] = weight * (1.0 - rel)
    return out


# ---- from hsaudit/selection/processor.py ----------------------------------------

def _take(values: np.ndarray, index: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """values[index] * scale per event as float64, NaN where index is -1."""
    if len(values) == 0:
        return np.full(len(index), np.nan)
    out = values[np.maximum(index, 0)].astype(np.float64) * scale
    return np.where(index >= 0, out, np.nan)


def _per_event_sum(coll, mask, values, n_events):
    return np.bincount(coll.event_index[mask], weights=values[mask], minlength=n_events)


class _PairCache:
    """The pair, jet cleaning and MET-jet sums depend only on the muon and tau scales."""

    def __init__(self, content: EventContent, sel: dict):
        self.c = content
        self.sel = sel
        pre = sel.get("preselection") or {}
        self.mu_pt_min = float(pre.get("muon_pt_min", sel["muon"]["pt_min"]))
        self.tau_pt_min = float(pre.get("tau_pt_min", sel["tau"]["pt_min"]))
        self.mu_quality = muon_quality(content.muons, sel["muon"])
        self.tau_quality = tau_quality(content.taus, sel["tau"])
        veto = sel.get("extra_muon_veto")
        self.veto_quality = veto_muons(content.muons, veto)
        self.veto_pt_min = float((veto or {}).get("pt_min", 10.0))
        self.dr_pair = float(sel.get("pair_delta_r_min", 0.5))
        self.dr_jet = float(sel["jet"].get("lepton_delta_r_min", 0.5))
        self._cache: dict = {}

    def get(self, mu_scale: float, tau_scale: float) -> dict:
        key = (mu_scale, tau_scale)
        if key not in self._cache:
            self._cache[key] = self._compute(mu_scale, tau_scale)
        return self._cache[key]

    def _compute(self, mu_scale, tau_scale) -> dict:
        c, n = self.c, self.c.n_events
        mu, tau = c.muons, c.taus
        mu_ok = self.mu_quality & (mu["pt"] * mu_scale > self.mu_pt_min)
        tau_ok = self.tau_quality & (tau["pt"] * tau_scale > self.tau_pt_min)
        imu, itau = leading_pair(mu, mu_ok, tau, tau_ok, n, self.dr_pair)
        if self.veto_quality is not None:
            # a second muon (e.g. Z -> mumu with one muon reconstructed as a tau_h): no pair
            n_veto = np.bincount(mu.event_index[self.veto_quality & (mu["pt"] * mu_scale > self.veto_pt_min)],
                                 minlength=n)
            vetoed = (imu >= 0) & (n_veto > 1)
            imu = np.where(vetoed, -1, imu)
            itau = np.where(vetoed, -1, itau)
        return {"imu": imu, "itau": itau}

    def pair_keys(self, variants) -> list:
        return list(dict.fromkeys(v.pair_key for v in variants))


def _subset_collection(coll: Collection, events: np.ndarray) -> Collection:
    """The objects of the given events (ascending event indices), as a new collection."""
    counts = coll.counts[events]
    new_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.repeat(coll.starts[events] - new_starts, counts) + np.arange(int(counts.sum()))
    return Collection(counts, {k: v[flat] for k, v in coll.fields.items()})


def _jet_cleaning(pairs: _PairCache, jets: Collection, mu, tau, imu, itau) -> dict:
    """Jets of the row events cleaned against the pair, and the summed MET jets (nominal)."""
    ev = jets.event_index
    n = len(imu)
    dr = pairs.dr_jet
    with np.errstate(invalid="ignore"):
        clean = (
            jet_quality(jets, pairs.sel["jet"])
            & (delta_r(jets["eta"], jets["phi"], _take(mu["eta"], imu)[ev], _take(mu["phi"], imu)[ev]) > dr)
            & (delta_r(jets["eta"], jets["phi"], _take(tau["eta"], itau)[ev], _take(tau["phi"], itau)[ev]) > dr)
        )
    met_jets = clean & (jets["pt"] > MET_JET_PT_MIN)
    jpt = jets["pt"].astype(np.float64)
    return {
        "clean_jets": clean,
        "jets_px": _per_event_sum(jets, met_jets, jpt * np.cos(jets["phi"]), n),
        "jets_py": _per_event_sum(jets, met_jets, jpt * np.sin(jets["phi"]), n),
    }


def select_content(content: EventContent, dataset: Dataset, config: AnalysisConfig) -> dict:
    """Run the selection with every variant on one chunk; returns the payload
    ``{"columns": {...}, "extra": {...}}`` (columns as in hsaudit/tables.py, rows = events
    passing the preselection in any variant; ``weight`` is the raw genWeight)."""
    sel = config.selection
    for key in ("muon", "tau", "jet"):
        if key not in sel:
            raise AuditError(f"config selection.{key}: missing")
    features = resolve_features(config.feature_names)
    variants = build_variants(config)
    mu, tau = content.muons, content.taus
    pairs = _PairCache(content, sel)
    # rows: events with a pair in any variant; everything else is computed on rows only
    rows = np.zeros(content.n_events, dtype=bool)
    for key in pairs.pair_keys(variants):
        rows |= pairs.get(*key)["imu"] >= 0
    row_index = np.flatnonzero(rows)
    n = len(row_index)
    jet = _subset_collection(content.jets, row_index)
    jet_cache = {}
    b_veto = bool(sel.get("b_veto", False))
    bsel = sel.get("bjet") or {}
    if b_veto and not {"btag_min", "pt_min", "abs_eta_max"} <= set(bsel):
        raise AuditError("config selection.bjet: needs btag_min, pt_min and abs_eta_max for the b-veto")
    met_px0 = content.met_pt[rows] * np.cos(content.met_phi[rows])
    met_py0 = content.met_pt[rows] * np.sin(content.met_phi[rows])
    w_all = content.gen_weight
    w = w_all[rows]

    per_variant = {}
    cutflow = {}
    for v in variants:
        s_mu, s_tau, s_jet = v.scale("muon"), v.scale("tau"), v.scale("jet")
        full_pair = pairs.get(s_mu, s_tau)
        imu, itau = full_pair["imu"][rows], full_pair["itau"][rows]
        has = imu >= 0
        if v.pair_key not in jet_cache:
            jet_cache[v.pair_key] = _jet_cleaning(pairs, jet, mu, tau, imu, itau)
        p = {**jet_cache[v.pair_key], "imu": imu, "itau": itau, "has_pair": has}
        mu_pt_nom, mu_phi = _take(mu["pt"], imu), _take(mu["phi"], imu)
        tau_pt_nom, tau_phi = _take(tau["pt"], itau), _take(tau["phi"], itau)
        zero = lambda x: np.where(has, x, 0.0)  # noqa: E731
        met_px, met_py = shifted_met(
            met_px0, met_py0, v,
            mu_px_nom=zero(mu_pt_nom * np.cos(mu_phi)), mu_py_nom=zero(mu_pt_nom * np.sin(mu_phi)),
            tau_px_nom=zero(tau_pt_nom * np.cos(tau_phi)), tau_py_nom=zero(tau_pt_nom * np.sin(tau_phi)),
            jets_px_nom=p["jets_px"], jets_py_nom=p["jets_py"],
        )
        jet_pt = jet["pt"].astype(np.float64) * s_jet
        good_jets = p["clean_jets"] & (jet_pt > float(sel["jet"]["pt_min"]))
        j1 = nth_per_event(jet, good_jets, n, 0)
        j2 = nth_per_event(jet, good_jets, n, 1)
        kin = PairKinematics(
            has_pair=has,
            mu_pt=mu_pt_nom * s_mu, mu_eta=_take(mu["eta"], imu), mu_phi=mu_phi,
            mu_mass=_take(mu["mass"], imu, s_mu),
            tau_pt=tau_pt_nom * s_tau, tau_eta=_take(tau["eta"], itau), tau_phi=tau_phi,
            tau_mass=_take(tau["mass"], itau, s_tau), tau_decay_mode=_take(tau["decayMode"], itau),
            met_px=met_px, met_py=met_py,
            n_jets=np.bincount(jet.event_index[good_jets], minlength=n).astype(np.float64),
            jet1_pt=_take(jet["pt"], j1, s_jet), jet1_eta=_take(jet["eta"], j1),
            jet1_phi=_take(jet["phi"], j1), jet1_mass=_take(jet["mass"], j1, s_jet),
            jet2_pt=_take(jet["pt"], j2, s_jet), jet2_eta=_take(jet["eta"], j2),
            jet2_phi=_take(jet["phi"], j2), jet2_mass=_take(jet["mass"], j2, s_jet),
        )
        feats = compute_features(kin, features)

        # full selection, cutflow and regions
        with np.errstate(invalid="ignore"):
            pass_mu = has & (kin.mu_pt > float(sel["muon"]["pt_min"]))
            pass_tau = pass_mu & (kin.tau_pt > float(sel["tau"]["pt_min"]))
        selected = pass_tau
        steps = {"all": w_all.sum(), "preselection": w[has].sum(), "muon_pt": w[pass_mu].sum(), "tau_pt": w[pass_tau].sum()}
        if b_veto:
            bjets = (
                p["clean_jets"] & (jet_pt > float(bsel["pt_min"]))
                & (np.abs(jet["eta"]) < float(bsel["abs_eta_max"]))
                & (jet["btagDeepFlavB"] > float(bsel["btag_min"]))
            )
            has_b = first_per_event(jet, bjets, n) >= 0
            selected = selected & ~has_b
            steps["b_veto"] = w[selected].sum()
        charge = _take(mu["charge"], imu) * _take(tau["charge"], itau)
        mt = FEATURES["mt_mu"].compute(kin)
        regions = {}
        with np.errstate(invalid="ignore"):
            for name, r in config.regions.items():
                m = selected.copy()
                if r.charge == "opposite":
                    m &= charge < 0
                elif r.charge == "same":
                    m &= charge > 0
                if r.mt_min is not None:
                    m &= mt > r.mt_min
                if r.mt_max is not None:
                    m &= mt < r.mt_max
                regions[name] = m
                steps[f"region:{name}"] = w[m].sum()
        cutflow[v.name] = {k: float(x) for k, x in steps.items()}
        per_variant[v.name] = (feats, regions, p)

    columns = {
        "run": content.run[rows],
        "luminosityBlock": content.luminosityBlock[rows],
        "event": content.event[rows],
        "is_signal": np.full(n, bool(dataset.is_signal)),
        "weight": w.astype(np.float64),
    }
    # pt of the pair objects for pt-dependent weight uncertainties: nominal pt of the
    # nominal pair, else of the first variant that has a pair
    object_pt = {"muon": np.full(n, np.nan), "tau": np.full(n, np.nan)}
    for feats, regions, p in per_variant.values():
        for obj, coll, idx in (("muon", mu, p["imu"]), ("tau", tau, p["itau"])):
            object_pt[obj] = np.where(np.isnan(object_pt[obj]), _take(coll["pt"], idx), object_pt[obj])
    columns.update(
        weight_variations(config, dataset.process, w, object_pt)
    )
    for vname, (feats, regions, p) in per_variant.items():
        for fname, values in feats.items():
            columns[feature_column(fname, vname)] = values
        for rname, mask in regions.items():
            columns[region_column(rname, vname)] = mask
    extra = {
        "sum_genweight": float(w_all.sum()),
        "n_events_processed": int(content.n_events),
        "cutflow": cutflow,
        "has_gen_weight": bool(content.has_gen_weight),
    }
    return {"columns": columns, "extra": extra}


# ---- entry point ------------------------------------------------------------------------


def reference_payload(path, entry_start: int, entry_stop: int, dataset: Dataset, config: AnalysisConfig) -> dict:
    """``{"columns", "extra"}`` of events [entry_start, entry_stop) of a NanoAOD file."""
    import warnings

    import uproot
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    with warnings.catch_warnings(), uproot.open(str(path)) as f:
        warnings.simplefilter("ignore")
        events = NanoEventsFactory.from_root(
            f, treepath="Events", mode="virtual", schemaclass=NanoAODSchema,
            entry_start=entry_start, entry_stop=entry_stop,
        ).events()
        content = load_content(events, str(path), config.input, config.selection)
        return select_content(content, dataset, config)
