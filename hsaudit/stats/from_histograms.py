"""Build the likelihood model from NN-output histograms (the EvaluateModel outputs).

Input::

    histograms = {channel: {sample: {"nominal": yields, "sumw2": squared-weight sums,
                                     "shapes": {syst: {"up": yields, "down": yields}}}}}
    norm_systs = {name: {"samples": [...], "lo": factor, "hi": factor}}

Treatment (documented choices):

* Signal samples get the normfactor ``mu`` (the POI); every sample gets ``lumi`` when a
  luminosity uncertainty is given (``lumi_samples`` restricts that).
* MC statistics: ``staterror`` with absolute uncertainty sqrt(sumw2) for every sample
  (Barlow-Beeston lite, one gamma per channel-bin; pyhf's convention).
* Shape systematics (up/down templates) are split the way HistFactory users expect
  (HistFitter's "OverallSys + HistoSys", cabinetry's default): a ``normsys`` carrying
  the normalisation change (hi = sum(up)/sum(nominal), lo = sum(down)/sum(nominal)) and a
  ``histosys`` with the up/down templates scaled to the nominal integral, both sharing
  one nuisance parameter. A variation that is pure normalisation still gets both; its
  histosys then has templates equal to the nominal and contributes nothing (kept so the
  workspace has the same structure for every systematic). A variation that changes
  nothing in a sample is dropped there. A variation that moves every event of a sample out
  of a channel (zero total yield, typical of a few MC events in a control region) gets the
  normalisation factor ``MIN_VARIATION_FACTOR`` (1e-3) and the nominal shape on that side.
* Negative bin contents (from negative MC weights): ``negative_yields="error"`` (default)
  raises AuditError; ``"clip"`` sets negative nominal and template bins to 0 (the
  template normalisation uses the clipped yields).
* A channel-bin with zero total nominal prediction raises AuditError (merge bins, e.g. with
  :func:`hsaudit.stats.binning.optimised_edges`). NaN/inf anywhere raises AuditError, as
  does binning that differs between samples, templates or channels' ``edges``.
"""

from __future__ import annotations

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.stats.model import Model

# smallest normalisation factor of a shape variation (a variation that empties a sample)
MIN_VARIATION_FACTOR = 1e-3


def _vec(x, what: str, nb: int | None) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise AuditError(f"{what}: not a list of numbers") from None
    if a.ndim != 1:
        raise AuditError(f"{what}: expected a 1-d histogram, got shape {a.shape}")
    if nb is not None and len(a) != nb:
        raise AuditError(f"{what}: has {len(a)} bins, expected {nb} (mismatched binning)")
    if not np.isfinite(a).all():
        raise AuditError(f"{what}: NaN or inf in bin(s) {np.flatnonzero(~np.isfinite(a)).tolist()}")
    return a


def _nonneg(a: np.ndarray, what: str, mode: str) -> np.ndarray:
    if (a < 0).any():
        if mode == "clip":
            return np.clip(a, 0.0, None)
        raise AuditError(
            f"{what}: negative yield in bin(s) {np.flatnonzero(a < 0).tolist()} (negative MC weights); "
            "merge bins or pass negative_yields='clip' to set them to zero"
        )
    return a


def build_spec(histograms: dict, *, signal_samples, norm_systs: dict | None = None,
               lumi_uncertainty: float | None = None, lumi_samples=None, edges: dict | None = None,
               observed: dict | None = None, poi: str = "mu", poi_bounds=None, staterror: bool = True,
               negative_yields: str = "error") -> dict:
    """The model spec (see :mod:`hsaudit.stats.model`) for NN-output histograms."""
    if negative_yields not in ("error", "clip"):
        raise AuditError(f"negative_yields must be 'error' or 'clip', got {negative_yields!r}")
    if not isinstance(histograms, dict) or not histograms:
        raise AuditError("histograms must be a non-empty dict {channel: {sample: {...}}}")
    signal_samples = [signal_samples] if isinstance(signal_samples, str) else list(signal_samples)
    all_samples = {s for ch in histograms.values() for s in ch}
    missing = [s for s in signal_samples if s not in all_samples]
    if missing or not signal_samples:
        raise AuditError(f"signal samples {missing or signal_samples} not found in the histograms; samples: {sorted(all_samples)}")
    norm_systs = norm_systs or {}
    for name, d in norm_systs.items():
        if not isinstance(d, dict) or not {"samples", "lo", "hi"} <= set(d):
            raise AuditError(f"normalisation systematic '{name}' must be {{'samples': [...], 'lo': f, 'hi': f}}")
        unknown = [s for s in d["samples"] if s not in all_samples]
        if unknown:
            raise AuditError(f"normalisation systematic '{name}' names unknown samples {unknown}")
    lumi_set = all_samples if lumi_samples is None else set(lumi_samples)
    spec: dict = {"poi": poi, "channels": {}}
    if lumi_uncertainty is not None:
        spec["lumi"] = {"sigma": float(lumi_uncertainty)}
    if poi_bounds is not None:
        spec["parameters"] = {poi: {"bounds": [float(poi_bounds[0]), float(poi_bounds[1])]}}
    for ch, samples in histograms.items():
        if not isinstance(samples, dict) or not samples:
            raise AuditError(f"channel '{ch}': needs a non-empty dict of samples")
        nb = None
        out_samples = {}
        for sname, h in samples.items():
            where = f"channel '{ch}', sample '{sname}'"
            if not isinstance(h, dict) or "nominal" not in h:
                raise AuditError(f"{where}: needs a 'nominal' histogram")
            nom = _vec(h["nominal"], f"{where} nominal", nb)
            nb = len(nom)
            nom = _nonneg(nom, f"{where} nominal", negative_yields)
            s: dict = {"nominal": nom.tolist()}
            if sname in signal_samples:
                s["normfactors"] = [poi]
            if lumi_uncertainty is not None and sname in lumi_set:
                s["lumi"] = True
            if staterror:
                sumw2 = h.get("sumw2")
                if sumw2 is None:
                    raise AuditError(f"{where}: needs 'sumw2' for the MC statistical uncertainty (or staterror=False)")
                sumw2 = _vec(sumw2, f"{where} sumw2", nb)
                if (sumw2 < 0).any():
                    raise AuditError(f"{where}: sumw2 must be >= 0")
                s["staterror"] = np.sqrt(sumw2).tolist()
            normsys, histosys = {}, {}
            for name, d in norm_systs.items():
                if sname in d["samples"]:
                    normsys[name] = {"lo": float(d["lo"]), "hi": float(d["hi"])}
            nom_sum = nom.sum()
            for syst, ud in (h.get("shapes") or {}).items():
                if not isinstance(ud, dict) or set(ud) != {"up", "down"}:
                    raise AuditError(f"{where}: shape '{syst}' must be {{'up': [...], 'down': [...]}}")
                up = _nonneg(_vec(ud["up"], f"{where} shape '{syst}' up", nb), f"{where} shape '{syst}' up", negative_yields)
                dn = _nonneg(_vec(ud["down"], f"{where} shape '{syst}' down", nb), f"{where} shape '{syst}' down", negative_yields)
                if np.array_equal(up, nom) and np.array_equal(dn, nom):
                    continue
                if syst in normsys:
                    raise AuditError(f"{where}: '{syst}' is both a shape and a normalisation systematic")
                if nom_sum <= 0:
                    raise AuditError(f"{where}: shape '{syst}' on a sample with zero total nominal yield")
                su, sd = up.sum(), dn.sum()
                # every event of the sample migrates out of the channel under a variation:
                # the normalisation factor is floored (code4 interpolates in log space, 0 is
                # not representable) and that side keeps the nominal shape
                normsys[syst] = {"lo": float(max(sd / nom_sum, MIN_VARIATION_FACTOR)),
                                 "hi": float(max(su / nom_sum, MIN_VARIATION_FACTOR))}
                histosys[syst] = {"up": (up * nom_sum / su if su > 0 else nom).tolist(),
                                  "down": (dn * nom_sum / sd if sd > 0 else nom).tolist()}
            if normsys:
                s["normsys"] = normsys
            if histosys:
                s["histosys"] = histosys
            out_samples[sname] = s
        cdef: dict = {"samples": out_samples}
        if edges and ch in edges:
            cdef["edges"] = _vec(edges[ch], f"channel '{ch}' edges", nb + 1).tolist()
        spec["channels"][ch] = cdef
    if observed is not None:
        spec["observed"] = {ch: _vec(v, f"observed '{ch}'", None).tolist() for ch, v in observed.items()}
    return spec


def model_from_histograms(histograms: dict, **options) -> Model:
    """:class:`Model` for NN-output histograms; options as for :func:`build_spec`."""
    return Model(build_spec(histograms, **options))


def truth_from_histograms(model: Model, histograms: dict, *, signal_samples, mu: float = 1.0,
                          variation: str | None = None, direction: str = "up") -> np.ndarray:
    """Expected main-data yields (B,) of histogram templates in the model's bin order:
    sum over samples of the nominal (or the ``variation``'s up/down template where a
    sample has it), signal scaled by ``mu``. Use it for truths from attacked templates."""
    signal_samples = [signal_samples] if isinstance(signal_samples, str) else list(signal_samples)
    if direction not in ("up", "down"):
        raise AuditError(f"direction must be 'up' or 'down', got {direction!r}")
    per_channel = {}
    for ch in model.channels:
        if ch not in histograms:
            raise AuditError(f"histograms lack channel '{ch}' of the model")
        tot = np.zeros(model.channel_nbins[ch])
        for sname, h in histograms[ch].items():
            y = h["nominal"]
            if variation is not None and variation in (h.get("shapes") or {}):
                y = h["shapes"][variation][direction]
            y = _vec(y, f"channel '{ch}', sample '{sname}'", model.channel_nbins[ch])
            tot += y * (mu if sname in signal_samples else 1.0)
        per_channel[ch] = tot
    return model.concat_channels(per_channel, "truth")
