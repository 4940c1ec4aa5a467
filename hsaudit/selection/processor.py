"""The coffea processor of the mu + tau_h selection: all variants in one pass over a chunk.

``SelectionProcessor.process(events)`` takes NanoEvents (``NanoAODSchema``) of one chunk and
returns ``{"chunks": [payload]}`` (a coffea accumulator: lists add up), where a payload holds
the event-matched columns of :mod:`hsaudit.tables` for that chunk and its provenance
(``sum_genweight``, ``n_events_processed``, ``cutflow``). :func:`select_content` is the
physics, independent of coffea's executors.

Per variant (nominal, each shift up and down; see shifts.py) the objects are scaled, the
object selection, the mu + tau pair, the jet cleaning and MET are re-evaluated, then the
features, the full selection and the regions:

* preselection: a pair of muon and tau candidates (``selection.muon``/``selection.tau``
  quality cuts, looser pt thresholds ``selection.preselection.muon_pt_min`` /
  ``tau_pt_min``) separated by Delta R > ``pair_delta_r_min``. An event passing the
  preselection in *any* variant is one row of the table; its features are computed in every
  variant where it has a pair (NaN elsewhere).
* full selection: the pair passes the full muon and tau pt thresholds and, with
  ``b_veto: true``, the event has no b-tagged jet (``selection.bjet``, cleaned against the
  pair like the other jets);
* regions: full selection, the pair charge (opposite / same / any) and ``mt_min < mt_mu <
  mt_max``.

Cutflow per variant, weighted with genWeight: ``all`` >= ``preselection`` >= ``muon_pt`` >=
``tau_pt`` >= ``b_veto`` (only with the b-veto) >= each ``region:<name>`` (for positive
weights).
"""

from __future__ import annotations

import numpy as np
from coffea import processor

from hsaudit.config import AnalysisConfig, Dataset
from hsaudit.errors import AuditError
from hsaudit.selection.features import FEATURES, PairKinematics, compute_features, resolve_features
from hsaudit.selection.objects import (
    Collection,
    EventContent,
    delta_r,
    first_per_event,
    jet_quality,
    leading_pair,
    load_content,
    muon_quality,
    nth_per_event,
    tau_quality,
    veto_muons,
)
from hsaudit.selection.shifts import MET_JET_PT_MIN, build_variants, shifted_met, weight_variations
from hsaudit.tables import ID_COLUMNS, NOMINAL, feature_column, region_column

CUTFLOW_STEPS = ("all", "preselection", "muon_pt", "tau_pt", "b_veto")


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


class SelectionProcessor(processor.ProcessorABC):
    """coffea processor: ``process(events)`` -> ``{"chunks": [payload]}`` (see module doc)."""

    def __init__(self, dataset: Dataset, config: AnalysisConfig):
        self.dataset = dataset
        self.config = config
        resolve_features(config.feature_names)  # fail early on unknown features
        build_variants(config)

    def process(self, events):
        meta = getattr(events, "metadata", None) or {}
        filename = str(meta.get("filename", "<unknown file>"))
        content = load_content(events, filename, self.config.input, self.config.selection)
        payload = select_content(content, self.dataset, self.config)
        payload["filename"] = filename
        payload["entry_start"] = int(meta.get("entrystart") or 0)
        return {"chunks": [payload]}

    def postprocess(self, accumulator):
        return accumulator


__all__ = ["SelectionProcessor", "select_content", "CUTFLOW_STEPS", "ID_COLUMNS", "NOMINAL"]
