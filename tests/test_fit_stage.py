"""The fit stage on a synthetic event sample: templates per channel, MC-stat switch, errors."""

import dataclasses

import numpy as np
import pytest

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.fit_stage import build_likelihood
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL


def synthetic(n=4000, seed=3):
    rng = np.random.default_rng(seed)
    cfg = load_config("ci")
    variants = [NOMINAL, "tau_es_up", "tau_es_down"]
    y = (rng.random(n) < 0.3).astype(np.int8)
    outputs = {v: np.clip(rng.beta(2 + 3 * y, 2 + 3 * (1 - y)) + (0.01 if v == "tau_es_up" else 0.0), 0, 1)
               for v in variants}
    region = {}
    which = rng.integers(0, len(cfg.regions), n)
    for v in variants:
        for i, r in enumerate(cfg.regions):
            region[(r, v)] = which == i
    sample = EventSample(
        features=["x"], variants=variants, regions=list(cfg.regions),
        X={v: outputs[v][:, None].astype(np.float32) for v in variants}, y=y,
        weight=np.where(y == 1, 0.05, 1.0), weight_variations={}, region=region,
        event_id=np.arange(n), dataset=np.where(y == 1, 0, 1), datasets=["sig", "bkg"], processes=["sig", "bkg"],
    )
    return cfg, sample, outputs


def with_fit(cfg, **fit):
    return dataclasses.replace(cfg, fit={**cfg.fit, **fit})


def test_templates_and_truths_per_channel():
    cfg, sample, outputs = synthetic()
    # the synthetic +0.01 shift is within MC noise: keep its shape (pruning is tested elsewhere)
    lk = build_likelihood(outputs, sample, with_fit(cfg, shape_treatment={"prune": False}))
    spec = lk["spec"]
    assert set(spec["channels"]) == set(cfg.fit["channels"])
    bkg = spec["channels"]["signal"]["samples"]["bkg"]
    assert "staterror" in bkg and "tau_es" in bkg["histosys"]
    assert set(lk["truths"]) >= {"nominal", "tau_es_up", "tau_es_down"}


def test_mc_stat_uncertainty_can_be_switched_off():
    cfg, sample, outputs = synthetic()
    spec = build_likelihood(outputs, sample, with_fit(cfg, mc_stat_uncertainty=False))["spec"]
    for ch in spec["channels"].values():
        for s in ch["samples"].values():
            assert "staterror" not in s
    with pytest.raises(AuditError, match="fit.mc_stat_uncertainty: expected true or false"):
        build_likelihood(outputs, sample, with_fit(cfg, mc_stat_uncertainty="no"))


def test_attacked_deltas_histograms_are_numpys_on_clipped_outputs():
    """The attacked templates' histograms (hsaudit.histograms) are np.histogram of the outputs
    clipped into the edges, bit for bit, values on the edges and outside them included."""
    from hsaudit.fit_stage import attacked_deltas

    rng = np.random.default_rng(5)
    edges = np.array([0.0, 0.13, 0.5, 0.77, 1.0])
    n = 3000
    before = rng.uniform(0.0, 1.0, n)
    after = rng.uniform(-0.1, 1.1, n)
    after[:60] = rng.choice(edges, 60)
    w = rng.normal(1.0, 0.4, n)
    rows_info = {"weight": w, "is_signal": np.zeros(n, bool), "channels": np.ones((1, n), bool),
                 "output": before, "dataset": np.zeros(n, np.int64)}
    lk = {"channels": ["signal"], "edges": {"signal": edges}, "mu_true": 1.0}
    delta = attacked_deltas(lk, rows_info, np.arange(n), after)["signal"]

    def numpy_hist(v):
        return np.histogram(np.clip(v, edges[0], edges[-1]), edges, weights=w)[0]

    assert np.array_equal(delta, numpy_hist(after) - numpy_hist(before))
