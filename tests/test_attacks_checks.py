"""Hidden-ness checks and metrics: blatant shifts fail, identical copies pass, statistics
agree with scipy / direct computations."""

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon

from hsaudit.errors import AuditError
from hsaudit.attacks import (
    Envelope, band_checks, envelope_distance, fooling_ratio, is_hidden, resolve_thresholds, run_checks,
    significance_curve, significance_summary, weighted_auc, yield_shift, output_shift,
)
from hsaudit.attacks.checks import chi2_test, correlation_change, jsd_distance, ks_statistic


@pytest.fixture(scope="module")
def sample():
    rng = np.random.default_rng(0)
    n = 4000
    z = rng.standard_normal((n, 3))
    x = np.stack([40 + 10 * z[:, 0], z[:, 1], 20 + 5 * (0.6 * z[:, 0] + 0.8 * z[:, 2])], axis=1)
    w = rng.uniform(0.5, 1.5, n)
    out = 1 / (1 + np.exp(-(x[:, 0] - 40) / 10))
    return x, w, out


def test_identical_copy_passes_everything(sample):
    x, w, out = sample
    checks = run_checks(x, x.copy(), w, ["pt", "eta", "met"], "control", out, out.copy(), up=x * 1.01, down=x * 0.99)
    names = {c.name for c in checks}
    assert names == {"ks", "chi2", "jsd", "correlation", "nn_output_chi2", "nn_output_ks", "band"}
    assert is_hidden(checks)
    for c in checks:
        d = c.to_dict()
        assert set(d) >= {"name", "feature", "region", "statistic", "threshold", "passed"}
        assert d["region"] == "control"


def test_blatant_shift_fails(sample):
    x, w, out = sample
    shifted = x.copy()
    shifted[:, 0] *= 1.10
    checks = run_checks(x, shifted, w, ["pt", "eta", "met"], "control", out, np.clip(out + 0.1, 0, 1),
                        up=x * 1.01, down=x * 0.99)
    assert not is_hidden(checks)
    failed = {(c.name, c.feature) for c in checks if not c.passed}
    for name in ("ks", "chi2", "jsd", "band"):
        assert (name, "pt") in failed, failed
    assert ("nn_output_chi2", "nn_output") in failed and ("nn_output_ks", "nn_output") in failed
    # the untouched features still pass
    assert ("ks", "eta") not in failed and ("chi2", "met") not in failed


def test_correlation_check_detects_decorrelation(sample):
    x, w, _ = sample
    rng = np.random.default_rng(1)
    y = x.copy()
    y[:, 2] = rng.permutation(y[:, 2])  # same marginal, correlation destroyed
    checks = run_checks(x, y, w, which=["ks", "correlation"])
    corr = [c for c in checks if c.name == "correlation"][0]
    assert not corr.passed and corr.statistic > 0.1
    assert all(c.passed for c in checks if c.name == "ks")  # the marginals cannot see it


def test_statistics_agree_with_scipy(sample):
    x, _, _ = sample
    a, b = x[:2000, 0], x[2000:, 0] + 1.0
    assert ks_statistic(a, b) == pytest.approx(stats.ks_2samp(a, b).statistic, abs=1e-12)
    edges = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()), 51)
    ha, hb = np.histogram(a, edges)[0], np.histogram(b, edges)[0]
    assert jsd_distance(a, b, bins=50, value_range=(edges[0], edges[-1])) == pytest.approx(
        jensenshannon(ha, hb, base=2), abs=1e-9)
    c2, ndf, p = chi2_test(a, b, bins=10)
    assert ndf == 10 and 0 <= p < 1e-3
    assert correlation_change(x, x) == 0.0


def test_band_check_uses_mc_stat_tolerance(sample):
    x, w, _ = sample
    ok = band_checks(x, x * 1.005, x * 1.01, x * 0.99, w, feature_names=["pt", "eta", "met"])
    assert all(c.passed for c in ok)
    bad = band_checks(x, x * 1.05, x * 1.01, x * 0.99, w, feature_names=["pt", "eta", "met"])
    assert not bad[0].passed and bad[0].details["bins_outside"] > 0


def test_threshold_config_and_errors(sample):
    x, w, _ = sample
    t = resolve_thresholds({"ks_max": 0.5, "bins": 10})
    assert t["ks_max"] == 0.5 and t["jsd_max"] == 0.06
    with pytest.raises(AuditError, match="unknown check thresholds"):
        resolve_thresholds({"ks": 0.1})
    with pytest.raises(AuditError, match="bins"):
        resolve_thresholds({"bins": 0})
    with pytest.raises(AuditError, match="unknown checks"):
        run_checks(x, x, which=["kss"])
    with pytest.raises(AuditError, match="NaN"):
        run_checks(np.full((3, 3), np.nan), x[:3])
    with pytest.raises(AuditError, match="non-empty"):
        run_checks(x[:0], x[:0])
    with pytest.raises(AuditError, match="at least one"):
        is_hidden([])
    with pytest.raises(AuditError, match="outputs"):
        run_checks(x, x, which=["nn_output_ks"])


def test_metrics():
    rng = np.random.default_rng(2)
    y = (rng.random(3000) < 0.5).astype(float)
    s = np.clip(0.5 + 0.2 * (2 * y - 1) + 0.2 * rng.standard_normal(3000), 0, 1)
    # AUC against the direct pairwise definition
    sig, bkg = s[y == 1], s[y == 0]
    direct = ((sig[:, None] > bkg[None, :]).mean() + 0.5 * (sig[:, None] == bkg[None, :]).mean())
    assert weighted_auc(s, y) == pytest.approx(direct, abs=1e-12)
    assert weighted_auc(s, y, np.full(3000, 2.0)) == pytest.approx(direct, abs=1e-12)
    # a perfect flip of every correctly classified signal event
    after = np.where(y == 1, 0.0, s)
    correct_sig = ((s >= 0.5) & (y == 1)).sum()
    correct = ((s >= 0.5) == (y == 1)).sum()
    assert fooling_ratio(s, after, y) == pytest.approx(correct_sig / correct)
    assert fooling_ratio(s, s, y) == 0.0
    curve = significance_curve(s, y, thresholds=[0.0, 0.5])
    assert curve["rel_significance"][0] == pytest.approx(1.0)
    summ = significance_summary(s, after, y)
    assert summ["peak_before"] > 1.0 and summ["at_nominal_threshold_after"] < summ["peak_before"]
    ys = yield_shift(s, after, y, threshold=0.5)
    assert ys["signal"]["after"] == 0.0 and ys["background"]["relative_shift"] == 0.0
    os_ = output_shift(s, s + 0.01 * (s < 0.99))
    assert os_["mean_shift"] > 0 and output_shift(s, s)["histogram_l1_relative"] == 0.0


def test_envelope_distance_units():
    nom = np.array([[10.0, 1.0]], dtype=np.float32)
    env = Envelope.from_variants(nom, nom * np.float32(1.1), nom * np.float32(0.8), 1.0)
    d = envelope_distance(torch.as_tensor(nom), torch.tensor([[11.0, 0.9]]), env)
    assert d["max"] == pytest.approx(1.0, rel=1e-5)
    assert d["per_feature_mean_abs"]["f1"] == pytest.approx(0.5, rel=1e-5)


def test_demo_config_attacks_and_metrics_are_json_ready():
    """Every attack of the demo config builds from its config entry; metrics serialise."""
    import json
    from pathlib import Path

    import yaml

    from hsaudit.attacks import attack_from_config, attack_metrics, make_attack, resolve_thresholds
    from hsaudit.attacks.toy import make_toy_events, train_toy_model

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "demo.yaml").read_text())
    for name, entry in cfg["attacks"].items():
        assert attack_from_config(entry).name == entry["type"]
    # the published statistics' thresholds of the demo are all known keys (the rest of the
    # section configures the calibrated visibility test, validated by its own settings)
    from hsaudit.config_schema import ChecksSection
    from hsaudit.visibility import VisibilitySettings

    checks = ChecksSection.model_validate(cfg["checks"])
    assert resolve_thresholds(checks.published_thresholds())["jsd_max"] == cfg["checks"].get("jsd_max", 0.06)
    VisibilitySettings.from_config(checks.visibility_keys())
    d = make_toy_events(400, seed=9)
    model = train_toy_model(d["x"], d["labels"], epochs=20)
    env = Envelope.from_variants(d["x"], d["up"], d["down"], 1.0, d["integer_features"], d["feature_names"])
    labels_bool = d["labels"].astype(bool)  # boolean labels are accepted too
    r = make_attack("pgd", steps=3).attack(model, d["x"], env, "signal_as_background", labels=labels_bool,
                                           weights=d["weights"], seed=0, event_keys=np.arange(400, dtype=np.uint64))
    m = attack_metrics(model, d["x"], r.numpy(), env, labels=d["labels"], weights=d["weights"])
    json.dumps(m)
    assert m["auc_after"] < m["auc_before"] and 0 < m["fooling_ratio"] <= 1
    assert m["significance"]["at_nominal_threshold_after"] < m["significance"]["at_nominal_threshold_before"]
    assert 0 < m["distance"]["max"] <= 1 + 1e-6
