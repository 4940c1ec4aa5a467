"""The coffea processor of the mu + tau_h selection: all variants in one pass over a chunk.

``SelectionProcessor.process(events)`` takes NanoEvents (``NanoAODSchema``) of one chunk and
returns ``{"chunks": [payload]}`` (a coffea accumulator: lists add up), where a payload holds
the event-matched columns of :mod:`hsaudit.tables` for that chunk and its provenance
(``sum_genweight``, ``n_events_processed``, ``cutflow``). :func:`select_content` is the
physics, independent of coffea's executors.

Per variant (nominal, each shift up and down; see shifts.py) the objects are scaled, the
object selection, the mu + tau pair, the jet cleaning and MET are re-evaluated, then the
features, the full selection and the regions. Work a shift does not touch is done once and
shared: the pair's muon side per muon scale, the pair, its objects and the jet cleaning per
(muon scale, tau scale), the selected jets per jet scale as well, and each feature only for
the variants that scale an object it reads (``Feature.shifted_by``); only MET and what reads
it are computed for every variant. The outputs are bit-identical to recomputing every variant
from scratch (tests/test_selection_identity.py). Weight variations are coffea ``Weights``;
the per-variant cutflow and region masks are flat boolean masks (the sums
``PackedSelection.cutflow`` would give, at a small fraction of its cost per variant):

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
from hsaudit.selection.features import FEATURES, PairKinematics, feature_values, resolve_features
from hsaudit.selection.objects import (
    Collection,
    EventContent,
    delta_r,
    first_per_event,
    jet_quality,
    load_content,
    muon_quality,
    nth_per_event,
    tau_quality,
    veto_muons,
)
from hsaudit.selection.shifts import MET_JET_PT_MIN, build_variants, event_weights, shifted_met, weight_columns
from hsaudit.tables import ID_COLUMNS, NOMINAL, feature_column, region_column

CUTFLOW_STEPS = ("all", "preselection", "muon_pt", "tau_pt", "b_veto")


def selection_settings(config: AnalysisConfig) -> dict:
    """The ``selection`` section with the schema's defaults filled in (keys left unset without
    a default are absent): the mapping every selection function reads."""
    return config.section("selection").model_dump(exclude_none=True)


def _take(values: np.ndarray, index: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """values[index] * scale per event as float64, NaN where index is -1."""
    if len(values) == 0:
        return np.full(len(index), np.nan)
    out = values[np.maximum(index, 0)].astype(np.float64) * scale
    return np.where(index >= 0, out, np.nan)


def _per_event_sum(coll, mask, values, n_events):
    return np.bincount(coll.event_index[mask], weights=values[mask], minlength=n_events)


class _PairFinder:
    """The mu + tau pair of every event per (muon scale, tau scale).

    Work is shared between variants by what it depends on: the muon choice, the extra-muon
    veto and the tau-muon separation depend on the muon scale only (computed once per muon
    scale), the separation only for taus that pass the tau selection at the largest tau scale
    of any variant (no other tau can be the pair tau in any variant)."""

    def __init__(self, content: EventContent, sel: dict, variants):
        self.c = content
        self.sel = sel
        pre = sel.get("preselection") or {}
        self.mu_pt_min = float(pre.get("muon_pt_min", sel["muon"]["pt_min"]))
        self.tau_pt_min = float(pre.get("tau_pt_min", sel["tau"]["pt_min"]))
        self.mu_quality = muon_quality(content.muons, sel["muon"])
        self.tau_quality = tau_quality(content.taus, sel["tau"])
        veto = sel.get("extra_muon_veto")
        self.veto_quality = veto_muons(content.muons, veto)
        self.veto_pt_min = None if veto is None else float(veto["pt_min"])
        self.dr_pair = float(sel["pair_delta_r_min"])
        self.dr_jet = float(sel["jet"]["lepton_delta_r_min"])
        taus = content.taus
        # pt * scale rounds monotonically in the scale: a tau failing at the largest scale
        # fails at every smaller one
        tau_max = max(v.scale("tau") for v in variants)
        self.tau_candidates = np.flatnonzero(self.tau_quality & (taus["pt"] * tau_max > self.tau_pt_min))
        self._muon: dict = {}
        self._pairs: dict = {}

    def _muon_side(self, mu_scale: float) -> dict:
        if mu_scale in self._muon:
            return self._muon[mu_scale]
        c, n = self.c, self.c.n_events
        mu, tau = c.muons, c.taus
        imu = first_per_event(mu, self.mu_quality & (mu["pt"] * mu_scale > self.mu_pt_min), n)
        # Delta R of each candidate tau to the chosen muon of its event (NaN: no muon)
        has_mu = imu >= 0
        cand = self.tau_candidates
        cand = cand[has_mu[tau.event_index[cand]]]  # without a muon there is no pair anyway
        separated = np.zeros(tau.n_objects, dtype=bool)
        if len(cand):
            ev = tau.event_index[cand]
            mu_eta = np.where(has_mu, mu["eta"][np.maximum(imu, 0)] if mu.n_objects else 0.0, np.nan)
            mu_phi = np.where(has_mu, mu["phi"][np.maximum(imu, 0)] if mu.n_objects else 0.0, np.nan)
            separated[cand] = delta_r(tau["eta"][cand], tau["phi"][cand], mu_eta[ev], mu_phi[ev]) > self.dr_pair
        n_veto = None
        if self.veto_quality is not None:
            # a second muon (e.g. Z -> mumu with one muon reconstructed as a tau_h): no pair
            n_veto = np.bincount(mu.event_index[self.veto_quality & (mu["pt"] * mu_scale > self.veto_pt_min)],
                                 minlength=n)
        self._muon[mu_scale] = out = {"imu": imu, "separated": separated, "n_veto": n_veto}
        return out

    def get(self, mu_scale: float, tau_scale: float) -> dict:
        key = (mu_scale, tau_scale)
        if key not in self._pairs:
            side = self._muon_side(mu_scale)
            tau, n = self.c.taus, self.c.n_events
            tau_ok = self.tau_quality & (tau["pt"] * tau_scale > self.tau_pt_min)
            imu = side["imu"]
            itau = first_per_event(tau, tau_ok & side["separated"], n)
            has_pair = (imu >= 0) & (itau >= 0)
            imu, itau = np.where(has_pair, imu, -1), np.where(has_pair, itau, -1)
            if side["n_veto"] is not None:
                vetoed = (imu >= 0) & (side["n_veto"] > 1)
                imu = np.where(vetoed, -1, imu)
                itau = np.where(vetoed, -1, itau)
            self._pairs[key] = {"imu": imu, "itau": itau}
        return self._pairs[key]


def _subset_collection(coll: Collection, events: np.ndarray) -> Collection:
    """The objects of the given events (ascending event indices), as a new collection."""
    counts = coll.counts[events]
    new_starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.repeat(coll.starts[events] - new_starts, counts) + np.arange(int(counts.sum()))
    return Collection(counts, {k: v[flat] for k, v in coll.fields.items()})


class _RowObjects:
    """Per-variant inputs of the row events, each computed once for the variants that share
    it: the pair objects per (muon scale, tau scale), the selected jets per (muon scale, tau
    scale, jet scale); only MET is computed for every variant."""

    def __init__(self, content: EventContent, pairs: _PairFinder, rows: np.ndarray, sel: dict):
        self.c, self.pairs, self.rows, self.sel = content, pairs, rows, sel
        self.n = int(rows.sum())
        self.jets = jets = _subset_collection(content.jets, np.flatnonzero(rows))
        # what the jet cleaning needs that does not depend on the pair
        self.jet_quality = jet_quality(jets, sel["jet"])
        self.jet_candidates = np.flatnonzero(self.jet_quality)
        jpt = jets["pt"].astype(np.float64)
        self.jet_px, self.jet_py = jpt * np.cos(jets["phi"]), jpt * np.sin(jets["phi"])
        bsel = sel.get("bjet") or {}
        self.b_veto = bool(sel["b_veto"])
        self.bsel = bsel
        self._pair: dict = {}
        self._jets: dict = {}

    def pair(self, key) -> dict:
        """imu, itau, has_pair, the nominal pair-object kinematics and the jet cleaning."""
        if key in self._pair:
            return self._pair[key]
        mu, tau = self.c.muons, self.c.taus
        full = self.pairs.get(*key)
        imu, itau = full["imu"][self.rows], full["itau"][self.rows]
        has = imu >= 0
        p = self._jet_cleaning(imu, itau)
        p.update(imu=imu, itau=itau, has_pair=has)
        p["mu_pt_nom"], p["mu_phi"] = _take(mu["pt"], imu), _take(mu["phi"], imu)
        p["tau_pt_nom"], p["tau_phi"] = _take(tau["pt"], itau), _take(tau["phi"], itau)
        p["mu_eta"], p["tau_eta"] = _take(mu["eta"], imu), _take(tau["eta"], itau)
        p["tau_decay_mode"] = _take(tau["decayMode"], itau)
        p["charge"] = _take(mu["charge"], imu) * _take(tau["charge"], itau)

        def zero(x):
            return np.where(has, x, 0.0)

        p["mu_px_nom"], p["mu_py_nom"] = zero(p["mu_pt_nom"] * np.cos(p["mu_phi"])), zero(p["mu_pt_nom"] * np.sin(p["mu_phi"]))
        p["tau_px_nom"], p["tau_py_nom"] = zero(p["tau_pt_nom"] * np.cos(p["tau_phi"])), zero(p["tau_pt_nom"] * np.sin(p["tau_phi"]))
        self._pair[key] = p
        return p

    def _jet_cleaning(self, imu, itau) -> dict:
        """Jets cleaned against the pair (Delta R to its muon and tau; computed for the jets
        that pass the jet ID and |eta|), and the summed MET jets (nominal)."""
        mu, tau, jets, n = self.c.muons, self.c.taus, self.jets, self.n
        dr = self.pairs.dr_jet
        q = self.jet_candidates
        ev = jets.event_index[q]
        eta, phi = jets["eta"][q], jets["phi"][q]
        clean = np.zeros(jets.n_objects, dtype=bool)
        with np.errstate(invalid="ignore"):
            clean[q] = (
                (delta_r(eta, phi, _take(mu["eta"], imu)[ev], _take(mu["phi"], imu)[ev]) > dr)
                & (delta_r(eta, phi, _take(tau["eta"], itau)[ev], _take(tau["phi"], itau)[ev]) > dr)
            )
        met_jets = clean & (jets["pt"] > MET_JET_PT_MIN)
        return {
            "clean_jets": clean,
            "jets_px": _per_event_sum(jets, met_jets, self.jet_px, n),
            "jets_py": _per_event_sum(jets, met_jets, self.jet_py, n),
        }

    def selected_jets(self, key, s_jet: float) -> dict:
        """Selected jets (leading two, count) and the b-tag veto per pair and jet scale."""
        jkey = (*key, s_jet)
        if jkey in self._jets:
            return self._jets[jkey]
        p, jet, n = self.pair(key), self.jets, self.n
        jet_pt = jet["pt"].astype(np.float64) * s_jet
        good_jets = p["clean_jets"] & (jet_pt > float(self.sel["jet"]["pt_min"]))
        j1 = nth_per_event(jet, good_jets, n, 0)
        j2 = nth_per_event(jet, good_jets, n, 1)
        out = {
            "n_jets": np.bincount(jet.event_index[good_jets], minlength=n).astype(np.float64),
            "jet1_pt": _take(jet["pt"], j1, s_jet), "jet1_eta": _take(jet["eta"], j1),
            "jet1_phi": _take(jet["phi"], j1), "jet1_mass": _take(jet["mass"], j1, s_jet),
            "jet2_pt": _take(jet["pt"], j2, s_jet), "jet2_eta": _take(jet["eta"], j2),
            "jet2_phi": _take(jet["phi"], j2), "jet2_mass": _take(jet["mass"], j2, s_jet),
            "has_b": None,
        }
        if self.b_veto:
            b = self.bsel
            bjets = (
                p["clean_jets"] & (jet_pt > float(b["pt_min"]))
                & (np.abs(jet["eta"]) < float(b["abs_eta_max"]))
                & (jet["btagDeepFlavB"] > float(b["btag_min"]))
            )
            out["has_b"] = first_per_event(jet, bjets, n) >= 0
        self._jets[jkey] = out
        return out


def _region_masks(selected: np.ndarray, mt: np.ndarray, charge: np.ndarray, regions) -> dict[str, np.ndarray]:
    """Per region: the full selection, the pair charge (opposite / same / any) and the mT window."""
    out = {}
    with np.errstate(invalid="ignore"):
        for name, r in regions.items():
            m = selected.copy()
            if r.charge == "opposite":
                m &= charge < 0
            elif r.charge == "same":
                m &= charge > 0
            if r.mt_min is not None:
                m &= mt > r.mt_min
            if r.mt_max is not None:
                m &= mt < r.mt_max
            out[name] = m
    return out


def select_content(content: EventContent, dataset: Dataset, config: AnalysisConfig) -> dict:
    """Run the selection with every variant on one chunk; returns the payload
    ``{"columns": {...}, "extra": {...}}`` (columns as in hsaudit/tables.py, rows = events
    passing the preselection in any variant; ``weight`` is the raw genWeight)."""
    sel = selection_settings(config)
    for key in ("muon", "tau", "jet"):
        if key not in sel:
            raise AuditError(f"config selection.{key}: missing")
    features = resolve_features(config.feature_names)
    variants = build_variants(config)
    mu, tau = content.muons, content.taus
    pairs = _PairFinder(content, sel, variants)
    # rows: events with a pair in any variant; everything else is computed on rows only
    rows = np.zeros(content.n_events, dtype=bool)
    for key in dict.fromkeys(v.pair_key for v in variants):
        rows |= pairs.get(*key)["imu"] >= 0
    n = int(rows.sum())
    b_veto = bool(sel["b_veto"])
    bsel = sel.get("bjet") or {}
    if b_veto and not {"btag_min", "pt_min", "abs_eta_max"} <= set(bsel):
        raise AuditError("config selection.bjet: needs btag_min, pt_min and abs_eta_max for the b-veto")
    objects = _RowObjects(content, pairs, rows, sel)
    met_px0 = content.met_pt[rows] * np.cos(content.met_phi[rows])
    met_py0 = content.met_pt[rows] * np.sin(content.met_phi[rows])
    w_all = content.gen_weight
    w = w_all[rows]
    weights = event_weights(config, dataset.process, w.astype(np.float64), _pair_object_pt(objects, variants))

    columns: dict = {}
    feature_cache: dict = {}  # (feature, scales of the objects it reads) -> values
    pair_kin: dict = {}  # pair key -> the first variant's kinematics (shared four-vectors)
    cutflow = {}
    for v in variants:
        s_mu, s_tau, s_jet = v.scale("muon"), v.scale("tau"), v.scale("jet")
        p = objects.pair(v.pair_key)
        jets = objects.selected_jets(v.pair_key, s_jet)
        met_px, met_py = shifted_met(
            met_px0, met_py0, v,
            mu_px_nom=p["mu_px_nom"], mu_py_nom=p["mu_py_nom"],
            tau_px_nom=p["tau_px_nom"], tau_py_nom=p["tau_py_nom"],
            jets_px_nom=p["jets_px"], jets_py_nom=p["jets_py"],
        )
        imu, itau = p["imu"], p["itau"]
        kin = PairKinematics(
            has_pair=p["has_pair"],
            mu_pt=p["mu_pt_nom"] * s_mu, mu_eta=p["mu_eta"], mu_phi=p["mu_phi"],
            mu_mass=_take(mu["mass"], imu, s_mu),
            tau_pt=p["tau_pt_nom"] * s_tau, tau_eta=p["tau_eta"], tau_phi=p["tau_phi"],
            tau_mass=_take(tau["mass"], itau, s_tau), tau_decay_mode=p["tau_decay_mode"],
            met_px=met_px, met_py=met_py,
            **{k: jets[k] for k in _JET_INPUTS},
        )
        if v.pair_key in pair_kin:
            kin.share_pair_vectors(pair_kin[v.pair_key])
        else:
            pair_kin[v.pair_key] = kin
        mt = FEATURES["mt_mu"].compute(kin)  # float64, for the regions' mT window
        for f in features:
            key = (f.name,) + tuple(v.scale(obj) for obj in f.shifted_by)
            if key not in feature_cache:
                feature_cache[key] = feature_values(kin, f, mt if f.name == "mt_mu" else None)
            else:  # a variant that shifts nothing this feature reads: the same numbers, own array
                feature_cache[key] = feature_cache[key].copy()
            columns[feature_column(f.name, v.name)] = feature_cache[key]

        # full selection, cutflow and regions, as flat masks: the cutflow sums are those of
        # coffea's PackedSelection.cutflow with Weights (numpy.sum of the masked weights),
        # at a small fraction of its cost per variant (benchmarks/selection.py)
        with np.errstate(invalid="ignore"):
            pass_mu = p["has_pair"] & (kin.mu_pt > float(sel["muon"]["pt_min"]))
            pass_tau = pass_mu & (kin.tau_pt > float(sel["tau"]["pt_min"]))
        selected = pass_tau
        steps = {"all": w_all.sum(), "preselection": w[p["has_pair"]].sum(), "muon_pt": w[pass_mu].sum(),
                 "tau_pt": w[pass_tau].sum()}
        if b_veto:
            selected = selected & ~jets["has_b"]
            steps["b_veto"] = w[selected].sum()
        for rname, mask in _region_masks(selected, mt, p["charge"], config.regions).items():
            columns[region_column(rname, v.name)] = mask
            steps[f"region:{rname}"] = w[mask].sum()
        cutflow[v.name] = {k: float(x) for k, x in steps.items()}

    columns = {
        "run": content.run[rows],
        "luminosityBlock": content.luminosityBlock[rows],
        "event": content.event[rows],
        "is_signal": np.full(n, bool(dataset.is_signal)),
        "weight": weights.weight(),
        **weight_columns(config, weights),
        **{name: columns[name] for name in _variant_columns(config, variants)},
    }
    extra = {
        "sum_genweight": float(w_all.sum()),
        "n_events_processed": int(content.n_events),
        "cutflow": cutflow,
        "has_gen_weight": bool(content.has_gen_weight),
    }
    return {"columns": columns, "extra": extra}


_JET_INPUTS = ("n_jets", "jet1_pt", "jet1_eta", "jet1_phi", "jet1_mass", "jet2_pt", "jet2_eta", "jet2_phi", "jet2_mass")


def _variant_columns(config: AnalysisConfig, variants) -> list[str]:
    """Feature and region columns in table order: per variant its features, then its regions."""
    return [
        name
        for v in variants
        for name in [feature_column(f, v.name) for f in config.feature_names]
        + [region_column(r, v.name) for r in config.regions]
    ]


def _pair_object_pt(objects: _RowObjects, variants) -> dict[str, np.ndarray]:
    """pt of the pair objects for pt-dependent weight uncertainties: nominal pt of the
    nominal pair, else of the first variant that has a pair."""
    mu, tau = objects.c.muons, objects.c.taus
    object_pt = {"muon": np.full(objects.n, np.nan), "tau": np.full(objects.n, np.nan)}
    for v in variants:
        p = objects.pair(v.pair_key)
        for obj, coll, idx in (("muon", mu, p["imu"]), ("tau", tau, p["itau"])):
            object_pt[obj] = np.where(np.isnan(object_pt[obj]), _take(coll["pt"], idx), object_pt[obj])
    return object_pt


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
        content = load_content(events, filename, self.config.input, selection_settings(self.config))
        payload = select_content(content, self.dataset, self.config)
        payload["filename"] = filename
        payload["entry_start"] = int(meta.get("entrystart") or 0)
        return {"chunks": [payload]}

    def postprocess(self, accumulator):
        return accumulator


__all__ = ["SelectionProcessor", "select_content", "selection_settings", "CUTFLOW_STEPS", "ID_COLUMNS", "NOMINAL"]
