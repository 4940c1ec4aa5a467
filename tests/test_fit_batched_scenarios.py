"""Batched pseudo-experiments: every scenario of a model fitted together gives the same
numbers as one scenario at a time, whatever the batching; the stage function (load, build,
fit, write) equals the per-scenario path, attack scenarios included."""

import json

import numpy as np
import pytest
import torch

from hsaudit.attack_files import AttackedOutputs
from hsaudit.errors import AuditError
from hsaudit.fit_stage import attacked_truth, pseudo_experiment_stage
from hsaudit.stats import Model, ToyResult, run_pseudo_experiments
from hsaudit.stats.toys import run_scenarios

ARRAYS = ToyResult._ARRAYS


def small_spec():
    """Two channels, one of them a sparse control region (few events, large MC
    uncertainty), lumi, normsys, histosys and staterror: the structure of the audit's models."""
    return {
        "poi": "mu", "lumi": {"sigma": 0.016}, "parameters": {"mu": {"bounds": [-5.0, 10.0]}},
        "channels": {
            "SR": {"samples": {
                "sig": {"nominal": [3.0, 8.0, 15.0], "normfactors": ["mu"], "lumi": True},
                "bkg": {"nominal": [120.0, 60.0, 20.0], "lumi": True, "staterror": [6.0, 5.0, 4.0],
                        "normsys": {"bkg_norm": {"lo": 0.9, "hi": 1.1}},
                        "histosys": {"shape": {"up": [125.0, 59.0, 18.0], "down": [116.0, 61.0, 21.5]}}}}},
            "CR": {"samples": {
                "sig": {"nominal": [0.2], "normfactors": ["mu"], "lumi": True},
                "bkg": {"nominal": [4.0], "lumi": True, "staterror": [2.2],
                        "normsys": {"bkg_norm": {"lo": 0.9, "hi": 1.1}}}}},
        },
    }


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def _truths(model):
    nominal = model.expected_main()
    rng = np.random.default_rng(3)
    return {"nominal": nominal, "shape_up": nominal * np.r_[1.04, 1.0, 0.95, 1.0],
            "shape_down": nominal * np.r_[0.97, 1.01, 1.06, 0.9],
            "attack/x/y": nominal * rng.uniform(0.9, 1.1, size=nominal.shape)}


def _same(a: ToyResult, b: ToyResult):
    for k in ARRAYS:
        x, y = getattr(a, k), getattr(b, k)
        assert x.shape == y.shape, k
        assert np.array_equal(x, y, equal_nan=True), (k, np.nanmax(np.abs(x.astype(float) - y.astype(float))))
    assert (a.mu_true, a.seed, a.par_names) == (b.mu_true, b.seed, b.par_names)


@pytest.mark.parametrize("max_toys_per_call", [1 << 18, 70, 1])
def test_batched_scenarios_equal_one_scenario_at_a_time(max_toys_per_call):
    model = Model(small_spec())
    truths = _truths(model)
    batched = run_scenarios(model, truths, 60, seed=11, mu_true=1.0, first_toy=20, significance=["nominal"],
                            max_toys_per_call=max_toys_per_call, max_iter=300)
    assert list(batched) == list(truths)
    for name, truth in truths.items():
        alone = run_pseudo_experiments(model, truth, 60, 11, mu_true=1.0, first_toy=20, max_iter=300,
                                       significance=name == "nominal")
        _same(batched[name], alone)
    assert np.isfinite(batched["nominal"].q0).mean() > 0.9
    assert np.isnan(batched["shape_up"].q0).all()
    # the scenarios really differ (a test that compared one scenario with itself would pass too)
    assert not np.array_equal(batched["nominal"].mu_hat, batched["shape_up"].mu_hat)
    assert batched["nominal"].converged.mean() > 0.95


def test_per_scenario_seeds():
    model = Model(small_spec())
    truths = _truths(model)
    seeds = {name: 100 + i for i, name in enumerate(truths)}
    batched = run_scenarios(model, truths, 30, seed=seeds)
    for name, truth in truths.items():
        _same(batched[name], run_pseudo_experiments(model, truth, 30, seeds[name], significance=False))


def test_bad_arguments_are_refused():
    model = Model(small_spec())
    truths = _truths(model)
    with pytest.raises(AuditError, match="no scenarios"):
        run_scenarios(model, {}, 10, seed=1)
    with pytest.raises(AuditError, match="unknown scenario"):
        run_scenarios(model, truths, 10, seed=1, significance=["nope"])
    with pytest.raises(AuditError, match="no toy seed"):
        run_scenarios(model, truths, 10, seed={"nominal": 1})
    with pytest.raises(AuditError, match="max_toys_per_call"):
        run_scenarios(model, truths, 10, seed=1, max_toys_per_call=0)
    with pytest.raises(AuditError, match="truth yields"):
        run_scenarios(model, {"nominal": truths["nominal"][:-1]}, 10, seed=1)


def _stage_inputs(tmp_path):
    """A likelihood file, its row table and one attack's outputs, as the tasks write them."""
    model = Model(small_spec())
    nominal = model.channel_data(model.expected_main())
    lk = {"spec": small_spec(), "mu_true": 1.0, "channels": ["SR", "CR"],
          "edges": {"SR": [0.0, 0.4, 0.7, 1.0], "CR": [0.0, 1.0]},
          "truths": {"nominal": {k: v.tolist() for k, v in nominal.items()},
                     "shape_up": {k: (v * 1.03).tolist() for k, v in nominal.items()}}}
    lk_path = tmp_path / "likelihood.json"
    lk_path.write_text(json.dumps(lk))
    rng = np.random.default_rng(5)
    n = 400
    rows_info = {"weight": rng.uniform(0.1, 0.5, n), "is_signal": rng.uniform(size=n) < 0.2,
                 "channels": np.stack([rng.uniform(size=n) < 0.8, rng.uniform(size=n) < 0.1]),
                 "output": rng.uniform(size=n), "dataset": rng.integers(0, 2, n)}
    rows_path = tmp_path / "rows.npz"
    np.savez(rows_path, **rows_info)
    rows = np.sort(rng.choice(n, 150, replace=False))
    attacked = np.clip(rows_info["output"][rows] + rng.normal(0.0, 0.1, len(rows)), 0.0, 1.0)
    in_after = np.stack([rows_info["channels"][0][rows], rows_info["channels"][1][rows]])
    attack_path = tmp_path / "attack.npz"
    regions = {"SR": in_after[0], "CR": in_after[1]}
    AttackedOutputs(rows=rows, nominal=rows_info["output"][rows], attacked=attacked,
                    eval_weights=None, regions=regions).save(attack_path)
    truth = attacked_truth(lk, rows_info, rows, attacked, regions)
    return model, lk_path, rows_path, attack_path, lk, truth


def test_stage_writes_what_one_scenario_at_a_time_gives(tmp_path):
    model, lk_path, rows_path, attack_path, lk, attack_truth = _stage_inputs(tmp_path)
    outputs = {"nominal": tmp_path / "out" / "nominal.npz", "shape_up": tmp_path / "out" / "up.npz",
               "attack/tau_es/pgd": tmp_path / "out" / "attack.npz"}
    done = pseudo_experiment_stage(lk_path, outputs, n_toys=40, first_toy=0, seed=7, rows_path=rows_path,
                                   attack_paths={"attack/tau_es/pgd": attack_path}, max_iterations=300)
    assert done["scenarios"] == 3 and done["fits"] == 40 * 4  # the nominal scenario also fits mu = 0
    truths = {"nominal": lk["truths"]["nominal"], "shape_up": lk["truths"]["shape_up"],
              "attack/tau_es/pgd": attack_truth}
    for name, path in outputs.items():
        alone = run_pseudo_experiments(model, truths[name], 40, 7, mu_true=1.0, max_iter=300,
                                       significance=name == "nominal")
        _same(ToyResult.load(path), alone)
    # the attack moved the truth: its toys are not the nominal ones
    assert not np.array_equal(ToyResult.load(outputs["attack/tau_es/pgd"]).mu_hat,
                              ToyResult.load(outputs["nominal"]).mu_hat)


def test_stage_refuses_missing_inputs(tmp_path):
    _, lk_path, rows_path, _, _, _ = _stage_inputs(tmp_path)
    with pytest.raises(AuditError, match="no truth"):
        pseudo_experiment_stage(lk_path, {"jet_es_up": tmp_path / "a.npz"}, n_toys=5, first_toy=0, seed=1)
    with pytest.raises(AuditError, match="row table"):
        pseudo_experiment_stage(lk_path, {"attack/a/b": tmp_path / "a.npz"}, n_toys=5, first_toy=0, seed=1)
    with pytest.raises(AuditError, match="no attack outputs"):
        pseudo_experiment_stage(lk_path, {"attack/a/b": tmp_path / "a.npz"}, n_toys=5, first_toy=0, seed=1,
                                rows_path=rows_path)
