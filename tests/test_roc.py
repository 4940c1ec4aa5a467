"""The one weighted ROC / AUC and significance curve: against exact pairwise counting, on a
hand-computed example, and the input conventions every caller shares."""

from fractions import Fraction

import numpy as np
import pytest

from hsaudit.errors import AuditError
from hsaudit.roc import default_thresholds, efficiencies, significance_curve, weighted_auc, weighted_roc

# hand example: signal scores 0.9, 0.7, 0.4 (weights 1, 1, 2), background 0.8, 0.4, 0.21, 0.1
# (weights 1 each); one signal-background tie at 0.4
S = np.array([0.9, 0.7, 0.4, 0.8, 0.4, 0.21, 0.1])
Y = np.array([1, 1, 1, 0, 0, 0, 0])
W = np.array([1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0])


def _exact_pairwise_auc(s, y, w) -> Fraction:
    """Sum over every signal-background pair of w_s w_b [s_s > s_b] + w_s w_b [s_s = s_b] / 2,
    over (sum w_s)(sum w_b), in exact rational arithmetic."""
    sig = [(Fraction(float(a)), Fraction(float(b))) for a, b, c in zip(s, w, y) if c == 1]
    bkg = [(Fraction(float(a)), Fraction(float(b))) for a, b, c in zip(s, w, y) if c == 0]
    num = sum(ws * wb * (1 if a > b else Fraction(1, 2) if a == b else 0) for a, ws in sig for b, wb in bkg)
    return num / (sum(ws for _, ws in sig) * sum(wb for _, wb in bkg))


def test_hand_example_auc_counts_the_tie_one_half():
    # pairs won: 0.9 beats 4 (x1), 0.7 beats 3 (x1), 0.4 (weight 2) beats 2 and ties 1:
    # (4 + 3 + 2 * 2 + 2 * 0.5) / (4 * 4) = 12 / 16
    assert weighted_auc(S, Y, W) == 0.75
    assert _exact_pairwise_auc(S, Y, W) == Fraction(3, 4)


@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_exact_pairwise_count_with_ties_and_negative_weights(seed):
    rng = np.random.default_rng(seed)
    n = 120
    y = (rng.random(n) < 0.4).astype(int)
    s = np.round(1 / (1 + np.exp(-rng.normal(y, 1.0))), 1)  # ten distinct values: many ties
    w = rng.lognormal(0.0, 1.0, n) * np.where(rng.random(n) < 0.1, -1.0, 1.0)
    if w[y == 1].sum() <= 0 or w[y == 0].sum() <= 0:
        w = np.abs(w)
    exact = float(_exact_pairwise_auc(s, y, w))
    assert weighted_auc(s, y, w) == pytest.approx(exact, rel=1e-13, abs=0)
    # the trapezoidal area under the returned ROC curve is the same number up to rounding
    fpr, tpr, _ = weighted_roc(s, y, w)
    assert float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) * 0.5)) == pytest.approx(exact, rel=1e-12, abs=0)


def test_hand_example_significance_curve_and_peak():
    t = [0.0, 0.25, 0.5, 0.75, 0.85]
    c = significance_curve(S, Y, W, t)
    # eps_S: 4/4, 4/4, 2/4, 1/4, 1/4; eps_B: 4/4, 2/4, 1/4, 1/4, 0
    np.testing.assert_array_equal(c["eps_s"], [1.0, 1.0, 0.5, 0.25, 0.25])
    np.testing.assert_array_equal(c["eps_b"], [1.0, 0.5, 0.25, 0.25, 0.0])
    np.testing.assert_allclose(c["rel_significance"][:4], [1.0, 2 ** 0.5, 1.0, 0.5], rtol=1e-15)
    assert np.isnan(c["rel_significance"][4])  # nothing of the background left
    assert c["best_threshold"] == 0.25 and c["best_rel_significance"] == pytest.approx(2 ** 0.5, rel=1e-15)
    np.testing.assert_array_equal(c["thresholds"], t)


def test_efficiencies_equal_exact_tail_sums():
    rng = np.random.default_rng(11)
    n = 400
    y = (rng.random(n) < 0.5).astype(int)
    s = rng.beta(2 + 3 * y, 5 - 3 * y)
    w = rng.lognormal(0.0, 1.5, n)
    t, es, eb = efficiencies(s, y, w)
    np.testing.assert_array_equal(t, default_thresholds())
    for cls, eff in ((1, es), (0, eb)):
        tot = sum(Fraction(float(x)) for x in w[y == cls])
        exact = [float(sum((Fraction(float(x)) for x in w[(y == cls) & (s >= ti)]), Fraction(0)) / tot) for ti in t]
        np.testing.assert_allclose(eff, exact, rtol=1e-13, atol=0)


def test_nonfinite_scores_are_dropped_or_rejected():
    s = np.r_[S, np.nan, np.inf]
    y, w = np.r_[Y, 1, 0], np.r_[W, 5.0, 5.0]
    assert weighted_auc(s, y, w) == weighted_auc(S, Y, W)
    assert significance_curve(s, y, w)["best_rel_significance"] == significance_curve(S, Y, W)["best_rel_significance"]
    with pytest.raises(AuditError, match="scores contain 2 non-finite"):
        weighted_auc(s, y, w, nonfinite="raise")
    with pytest.raises(AuditError, match="nonfinite='keep' is not one of"):
        weighted_roc(S, Y, W, nonfinite="keep")


def test_bad_labels_weights_and_lengths_are_audit_errors():
    with pytest.raises(AuditError, match="labels must be 1 \\(signal\\) or 0 \\(background\\), got \\[2.0\\]"):
        weighted_auc(S, np.r_[Y[:-1], 2], W)
    with pytest.raises(AuditError, match="weights contain 1 non-finite"):
        significance_curve(S, Y, np.r_[W[:-1], np.nan])
    with pytest.raises(AuditError, match="differ in length: 7, 6, 7"):
        weighted_roc(S, Y[:-1], W)
    with pytest.raises(AuditError, match="positive total background weight"):
        weighted_auc(S, Y, np.where(Y == 0, -1.0, 1.0))


def test_one_implementation_behind_every_import():
    from hsaudit.attacks import metrics as attack_metrics
    from hsaudit.ml import evaluation

    assert evaluation.weighted_auc is weighted_auc and attack_metrics.weighted_auc is weighted_auc
    assert evaluation.significance_curve is significance_curve and attack_metrics.significance_curve is significance_curve
    assert evaluation.weighted_roc is weighted_roc and evaluation.efficiencies is efficiencies


def test_attack_significance_summary_on_the_hand_example():
    from hsaudit.attacks.metrics import SUMMARY_THRESHOLDS, significance_summary

    np.testing.assert_array_equal(SUMMARY_THRESHOLDS, np.arange(200) * 0.005)
    # the attack pushes the signal event at 0.9 down to 0.3
    after = np.where(S == 0.9, 0.3, S)
    summ = significance_summary(S, after, Y, W, min_eps_b=0.2)
    # before: the peak sqrt(2) for cuts in (0.21, 0.4] (eps_S 1, eps_B 1/2), the first being 0.215
    assert summ["nominal_threshold"] == pytest.approx(0.215) and summ["peak_before"] == pytest.approx(2 ** 0.5)
    # after, at 0.215: eps_S = 1 still (0.3 >= 0.205), eps_B = 1/2
    assert summ["at_nominal_threshold_after"] == pytest.approx(2 ** 0.5)
    with pytest.raises(AuditError, match="scores contain 1 non-finite"):
        significance_summary(S, np.where(S == 0.9, np.nan, S), Y, W)
