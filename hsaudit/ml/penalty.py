"""Systematics-aware penalty of Wunsch, Joerger, Wolf, Quast (2020), "Reducing the dependence
of the neural network function to systematic uncertainties in the input space"
(Comput. Softw. Big Sci. 4, 5; arXiv:1907.11674).

The NN output f in [0, 1] is histogrammed with a differentiable bin count

    N_k(f) = sum_i w_i * exp(-(f_i - c_k)^2 / (2 sigma^2)),

c_k the centre of bin k of ``n_bins`` equal bins over [0, 1], sigma = half a bin width, each
Gaussian normalised to peak value 1 and multiplied by the event weight. For one systematic
with up and down variations,

    Lambda = (1/n_k) sum_k ((N_k(nominal) - N_k(up))   / N_k(nominal))^2
           + (1/n_k) sum_k ((N_k(nominal) - N_k(down)) / N_k(nominal))^2,

and the training loss is L = L_BCE + sum_s lambda_s Lambda_s. A variation is either a shifted
input (N_k(up) uses f(x_up)) or a change of weights (N_k(up) uses f(x) with w_up), or both.

Everything here is vectorised over variants: one call to ``soft_histogram`` builds the
histograms of all variants of a minibatch at once.
"""

from __future__ import annotations

import numpy as np
import torch

# Denominators below this fraction of the nominal histogram's total are clamped, so that an
# (effectively) empty nominal bin cannot produce an infinite penalty.
DEFAULT_EPS_REL = 1e-6


def bin_centres(n_bins: int) -> np.ndarray:
    return (np.arange(n_bins) + 0.5) / n_bins


def soft_histogram(outputs: torch.Tensor, weights: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Differentiable weighted histogram of values in [0, 1].

    ``outputs`` and ``weights`` have shape (..., N); the result has shape (..., n_bins).
    """
    centres = (torch.arange(n_bins, device=outputs.device, dtype=outputs.dtype) + 0.5) / n_bins
    sigma = 0.5 / n_bins
    z = (outputs.unsqueeze(-1) - centres) / sigma  # (..., N, K)
    g = torch.exp(-0.5 * z * z)
    # sum_i w_i g_ik as a batched matrix-vector product: (..., 1, N) @ (..., N, K)
    return (weights.unsqueeze(-2).to(g.dtype) @ g).squeeze(-2)


def relative_deviation(h_nominal: torch.Tensor, h_varied: torch.Tensor, eps_rel: float = DEFAULT_EPS_REL) -> torch.Tensor:
    """(1/n_k) sum_k ((N_k(nom) - N_k(var)) / N_k(nom))^2 over the last axis.

    ``h_nominal`` (..., K) broadcasts against ``h_varied`` (..., K).
    """
    floor = eps_rel * h_nominal.sum(-1, keepdim=True).abs()
    denom = torch.maximum(h_nominal, floor).clamp_min(torch.finfo(h_nominal.dtype).tiny)
    r = (h_nominal - h_varied) / denom
    return (r * r).mean(-1)


def variation_penalty(
    f_nominal: torch.Tensor,
    w_nominal: torch.Tensor,
    f_up: torch.Tensor | None = None,
    w_up: torch.Tensor | None = None,
    f_down: torch.Tensor | None = None,
    w_down: torch.Tensor | None = None,
    n_bins: int = 10,
    eps_rel: float = DEFAULT_EPS_REL,
) -> torch.Tensor:
    """Lambda of one systematic (a scalar tensor, differentiable in all outputs).

    For each side (up, down): varied outputs default to the nominal outputs (weight-based
    variation) and varied weights to the nominal weights (shift-based variation). A side is
    left out when neither its outputs nor its weights are given.
    """
    fs, ws = [f_nominal], [w_nominal]
    for f, w in ((f_up, w_up), (f_down, w_down)):
        if f is None and w is None:
            continue
        fs.append(f_nominal if f is None else f)
        ws.append(w_nominal if w is None else w)
    if len(fs) == 1:
        return f_nominal.new_zeros(())
    h = soft_histogram(torch.stack(fs), torch.stack(ws), n_bins)
    return relative_deviation(h[0], h[1:], eps_rel).sum()


def variation_penalty_numpy(
    f_nominal,
    w_nominal,
    f_up=None,
    w_up=None,
    f_down=None,
    w_down=None,
    n_bins: int = 10,
    eps_rel: float = DEFAULT_EPS_REL,
) -> float:
    """Plain numpy (float64) version of ``variation_penalty``, written straight from the
    formula; used to cross-check the torch implementation and for reporting."""
    c = bin_centres(n_bins)
    sigma = 0.5 / n_bins

    def hist(f, w):
        f = np.asarray(f, dtype=np.float64)
        w = np.asarray(w, dtype=np.float64)
        return np.array([np.sum(w * np.exp(-((f - ck) ** 2) / (2 * sigma**2))) for ck in c])

    h0 = hist(f_nominal, w_nominal)
    denom = np.maximum(h0, eps_rel * abs(h0.sum()))
    total = 0.0
    for f, w in ((f_up, w_up), (f_down, w_down)):
        if f is None and w is None:
            continue
        hv = hist(f_nominal if f is None else f, w_nominal if w is None else w)
        total += float(np.mean(((h0 - hv) / denom) ** 2))
    return total
