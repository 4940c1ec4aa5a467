"""Weighted histograms: the sum of weights and the sum of squared weights per bin.

One function, :func:`weighted_histogram`, serves every part of the audit (NN-output
templates and binning, the chi2 / Jensen-Shannon hidden-ness checks, output shifts,
figures). The parts differ in three conventions, which the caller names explicitly so that
each keeps the numbers it has always produced:

``outside`` -- values outside ``[edges[0], edges[-1]]``
    ``"clip"``  counted in the first / last bin (values are clipped into the edges before
                binning; a sigmoid output of exactly 1.0 lands in the last bin);
    ``"fold"``  summed in under- and overflow bins that are then added to the first / last
                bin (the convention of a ``hist`` histogram with its flow folded in). The
                counts are those of ``"clip"``; the sums can differ in the last bit because
                the addition order differs;
    ``"drop"``  ignored; the last bin includes its upper edge (``np.histogram``).
``nonfinite`` -- NaN or inf
    ``"raise"`` AuditError naming ``what`` when a value or weight is NaN or inf;
    ``"drop"``  values that are NaN or inf are left out together with their weights.
``sums`` -- how the weights of a bin are added
    ``"in_order"``   in the order of the input (``np.bincount``, as ``hist`` fills);
    ``"cumulative"`` as ``np.histogram`` does: differences of a running sum over the sorted
                     values. Equal to ``"in_order"`` up to rounding in the last bits.

Bins are half-open, ``[e_i, e_{i+1})``, except the upper edge as said above.
"""

from __future__ import annotations

import numpy as np

from hsaudit.errors import AuditError

OUTSIDE = ("clip", "fold", "drop")
NONFINITE = ("raise", "drop")
SUMS = ("in_order", "cumulative")


def check_edges(edges, what: str = "histogram") -> np.ndarray:
    """``edges`` as a float64 array of at least two strictly increasing finite values."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or not np.isfinite(e).all() or np.any(np.diff(e) <= 0):
        raise AuditError(f"{what}: bin edges must be at least two strictly increasing finite values")
    return e


def _choice(name: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise AuditError(f"weighted_histogram: {name}={value!r} is not one of {', '.join(allowed)}")


def weighted_histogram(values, weights=None, edges=None, *, outside: str = "clip", nonfinite: str = "raise",
                       sums: str = "in_order", what: str = "histogram") -> tuple[np.ndarray, np.ndarray]:
    """(sum of weights, sum of squared weights) per bin of ``edges`` (see the module doc for
    ``outside``, ``nonfinite`` and ``sums``). ``weights=None`` counts each value once."""
    _choice("outside", outside, OUTSIDE)
    _choice("nonfinite", nonfinite, NONFINITE)
    _choice("sums", sums, SUMS)
    if edges is None:
        raise AuditError(f"{what}: bin edges are required")
    e = check_edges(edges, what)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != v.shape:
        raise AuditError(f"{what}: {len(v)} values but {len(w)} weights")
    if nonfinite == "raise":
        if not (np.isfinite(v).all() and np.isfinite(w).all()):
            raise AuditError(f"{what}: NaN or inf in values or weights")
    else:
        ok = np.isfinite(v)
        if not ok.all():
            v, w = v[ok], w[ok]
    nb = len(e) - 1
    if sums == "cumulative":
        if outside == "fold":
            raise AuditError("weighted_histogram: outside='fold' sums in order; use sums='in_order'")
        if outside == "clip":
            v = np.clip(v, e[0], e[-1])
        return np.histogram(v, e, weights=w)[0], np.histogram(v, e, weights=w * w)[0]
    idx = np.searchsorted(e, v, side="right") - 1
    if outside == "clip":
        idx = np.clip(idx, 0, nb - 1)
    elif outside == "drop":
        idx = np.where(v == e[-1], nb - 1, idx)
        keep = (idx >= 0) & (idx < nb)
        if not keep.all():
            idx, w = idx[keep], w[keep]
    else:  # fold: bins 0 and nb + 1 are under- and overflow
        flow = idx + 1
        sw = np.bincount(flow, w, nb + 2)
        sw2 = np.bincount(flow, w * w, nb + 2)
        for a in (sw, sw2):
            a[1] += a[0]
            a[-2] += a[-1]
        return sw[1:-1], sw2[1:-1]
    return np.bincount(idx, w, nb), np.bincount(idx, w * w, nb)


__all__ = ["weighted_histogram", "check_edges", "OUTSIDE", "NONFINITE", "SUMS"]
