"""Binning of the NN output (score in [lo, hi], usually [0, 1]) and weighted histograms.

``optimised_edges`` walks from the signal-like end (high score) down a fine grid and
closes a bin as soon as it holds (a) at least ``min_bkg_yield`` summed background weight,
(b) a relative MC statistical uncertainty sqrt(sum w^2) / sum w of the background of at
most ``max_rel_stat_unc``, and (c) about 1/``n_bins_target`` of the total signal (flat
signal binning, the usual choice for a discriminant). What is left at the low end joins
the last closed bin, so every bin satisfies (a) and (b). This keeps enough MC per bin for
the Barlow-Beeston-lite staterror treatment to be reliable and avoids bins with zero
predicted background.

Scores outside [lo, hi] are clipped into the first/last bin (a sigmoid output of exactly
1.0 lands in the last bin). NaN scores or weights raise AuditError.
"""

from __future__ import annotations

import numpy as np

from hsaudit.arrays import finite_array, finite_weights
from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram


def uniform_edges(n_bins: int, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    if int(n_bins) < 1 or not hi > lo:
        raise AuditError(f"uniform binning needs n_bins >= 1 and hi > lo, got {n_bins}, [{lo}, {hi}]")
    return np.linspace(lo, hi, int(n_bins) + 1)


def _check(scores, weights, what: str):
    s = finite_array(scores, f"{what} scores").ravel()
    return s, finite_weights(None if weights is None else np.ravel(weights), len(s), f"{what} weights")


def histogram(scores, weights, edges) -> tuple[np.ndarray, np.ndarray]:
    """(sum of weights, sum of squared weights) per bin; out-of-range scores are clipped,
    NaN or inf raise (:func:`hsaudit.histograms.weighted_histogram`)."""
    return weighted_histogram(scores, weights, edges, outside="clip", nonfinite="raise", what="histogram")


def optimised_edges(signal_scores, signal_weights, bkg_scores, bkg_weights, *, n_bins_target: int = 20,
                    min_bkg_yield: float = 1.0, max_rel_stat_unc: float = 0.2, lo: float = 0.0, hi: float = 1.0,
                    fine_bins: int = 1000) -> np.ndarray:
    """Edges (increasing, from lo to hi) satisfying the background-MC requirements (see module doc)."""
    s_s, s_w = _check(signal_scores, signal_weights, "signal")
    b_s, b_w = _check(bkg_scores, bkg_weights, "background")
    if min_bkg_yield < 0 or max_rel_stat_unc <= 0 or n_bins_target < 1:
        raise AuditError("need min_bkg_yield >= 0, max_rel_stat_unc > 0 and n_bins_target >= 1")
    fine = uniform_edges(fine_bins, lo, hi)
    sw, _ = histogram(s_s, s_w, fine)
    bw, bw2 = histogram(b_s, b_w, fine)
    total_b, total_b2 = bw.sum(), bw2.sum()
    if total_b <= 0 or total_b < min_bkg_yield or np.sqrt(total_b2) / total_b > max_rel_stat_unc:
        raise AuditError(
            f"the background MC (sum of weights {total_b:.4g}, relative stat. uncertainty "
            f"{np.sqrt(total_b2) / max(total_b, 1e-300):.3g}) cannot satisfy min_bkg_yield={min_bkg_yield} and "
            f"max_rel_stat_unc={max_rel_stat_unc} even in a single bin"
        )
    sig_target = max(sw.sum(), 0.0) / n_bins_target
    cuts = [fine_bins]  # indices into fine edges, from the top
    acc_s = acc_b = acc_b2 = 0.0
    for i in range(fine_bins - 1, 0, -1):
        acc_s += sw[i]
        acc_b += bw[i]
        acc_b2 += bw2[i]
        ok = acc_b > 0 and acc_b >= min_bkg_yield and np.sqrt(acc_b2) / acc_b <= max_rel_stat_unc
        if ok and acc_s >= sig_target and len(cuts) < n_bins_target:
            cuts.append(i)
            acc_s = acc_b = acc_b2 = 0.0
    # the remainder [0, cuts[-1]) must satisfy the requirements, else merge it upwards
    rest_b, rest_b2 = bw[: cuts[-1]].sum(), bw2[: cuts[-1]].sum()
    rest_ok = rest_b > 0 and rest_b >= min_bkg_yield and np.sqrt(rest_b2) / rest_b <= max_rel_stat_unc
    if len(cuts) > 1 and not rest_ok:
        cuts.pop()
    cuts.append(0)
    return fine[np.array(sorted(set(cuts)))]


def check_edges(edges, bkg_scores, bkg_weights, min_bkg_yield: float, max_rel_stat_unc: float) -> list[int]:
    """Indices of bins that violate the background-MC requirements (empty list: all fine)."""
    bw, bw2 = histogram(bkg_scores, bkg_weights, edges)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(bw > 0, np.sqrt(bw2) / bw, np.inf)
    return np.flatnonzero((bw < min_bkg_yield) | (bw <= 0) | (rel > max_rel_stat_unc)).tolist()
