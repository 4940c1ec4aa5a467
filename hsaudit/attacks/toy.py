"""A small synthetic H -> tau tau-like problem for tests and benchmarks of the attacks.

Six correlated features in physical units (GeV, rad, a jet count), signal vs background,
with a tau-energy-scale-like shift (tau pt x (1 +- 3%), visible mass x (1 +- 1.5%), MET
moving opposite to the tau momentum) as event-matched up/down variants, and a tiny MLP
(``hsaudit.ml.models.build_model``, standardisation inside) trained in a couple of seconds.
Not physics: just enough structure that gradient attacks have something to find.
"""

from __future__ import annotations

import numpy as np
import torch

from hsaudit.ml.models import build_model, standardisation_from_data

TOY_FEATURES = ["tau_pt", "tau_eta", "met_pt", "m_vis", "n_jets", "delta_phi"]
TOY_INTEGER = ["n_jets"]


def make_toy_events(n: int = 4000, seed: int = 0, signal_fraction: float = 0.5) -> dict:
    """Events with nominal, up and down variants of the tau energy scale; float32 arrays."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < signal_fraction).astype(np.float32)
    s = y.astype(bool)
    z = rng.standard_normal((n, 4))
    tau_pt = np.where(s, 45 + 14 * z[:, 0], 36 + 12 * z[:, 0])
    tau_pt = np.abs(tau_pt - 20) + 20
    tau_eta = np.where(s, 1.0, 1.3) * z[:, 1]
    met = np.abs(np.where(s, 0.5 * tau_pt + 8 * z[:, 2], 0.3 * tau_pt + 12 * z[:, 2] + 8))
    m_vis = np.abs(np.where(s, 1.6 * tau_pt + 15 + 10 * z[:, 3], 1.3 * tau_pt + 20 + 18 * z[:, 3]))
    n_jets = rng.poisson(np.where(s, 1.3, 0.8)).astype(np.float64)
    dphi = np.where(s, np.pi - np.abs(rng.normal(0, 0.5, n)), rng.uniform(0, np.pi, n))
    dphi = np.clip(dphi, 0, np.pi)
    x = np.stack([tau_pt, tau_eta, met, m_vis, n_jets, dphi], axis=1)

    def shifted(sign):
        v = x.copy()
        v[:, 0] = x[:, 0] * (1 + sign * 0.03)
        v[:, 3] = x[:, 3] * (1 + sign * 0.015)
        v[:, 2] = np.abs(x[:, 2] - sign * 0.03 * x[:, 0] * np.cos(x[:, 5]))
        return v

    w = rng.uniform(0.5, 1.5, n)
    return {
        "x": x.astype(np.float32),
        "up": shifted(+1).astype(np.float32),
        "down": shifted(-1).astype(np.float32),
        "labels": y,
        "weights": w.astype(np.float32),
        "feature_names": list(TOY_FEATURES),
        "integer_features": list(TOY_INTEGER),
    }


def train_toy_model(x: np.ndarray, labels: np.ndarray, seed: int = 0, hidden=(32, 32), epochs: int = 300,
                    lr: float = 0.01) -> torch.nn.Module:
    """Full-batch Adam on BCE; deterministic for a seed. Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    mean, std = standardisation_from_data(x)
    model = build_model({"hidden_layers": list(hidden)}, x.shape[1], mean, std, generator=gen)
    xt = torch.as_tensor(x)
    yt = torch.as_tensor(labels, dtype=torch.float32)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for _ in range(epochs):
        opt.zero_grad()
        loss = loss_fn(model.logits(xt), yt)
        loss.backward()
        opt.step()
    return model.eval()
