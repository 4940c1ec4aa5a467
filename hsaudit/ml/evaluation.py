"""Evaluation of a trained classifier: NN outputs per variant, weighted ROC and AUC, the
relative discovery significance curve, NN-output histograms per region and variant.

The weighted ROC / AUC and the relative discovery significance eps_S / sqrt(eps_B) of a cut
f >= t are hsaudit.roc's (imported here under the same names).

All results are plain numpy arrays / floats (no plotting, no files).
"""

from __future__ import annotations

import numpy as np
import torch

from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram
from hsaudit.jsonio import to_json
# the weighted ROC / AUC and the significance curve live in hsaudit.roc; imported here
# so that ``hsaudit.ml.evaluation.weighted_auc`` etc. keep working
from hsaudit.roc import efficiencies, significance_curve, weighted_auc, weighted_roc  # noqa: F401


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
