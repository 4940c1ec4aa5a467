"""Envelopes: box from shifted variants or declared uncertainties, fixed and integer
features, the nuisance-space view, clear errors."""

import numpy as np
import pytest
import torch

from hsaudit.errors import AuditError
from hsaudit.attacks import Envelope

NOM = np.array([[10.0, 1.0, 2.0], [20.0, -0.5, 0.0]], dtype=np.float32)
UP = np.array([[11.0, 1.0, 3.0], [19.0, -0.5, 1.0]], dtype=np.float32)
DOWN = np.array([[9.5, 1.0, 2.0], [21.0, -0.5, 0.0]], dtype=np.float32)


def test_box_spans_down_nominal_up_scaled_by_n_sigma():
    env = Envelope.from_variants(NOM, UP, DOWN, n_sigma=2.0, integer_features=[2], feature_names=["pt", "eta", "nj"])
    assert env.lower[0].tolist() == [9.0, 1.0, 2.0]
    assert env.upper[0].tolist() == [12.0, 1.0, 4.0]
    # second event: up and down on the other sides; nominal always inside
    assert env.lower[1].tolist() == [18.0, -0.5, 0.0]
    assert env.upper[1].tolist() == [22.0, -0.5, 2.0]
    assert env.movable.tolist() == [True, False, True]
    assert bool(env.contains(NOM).all())
    # a box of 1.5 sigma for the integer feature is cut to the integers inside it
    e15 = Envelope.from_variants(NOM, UP, DOWN, 1.5, integer_features=["nj"], feature_names=["pt", "eta", "nj"])
    assert e15.upper[0, 2].item() == 3.0 and e15.upper[1, 2].item() == 1.0


def test_projection_rounds_integer_features_and_clamps():
    env = Envelope.from_variants(NOM, UP, DOWN, 2.0, integer_features=[2])
    x = torch.tensor([[30.0, 5.0, 2.6], [0.0, 0.0, -3.0]])
    p = env.project(x)
    assert p.tolist() == [[12.0, 1.0, 3.0], [18.0, -0.5, 0.0]]
    assert bool(env.contains(p).all())
    assert not bool(env.contains(torch.tensor([[10.0, 1.0, 2.5], [20.0, -0.5, 0.0]])).all())


def test_from_uncertainties_absolute_and_relative():
    env = Envelope.from_uncertainties(NOM, sigma={"pt": 0.1, "eta": 0.05}, relative={"pt": True, "eta": False},
                                      n_sigma=1.0, feature_names=["pt", "eta", "nj"])
    torch.testing.assert_close(env.upper[:, 0], torch.tensor([11.0, 22.0]))
    torch.testing.assert_close(env.lower[:, 1], torch.tensor([0.95, -0.55]))
    assert env.width[:, 2].abs().max().item() == 0.0  # not declared -> fixed
    with pytest.raises(AuditError, match="unknown features"):
        Envelope.from_uncertainties(NOM, sigma={"nope": 1.0}, feature_names=["pt", "eta", "nj"])
    with pytest.raises(AuditError, match="sigma"):
        Envelope.from_uncertainties(NOM, sigma=[0.1, -1.0, 0.0])
    with pytest.raises(AuditError, match="one value per feature"):
        Envelope.from_uncertainties(NOM, sigma=[0.1, 0.1])


def test_nuisance_view_interpolates_piecewise_linearly():
    env = Envelope.from_variants(NOM, UP, DOWN, 1.0)
    torch.testing.assert_close(env.interpolate(torch.tensor([1.0, 1.0])), torch.as_tensor(UP))
    torch.testing.assert_close(env.interpolate(torch.tensor([-1.0, -1.0])), torch.as_tensor(DOWN))
    torch.testing.assert_close(env.interpolate(torch.zeros(2)), torch.as_tensor(NOM))
    half = env.interpolate(torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(half[0], torch.tensor([10.5, 1.0, 2.5]))
    torch.testing.assert_close(half[1], torch.tensor([20.5, -0.5, 0.0]))
    theta = torch.linspace(-1, 1, 7)
    for t in theta:
        assert bool(env.contains(env.interpolate(torch.full((2,), float(t))), atol=1e-5).all())


def test_subset_and_scaled():
    env = Envelope.from_variants(NOM, UP, DOWN, 1.0)
    sub = env.subset([1])
    assert sub.n_events == 1 and torch.equal(sub.upper[0], env.upper[1])
    z = env.scaled(0.0)
    assert torch.equal(z.lower, z.upper) and torch.equal(z.lower, torch.as_tensor(NOM))


def test_envelope_errors():
    with pytest.raises(AuditError, match="NaN"):
        Envelope.from_variants(np.array([[np.nan]]), np.array([[1.0]]), np.array([[1.0]]))
    bad_up = UP.copy()
    bad_up[0, 0] = np.nan
    with pytest.raises(AuditError, match="missing='fixed'"):
        Envelope.from_variants(NOM, bad_up, DOWN)
    env = Envelope.from_variants(NOM, bad_up, DOWN, missing="fixed")
    assert env.upper[0, 0].item() == 10.0 and env.lower[0, 0].item() == 9.5
    with pytest.raises(AuditError, match="event-matched"):
        Envelope.from_variants(NOM, UP[:1], DOWN)
    with pytest.raises(AuditError, match="features"):
        Envelope.from_variants(NOM, UP[:, :2], DOWN)
    with pytest.raises(AuditError, match="n_sigma"):
        Envelope.from_variants(NOM, UP, DOWN, n_sigma=-1)
    with pytest.raises(AuditError, match="empty"):
        Envelope.from_variants(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(AuditError, match="integer"):
        Envelope.from_variants(NOM, UP, DOWN, integer_features=[0, 1])  # eta is not integer-valued
    with pytest.raises(AuditError, match="known feature name"):
        Envelope.from_variants(NOM, UP, DOWN, integer_features=["n_jets"], feature_names=["a", "b", "c"])
