"""How much an attack hurts: fooling ratio, AUC, discovery significance, yields, distance.

* fooling ratio (Bechtle et al. 2026, "Shapes are not enough"): fraction of the correctly
  classified attacked events whose predicted class flips;
* weighted ROC AUC before / after (hsaudit.roc.weighted_auc);
* relative discovery significance eps_S / sqrt(eps_B) of a cut on the NN output as a curve
  over thresholds (hsaudit.roc.significance_curve), its peak before / after, and the value
  after the attack at the threshold that was optimal before (Nachman & Shimmin 2019: the
  "expected optimal cut");
* signal-region yield shift: weighted yields above that threshold and the shift of the
  NN-output distribution: the Wasserstein-1 (earth mover's) distance of the normalised
  distributions (bin-free; equals |mean shift| for a shift of every event in one direction,
  and is ~0 for a random jitter), the mean shift, and the L1 distance of histograms on
  uniform bins relative to the total (bin-dependent: events that cross a bin edge count
  even when the distribution does not change);
* distance moved in units of the envelope: per event and feature, (x_adv - x) divided by
  the room the envelope gives in that direction (1 = at the edge of the box).

All functions take numpy arrays or torch tensors and return floats / JSON-ready dicts.
"""

from __future__ import annotations

import numpy as np
import torch

from hsaudit.arrays import finite_array, finite_weights
from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram
# the one weighted AUC and significance curve (hsaudit.roc), also importable from here
from hsaudit.roc import significance_curve, weighted_auc  # noqa: F401
from hsaudit.attacks.base import model_probabilities
from hsaudit.attacks.checks import weighted_cdfs
from hsaudit.attacks.envelope import Envelope


def _np(name, a, ndim=1):
    return None if a is None else finite_array(a, name, ndim=ndim)


def _w(weights, n):
    return finite_weights(weights, n, "weights")


def fooling_ratio(p_before, p_after, labels, threshold: float = 0.5, mask=None) -> float:
    """Fooled / correctly classified before, among ``mask`` (default all) events (counts)."""
    pb, pa, y = _np("p_before", p_before), _np("p_after", p_after), _np("labels", labels)
    if not (pb.shape == pa.shape == y.shape):
        raise AuditError("p_before, p_after and labels must have the same shape")
    m = np.ones(len(y), bool) if mask is None else np.asarray(mask, bool)
    correct = m & ((pb >= threshold) == (y == 1))
    if correct.sum() == 0:
        return 0.0
    fooled = correct & ((pa >= threshold) != (y == 1))
    return float(fooled.sum() / correct.sum())


# thresholds of the significance summary: 0, 0.005, ..., 0.995
SUMMARY_THRESHOLDS = np.linspace(0.0, 1.0, 201)[:-1]


def significance_summary(p_before, p_after, labels, weights=None, thresholds=None, min_eps_b: float = 1e-3,
                         labels_after=None, weights_after=None) -> dict:
    """Peak eps_S/sqrt(eps_B) before / after, the nominal optimal threshold and the value
    after the attack at that threshold. Cuts with eps_B < ``min_eps_b`` are ignored (MC
    statistics). ``labels_after`` / ``weights_after``: the events after the attack when
    they are not those before (migration). ``thresholds``: default SUMMARY_THRESHOLDS."""
    t = SUMMARY_THRESHOLDS if thresholds is None else thresholds
    cb = significance_curve(p_before, labels, weights, t, nonfinite="raise")
    ca = significance_curve(p_after, labels if labels_after is None else labels_after,
                            weights if weights_after is None else weights_after, t, nonfinite="raise")

    def peak(c):
        v = np.where(c["eps_b"] >= min_eps_b, c["rel_significance"], np.nan)
        if np.all(np.isnan(v)):
            return 0, float("nan")
        i = int(np.nanargmax(v))
        return i, float(v[i])

    ib, pb = peak(cb)
    _, pa = peak(ca)
    at_nominal = float(ca["rel_significance"][ib])
    return {
        "peak_before": pb,
        "peak_after": pa,
        "nominal_threshold": float(cb["thresholds"][ib]),
        "at_nominal_threshold_before": pb,
        "at_nominal_threshold_after": at_nominal,
        "relative_change_at_nominal_threshold": (at_nominal - pb) / pb if pb and np.isfinite(pb) else float("nan"),
        "relative_change_of_peak": (pa - pb) / pb if pb and np.isfinite(pb) else float("nan"),
    }


def wasserstein_distance(a, b, wa=None, wb=None) -> float:
    """Wasserstein-1 distance int |F_a - F_b| dx of two weighted 1-D distributions, each
    normalised to its total weight (weights may be negative, as MC weights can be; scipy's
    version rejects them)."""
    a, b = _np("a", a), _np("b", b)
    wa, wb = _w(wa, len(a)), _w(wb, len(b))
    if len(a) == 0 or len(b) == 0 or wa.sum() == 0 or wb.sum() == 0:
        raise AuditError("the Wasserstein distance needs two non-empty samples with non-zero total weight")
    pts = np.sort(np.concatenate([a, b]))
    fa, fb = weighted_cdfs(a, b, wa, wb, pts[:-1])
    return float(np.sum(np.abs(fa - fb) * np.diff(pts)))


def output_shift(p_before, p_after, weights=None, bins: int = 20, weights_after=None) -> dict:
    """Shift of the NN-output distribution: Wasserstein-1 distance, weighted mean shift, and
    the L1 distance of the histograms on ``bins`` uniform bins in [0, 1] relative to the
    total weight before. ``weights_after``: when the events after differ from those before
    (migration), their weights (default: the same events, ``weights``)."""
    pb, pa = _np("p_before", p_before), _np("p_after", p_after)
    w = _w(weights, len(pb))
    if weights_after is None and len(pa) != len(pb):
        raise AuditError(f"{len(pa)} outputs after and {len(pb)} before: pass weights_after")
    wa = w if weights_after is None else _w(weights_after, len(pa))
    edges = np.linspace(0.0, 1.0, bins + 1)
    hb = weighted_histogram(pb, w, edges, outside="clip", sums="cumulative")[0]
    ha = weighted_histogram(pa, wa, edges, outside="clip", sums="cumulative")[0]
    tot = max(abs(w.sum()), 1e-300)
    mean = lambda p, ww: float(np.sum(ww * p) / ww.sum()) if ww.sum() else 0.0  # noqa: E731
    return {
        "wasserstein": wasserstein_distance(pa, pb, wa, w) if len(pa) and len(pb) and wa.sum() and w.sum() else 0.0,
        "mean_shift": mean(pa, wa) - mean(pb, w),
        "histogram_l1_relative": float(np.abs(ha - hb).sum() / tot),
        "histogram_before": hb.tolist(),
        "histogram_after": ha.tolist(),
    }


def yield_shift(p_before, p_after, labels=None, weights=None, threshold: float = 0.5, labels_after=None,
                weights_after=None) -> dict:
    """Weighted yields with NN output >= threshold before / after (per class if labels;
    ``labels_after`` / ``weights_after`` when the events after differ: migration)."""
    pb, pa = _np("p_before", p_before), _np("p_after", p_after)
    w = _w(weights, len(pb))
    wa = w if weights_after is None else _w(weights_after, len(pa))
    groups = {"all": (np.ones(len(pb), bool), np.ones(len(pa), bool))}
    if labels is not None:
        y = _np("labels", labels)
        ya = y if labels_after is None else _np("labels_after", labels_after)
        groups.update({"signal": (y == 1, ya == 1), "background": (y == 0, ya == 0)})
    out = {"threshold": float(threshold)}
    for name, (g, ga) in groups.items():
        b = float(w[g & (pb >= threshold)].sum())
        a = float(wa[ga & (pa >= threshold)].sum())
        out[name] = {"before": b, "after": a, "relative_shift": (a - b) / b if b else float("nan")}
    return out


def envelope_distance(x, x_adv, envelope: Envelope, mask=None) -> dict:
    """Distance moved in units of the envelope: u = (x_adv - x) / room, room = upper - x
    (upward) or x - lower (downward); 0 for fixed features. Summaries over ``mask`` events."""
    x0 = torch.as_tensor(x).detach().cpu().to(torch.float64)
    x1 = torch.as_tensor(x_adv).detach().cpu().to(torch.float64)
    if x0.shape != x1.shape or x0.shape != envelope.nominal.shape:
        raise AuditError("x, x_adv and the envelope must have the same (N, F) shape")
    d = x1 - x0
    room = torch.where(d >= 0, envelope.upper.double() - x0, x0 - envelope.lower.double())
    u = torch.where(room > 0, d.abs() / room.clamp_min(1e-300), torch.zeros_like(d))
    m = torch.ones(len(x0), dtype=torch.bool) if mask is None else torch.as_tensor(np.asarray(mask, bool))
    movable = envelope.movable
    if int(m.sum()) == 0 or not bool(movable.any()):
        return {"mean_abs": 0.0, "mean_max": 0.0, "max": 0.0, "per_feature_mean_abs": [0.0] * x0.shape[1]}
    um = u[m][:, movable]
    names = envelope.feature_names or [f"f{j}" for j in range(x0.shape[1])]
    per = u[m].mean(0).tolist()
    return {
        "mean_abs": float(um.mean()),
        "mean_max": float(um.max(dim=1).values.mean()),
        "max": float(um.max()),
        "per_feature_mean_abs": dict(zip(names, per)),
    }


def attack_metrics(model, x, x_adv, envelope: Envelope, labels=None, weights=None, mask=None,
                   threshold: float = 0.5, bins: int = 20, mask_after=None) -> dict:
    """All metrics for one attack as a JSON-ready dict. ``mask``: the events of interest
    before the attack (e.g. the signal region); ``mask_after``: after it, where events
    migrate (default ``mask``). Fooling ratio and distance are per event (``mask``); output
    shift, AUC and significance compare the two event sets."""
    xt = torch.as_tensor(x)
    xa = torch.as_tensor(x_adv)
    dev = next(iter(model.parameters())).device if any(True for _ in model.parameters()) else torch.device("cpu")
    pb = model_probabilities(model, xt.to(dev)).cpu().numpy()
    pa = model_probabilities(model, xa.to(dev)).cpu().numpy()
    n = len(pb)
    w = _w(weights, n)

    def as_mask(v):
        return np.ones(n, bool) if v is None else np.asarray(v.cpu() if hasattr(v, "cpu") else v, bool)

    m = as_mask(mask)
    ma = m if mask_after is None else as_mask(mask_after)
    out = {
        "n_events": int(n),
        "n_in_mask": int(m.sum()),
        "n_in_mask_after": int(ma.sum()),
        "output_shift": output_shift(pb[m], pa[ma], w[m], bins, weights_after=w[ma]),
        "distance": envelope_distance(xt, xa, envelope, m),
    }
    if labels is not None:
        y = _np("labels", labels)
        out["fooling_ratio"] = fooling_ratio(pb, pa, y, threshold, m)
        yb, ya = y[m], y[ma]
        if all((v == 1).any() and (v == 0).any() for v in (yb, ya)):
            out["auc_before"] = weighted_auc(pb[m], yb, w[m], nonfinite="raise")
            out["auc_after"] = weighted_auc(pa[ma], ya, w[ma], nonfinite="raise")
            sig = significance_summary(pb[m], pa[ma], yb, w[m], labels_after=ya, weights_after=w[ma])
            out["significance"] = sig
            out["yield_shift"] = yield_shift(pb[m], pa[ma], yb, w[m], sig["nominal_threshold"],
                                             labels_after=ya, weights_after=w[ma])
    return out
