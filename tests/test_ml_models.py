"""Models: architecture, Glorot init, built-in standardisation, spec validation."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.ml.models import ARCHITECTURES, MLP, build_model, standardisation_from_data


def test_default_is_wunsch_mlp():
    m = build_model({}, 3)
    linears = [l for l in m.body if isinstance(l, torch.nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(3, 200), (200, 200), (200, 1)]
    assert sum(isinstance(l, torch.nn.ReLU) for l in m.body) == 2
    x = torch.randn(17, 3)
    f = m(x)
    assert f.shape == (17,)
    assert bool(((f >= 0) & (f <= 1)).all())
    assert torch.allclose(f, torch.sigmoid(m.logits(x)))


def test_glorot_init_and_zero_bias():
    m = build_model({}, 5, generator=torch.Generator().manual_seed(3))
    for l in m.body:
        if isinstance(l, torch.nn.Linear):
            bound = np.sqrt(6.0 / (l.in_features + l.out_features))
            assert float(l.weight.abs().max()) <= bound
            assert float(l.weight.abs().max()) > 0.9 * bound  # uniform over the full range
            assert float(l.bias.abs().max()) == 0.0
    # the generator makes the init deterministic
    m2 = build_model({}, 5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), m2.state_dict().values()))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_variants_build_and_are_bigger(arch):
    m = build_model({"architecture": arch}, 4)
    n_params = sum(p.numel() for p in m.parameters())
    assert m(torch.randn(8, 4)).shape == (8,)
    if arch != "mlp":
        assert n_params > sum(p.numel() for p in build_model({}, 4).parameters())


def test_standardisation_is_first_layer_and_not_trained():
    rng = np.random.default_rng(0)
    X = rng.normal([100.0, -2.0], [30.0, 0.1], size=(500, 2)).astype(np.float32)
    mean, std = standardisation_from_data(X)
    m = build_model({}, 2, mean, std, generator=torch.Generator().manual_seed(0))
    ident = build_model({}, 2, generator=torch.Generator().manual_seed(0))
    # physical-unit input to m == standardised input to the identity-standardised twin
    xt = torch.from_numpy(X)
    assert torch.allclose(m(xt), ident((xt - torch.from_numpy(mean)) / torch.from_numpy(std)), atol=1e-6)
    names = {n for n, _ in m.named_parameters()}
    assert not any("standardize" in n for n in names)
    assert {"standardize.mean", "standardize.std"} <= set(m.state_dict())


def test_weighted_standardisation_matches_numpy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(1000, 3)) * [1.0, 5.0, 0.0] + [0.0, 10.0, 7.0]
    w = rng.uniform(0.1, 2.0, size=1000)
    w[:10] *= -1  # negative MC weights use |w|
    mean, std = standardisation_from_data(X, w)
    a = np.abs(w)
    ref_mean = (a[:, None] * X).sum(0) / a.sum()
    ref_std = np.sqrt((a[:, None] * (X - ref_mean) ** 2).sum(0) / a.sum())
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-5)
    np.testing.assert_allclose(std[:2], ref_std[:2], rtol=1e-5)
    assert std[2] == 1.0  # constant feature: std 1, not 0


@pytest.mark.parametrize(
    "spec,msg",
    [
        ({"architecture": "transformer"}, "unknown model architecture"),
        ({"activation": "sigmoidish"}, "unknown activation"),
        ({"hidden_layers": []}, "hidden_layers"),
        ({"hidden_layers": [10, -1]}, "hidden_layers"),
        ({"widths": [3]}, "unknown model settings"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_specs(spec, msg):
    with pytest.raises(AuditError, match=msg):
        build_model(spec, 3)


def test_bad_standardisation_shape():
    with pytest.raises(AuditError, match="one value per feature"):
        build_model({}, 3, np.zeros(2), np.ones(2))
    with pytest.raises(AuditError, match="positive"):
        build_model({}, 2, np.zeros(2), np.array([1.0, 0.0]))


def test_model_is_scriptable():
    m = build_model({"architecture": "wide_mlp", "dropout": 0.1}, 3).eval()
    s = torch.jit.script(m)
    x = torch.randn(5, 3)
    assert torch.allclose(s(x), m(x))
    assert isinstance(m, MLP)
