"""Evaluation of a trained classifier: NN outputs per variant, weighted ROC and AUC, the
relative discovery significance curve, NN-output histograms per region and variant.

The relative discovery significance of a cut f >= t is eps_S(t) / sqrt(eps_B(t)) (the gain
in S/sqrt(B) over no cut, valid for S << B), the figure of merit of Nachman & Shimmin (2019),
"AI Safety for High Energy Physics"; a classifier helps where it exceeds 1.

All results are plain numpy arrays / floats (no plotting, no files).
"""

from __future__ import annotations

import numpy as np
import torch

from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram
from hsaudit.jsonio import to_json


def _model_device(model) -> torch.device:
    for t in list(model.parameters()) + list(model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model, X, batch_size: int = 65536, invalid: str = "error") -> np.ndarray:
    """NN output (float32, shape (N,)) for features ``X`` (N, F) in physical units.

    Works for our ``MLP`` and for any TorchScript classifier. Rows with NaN/inf features
    raise ``AuditError`` (``invalid="error"``) or get NaN output (``invalid="nan"``, for
    events absent in a variant).
    """
    X = np.asarray(X)
    if X.ndim != 2:
        raise AuditError(f"features must be a 2-d (events, features) array, got shape {X.shape}")
    X = X.astype(np.float32, copy=False)
    good = np.isfinite(X).all(axis=1)
    if not good.all():
        if invalid != "nan":
            raise AuditError(f"features contain NaN or inf in {int((~good).sum())} events; fix or drop them")
        X = np.where(good[:, None], X, 0.0).astype(np.float32)
    n_expected = getattr(model, "n_features", None)
    if isinstance(n_expected, int) and X.shape[1] != n_expected:
        raise AuditError(f"feature list mismatch: the model expects {n_expected} features, got {X.shape[1]}")
    was_training = model.training
    model.eval()
    device = _model_device(model)
    out = np.empty(len(X), dtype=np.float32)
    try:
        for start in range(0, len(X), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[start : start + batch_size])).to(device)
            out[start : start + batch_size] = model(xb).reshape(-1).float().cpu().numpy()
    finally:
        model.train(was_training)
    if not good.all():
        out[~good] = np.nan
    return out


def outputs_per_variant(model, variants: dict, batch_size: int = 65536, invalid: str = "error") -> dict:
    """{variant name: X} -> {variant name: NN outputs}."""
    return {name: predict(model, X, batch_size, invalid) for name, X in variants.items()}


def _check_scores(scores, y, w):
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(y).reshape(-1)
    w = np.ones_like(scores) if w is None else np.asarray(w, dtype=np.float64).reshape(-1)
    if not (len(scores) == len(y) == len(w)):
        raise AuditError(f"scores, labels and weights differ in length: {len(scores)}, {len(y)}, {len(w)}")
    ok = np.isfinite(scores)
    scores, y, w = scores[ok], y[ok].astype(bool), w[ok]
    if not (w[y].sum() > 0 and w[~y].sum() > 0):
        raise AuditError("ROC / significance need positive total signal and background weight")
    return scores, y, w


def weighted_roc(scores, y, w=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted ROC curve: (fpr, tpr, thresholds), thresholds descending, the first one +inf
    (nothing selected). fpr = background efficiency, tpr = signal efficiency of f >= t.
    Ties in the score are one point. NaN scores are ignored."""
    scores, y, w = _check_scores(scores, y, w)
    order = np.argsort(-scores, kind="mergesort")
    s, ys, ws = scores[order], y[order], w[order]
    tp = np.cumsum(np.where(ys, ws, 0.0))
    fp = np.cumsum(np.where(ys, 0.0, ws))
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tpr = np.r_[0.0, tp[last] / tp[-1]]
    fpr = np.r_[0.0, fp[last] / fp[-1]]
    return fpr, tpr, np.r_[np.inf, s[last]]


def weighted_auc(scores, y, w=None) -> float:
    """Area under the weighted ROC curve (trapezoids; 0.5 = no separation)."""
    fpr, tpr, _ = weighted_roc(scores, y, w)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) * 0.5))


def efficiencies(scores, y, w=None, thresholds=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, eps_S, eps_B) for cuts f >= t; default thresholds 0, 0.01, ..., 0.99."""
    scores, y, w = _check_scores(scores, y, w)
    t = np.linspace(0.0, 0.99, 100) if thresholds is None else np.asarray(thresholds, dtype=np.float64)

    def eff(sel):
        sc, ww = scores[sel], w[sel]
        order = np.argsort(sc, kind="mergesort")
        sc, tail = sc[order], np.cumsum(ww[order][::-1])[::-1]  # tail[i] = sum of w at sorted i..end
        tail = np.r_[tail, 0.0]
        return tail[np.searchsorted(sc, t, side="left")] / ww.sum()

    return t, eff(y), eff(~y)


def significance_curve(scores, y, w=None, thresholds=None) -> dict:
    """Relative discovery significance eps_S / sqrt(eps_B) vs threshold.

    Returns {"thresholds", "eps_s", "eps_b", "rel_significance"} (NaN where eps_B = 0) and
    the peak: {"best_threshold", "best_rel_significance"}.
    """
    t, es, eb = efficiencies(scores, y, w, thresholds)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(eb > 0, es / np.sqrt(np.where(eb > 0, eb, 1.0)), np.nan)
    i = int(np.nanargmax(rel)) if np.isfinite(rel).any() else 0
    return {
        "thresholds": t,
        "eps_s": es,
        "eps_b": eb,
        "rel_significance": rel,
        "best_threshold": float(t[i]),
        "best_rel_significance": float(rel[i]) if np.isfinite(rel).any() else float("nan"),
    }


def histogram(values, weights=None, bins=20, range=(0.0, 1.0)) -> dict:
    """Weighted histogram with sum of squared weights: {"edges", "counts", "sumw2"}.
    NaN values are dropped; values on the upper edge go to the last bin."""
    edges = np.linspace(range[0], range[1], bins + 1) if np.ndim(bins) == 0 else np.asarray(bins, float)
    # np.histogram's conventions: out-of-range values dropped, running-sum addition
    counts, sumw2 = weighted_histogram(values, weights, edges, outside="drop", nonfinite="drop", sums="cumulative",
                                       what="NN-output histogram")
    return {"edges": edges, "counts": counts, "sumw2": sumw2}


def output_histograms(outputs: dict, weights, regions: dict | None = None, bins=20) -> dict:
    """NN-output histograms per region and variant.

    ``outputs``: {variant: scores (N,)}; ``weights``: one (N,) array for all variants or
    {variant: (N,)}; ``regions``: {region: mask (N,)} (same for every variant) or
    {region: {variant: mask}} (per-variant membership, for migrations); None = one region
    "all". Returns {region: {variant: {"edges", "counts", "sumw2"}}}.
    """
    if not outputs:
        raise AuditError("no NN outputs to histogram")
    n = len(next(iter(outputs.values())))
    if regions is None:
        regions = {"all": np.ones(n, dtype=bool)}
    out: dict = {}
    for region, masks in regions.items():
        out[region] = {}
        for variant, scores in outputs.items():
            if isinstance(masks, dict):
                if variant not in masks:
                    raise AuditError(f"region '{region}' has no mask for variant '{variant}'")
                m = np.asarray(masks[variant], dtype=bool)
            else:
                m = np.asarray(masks, dtype=bool)
            wv = weights[variant] if isinstance(weights, dict) else weights
            wv = np.ones(len(scores)) if wv is None else np.asarray(wv)
            if not (len(m) == len(scores) == len(wv)):
                raise AuditError(f"region '{region}', variant '{variant}': mask, outputs and weights differ in length")
            out[region][variant] = histogram(np.asarray(scores)[m], wv[m], bins)
    return out


def variation_spread(h_nominal, h_up, h_down) -> float:
    """Spread between the up and down NN-output histograms relative to nominal:
    sum_k |N_k(up) - N_k(down)| / sum_k N_k(nominal) (0 = the systematic does not move
    the output distribution; 2 = disjoint)."""
    h_nominal, h_up, h_down = (np.asarray(h, dtype=np.float64) for h in (h_nominal, h_up, h_down))
    return float(np.abs(h_up - h_down).sum() / h_nominal.sum())


def evaluate_classifier(
    model,
    variants: dict,
    y,
    weights,
    regions: dict | None = None,
    bins=20,
    thresholds=None,
    invalid: str = "nan",
) -> dict:
    """Everything EvaluateModel needs, in one call (plain arrays and floats).

    ``variants``: {variant: X (N, F)} event-matched feature matrices (must include
    "nominal"); ``y`` (N,) labels; ``weights``: (N,) or {variant: (N,)}; ``regions`` as in
    ``output_histograms``. Rows with NaN features (events absent in a variant) get NaN
    outputs and are left out of every figure of that variant.

    Returns {"outputs": {variant: (N,)}, "auc": {variant: float}, "roc": {"fpr", "tpr",
    "thresholds"} (nominal), "significance": significance_curve(...) (nominal),
    "histograms": {region: {variant: {"edges", "counts", "sumw2"}}}}.
    """
    if "nominal" not in variants:
        raise AuditError(f"variants must include 'nominal', got {sorted(variants)}")
    y = np.asarray(y)
    outputs = outputs_per_variant(model, variants, invalid=invalid)
    for name, f in outputs.items():
        if len(f) != len(y):
            raise AuditError(f"variant '{name}' has {len(f)} events, labels have {len(y)}")

    def w_of(name):
        w = weights.get(name, weights.get("nominal")) if isinstance(weights, dict) else weights
        return np.ones(len(y)) if w is None else np.asarray(w, dtype=np.float64)

    auc = {name: weighted_auc(f, y, w_of(name)) for name, f in outputs.items()}
    fpr, tpr, thr = weighted_roc(outputs["nominal"], y, w_of("nominal"))
    ws = {name: w_of(name) for name in outputs}
    return {
        "outputs": outputs,
        "auc": auc,
        "roc": {"fpr": fpr, "tpr": tpr, "thresholds": thr},
        "significance": significance_curve(outputs["nominal"], y, w_of("nominal"), thresholds),
        "histograms": output_histograms(outputs, ws, regions, bins),
    }


def jsonable(obj):
    """numpy arrays / scalars inside nested dicts and lists -> JSON-serialisable Python
    (non-finite floats become None)."""
    return to_json(obj, nonfinite="null")
