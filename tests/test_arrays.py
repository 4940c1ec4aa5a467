"""Coercion to finite float arrays: dtype, dimensions, emptiness, NaN/inf, torch inputs."""

import numpy as np
import pytest
import torch

from hsaudit.arrays import finite_array, finite_weights, float_array
from hsaudit.errors import AuditError


def test_lists_arrays_and_tensors_become_float64_arrays():
    for value in ([0, 1, 2], np.arange(3, dtype=np.int32), torch.arange(3, dtype=torch.float32)):
        a = finite_array(value, "x", ndim=1)
        assert isinstance(a, np.ndarray) and a.dtype == np.float64 and a.tolist() == [0.0, 1.0, 2.0]
    assert finite_array([[1, 2]], "m", ndim=2).shape == (1, 2)
    assert finite_array([1, 2], "f", dtype=np.float32).dtype == np.float32


def test_errors_name_the_argument():
    with pytest.raises(AuditError, match="scores contains 2 non-finite value\\(s\\) \\(NaN or inf\\)"):
        finite_array([0.1, np.nan, np.inf], "scores")
    with pytest.raises(AuditError, match="features must be 2-dimensional, got shape \\(3,\\)"):
        finite_array([1, 2, 3], "features", ndim=2)
    with pytest.raises(AuditError, match="pulls is empty"):
        finite_array([], "pulls", allow_empty=False)
    with pytest.raises(AuditError, match="labels must be an array of numbers"):
        finite_array(["a", "b"], "labels")
    with pytest.raises(AuditError, match="ragged must be an array of numbers"):
        finite_array([[1, 2], [3]], "ragged")


def test_float_array_keeps_nan_and_inf_but_checks_the_rest():
    a = float_array(torch.tensor([0.5, float("nan"), float("inf")]), "scores", ndim=1)
    assert a.dtype == np.float64 and np.isnan(a[1]) and np.isinf(a[2])
    with pytest.raises(AuditError, match="edges must be 1-dimensional, got shape \\(1, 2\\)"):
        float_array([[1, 2]], "edges", ndim=1)
    with pytest.raises(AuditError, match="yields must be an array of numbers"):
        float_array(["a"], "yields")


def test_empty_arrays_are_allowed_by_default():
    assert finite_array([], "x", ndim=1).shape == (0,)


def test_weights_default_to_ones_and_must_match():
    assert finite_weights(None, 3).tolist() == [1.0, 1.0, 1.0]
    assert finite_weights([2, 3], 2).tolist() == [2.0, 3.0]
    with pytest.raises(AuditError, match="wb has 2 entries, expected 3: one weight per event"):
        finite_weights([1, 2], 3, "wb")
    with pytest.raises(AuditError, match="weights contains 1 non-finite"):
        finite_weights([1, np.nan], 2)
