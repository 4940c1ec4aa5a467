"""The scaling benchmark's arithmetic (benchmarks/scaling.py) on synthetic timings: the
power-law fit, the extrapolation to the demo's event count, the dominant stage, the output
line, and the scaled configuration. Nothing here is timed."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scaling():
    spec = importlib.util.spec_from_file_location("scaling_benchmark", ROOT / "benchmarks" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIZES = [20_000, 40_000, 80_000, 160_000]


def synthetic(a: float, p: float, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [a * n ** p * math.exp(noise * rng.standard_normal()) for n in SIZES]


def measurements(costs: list[float], memory: float = 100.0) -> list[dict]:
    return [{"wall_s": 2.0 * c, "cpu_s": c, "peak_rss_mib": memory + 300.0, "stage_rss_mib": memory} for c in costs]


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_power_law_fit_recovers_exponent_and_prefactor(scaling, p):
    fit = scaling.fit_power_law(SIZES, synthetic(3e-4, p))
    assert fit["exponent"] == pytest.approx(p, abs=1e-9)
    assert fit["prefactor"] == pytest.approx(3e-4, rel=1e-6)
    assert fit["r2"] == pytest.approx(1.0)


def test_power_law_fit_is_least_squares_on_log_log(scaling):
    costs = synthetic(1e-3, 1.0, noise=0.2, seed=3)
    fit = scaling.fit_power_law(SIZES, costs)
    p, log_a = np.polyfit(np.log(SIZES), np.log(costs), 1)
    assert fit["exponent"] == pytest.approx(p)
    assert math.log(fit["prefactor"]) == pytest.approx(log_a)
    assert 0.0 < fit["r2"] < 1.0


def test_power_law_fit_needs_two_sizes(scaling):
    with pytest.raises(ValueError):
        scaling.fit_power_law([1000], [1.0])
    with pytest.raises(ValueError):
        scaling.fit_power_law([1000, 1000], [1.0, 2.0])


def test_zero_cost_is_clamped_not_nan(scaling):
    fit = scaling.fit_power_law(SIZES, [0.0, 0.0, 1e-3, 2e-3])
    assert np.isfinite(fit["exponent"])


def test_summary_names_dominant_stage_from_extrapolation(scaling):
    # "fast" is the most expensive stage at the measured sizes, but "steep" grows as N^1.5
    # and overtakes it well before 10x the demo's events
    timings = {"fast": measurements(synthetic(5.0, 0.2)),
               "linear": measurements(synthetic(1e-5, 1.0)),
               "steep": measurements(synthetic(1e-8, 1.5))}
    demo = 770_000
    s = scaling.summarise(SIZES, timings, demo)
    assert s["cost"] == "cpu_s"
    assert s["fits"]["steep"]["exponent"] == pytest.approx(1.5)
    assert s["largest_exponent"] == pytest.approx(1.5)
    assert s["largest_exponent_stage"] == "steep"
    assert s["exponent_last_doubling"]["linear"] == pytest.approx(1.0)
    pred = s["predicted_cost_s"]
    assert pred["10x_demo"]["linear"] == pytest.approx(1e-5 * 10 * demo, rel=1e-6)
    assert pred["100x_demo"]["steep"] == pytest.approx(1e-8 * (100 * demo) ** 1.5, rel=1e-6)
    # at the measured sizes "fast" costs most; at 10x and 100x the demo "steep" does
    assert max(timings, key=lambda k: timings[k][-1]["cpu_s"]) == "fast"
    assert s["dominant_stage"]["10x_demo"] == "steep"
    assert s["dominant_stage"]["100x_demo"] == "steep"
    assert 0.5 < s["dominant_share"]["100x_demo"] <= 1.0
    # the wall-time fits are fitted separately (here wall = 2 x cpu: same exponents)
    assert s["fits_wall"]["linear"]["exponent"] == pytest.approx(1.0)
    assert s["fits_wall"]["linear"]["prefactor"] == pytest.approx(2e-5, rel=1e-6)


def test_summary_can_use_wall_time(scaling):
    timings = {"a": measurements(synthetic(1e-5, 1.0)), "b": measurements(synthetic(1e-3, 0.5))}
    s = scaling.summarise(SIZES, timings, 770_000, cost="wall_s")
    assert s["cost"] == "wall_s"
    assert s["predicted_cost_s"]["10x_demo"]["a"] == pytest.approx(2e-5 * 7_700_000, rel=1e-6)


def test_memory_exponent(scaling):
    timings = {"a": [{**m, "stage_rss_mib": 0.001 * n} for m, n in zip(measurements(synthetic(1e-5, 1.0)), SIZES)],
               "b": measurements(synthetic(1e-5, 1.0), memory=50.0)}
    s = scaling.summarise(SIZES, timings, 770_000)
    assert s["fits_memory"]["a"]["exponent"] == pytest.approx(1.0)
    assert s["fits_memory"]["b"]["exponent"] == pytest.approx(0.0, abs=1e-9)
    assert s["largest_memory_exponent"] == pytest.approx(1.0)


def test_result_line_is_the_contract(scaling):
    timings = {"select": measurements(synthetic(2e-5, 1.0)), "toys": measurements(synthetic(5.0, 0.1)),
               "validate": measurements(synthetic(1e-5, 1.1))}
    s = scaling.summarise(SIZES, timings, 770_000)
    s["failed_stages"] = []
    line = scaling.result_line(s)
    assert "\n" not in line
    m = re.search(r"largest_exponent=(\S+) dominant_stage=(\S+)", line)
    assert m, line
    assert float(m.group(1)) == pytest.approx(1.1, abs=1e-3)
    assert m.group(2) == s["dominant_stage"]["10x_demo"] == "validate"
    pairs = dict(kv.split("=", 1) for kv in line.split())
    assert pairs["failed_stages"] == "none"
    assert pairs["largest_exponent_stage"] == "validate"
    s["failed_stages"] = ["report", "toys"]
    assert "failed_stages=report,toys" in scaling.result_line(s)


def test_scaled_config_keeps_proportions_and_applies_overrides(scaling):
    raw = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    base = scaling.generated_events(raw)
    out = scaling.scaled_config(raw, 4 * base, scaling.QUICK_OVERRIDES)
    assert scaling.generated_events(out) == pytest.approx(4 * base, rel=1e-3)
    for name, ds in raw["datasets"].items():
        assert out["datasets"][name]["generate"]["n_events"] == 4 * ds["generate"]["n_events"]
        assert out["datasets"][name]["generate"]["n_files"] == ds["generate"]["n_files"]
    assert list(out["models"]) == scaling.QUICK_OVERRIDES["models"]
    assert out["fit"]["n_toys"] == scaling.QUICK_OVERRIDES["fit.n_toys"]
    assert out["audit"]["null_seeds"] == scaling.QUICK_OVERRIDES["audit.null_seeds"]
    # the base config is not modified
    assert raw["fit"]["n_toys"] == yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())["fit"]["n_toys"]
    assert len(raw["models"]) == 2


def test_scaled_config_is_a_valid_config(scaling, tmp_path):
    from hsaudit.config import load_config

    raw = yaml.safe_load((ROOT / "config" / "ci.yaml").read_text())
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(scaling.scaled_config(raw, 40_000, scaling.QUICK_OVERRIDES)))
    cfg = load_config(path)
    assert sum(ds.generate["n_events"] for ds in cfg.datasets.values()) == pytest.approx(40_000, rel=1e-3)


def test_demo_event_count(scaling):
    raw = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    assert scaling.generated_events(raw) == sum(ds["generate"]["n_events"] for ds in raw["datasets"].values())


def test_affine_cross_check(scaling):
    # a large fixed overhead plus a linear part: the power law looks sublinear, the affine
    # fit recovers both parts exactly
    costs = [30.0 + 1e-4 * n for n in SIZES]
    s = scaling.summarise(SIZES, {"a": measurements(costs), "b": measurements(synthetic(1e-5, 1.0))}, 770_000)
    assert s["fits"]["a"]["exponent"] < 0.5
    assert s["fits_affine"]["a"]["fixed_s"] == pytest.approx(30.0)
    assert s["fits_affine"]["a"]["per_event_s"] == pytest.approx(1e-4)
    assert s["predicted_cost_affine_s"]["100x_demo"]["a"] == pytest.approx(30.0 + 1e-4 * 77_000_000)
    assert s["dominant_stage_affine"]["100x_demo"] == "a"
