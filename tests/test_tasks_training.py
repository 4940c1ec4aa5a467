"""TrainModel / EvaluateModel through law on the tiny CI config."""

import json

import numpy as np
import pytest

from law_cli import run_law


@pytest.fixture(scope="module")
def evaluated(law_data):
    res = run_law(law_data, "EvaluateModel", "--config", "ci", "--version", "t", "--workers", "2")
    assert res.returncode == 0, res.output[-3000:]
    return law_data


def test_every_model_is_trained_and_evaluated(evaluated):
    evals = sorted((evaluated / "EvaluateModel" / "ci" / "t").rglob("evaluation.json"))
    assert {p.parts[-3] for p in evals} == {"nominal", "penalty_tes"}
    for path in evals:
        ev = json.loads(path.read_text())
        assert 0.5 < ev["auc"] < 1.0
        sig = ev["significance_curve"]
        assert np.nanmax(np.asarray(sig["rel_significance"], dtype=float)) >= 1.0
        hists = ev["output_histograms"]["background"]
        assert set(hists) == {"signal", "control_same_sign", "control_high_mt"}
        assert {"nominal", "tau_es_up", "tau_es_down"} <= set(hists["signal"])
        assert set(ev["background_spread_signal_region"]) >= {"tau_es", "jet_es", "muon_es", "met_uncl"}
    # the NN outputs of every variant, saved once for every later stage, one column per variant
    from hsaudit.nn_outputs import NNOutputs

    for path in evals:
        outputs = NNOutputs.load(path.parent / "nn_outputs.npz")
        assert {"nominal", "tau_es_up", "tau_es_down"} <= set(outputs.columns)
        nominal = outputs["nominal"]
        assert nominal.dtype == np.float32 and np.isfinite(nominal).mean() > 0.9
        assert np.all((nominal[np.isfinite(nominal)] >= 0) & (nominal[np.isfinite(nominal)] <= 1))
    models = sorted((evaluated / "TrainModel" / "ci" / "t").rglob("model.json"))
    assert len(models) == 2
    for m in models:
        assert (m.parent / "weights.pt").is_file() and (m.parent / "model.torchscript.pt").is_file()
        history = json.loads((m.parent.parent / "training.json").read_text())["history"]
        assert len(history) >= 1


def test_training_is_deterministic(evaluated, tmp_path):
    """Same seed, same numbers: a fresh training in another DATA_PATH gives identical metrics."""
    import shutil

    shutil.copytree(evaluated / "GenerateEvents", tmp_path / "GenerateEvents")
    shutil.copytree(evaluated / "SelectEvents", tmp_path / "SelectEvents")
    shutil.copytree(evaluated / "MergeFeatures", tmp_path / "MergeFeatures")
    res = run_law(tmp_path, "TrainModel", "--config", "ci", "--version", "t", "--branch", "0")
    assert res.returncode == 0, res.output[-2000:]
    a = next((evaluated / "TrainModel").rglob("nominal/*/training.json"))
    b = next((tmp_path / "TrainModel").rglob("nominal/*/training.json"))
    ha, hb = (json.loads(p.read_text())["history"] for p in (a, b))
    strip = lambda h: [{k: v for k, v in e.items()  # noqa: E731
                        if "time" not in k and "per_s" not in k and not k.endswith("seconds")} for e in h]
    assert strip(ha) == strip(hb)
