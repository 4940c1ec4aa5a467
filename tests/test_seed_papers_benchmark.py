"""The seed-papers benchmark's significance bookkeeping on tiny cases with known answers:
the optimal cut, s / sqrt(b) at it, and the relative degradation of a planted shift."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from hsaudit.errors import AuditError

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "seed_papers.py"


@pytest.fixture(scope="module")
def sp():
    spec = importlib.util.spec_from_file_location("seed_papers_benchmark", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sample():
    # 100 signal at output 0.9; background: 25 at 0.8, 75 at 0.2 (unit weights)
    p = np.r_[np.full(100, 0.9), np.full(25, 0.8), np.full(75, 0.2)]
    y = np.r_[np.ones(100), np.zeros(100)]
    return p, y, np.ones(200)


def test_optimal_cut_and_significance(sp):
    p, y, w = _sample()
    # cut 0.8: s = 100, b = 25 -> Z = 20; cut 0.2: s = 100, b = 100 -> 10; cut 0.9: no background
    cut, z = sp.optimal_cut(p, y, w, min_bkg_events=1)
    assert cut == pytest.approx(0.8) and z == pytest.approx(20.0)
    assert sp.significance_at_cut(p, y, w, 0.2) == pytest.approx(10.0)
    # weights count: doubling the signal weights doubles Z
    assert sp.optimal_cut(p, y, np.r_[np.full(100, 2.0), np.ones(100)], 1)[1] == pytest.approx(40.0)
    # too few background events above a cut -> that cut is not taken
    cut_strict, z_strict = sp.optimal_cut(p, y, w, min_bkg_events=30)
    assert cut_strict == pytest.approx(0.2) and z_strict == pytest.approx(10.0)


def test_planted_shift_gives_known_degradation(sp):
    p, y, w = _sample()
    pa = p.copy()
    pa[:40] = 0.5  # 40 of 100 signal events pushed below the cut 0.8: s 100 -> 60
    r = sp.relative_degradation(p, pa, y, w, min_bkg_events=1)
    assert r["cut"] == pytest.approx(0.8)
    assert r["z_nominal"] == pytest.approx(20.0) and r["z_attacked"] == pytest.approx(12.0)
    assert r["degradation"] == pytest.approx(0.4)
    # background pushed above the cut as well: b 25 -> 100, s 60 -> Z = 6, degradation 0.7
    pa[125:] = 0.85
    assert sp.relative_degradation(p, pa, y, w, 1)["degradation"] == pytest.approx(0.7)
    # no change -> no degradation
    assert sp.relative_degradation(p, p, y, w, 1)["degradation"] == pytest.approx(0.0, abs=1e-12)


def test_paper_envelope_by_kind(sp):
    x = np.array([[100.0, 1.0, 2.0], [50.0, -2.0, 0.0]], np.float32)
    env = sp.paper_envelope(x, ["momentum", "angle", "integer"], 0.01, ["pt", "eta", "n"])
    w = (env.upper - env.lower).numpy()
    np.testing.assert_allclose(w[:, 0], [2.0, 1.0], rtol=1e-5)  # relative +-1% of the momentum
    np.testing.assert_allclose(w[:, 1], [0.02, 0.02], rtol=1e-5)  # absolute +-0.01 for the angle
    assert (w[:, 2] == 0).all()  # integers fixed


def test_errors(sp, tmp_path):
    p, y, w = _sample()
    with pytest.raises(AuditError, match="background"):
        sp.optimal_cut(p, y, w, min_bkg_events=1000)
    with pytest.raises(AuditError, match="background above the cut"):
        sp.significance_at_cut(p, y, w, 0.95)
    with pytest.raises(AuditError, match="HIGGSML_DATA"):
        sp.higgsml_sample(tmp_path)


def test_bootstrap_degradation_known_spread(sp):
    # no attack: every resample has degradation 0 -> spread 0
    p, y, w = _sample()
    assert sp.bootstrap_degradation(p, p, y, w, 0.8, n_boot=50) == pytest.approx(0.0, abs=1e-12)
    # signal only, half of it pushed below the cut, b fixed: degradation = the moved fraction
    # of the resampled signal, whose spread is the binomial sqrt(f (1 - f) / n_signal)
    rng = np.random.default_rng(3)
    n = 4000
    y = np.r_[np.ones(n), np.zeros(n)]
    p0 = np.r_[np.full(n, 0.9), np.full(n, 0.95)]
    p1 = p0.copy()
    p1[:n][rng.random(n) < 0.5] = 0.1
    sd = sp.bootstrap_degradation(p0, p1, y, np.ones(2 * n), 0.85, n_boot=400, seed=1)
    assert sd == pytest.approx(np.sqrt(0.25 / n), rel=0.15)
    # same seed, same number; another seed, another draw
    assert sp.bootstrap_degradation(p0, p1, y, np.ones(2 * n), 0.85, n_boot=400, seed=1) == sd
    assert sp.bootstrap_degradation(p0, p1, y, np.ones(2 * n), 0.85, n_boot=400, seed=2) != sd
    r = sp.degradation_with_unc(p0, p1, y, np.ones(2 * n), 0.85)
    assert r["degradation"] == pytest.approx(1 - (p1[:n] >= 0.85).mean()) and r["degradation_unc"] > 0


def test_bootstrap_degradation_errors(sp):
    p, y, w = _sample()
    with pytest.raises(AuditError, match="too tight"):
        sp.bootstrap_degradation(p, p, y, w, 0.85)  # no background above 0.85 in any resample
    with pytest.raises(AuditError, match="one length"):
        sp.bootstrap_degradation(p, p[:-1], y, w, 0.5)


def test_first_order_dlogit_of_a_linear_model(sp):
    import torch
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight[:] = torch.tensor([[2.0, -3.0, 5.0]])

    class Linear(torch.nn.Module):  # logit z = 2 x0 - 3 x1 + 5 x2
        def __init__(self):
            super().__init__()
            self.lin = lin

        def logits(self, x):
            return self.lin(x)[:, 0]

    model = Linear()
    x = np.array([[10.0, 0.5, 4.0]], np.float32)
    # momentum: 10 x 0.001 x |2 x 10|; angle: 10 x 0.001 x |-3|; integer: fixed
    d = sp.first_order_dlogit(model, x, ["momentum", "angle", "integer"])
    assert d == pytest.approx([0.01 * 20 + 0.01 * 3])


def test_representations_keep_the_physics(sp):
    d = sp.demo_sample(500)
    m = [k == "momentum" for k in d["kinds"]]
    wide = sp.width_representation(d, 10)
    sd0, sd1 = d["x"].std(0), wide["x"].std(0)
    np.testing.assert_allclose(sd1, sd0, rtol=1e-4)  # the same spread ...
    np.testing.assert_allclose(wide["x"][:, m].mean(0), 10 * d["x"][:, m].mean(0), rtol=1e-4)  # ... 10x the mean
    np.testing.assert_array_equal(wide["x"][:, ~np.array(m)], d["x"][:, ~np.array(m)])
    steps0 = sp.step_in_widths(d["x"], d["kinds"], d["features"], np.ones(500))
    steps1 = sp.step_in_widths(wide["x"], d["kinds"], d["features"], np.ones(500))
    assert "n_jets" not in steps0  # integers do not move
    for f, kind in zip(d["features"], d["kinds"]):
        if kind == "momentum":
            assert steps1[f] == pytest.approx(10 * steps0[f], rel=1e-3)
        elif kind == "angle":
            assert steps1[f] == pytest.approx(steps0[f]) and steps0[f] == pytest.approx(0.01 / sd0[d["features"].index(f)], rel=1e-3)
    c = sp.constituent_representation(d, 4)
    assert c["x"].shape[1] == 3 * 4 + 3 and c["kinds"].count("momentum") == 12
    j = d["features"].index("tau_pt")
    parts = [c["features"].index(f"tau_pt_{i}") for i in range(4)]
    np.testing.assert_allclose(c["x"][:, parts].sum(1), d["x"][:, j], rtol=1e-5)  # the parts add up
    assert (c["x"][:, parts] > 0).all()
    assert sp.constituent_representation(d, 1)["x"].shape == d["x"].shape
    with pytest.raises(AuditError, match="n >= 1"):
        sp.constituent_representation(d, 0)


def test_demo_selection_sample_runs_the_demo_chain(sp):
    # a small demo (about 70,000 generated events) through generation, selection and merge
    d = sp.demo_selection_sample(70_000)
    import yaml
    cfg = yaml.safe_load((_PATH.parents[1] / "config" / "demo.yaml").read_text())
    assert d["features"] == [f if isinstance(f, str) else f["name"] for f in cfg["features"]]
    assert d["x"].shape == (len(d["y"]), len(d["features"])) and np.isfinite(d["x"]).all()
    assert set(np.unique(d["y"])) == {0.0, 1.0} and (d["w"] > 0).all()
    assert d["kinds"][d["features"].index("n_jets")] == "integer"
    assert d["kinds"][d["features"].index("tau_eta")] == "angle"
    assert d["kinds"][d["features"].index("tau_pt")] == "momentum"
    assert 60_000 <= d["generated_events"] <= 80_000
    with pytest.raises(AuditError, match="generate more events"):
        sp.demo_selection_sample(20_000)
