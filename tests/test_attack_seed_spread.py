"""The seed part of an attack impact's uncertainty: which attacks are stochastic, the spread of
a deterministic attack is exactly 0, a stochastic attack's spread over seeds is positive and
equals the standard deviation computed directly from separately measured impacts, and the
audit's attack entries add it in quadrature to the MC statistics."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from hsaudit.attack_stage import attack_is_stochastic, run_attack, seed_matters
from hsaudit.audit_stage import attack_entry, attack_seed_part, with_seed_part
from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.ml.evaluation import outputs_per_variant, predict
from hsaudit.null_stage import attack_seed_spread, attack_seeds, seed_spread_attacks, spread_of
from hsaudit.seeds import derive_seed
from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty
from synthetic_analysis import FEATURES, synthetic_sample

ATTACKS = {
    "random": {"type": "random"},
    "fgsm": {"type": "fgsm", "eps": 0.002, "iterations": 3},
    "pgd_fixed": {"type": "pgd", "steps": 3, "random_start": False},
    "pgd": {"type": "pgd", "steps": 3, "random_start": True},
    "nuisance_pgd": {"type": "nuisance_pgd", "k": 1.0, "steps": 3},
    "conservattack": {"type": "conservattack", "iterations": 2},
    "adv": {"type": "adversarial_network", "epochs": 1, "hidden": [8]},
    "field": {"type": "nuisance_field", "inputs": ["tau_pt"], "knots": 4, "steps": 5, "train_batch_size": 32},
}


def synthetic(n=2500, seed=3, attack_seeds=2):
    """The shared synthetic analysis (tests/synthetic_analysis.py, one shift systematic
    tau_es) with every attack type configured; fitted with 4 bins."""
    sample, model = synthetic_sample(n, seed)
    base = load_config("ci")
    cfg = dataclasses.replace(
        base, features=[dataclasses.replace(base.features[0], name=f) for f in FEATURES],
        systematics={"tau_es": base.systematics["tau_es"]}, attacks=ATTACKS,
        audit={**base.audit, "attacks": list(ATTACKS), "systematics": ["tau_es"], "attack_seeds": attack_seeds},
        fit={**base.fit, "n_bins": 4}, seed=5)
    return cfg, sample, model


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    return synthetic()


def variant_outputs(model, sample) -> dict:
    return outputs_per_variant(model, {v: sample.X[v] for v in sample.variants}, invalid="nan")


def direct_bias(model, sample, cfg, outcome) -> float:
    """The central signed bias of one attack result, measured on its own (one fit per call)."""
    outputs = variant_outputs(model, sample)
    events = {"a": AttackedEvents(rows=outcome.rows, attacked_outputs=predict(model, outcome.x_adv),
                                  regions_after=outcome.regions, eval_weights=outcome.eval_weights)}
    return float(impacts_with_uncertainty(outputs, sample, cfg, events, n_replicas=0).attack_bias["a"][0])


def test_stochastic_attacks_are_the_seeded_ones(setup):
    cfg, _, _ = setup
    expected = {"random": True, "fgsm": False, "pgd_fixed": False, "pgd": True, "nuisance_pgd": False,
                "conservattack": False, "adv": True, "field": True}
    assert {a: attack_is_stochastic(cfg, a) for a in ATTACKS} == expected
    # the random control gets its spread from the null ensemble, not from reruns
    assert seed_spread_attacks(cfg) == ["pgd", "adv", "field"]
    assert seed_spread_attacks(dataclasses.replace(cfg, audit={**cfg.audit, "attack_seeds": 0})) == []


@pytest.mark.parametrize("attack", ["fgsm", "pgd_fixed", "nuisance_pgd", "conservattack"])
def test_deterministic_attack_has_exactly_zero_spread(setup, attack):
    cfg, sample, model = setup
    assert not seed_matters(cfg, sample, "tau_es", attack)
    result = attack_seed_spread(model, sample, cfg, "m", "tau_es", attack, variant_outputs(model, sample))
    assert result["n_seeds"] == 0 and result["sd"] == 0.0 and result["sd_unc"] == 0.0
    assert result["stochastic"] is False
    # the classification holds: other seeds give the same events and the same impact, and
    # the attack moved something (a zero spread is not a zero attack)
    outs = [run_attack(model, sample, cfg, "m", "tau_es", attack, seed=s) for s in (1, 2, 12345)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o.x_adv, outs[0].x_adv)
    biases = [direct_bias(model, sample, cfg, o) for o in outs]
    assert spread_of(biases) == (0.0, 0.0) and abs(biases[0]) > 0


def test_nuisance_field_fitted_in_one_batch_is_not_rerun(setup):
    cfg, sample, model = setup
    # "field" has train_batch_size 32 (random minibatches); with a batch larger than its fit
    # sample every step uses every event, so the seed does not matter and nothing is rerun
    assert seed_matters(cfg, sample, "tau_es", "field")
    one_batch = dataclasses.replace(cfg, attacks={**cfg.attacks, "field": {**ATTACKS["field"],
                                                                             "train_batch_size": 100000}})
    assert attack_is_stochastic(one_batch, "field") and not seed_matters(one_batch, sample, "tau_es", "field")
    result = attack_seed_spread(model, sample, one_batch, "m", "tau_es", "field", variant_outputs(model, sample))
    assert result["n_seeds"] == 0 and result["sd"] == 0.0 and result["stochastic"] is False
    # and indeed two seeds give the same events
    a = run_attack(model, sample, one_batch, "m", "tau_es", "field", seed=1)
    b = run_attack(model, sample, one_batch, "m", "tau_es", "field", seed=2)
    np.testing.assert_array_equal(a.x_adv, b.x_adv)


@pytest.mark.parametrize("attack", ["pgd", "adv", "random"])
def test_stochastic_attack_spread_matches_a_direct_computation(setup, attack):
    cfg, sample, model = setup
    reported = run_attack(model, sample, cfg, "m", "tau_es", attack)
    result = attack_seed_spread(model, sample, cfg, "m", "tau_es", attack, variant_outputs(model, sample), reported=(
        reported.rows, predict(model, reported.x_adv), reported.regions, reported.eval_weights))
    # directly: each seed's attack rerun and measured alone
    biases = [direct_bias(model, sample, cfg, reported)]
    for k in range(2):
        seed = derive_seed(cfg.seed, "attack-seed", "m", "tau_es", attack, k)
        assert result["seeds"][k]["seed"] == seed
        out = run_attack(model, sample, cfg, "m", "tau_es", attack, seed=seed)
        if attack == "adv":
            # a universal attack is judged on the half it was not fitted on, in every seed
            assert (out.eval_weights == 0).mean() == pytest.approx(0.5, abs=0.1)
        biases.append(direct_bias(model, sample, cfg, out))
    np.testing.assert_allclose(result["biases_mu"], biases, rtol=1e-9, atol=1e-12)
    assert result["sd"] > 0
    assert result["sd"] == pytest.approx(np.std(biases, ddof=1), rel=1e-9)
    assert result["sd_unc"] == pytest.approx(result["sd"] / math.sqrt(2 * 2), rel=1e-9)


def test_attack_entry_adds_the_seed_part_in_quadrature():
    files = type("F", (), {"validation": {"hidden": True, "power": 0.2, "power_unc": 0.01, "published": [],
                                          "visibility": {}}, "result": {"metrics": {}}})()
    impact = {"value": 0.3, "mc_unc": 0.04, "bias": 0.3}
    det = attack_entry(files, impact, None, None)
    assert det["impact_mu_unc"] == pytest.approx(0.04) and det["attack_seeds"] == 0
    assert det["impact_parts"] == {"mc_stat": 0.04, "attack_seeds": 0.0} and det["stochastic"] is False
    sto = attack_entry(files, impact, {"mean": 0.29, "se": 0.01}, {"sd": 0.03, "sd_unc": 0.01, "n_seeds": 4})
    assert sto["impact_mu_unc"] == pytest.approx(0.05) and sto["attack_seeds"] == 4 and sto["stochastic"]
    assert sto["impact_parts"] == {"mc_stat": 0.04, "attack_seeds": 0.03, "toys": 0.01}
    # the paired difference's uncertainty gets the same part; none stays none
    assert with_seed_part(0.04, {"sd": 0.03}) == pytest.approx(0.05)
    assert with_seed_part(0.04, None) == 0.04 and with_seed_part(None, {"sd": 0.03}) is None


def test_seed_part_sources(setup):
    cfg, _, _ = setup
    assert attack_seed_part(cfg, "fgsm", None, None) is None
    spread = {"sd": 0.02, "sd_unc": 0.005, "n_seeds": 3}
    assert attack_seed_part(cfg, "pgd", spread, None)["sd"] == 0.02
    control = {"seeds": [{"bias_mu": b} for b in (0.01, -0.02, 0.03, 0.0)]}
    part = attack_seed_part(cfg, "random", None, control)
    assert part["sd"] == pytest.approx(np.std([0.01, -0.02, 0.03, 0.0], ddof=1)) and part["n_seeds"] == 4
    # stochastic but not rerun (attack_seeds 0): reported as such, no part
    assert attack_seed_part(cfg, "pgd", None, None) == {"sd": 0.0, "sd_unc": 0.0, "n_seeds": 0, "stochastic": True}


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_attack_seeds_setting_is_checked(setup, value):
    cfg, _, _ = setup
    with pytest.raises(AuditError, match=r"audit\.attack_seeds"):
        attack_seeds(dataclasses.replace(cfg, audit={**cfg.audit, "attack_seeds": value}))


def test_spread_of_edge_cases():
    assert spread_of([0.2]) == (0.0, 0.0)
    with pytest.raises(AuditError, match="NaN"):
        spread_of([0.1, float("nan")])
