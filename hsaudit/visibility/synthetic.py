"""A small synthetic analysis for the tests and the benchmark of the data-visibility tests.

Two visible objects (a "tau" and a "lepton") with transverse momenta, pseudorapidities and an
azimuthal difference, jets, and derived quantities recomputed from them (visible mass, a
MET-like quantity, a transverse mass, the scalar sum of momenta). A systematic energy scale
multiplies every energy by (1 + scale * k) for k sigma and the derived features are recomputed,
so the shifted events also migrate across the selection and region cuts (as a real energy
scale does). Three regions: a signal region in the visible mass window and two control regions
below and above it. ``nn_score`` is a fixed logistic function of standardised features, a
stand-in for a trained classifier.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ENERGY_FEATURES = ("tau_pt", "lep_pt", "jet_pt")


@dataclass
class SyntheticAnalysis:
    base: dict                  # generator-level inputs per event
    weights: np.ndarray
    feature_names: list
    scale: float = 0.03
    control_regions: tuple = ("cr_low", "cr_high")

    def features(self, k: float = 0.0) -> np.ndarray:
        """(N, F) features with every energy scaled by (1 + scale * k)."""
        b, f = self.base, 1.0 + self.scale * np.asarray(k, dtype=np.float64)
        tau, lep, jet = b["tau_pt"] * f, b["lep_pt"] * f, b["jet_pt"] * f
        m_vis = np.sqrt(2 * tau * lep * (np.cosh(b["eta_tau"] - b["eta_lep"]) - np.cos(b["dphi"])))
        met = np.sqrt(b["nu"] ** 2 + (0.25 * tau) ** 2 + (0.1 * jet) ** 2)
        mt = np.sqrt(2 * lep * met * (1 - np.cos(b["dphi_met"])))
        cols = {
            "tau_pt": tau, "lep_pt": lep, "eta_tau": b["eta_tau"], "m_vis": m_vis, "met": met,
            "n_jets": b["n_jets"], "jet_pt": jet, "eta_lep": b["eta_lep"], "dphi": b["dphi"],
            "mt": mt, "pt_sum": tau + lep + jet, "dphi_met": b["dphi_met"],
        }
        for n in self.feature_names:
            if n.startswith("extra_"):
                cols[n] = b[n]
        return np.stack([cols[n] for n in self.feature_names], axis=1)

    def regions(self, x: np.ndarray) -> dict:
        c = {n: x[:, i] for i, n in enumerate(self.feature_names)}
        sel = (c["tau_pt"] > 25.0) & (c["lep_pt"] > 20.0)
        return {"sr": sel & (c["m_vis"] > 45.0) & (c["m_vis"] < 110.0),
                "cr_low": sel & (c["m_vis"] <= 45.0),
                "cr_high": sel & (c["m_vis"] >= 110.0)}

    def nn_score(self, x: np.ndarray) -> np.ndarray:
        z = np.zeros(x.shape[0])
        coef = {"tau_pt": 0.03, "lep_pt": 0.02, "m_vis": -0.015, "met": 0.02, "n_jets": 0.3, "eta_tau": -0.2}
        for n, a in coef.items():
            if n in self.feature_names:
                z += a * x[:, self.feature_names.index(n)]
        return 1.0 / (1.0 + np.exp(-(z - 1.0)))


def make_synthetic(n_events: int = 30000, seed: int = 0, n_features: int = 6, weight_scale: float = 1.0,
                   scale: float = 0.03) -> SyntheticAnalysis:
    """A synthetic analysis with ``n_features`` (6, 12, or more: 12 plus unscaled Gaussian
    ``extra_<i>`` columns, for timing at a demo's ~21 features) and weights U(0.5, 2) times
    ``weight_scale`` (1% of the events carry 5x the weight: uneven weights)."""
    names = ["tau_pt", "lep_pt", "eta_tau", "m_vis", "met", "n_jets"]
    if n_features >= 12:
        names += ["jet_pt", "eta_lep", "dphi", "mt", "pt_sum", "dphi_met"]
        names += [f"extra_{i}" for i in range(1, n_features - 11)]
    elif n_features != 6:
        raise ValueError("n_features must be 6 or >= 12")
    rng = np.random.default_rng(seed)
    n = int(n_events)
    base = {
        "tau_pt": 20.0 + rng.exponential(30.0, n), "lep_pt": 15.0 + rng.exponential(25.0, n),
        "jet_pt": 30.0 + rng.exponential(40.0, n), "eta_tau": rng.normal(0.0, 1.2, n),
        "eta_lep": rng.normal(0.0, 1.2, n), "dphi": rng.uniform(0.0, np.pi, n),
        "dphi_met": rng.uniform(0.0, np.pi, n), "nu": rng.exponential(20.0, n),
        "n_jets": rng.poisson(1.2, n).astype(np.float64),
    }
    for name in names:
        if name.startswith("extra_"):
            base[name] = rng.normal(0.0, 1.0, n)
    w = rng.uniform(0.5, 2.0, n)
    w[rng.random(n) < 0.01] *= 5.0
    return SyntheticAnalysis(base, w * weight_scale, names, scale)
