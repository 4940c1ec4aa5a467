"""The attack stage on a small synthetic analysis: every selected event is attacked (control
regions included), universal attacks are fitted on one half and judged on the other, and the
calibrated visibility test sees control-region changes."""

import dataclasses

import numpy as np
import pytest
import torch

from hsaudit.attack_regions import RegionCuts
from hsaudit.attack_stage import (attack_rows, evaluation_weights, fitting_half, event_keys, run_attack,
                                   validate_attack, visibility)
from hsaudit.calibration_stage import calibrate_model
from hsaudit.nn_outputs import NNOutputs
from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.tables import NOMINAL
from synthetic_analysis import FEATURES, synthetic_sample



def synthetic(n=4000, seed=3):
    """The shared synthetic analysis (tests/synthetic_analysis.py) with the ci settings."""
    s, model = synthetic_sample(n, seed)
    cfg = load_config("ci")
    cfg = dataclasses.replace(cfg, features=[dataclasses.replace(cfg.features[0], name=f) for f in FEATURES],
                              checks={**cfg.checks, "n_toys": 300}, seed=5)
    return cfg, s, model


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    cfg, s, model = synthetic()
    calibration, summary = calibrate_model(NNOutputs.compute(model, s).as_dict(), s, cfg, "m")
    return cfg, s, model, calibration, summary


def test_every_selected_event_is_attacked_and_no_subset_setting(setup):
    cfg, s, model, calibration, _ = setup
    rows = attack_rows(s, "tau_es")
    selected = np.zeros(len(s), bool)
    for r in s.regions:
        for v in (NOMINAL, "tau_es_up", "tau_es_down"):
            selected |= s.region[(r, v)]
    assert rows.tolist() == np.flatnonzero(selected).tolist()
    out = run_attack(model, s, cfg, "m", "tau_es", "pgd")
    moved = (out.x_adv != s.X[NOMINAL][out.rows]).any(axis=1)
    for r in ("control_same_sign", "control_high_mt"):
        in_cr = s.region[(r, NOMINAL)][out.rows]
        # event-wise attacks move control-region events by their own per-event rule
        assert moved[in_cr].mean() > 0.9, r
    assert np.array_equal(out.eval_weights, s.weight[out.rows])
    # every selected event is attacked (a mismodelling of a subset would be diluted): there is
    # no setting for a subset, and the typed section refuses one
    with pytest.raises(AuditError, match="audit.max_events: unknown setting"):
        dataclasses.replace(cfg, audit={**cfg.audit, "max_events": 100}).section("audit")


def test_control_region_looks_see_an_attack_that_moves_control_region_events(setup):
    cfg, s, model, calibration, _ = setup
    out = run_attack(model, s, cfg, "m", "tau_es", "pgd")
    res = validate_attack(model, s, out.rows, out.x_adv, cfg, "tau_es", calibration, out.regions, out.eval_weights)
    cr = [lk for lk in res["visibility"]["looks"] if lk["region"] != cfg.signal_region]
    assert cr and max(lk["lambda_raw"] for lk in cr) > 0
    assert sum(lk["lambda"] > 1 for lk in cr) > 0
    # the published statistics are reported per region, control regions included
    assert {c["region"] for c in res["published"]} == set(s.regions)
    # a zero attack is invisible: zero shift in every look, power at the false-alarm level
    zero = visibility(model, s, out.rows, s.X[NOMINAL][out.rows], RegionCuts.from_config(cfg), "tau_es", calibration)
    assert all(lk["lambda_raw"] == 0 for lk in zero["visibility"]["looks"])
    assert zero["power"] <= 0.1 and zero["hidden"]


def test_random_control_is_hidden_and_standard_powers_are_reported(setup):
    cfg, s, model, calibration, summary = setup
    hidden = []
    for k in range(5):
        out = run_attack(model, s, cfg, "m", "tau_es", "random", seed=100 + k)
        hidden.append(visibility(model, s, out.rows, out.x_adv, RegionCuts.from_config(cfg), "tau_es", calibration, out.eval_weights,
                                 out.regions)["hidden"])
    assert all(hidden)
    power = summary["standard_power"]["tau_es"]
    assert 0 <= power["down"] <= 1 and 0 <= power["up"] <= 1 and power["up_unc"] >= 0


def test_universal_attacks_are_fitted_on_one_half_and_judged_on_the_other(setup):
    cfg, s, model, calibration, _ = setup
    cfg = dataclasses.replace(cfg, attacks={**cfg.attacks, "adv": {"type": "adversarial_network", "epochs": 1,
                                                                   "hidden": [8]}})
    out = run_attack(model, s, cfg, "m", "tau_es", "adv")
    keys = event_keys(s, out.rows)
    half = fitting_half(keys)
    assert 0.4 < half.mean() < 0.6
    # the half an event is in depends on its key only, not on which other events are attacked
    assert np.array_equal(fitting_half(keys[::3]), half[::3])
    assert np.array_equal(out.eval_weights, np.where(half, 0.0, 2.0 * s.weight[out.rows]))
    assert np.array_equal(evaluation_weights(s.weight[out.rows], None), s.weight[out.rows])
    # the learned mapping moves every event, both halves and every region
    moved = (out.x_adv != s.X[NOMINAL][out.rows]).any(axis=1)
    assert moved[half].mean() > 0.9 and moved[~half].mean() > 0.9
    assert out.metrics["n_events_judged"] == int((~half).sum())


def test_a_shift_that_changes_an_integer_feature_is_no_continuous_direction():
    from hsaudit.attack_stage import continuous_variant

    # features: n_jets, jet1_pt, jet1_eta; event 0 gains a jet in the variant, event 1 only scales
    nominal = np.array([[0, 0.0, 0.0], [1, 40.0, 1.2]], dtype=np.float32)
    variant = np.array([[1, 31.0, 1.7], [1, 42.0, 1.2]], dtype=np.float32)
    out = continuous_variant(nominal, variant, [0])
    assert out[0].tolist() == nominal[0].tolist()   # no box between "no jet" and "a 31 GeV jet"
    assert out[1].tolist() == variant[1].tolist()
    assert np.array_equal(variant[0], np.array([1, 31.0, 1.7], dtype=np.float32))  # inputs untouched
    assert np.array_equal(continuous_variant(nominal, variant, []), variant)
