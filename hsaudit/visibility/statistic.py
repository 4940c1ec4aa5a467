"""The test statistic of one look and its asymptotic distributions.

For data counts N_k against the nominal prediction m_k with MC variance s_k^2 (a look's bins,
hsaudit.visibility.looks),

    T = sum_k (N_k - m_k)^2 / (m_k + s_k^2)

is Pearson's statistic with the MC statistical variance added to the data's Poisson variance
(docs/science.md section 4). The counts are absolute (the luminosity is known), so under
"data = nominal" T follows chi2 with ndf = number of bins asymptotically; when the truth is
shifted by delta_k per bin, T follows the non-central chi2(ndf, lambda) with
lambda = sum_k delta_k^2 / (m_k + s_k^2). Toys (hsaudit.visibility.calibration) check both.
The MC statistical term is the one of R. Barlow and C. Beeston, "Fitting using finite Monte
Carlo samples", Comput. Phys. Commun. 77 (1993) 219, at its Gaussian (Pearson) order.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def pearson(residuals: np.ndarray, var: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(n_toys, n_looks) T of every look from residuals N - m (n_toys, n_bins_total)."""
    return np.add.reduceat(residuals.astype(np.float64) ** 2 / var, offsets, axis=1)


def p_values(t: np.ndarray, ndf: np.ndarray) -> np.ndarray:
    """Asymptotic chi2(ndf) p-values of T (broadcast over toys)."""
    return special.chdtrc(np.asarray(ndf, dtype=np.float64), t)


def critical_value(p_threshold: float, ndf: np.ndarray) -> np.ndarray:
    """T above which a look's p-value is below ``p_threshold``."""
    return special.chdtri(np.asarray(ndf, dtype=np.float64), p_threshold)


def asymptotic_power(lam: np.ndarray, ndf: np.ndarray, p_threshold: float) -> np.ndarray:
    """P(chi2_nc(ndf, lambda) > chi2.isf(p_threshold, ndf)) per look."""
    lam = np.asarray(lam, dtype=np.float64)
    ndf = np.asarray(ndf, dtype=np.float64)
    crit = critical_value(p_threshold, ndf)
    out = np.full(lam.shape, float(p_threshold))
    pos = lam > 0
    if np.any(pos):
        out[pos] = stats.ncx2.sf(crit[pos], ndf[pos], lam[pos])
    return out


def median_p_value(lam: np.ndarray, ndf: np.ndarray) -> np.ndarray:
    """The 'expected' p-value of a look under the shift: the p-value of the median of
    chi2_nc(ndf, lambda) (0.5 without a shift; half the experiments give a smaller p)."""
    lam = np.asarray(lam, dtype=np.float64)
    ndf = np.asarray(ndf, dtype=np.float64)
    med = stats.chi2.ppf(0.5, ndf)
    pos = lam > 0
    if np.any(pos):
        med = np.where(pos, stats.ncx2.ppf(0.5, ndf, np.where(pos, lam, 1.0)), med)
    return p_values(med, ndf)
