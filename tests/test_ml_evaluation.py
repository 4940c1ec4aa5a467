"""Evaluation: weighted ROC/AUC against brute force, significance curve, histograms."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.ml.evaluation import (
    efficiencies,
    output_histograms,
    outputs_per_variant,
    predict,
    significance_curve,
    variation_spread,
    weighted_auc,
    weighted_roc,
)
from hsaudit.ml.models import build_model


def _brute_auc(s, y, w):
    """P(score_sig > score_bkg) + 0.5 P(tie), weighted over all signal-background pairs."""
    sig, bkg = s[y == 1], s[y == 0]
    ws, wb = w[y == 1], w[y == 0]
    gt = (sig[:, None] > bkg[None, :]) + 0.5 * (sig[:, None] == bkg[None, :])
    return float((ws[:, None] * wb[None, :] * gt).sum() / (ws.sum() * wb.sum()))


def test_weighted_auc_matches_pairwise_count_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(y * 0.8, 1.0), 1)  # rounding creates ties
    w = rng.uniform(0.2, 3.0, 400)
    assert weighted_auc(s, y, w) == pytest.approx(_brute_auc(s, y, w), abs=1e-12)
    assert weighted_auc(s, y) == pytest.approx(_brute_auc(s, y, np.ones(400)), abs=1e-12)
    assert weighted_auc(-s, y, w) == pytest.approx(1 - weighted_auc(s, y, w), abs=1e-12)
    # weights matter: up-weighting the well-separated events raises the AUC
    assert weighted_auc(s, y, np.where((s > 1) == (y == 1), 5.0, 1.0)) > weighted_auc(s, y)


def test_roc_endpoints_and_monotone():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = rng.uniform(size=300)
    fpr, tpr, thr = weighted_roc(s, y)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0) and np.all(np.diff(thr) < 0)


def test_significance_curve_direct():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(500), np.zeros(2000)]
    s = np.r_[rng.beta(5, 2, 500), rng.beta(2, 5, 2000)]
    w = rng.uniform(0.5, 1.5, 2500)
    t = np.array([0.0, 0.3, 0.5, 0.8, 0.99])
    cur = significance_curve(s, y, w, t)
    for i, ti in enumerate(t):
        es = w[(y == 1) & (s >= ti)].sum() / w[y == 1].sum()
        eb = w[(y == 0) & (s >= ti)].sum() / w[y == 0].sum()
        assert cur["eps_s"][i] == pytest.approx(es) and cur["eps_b"][i] == pytest.approx(eb)
        if eb > 0:
            assert cur["rel_significance"][i] == pytest.approx(es / np.sqrt(eb))
    assert cur["rel_significance"][0] == pytest.approx(1.0)  # no cut: no gain
    assert cur["best_rel_significance"] > 1.5  # a good classifier helps
    t_def, es, eb = efficiencies(s, y, w)
    assert len(t_def) == 100 and es[0] == pytest.approx(1) and np.all(np.diff(es) <= 1e-12)


def test_histograms_per_region_and_variant():
    rng = np.random.default_rng(3)
    n = 1000
    outs = {"nominal": rng.uniform(size=n), "tes_up": rng.uniform(size=n)}
    w = rng.uniform(size=n)
    region = rng.uniform(size=n) < 0.3
    per_variant = {"nominal": region, "tes_up": ~region}
    h = output_histograms(outs, w, {"sr": region, "cr": per_variant}, bins=10)
    ref, _ = np.histogram(outs["tes_up"][region], np.linspace(0, 1, 11), weights=w[region])
    np.testing.assert_allclose(h["sr"]["tes_up"]["counts"], ref)
    ref2, _ = np.histogram(outs["tes_up"][~region], np.linspace(0, 1, 11), weights=w[~region] ** 2)
    np.testing.assert_allclose(h["cr"]["tes_up"]["sumw2"], ref2)
    assert output_histograms(outs, None)["all"]["nominal"]["counts"].sum() == pytest.approx(n)
    with pytest.raises(AuditError, match="no mask for variant 'tes_up'"):
        output_histograms(outs, w, {"cr": {"nominal": region}})
    assert variation_spread([1, 1], [1, 1], [1, 1]) == 0.0
    assert variation_spread([1, 1], [2, 0], [0, 2]) == 2.0


def test_predict_per_variant_and_invalid_rows():
    m = build_model({"hidden_layers": [8]}, 3, np.array([10.0, 0, 0]), np.array([5.0, 1, 1]))
    X = np.random.default_rng(4).normal(size=(70, 3)).astype(np.float32)
    f = predict(m, X, batch_size=16)
    assert f.shape == (70,) and f.dtype == np.float32
    np.testing.assert_allclose(f, m(torch.from_numpy(X)).detach().numpy(), rtol=1e-6)
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(AuditError, match="NaN or inf"):
        predict(m, Xn)
    g = outputs_per_variant(m, {"nominal": X, "up": Xn}, invalid="nan")
    assert np.isnan(g["up"][3]) and np.isfinite(np.delete(g["up"], 3)).all()
    with pytest.raises(AuditError, match="feature list mismatch"):
        predict(m, X[:, :2])


def test_evaluate_classifier_one_call():
    import json

    from hsaudit.ml.evaluation import evaluate_classifier, jsonable

    rng = np.random.default_rng(5)
    n = 400
    y = (rng.uniform(size=n) < 0.5).astype(int)
    X = rng.normal(size=(n, 2)).astype(np.float32) + y[:, None]
    up = X.copy()
    up[:, 1] += 0.5
    up[:3] = np.nan  # absent in 'up'
    m = build_model({"hidden_layers": [8]}, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # a fixed, sensible classifier: f = sigmoid(x1 + x2)
        m.body[0].weight.zero_()
        m.body[0].weight[0] = 1.0
        m.body[2].weight.zero_()
        m.body[2].weight[0, 0] = 1.0
        m.body[0].bias.fill_(10.0)
        m.body[2].bias.fill_(-10.0)
    w = rng.uniform(0.5, 1.5, n)
    res = evaluate_classifier(m, {"nominal": X, "up": up}, y, {"nominal": w}, {"sr": X[:, 0] > 0}, bins=5)
    assert res["auc"]["nominal"] == pytest.approx(weighted_auc(X.sum(1), y, w), abs=1e-6)
    assert np.isnan(res["outputs"]["up"][:3]).all()
    assert res["histograms"]["sr"]["up"]["counts"].sum() < res["histograms"]["sr"]["nominal"]["counts"].sum() + 1e-9
    assert res["significance"]["best_rel_significance"] > 1
    text = json.dumps(jsonable(res))
    assert "NaN" not in text
    with pytest.raises(AuditError, match="nominal"):
        evaluate_classifier(m, {"up": up}, y, w)
