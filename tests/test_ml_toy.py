"""Reproduction of the toy study of Wunsch, Joerger, Wolf, Quast (2020), "Reducing the
dependence of the neural network function to systematic uncertainties in the input space".

Signal ~ N((0,0), [[1,-0.5],[-0.5,1]]), background ~ N((1,1), I); the systematic shifts the
background's x2 by +-1. Without the penalty the NN uses x2, so the background NN-output
histogram moves a lot between the +-1 variants; with lambda = 20 (10 bins) the network
learns to (nearly) ignore x2 and the variation shrinks, at the cost of AUC (the best
x1-only classifier has AUC Phi(1/sqrt(2)) = 0.760, the best one using both features ~0.88).

Measured on three (data seed, training seed) pairs, 4000 events per class, 2 x 200 ReLU,
batch 1000, lr 3e-3, patience 5, at most 40 epochs:
  lambda = 0:  AUC 0.872-0.876, spread sum_k |N_up - N_down| / sum_k N_nom = 1.03-1.06;
  lambda = 20: AUC 0.760-0.767, spread 0.023-0.036, i.e. smaller by a factor 30-45;
  the validation-set penalty Lambda drops from 1.5-2.6 to 0.00004-0.0002.
Asserted with margin: factor > 10, Lambda ratio > 100, AUC loss > 0.05, penalised AUC > 0.70
(not collapsed to a constant output), unpenalised AUC > 0.85.
"""

import numpy as np
import pytest
import torch

from hsaudit.ml.evaluation import histogram, predict, variation_spread, weighted_auc
from hsaudit.ml.training import TEST, train_classifier

N_PER_CLASS = 4000


def wunsch_toy(n, seed):
    rng = np.random.default_rng(seed)
    s = rng.multivariate_normal([0, 0], [[1, -0.5], [-0.5, 1]], n)
    b = rng.multivariate_normal([1, 1], np.eye(2), n)
    X = np.vstack([s, b]).astype(np.float32)
    y = np.r_[np.ones(n), np.zeros(n)]
    up, down = X.copy(), X.copy()
    up[n:, 1] += 1.0
    down[n:, 1] -= 1.0
    return X, y, np.ones(2 * n), np.arange(2 * n, dtype=np.int64), {"x2": {"up": up, "down": down}}


@pytest.fixture(scope="module")
def toy_results():
    torch.set_num_threads(1)
    X, y, w, ids, syst = wunsch_toy(N_PER_CLASS, seed=11)
    base = {"n_bins": 10, "patience": 5, "batch_size": 1000, "learning_rate": 3e-3, "max_epochs": 40,
            "seed": 1, "progress": False}
    out = {}
    for lam in (0.0, 20.0):
        r = train_classifier(X, y, w, ids, {**base, "lambdas": {"x2": lam}}, syst, features=["x1", "x2"])
        te = r.split == TEST
        bkg = y[te] == 0
        f = {v: predict(r.model, Xv[te]) for v, Xv in (("nominal", X), ("up", syst["x2"]["up"]), ("down", syst["x2"]["down"]))}
        h = {v: histogram(fv[bkg], bins=10)["counts"] for v, fv in f.items()}
        out[lam] = {
            "auc": weighted_auc(f["nominal"], y[te], w[te]),
            "spread": variation_spread(h["nominal"], h["up"], h["down"]),
            "result": r,
        }
    return out


def test_penalty_shrinks_background_variation(toy_results):
    s0, s20 = toy_results[0.0]["spread"], toy_results[20.0]["spread"]
    assert s0 > 0.6, f"without penalty the x2 shift must move the output strongly, spread {s0:.3f}"
    assert s0 / s20 > 10.0, f"spread lambda=0: {s0:.4f}, lambda=20: {s20:.4f}, factor {s0 / s20:.1f}"
    # the penalty term itself (on the validation set) shrinks as well
    lam0 = toy_results[0.0]["result"]
    lam20 = toy_results[20.0]["result"]
    v0 = lam0.history[lam0.best_epoch - 1]["val_lambda"]["x2"]
    v20 = lam20.history[lam20.best_epoch - 1]["val_lambda"]["x2"]
    assert v0 / v20 > 100.0, (v0, v20)


def test_penalty_costs_auc(toy_results):
    a0, a20 = toy_results[0.0]["auc"], toy_results[20.0]["auc"]
    assert a0 > 0.85, a0
    assert a20 < a0 - 0.05, (a0, a20)
    assert a20 > 0.70, f"penalised network collapsed: AUC {a20:.3f} (x1-only optimum 0.760)"
