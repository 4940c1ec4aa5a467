"""Coercion of user inputs to finite float arrays, with one clear error when that fails.

Every public function of the audit that takes event values, weights or outputs accepts
anything array-like (lists, numpy arrays, torch tensors on any device) and raises
:class:`hsaudit.errors.AuditError` naming the argument when it is not an array of numbers,
has the wrong number of dimensions, is empty where that makes no sense, or holds NaN or inf.
"""

from __future__ import annotations

import numpy as np

from hsaudit.errors import AuditError


def float_array(value, what: str, *, ndim: int | None = None, dtype=np.float64) -> np.ndarray:
    """``value`` as an array of ``dtype`` (float64 by default), NaN and inf allowed (for
    callers that treat them themselves; :func:`finite_array` rejects them).

    ``ndim``: the number of dimensions it must have (any when None). Torch tensors are
    detached and copied to the CPU."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        a = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise AuditError(f"{what} must be an array of numbers ({exc})") from None
    if ndim is not None and a.ndim != ndim:
        raise AuditError(f"{what} must be {ndim}-dimensional, got shape {a.shape}")
    return a


def finite_array(value, what: str, *, ndim: int | None = None, allow_empty: bool = True,
                 dtype=np.float64) -> np.ndarray:
    """``value`` as an array of ``dtype`` (float64 by default) whose entries are all finite.

    ``ndim``: the number of dimensions it must have (any when None). ``allow_empty=False``
    rejects an array without entries. Torch tensors are detached and copied to the CPU."""
    a = float_array(value, what, ndim=ndim, dtype=dtype)
    if a.size == 0:
        if not allow_empty:
            raise AuditError(f"{what} is empty")
        return a
    bad = ~np.isfinite(a)
    if bad.any():
        raise AuditError(f"{what} contains {int(bad.sum())} non-finite value(s) (NaN or inf); remove or fix them")
    return a


def finite_weights(weights, n: int, what: str = "weights") -> np.ndarray:
    """One finite weight per entry: ``weights`` as a float64 array of shape ``(n,)``, or
    ones when ``weights`` is None."""
    if weights is None:
        return np.ones(int(n))
    w = finite_array(weights, what, ndim=1)
    if w.shape != (int(n),):
        raise AuditError(f"{what} has {w.size} entries, expected {int(n)}: one weight per event")
    return w


__all__ = ["float_array", "finite_array", "finite_weights"]
