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
