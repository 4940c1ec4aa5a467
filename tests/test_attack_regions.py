"""Re-selection of attacked events (hsaudit.attack_regions) and what depends on it: cuts
from the config, migration across thresholds, checks and templates on migrated events."""

import dataclasses

import numpy as np
import pytest

from hsaudit.attack_regions import FeatureCut, RegionCuts, region_cuts, regions_after_attack
from hsaudit.attack_stage import attack_rows
from hsaudit.attacks.checks import correlation_check, run_checks
from hsaudit.attacks.metrics import output_shift, wasserstein_distance
from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.fit_stage import attacked_truth
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL

FEATURES = ["mu_pt", "tau_pt", "mt_mu", "m_vis"]


def sample_with_threshold():
    """Six events around the 25 GeV tau cut of the ci config, all opposite-sign, mT 30.
    Event 3 (tau 24.5) enters the selection only in tau_es_up; event 5 never does."""
    cfg = load_config("ci")
    cfg = dataclasses.replace(cfg, features=[dataclasses.replace(cfg.features[0], name=f) for f in FEATURES])
    tau = np.array([40.0, 25.5, 30.0, 24.5, 60.0, 21.0], dtype=np.float32)
    nominal = np.stack([np.full(6, 30.0), tau, np.full(6, 30.0), tau + 20], axis=1).astype(np.float32)
    X = {NOMINAL: nominal}
    for v, f in (("tau_es_up", 1.03), ("tau_es_down", 0.97)):
        x = nominal.copy()
        x[:, 1] *= f
        X[v] = x
    region = {}
    for r in cfg.regions:
        for v in X:
            in_sel = X[v][:, 1] > 25.0
            region[(r, v)] = in_sel if r == cfg.signal_region else np.zeros(6, bool)
    s = EventSample(
        features=FEATURES, variants=list(X), regions=list(cfg.regions), X=X, y=np.array([1, 0, 1, 0, 0, 0], np.int8),
        weight=np.ones(6), weight_variations={}, region=region, event_id=np.arange(6), dataset=np.zeros(6, np.int16),
        datasets=["d"], processes=["d"],
    )
    return cfg, s


def test_cuts_from_the_nanoaod_selection_and_regions():
    cfg = load_config("ci")
    cuts = region_cuts(cfg)
    assert set(cuts) == set(cfg.regions)
    sr = {c.feature: c for c in cuts[cfg.signal_region]}
    assert sr["tau_pt"].low == cfg.selection["tau"]["pt_min"] and not sr["tau_pt"].low_inclusive
    assert sr["mu_pt"].low == cfg.selection["muon"]["pt_min"]
    assert sr["mt_mu"].high == cfg.regions[cfg.signal_region].mt_max


def test_cuts_from_flat_input_selection():
    cuts = region_cuts(load_config("higgsml"))
    sr = {c.feature: c for c in cuts["signal"]}
    assert sr["PRI_tau_pt"].low == 25.0 and sr["PRI_tau_pt"].low_inclusive
    assert sr["DER_mass_transverse_met_lep"].high == 50.0


def test_feature_cut_bounds_and_missing_values():
    c = FeatureCut("x", low=1.0, high=2.0, low_inclusive=True, missing_value=-999.0)
    assert c.passes(np.array([1.0, 1.5, 2.0, 0.5, np.nan, -999.0])).tolist() == [True, True, False, False, False,
                                                                               False]
    assert FeatureCut("x", low=1.0).passes(np.array([1.0, 1.1])).tolist() == [False, True]


def test_zero_attack_keeps_every_region_and_rows_include_entering_candidates():
    cfg, s = sample_with_threshold()
    rows = attack_rows(s, "tau_es")
    assert rows.tolist() == [0, 1, 2, 3, 4]  # event 3 can enter under tau_es up; event 5 cannot
    after = regions_after_attack(s, rows, s.X[NOMINAL][rows], RegionCuts.from_config(cfg), "tau_es")
    for r in s.regions:
        assert np.array_equal(after[r], s.region[(r, NOMINAL)][rows])


def test_events_migrate_across_the_threshold():
    cfg, s = sample_with_threshold()
    rows = attack_rows(s, "tau_es")
    x = s.X[NOMINAL][rows].copy()
    x[1, 1] = 24.9   # 25.5 -> 24.9: leaves
    x[3, 1] = 25.2   # 24.5 -> 25.2: a candidate (in the signal region under tau_es up) that enters
    x[0, 3] += 5.0   # m_vis is no cut feature: membership unchanged
    after = regions_after_attack(s, rows, x, RegionCuts.from_config(cfg), "tau_es")[cfg.signal_region]
    assert after.tolist() == [True, False, True, True, True]
    # the same move for an event that is in no variant's selection does not enter it
    s.region[(cfg.signal_region, "tau_es_up")][3] = False
    after = regions_after_attack(s, rows, x, RegionCuts.from_config(cfg), "tau_es")[cfg.signal_region]
    assert not after[3]
    with pytest.raises(AuditError, match="attacked features have shape"):
        regions_after_attack(s, rows, x[:2], RegionCuts.from_config(cfg), "tau_es")


def test_checks_and_templates_with_migrated_events():
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(400, 3))
    w = rng.uniform(0.5, 1.5, 400)
    # the attacked sample: the same events shifted, 20 of them gone
    x1, w1 = x0[20:] + 0.01, w[20:]
    with pytest.raises(AuditError, match="pass weights_attacked"):
        run_checks(x0, x1, w, which=["ks"])
    checks = run_checks(x0, x1, w, which=["ks", "chi2", "jsd", "correlation"], weights_attacked=w1)
    assert {c.name for c in checks} == {"ks", "chi2", "jsd", "correlation"}
    assert correlation_check(x0, x1, w, weights_attacked=w1).statistic > 0

    lk = {"mu_true": 1.0, "channels": ["a"], "edges": {"a": [0.0, 0.5, 1.0]}, "truths": {"nominal": {"a": [10.0, 10.0]}}}
    rows_info = {"weight": np.ones(3), "is_signal": np.zeros(3, bool), "channels": np.array([[True, True, False]]),
                 "output": np.array([0.2, 0.7, 0.8])}
    rows = np.arange(3)
    # outputs unchanged: the truth changes only by migration (event 0 leaves, event 2 enters)
    same = attacked_truth(lk, rows_info, rows, rows_info["output"])
    assert same["a"].tolist() == [10.0, 10.0]
    moved = attacked_truth(lk, rows_info, rows, rows_info["output"], {"a": np.array([False, True, True])})
    assert moved["a"].tolist() == [9.0, 11.0]
    with pytest.raises(AuditError, match="no region membership for fit channel 'a'"):
        attacked_truth(lk, rows_info, rows, rows_info["output"], {"b": np.ones(3, bool)})


def test_wasserstein_distance_of_output_shifts():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.1, 0.9, 5000)
    w = rng.uniform(0.5, 2.0, 5000)
    assert wasserstein_distance(p, p, w, w) == 0.0
    # every event up by 0.02: the distance is the shift
    assert wasserstein_distance(p + 0.02, p, w, w) == pytest.approx(0.02, rel=1e-9)
    # a random jitter of the same size barely moves the distribution (the 20-bin L1 does)
    jitter = p + rng.choice([-0.02, 0.02], size=len(p))
    shift = output_shift(p, jitter, w)
    assert shift["wasserstein"] < 0.003 and shift["histogram_l1_relative"] > 0.01
    # negative weights are allowed (MC weights), a zero total is not
    assert wasserstein_distance(p, p + 0.01, np.where(w > 1.9, -w, w), np.where(w > 1.9, -w, w)) > 0
    with pytest.raises(AuditError, match="non-zero total weight"):
        wasserstein_distance(p[:2], p[:2], np.array([1.0, -1.0]), np.ones(2))
    with pytest.raises(AuditError, match="pass weights_after"):
        output_shift(p, p[:10], w)


def test_attack_outputs_without_region_membership_are_refused(tmp_path):
    from hsaudit.attack_stage import region_arrays, regions_from_arrays

    old = tmp_path / "attacked.npz"
    np.savez(old, rows=np.arange(3), x_adv=np.zeros((3, 2)))  # as written before re-selection existed
    with np.load(old) as f, pytest.raises(AuditError, match="attacked.npz has no region membership.*new --version"):
        regions_from_arrays(f)
    new = tmp_path / "new.npz"
    np.savez(new, **region_arrays({"signal": np.array([True, False]), "cr": np.array([False, True])}))
    with np.load(new) as f:
        back = regions_from_arrays(f)
    assert list(back) == ["signal", "cr"] and back["cr"].tolist() == [False, True]
