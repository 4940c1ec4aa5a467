"""The change a shift (attack, +-1 sigma variant, random control) makes to every look.

For a look's bin k, with evaluation weights e_i (the nominal weights w_i by default; an attack
fitted on one half of the simulation is evaluated with e = 2 w on the other half and 0 on the
half it was fitted on):

    d_k = sum_i e_i (1[i in region after, x'_i in k] - 1[i in region before, x_i in k])
    v_k = sum_i e_i^2 (1[... after in k] - 1[... before in k])^2

d_k is the shift of the bin content as the finite simulation sees it. Part of it is MC noise:
an event that merely crosses a bin edge moves a whole weight, so a random smearing with
E[d_k] = 0 still gives d_k^2 ~ v_k. The noise-corrected shift per bin,

    delta_k = sign(d_k) sqrt(max(d_k^2 - v_k, 0)),

estimates the shift of the underlying population ("bin" correction), and the non-centrality of
the look's Pearson statistic (hsaudit.visibility.statistic) is

    lambda = sum_k delta_k^2 / (m_k + s_k^2).

The per-bin truncation keeps part of the noise: for pure noise (d_k ~ N(0, v_k))
E[max(d_k^2 - v_k, 0)] = 2 phi(1) v_k = 0.48 v_k, so a random smearing keeps about half of its
raw lambda. The "look" correction (the default of VisibilitySettings) subtracts the noise of
the whole look before truncating,

    lambda = max(sum_k (d_k^2 - v_k) / (m_k + s_k^2), 0),

which is unbiased until the (rare) truncation, and keeps the shape of d:
delta_k = d_k sqrt(lambda / lambda_raw) with lambda_raw = sum_k d_k^2 / (m_k + s_k^2).
For a coherent shift (d_k^2 >> v_k) all corrections agree; "none" uses the raw d.

Rows in neither the region before nor after contribute nothing there; events migrating into or
out of a region (or the selection) count as moving into or out of their bin
(docs/science.md section 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.errors import AuditError


NOISE_CORRECTIONS = ("bin", "look", "none")


def _mode(noise_correction) -> str:
    if noise_correction is True:
        return "look"
    if noise_correction is False or noise_correction is None:
        return "none"
    if noise_correction not in NOISE_CORRECTIONS:
        raise AuditError(f"noise_correction must be one of {list(NOISE_CORRECTIONS)}, got {noise_correction!r}")
    return noise_correction


@dataclass
class Shift:
    looks: object            # hsaudit.visibility.looks.Looks
    d: np.ndarray            # (n_bins_total,) shift of each bin as the MC sees it
    v: np.ndarray            # (n_bins_total,) MC noise (variance) of d

    def delta(self, noise_correction="look") -> np.ndarray:
        """Shift per global bin: ``"look"`` (default, or True) the per-look correction, ``"bin"``
        the per-bin one (module docstring), ``"none"`` (or False) the raw d."""
        mode = _mode(noise_correction)
        if mode == "none":
            return self.d.copy()
        if mode == "bin":
            return np.sign(self.d) * np.sqrt(np.maximum(self.d ** 2 - self.v, 0.0))
        lk = self.looks
        raw = np.add.reduceat(self.d ** 2 / lk.var, lk.offsets)
        noise = np.add.reduceat(self.v / lk.var, lk.offsets)
        shrink = np.sqrt(np.clip(1.0 - noise / np.where(raw > 0, raw, 1.0), 0.0, 1.0))
        shrink[raw <= 0] = 0.0
        return self.d * np.repeat(shrink, lk.ndf)

    def lam(self, noise_correction="look") -> np.ndarray:
        """(n_looks,) non-centrality of every look."""
        delta = self.delta(noise_correction)
        return np.add.reduceat(delta ** 2 / self.looks.var, self.looks.offsets)

    @property
    def is_null(self) -> bool:
        return not (np.any(self.d) or np.any(self.v))
