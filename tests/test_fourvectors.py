"""hsaudit.fourvectors: the project's one home of four-vector arithmetic."""

import numpy as np
import pytest

from hsaudit import fourvectors as fv


@pytest.fixture()
def objects():
    rng = np.random.default_rng(5)
    n = 2000
    return (rng.exponential(40.0, n) + 5.0, rng.uniform(-2.5, 2.5, n), rng.uniform(-np.pi, np.pi, n),
            rng.uniform(0.1, 2.0, n))


def test_round_trip_pt_eta_phi_mass(objects):
    pt, eta, phi, m = objects
    p = fv.from_pt_eta_phi_m(pt, eta, phi, m)
    np.testing.assert_allclose(fv.pt(p[0], p[1]), pt, rtol=1e-12)
    np.testing.assert_allclose(fv.eta(*p[:3]), eta, atol=1e-9)
    np.testing.assert_allclose(fv.phi(p[0], p[1]), phi, atol=1e-12)
    np.testing.assert_allclose(fv.mass(*p), m, rtol=1e-5)  # m << E: the subtraction loses digits


def test_rapidity_construction_has_the_given_mass(objects):
    pt, _, phi, m = objects
    y = np.linspace(-2.0, 2.0, len(pt))
    p = fv.from_mt_rapidity(m, pt * np.cos(phi), pt * np.sin(phi), y)
    np.testing.assert_allclose(fv.mass(*p), m, rtol=1e-5)
    np.testing.assert_allclose(0.5 * np.log((p[3] + p[2]) / (p[3] - p[2])), y, atol=1e-9)


def test_angles_and_transverse_mass():
    dphi = fv.delta_phi(np.array([3.0, -3.0, 0.5]), np.array([-3.0, 3.0, 0.5]))
    np.testing.assert_allclose(dphi, [6.0 - 2 * np.pi, 2 * np.pi - 6.0, 0.0], atol=1e-12)
    assert np.all((dphi >= -np.pi) & (dphi < np.pi))
    np.testing.assert_allclose(fv.delta_r(1.0, 0.0, 4.0, 4.0), np.hypot(3.0, 4.0 - 2 * np.pi))
    # back to back: mT = 2 sqrt(pt1 pt2); collinear: 0
    np.testing.assert_allclose(fv.transverse_mass(30.0, 0.0, 30.0, np.pi - 1e-12), 60.0)
    assert fv.transverse_mass(30.0, 1.0, 50.0, 1.0) == 0.0


def test_agrees_with_the_vector_library(objects):
    vector = pytest.importorskip("vector")
    pt, eta, phi, m = objects
    a = fv.from_pt_eta_phi_m(pt, eta, phi, m)
    b = fv.from_pt_eta_phi_m(pt[::-1], eta[::-1], phi[::-1], m[::-1])
    ours = fv.mass(*fv.add(a, b))
    va = vector.array({"pt": pt, "eta": eta, "phi": phi, "mass": m})
    vb = vector.array({"pt": pt[::-1], "eta": eta[::-1], "phi": phi[::-1], "mass": m[::-1]})
    np.testing.assert_allclose(ours, (va + vb).mass, rtol=1e-9)
    np.testing.assert_allclose(fv.delta_r(eta, phi, eta[::-1], phi[::-1]), va.deltaR(vb), rtol=1e-12)
