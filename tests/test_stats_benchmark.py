"""Smoke test of benchmarks/fits.py: its hand-written NLL is the model's, and the
contract line is printed (tiny sizes; timings are never asserted)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("pyhf")
pytest.importorskip("iminuit")

from hsaudit.stats import Model, generate_toys, nll  # noqa: E402

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "fits.py"


def load():
    # as when run as a script: the benchmark's own folder is importable (benchmarks/machine.py)
    if str(BENCH.parent) not in sys.path:
        sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_fits", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_hand_written_nll_equals_the_model_up_to_a_constant():
    torch.set_num_threads(1)
    bench = load()
    spec = bench.benchmark_spec()
    model = Model(spec)
    assert model.n_pars == 23 and model.n_bins == 20
    main, aux = generate_toys(model, model.expected_main(), 1, seed=3)
    rng = np.random.default_rng(0)
    pts = model.init + rng.normal(0, 0.05, (10, model.n_pars)) * np.r_[10, 30, 30, np.ones(20)]
    f = bench.HandWrittenNLL(spec, main[0], aux[0])
    diff = np.array([f(p) for p in pts]) - nll(model, pts, np.repeat(main, 10, 0), np.repeat(aux, 10, 0))
    assert np.ptp(diff) < 1e-8


def test_quick_contract_line(tmp_path, capsys):
    out = load().main(["--quick", "--toys", "200", "--pyhf-toys", "2", "--pyhf-tight-toys", "1",
                       "--iminuit-toys", "3", "--scenarios", "3", "--stage-toys", "20",
                       "--out", str(tmp_path / "fits.json")])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("speedup_vs_pyhf=") and "speedup_vs_iminuit=" in last
    values = dict(kv.split("=") for kv in last.split())
    assert {"max_abs_mu_diff", "stage_efficiency", "pyhf_self_diff"} <= set(values)
    assert all(np.isfinite(float(v)) for v in values.values())
    # the tight pyhf agrees with itself and with the engine far below pyhf's default stopping rule
    assert out["pyhf_self_diff"] < 1e-6 and out["max_abs_mu_diff"] < 1e-5
    # the stage wrote what the bare engine fits, number for number, and counted every fit
    stage = out["stage"]
    assert stage["stage_equals_engine"] and stage["fits"] == 20 * (3 + 1) and stage["stage_efficiency"] > 0
    assert (tmp_path / "fits.json").exists()
