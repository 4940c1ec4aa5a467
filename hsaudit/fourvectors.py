"""Four-vector arithmetic on numpy arrays: the one home of the project's kinematics.

Component arrays ``(px, py, pz, e)`` in GeV, angles in radians; every function works
element-wise on arrays of any shape. The demo generator (hsaudit/generate.py) and the
selection's features (hsaudit/selection/features.py) both compute through these functions,
so a generated event and its selected features use the same formulas.

The ``vector`` library (Schreiner, Pivarski et al., scikit-hep/vector) computes the same
quantities, but with other, equally valid, operation orders (the energy from p = pt cosh(eta),
for instance) that differ in the last bits; the audit's outputs are compared number for number
between versions, so these formulas stay as they are. Standard relativistic kinematics,
e.g. Particle Data Group, "Kinematics", Review of Particle Physics (2024), section 49.
"""

from __future__ import annotations

import numpy as np


def from_pt_eta_phi_m(pt, eta, phi, mass):
    """(px, py, pz, e) of objects given by pt, pseudorapidity, azimuth and mass."""
    px = pt * np.cos(phi)
    py = pt * np.sin(phi)
    pz = pt * np.sinh(eta)
    e = np.sqrt(px * px + py * py + pz * pz + mass * mass)
    return px, py, pz, e


def from_mt_rapidity(mass, px, py, y):
    """(px, py, pz, e) of an object of given mass, transverse momentum and rapidity y."""
    mt = np.sqrt(mass * mass + px * px + py * py)
    return px, py, mt * np.sinh(y), mt * np.cosh(y)


def add(a, b):
    """The component-wise sum of two four-vectors."""
    return tuple(x + y for x, y in zip(a, b))


def mass(px, py, pz, e):
    """Invariant mass; 0 where rounding makes the squared mass negative."""
    return np.sqrt(np.maximum(e * e - px * px - py * py - pz * pz, 0.0))


def pt(px, py):
    return np.hypot(px, py)


def eta(px, py, pz, pt_floor: float = 1e-9):
    """Pseudorapidity asinh(pz / pt), pt floored at ``pt_floor`` (finite along the beam)."""
    return np.arcsinh(pz / np.maximum(pt(px, py), pt_floor))


def phi(px, py):
    return np.arctan2(py, px)


def delta_phi(phi1, phi2):
    """phi1 - phi2 wrapped into [-pi, pi)."""
    return (np.asarray(phi1) - np.asarray(phi2) + np.pi) % (2 * np.pi) - np.pi


def delta_r(eta1, phi1, eta2, phi2):
    """Distance in the (eta, phi) plane."""
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), delta_phi(phi1, phi2))


def transverse_mass(pt1, phi1, pt2, phi2):
    """sqrt(2 pt1 pt2 (1 - cos Delta phi)), e.g. of a lepton and the missing momentum."""
    return np.sqrt(np.maximum(2.0 * pt1 * pt2 * (1.0 - np.cos(delta_phi(phi1, phi2))), 0.0))
