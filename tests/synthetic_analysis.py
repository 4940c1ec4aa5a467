"""A small synthetic analysis shared by the attack-stage tests: five features with tau_es
variants (tau_pt, m_vis, met_pt scaled by +-3%), a signal region (mT < 50, opposite sign), a
same-sign control region and a high-mT control region, and a small untrained network."""

import numpy as np
import torch

from hsaudit.ml.models import MLP
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL

FEATURES = ["mu_pt", "tau_pt", "mt_mu", "m_vis", "met_pt"]


def synthetic_sample(n: int, seed: int) -> tuple[EventSample, MLP]:
    rng = np.random.default_rng(seed)
    mu = 26 + rng.exponential(15, n)
    tau = 22 + rng.exponential(20, n)
    mt = rng.uniform(0, 120, n)
    mvis = 40 + rng.exponential(30, n)
    met = rng.exponential(25, n)
    nominal = np.stack([mu, tau, mt, mvis, met], axis=1).astype(np.float32)
    X = {NOMINAL: nominal}
    for v, f in (("tau_es_up", 1.03), ("tau_es_down", 0.97)):
        x = nominal.copy()
        x[:, [1, 3]] *= f
        x[:, 4] = np.abs(x[:, 4] - (f - 1) * x[:, 1])
        X[v] = x
    same_sign = rng.random(n) < 0.3
    region = {}
    for v, x in X.items():
        sel = (x[:, 0] > 25) & (x[:, 1] > 25)
        region[("signal", v)] = sel & ~same_sign & (x[:, 2] < 50)
        region[("control_same_sign", v)] = sel & same_sign & (x[:, 2] < 50)
        region[("control_high_mt", v)] = sel & ~same_sign & (x[:, 2] > 70)
    ids = np.zeros(n, dtype=[("run", "<u4"), ("luminosityBlock", "<u4"), ("event", "<u8")])
    ids["run"], ids["luminosityBlock"], ids["event"] = 1, 1, np.arange(n)
    y = (rng.random(n) < 0.3).astype(np.int8)
    sample = EventSample(features=FEATURES, variants=list(X), regions=["signal", "control_same_sign", "control_high_mt"],
                         X=X, y=y, weight=rng.uniform(0.5, 1.5, n), weight_variations={}, region=region, event_id=ids,
                         dataset=y.astype(np.int16), datasets=["bkg", "sig"], processes=["bkg", "sig"])
    torch.manual_seed(0)
    model = MLP(len(FEATURES), [16], mean=torch.tensor(nominal.mean(0)), std=torch.tensor(nominal.std(0)))
    model.eval()
    return sample, model
