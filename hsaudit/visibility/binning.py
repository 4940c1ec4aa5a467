"""Binnings of one region's nominal simulation for the data-visibility looks.

A look compares data counts with the nominal prediction in bins. The bins are equal-population
bins of the nominal in that region (equal expected yield: weighted quantiles of |w|), so every
bin carries information, and they are merged until each expects at least ``min_expected``
events and holds at least ``min_effective`` effective MC events (sum w)^2 / sum w^2 (a few
heavy events do not make a bin), so that the Pearson statistic follows its chi2 asymptotics
(docs/science.md section 4). Discrete features get the unique quantile edges (a value on an edge belongs to the
upper bin, so an integer feature is never split), at least one bin.

Bins are described by the internal edges of each axis (``np.searchsorted(edges, x, 'right')``
gives the raw cell, so values below/above the nominal range fall into the first/last cell) and
a ``cellmap`` from raw cells to merged bins (1-d: consecutive cells; 2-d: a 3 x 3 grid in
row-major order, with too-small cells merged into their smaller neighbour in that order).
"""

from __future__ import annotations

import numpy as np


def quantile_edges(x: np.ndarray, w: np.ndarray, n_bins: int) -> np.ndarray:
    """Internal edges of ``n_bins`` equal-|w| bins of ``x``; duplicates and edges that would
    leave the first bin empty are dropped (discrete features get fewer bins)."""
    if n_bins <= 1 or x.size == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    xs = np.asarray(x, dtype=np.float64)[order]
    cw = np.cumsum(np.abs(np.asarray(w, dtype=np.float64))[order])
    total = cw[-1]
    if not total > 0:
        return np.zeros(0, dtype=np.float64)
    q = total * np.arange(1, n_bins) / n_bins
    idx = np.minimum(np.searchsorted(cw, q, side="left") + 1, xs.size - 1)
    edges = np.unique(xs[idx])
    return edges[edges > xs[0]]


def raw_cells(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Raw cell index of each value, in [0, len(edges)]."""
    return np.searchsorted(edges, values, side="right")


def merge_cells(yields: np.ndarray, min_expected: float, sumw2: np.ndarray | None = None,
                min_effective: float = 0.0) -> np.ndarray:
    """Cell -> bin map merging consecutive cells until each bin expects >= ``min_expected``
    events and holds >= ``min_effective`` effective MC events (sum w)^2 / sum w^2 (uneven
    weights), or a single bin is left: the smallest failing bin joins its smaller neighbour."""
    yields = np.asarray(yields, dtype=np.float64)
    w2 = np.zeros_like(yields) if sumw2 is None else np.asarray(sumw2, dtype=np.float64)
    groups = [[i] for i in range(yields.size)]
    totals, squares = list(yields), list(w2)

    def fails(k):
        t, q = totals[k], squares[k]
        return t < min_expected or (min_effective > 0 and (q <= 0 or t * t / q < min_effective))

    while len(groups) > 1:
        failing = [k for k in range(len(groups)) if fails(k)]
        if not failing:
            break
        i = min(failing, key=lambda k: totals[k])
        if i == 0:
            j = 1
        elif i == len(groups) - 1:
            j = i - 1
        else:
            j = i - 1 if totals[i - 1] <= totals[i + 1] else i + 1
        a, b = min(i, j), max(i, j)
        groups[a] = groups[a] + groups[b]
        totals[a] += totals[b]
        squares[a] += squares[b]
        del groups[b], totals[b], squares[b]
    cellmap = np.empty(yields.size, dtype=np.int64)
    for k, g in enumerate(groups):
        cellmap[g] = k
    return cellmap
