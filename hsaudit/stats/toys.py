"""Pseudo-experiments (toys): generate from a chosen truth, fit with the nominal model.

Generation. Main data ``n_b ~ Poisson(truth_b)`` where ``truth`` is any vector of
expected yields (nominal, a +-1 sigma template, an attacked template: see
``Model.expected_main`` and ``from_histograms.truth_from_histograms``); auxiliary data
``aux_c ~ Normal(aux_truth_c, sigma_c)`` around the model's nominal auxiliary values by
default (alphas 0, gammas and lumi 1), i.e. the auxiliary measurements are those of the
nominal analysis even when the main-data truth is shifted (CMS Combine's bias-study
recipe: generate with model A, fit with model B). Gammas fixed by the model (zero MC
uncertainty) keep aux = 1.

Randomness: counter-based (numpy Philox keyed by ``seed``), toy ``i`` uses its own block
of uniforms, turned into Poisson / Normal variates by inverse CDFs. Toy ``i`` is the same
number whichever chunk generates it, so chunks ``[0, 500)`` and ``[500, 1000)`` merged
equal one run of 1000 toys (``first_toy`` selects the chunk). Use one seed per scenario
and ``first_toy = chunk * chunk_size`` per job; different seeds give independent streams.

Per toy: mu_hat, sigma_mu (Hessian), converged/status, NLL, and optionally q0 and
Z = sqrt(q0) (discovery, needs a second fit with mu = 0). Summaries: bias of mu, pull
mean/width from a binned Gaussian likelihood fit (as in Combine's bias studies) with
uncertainties, coverage of the 68.3% interval mu_hat +- sigma_mu, quantiles of Z.
Failed fits are counted and excluded from the summaries.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, special, stats

from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram
from hsaudit.stats.fit import STATUS_TEXT, fit_toys
from hsaudit.stats.significance import q0_from_fits

COVERAGE_68 = special.erf(1 / np.sqrt(2))  # 0.6827


# ---------------------------------------------------------------------------- generation
def _uniforms(seed: int, first_toy: int, n_toys: int, per_toy: int) -> np.ndarray:
    """(n_toys, per_toy) uniforms in (0, 1); toy i always gets the same numbers."""
    stride = -(-per_toy // 4)  # Philox yields 4 64-bit words per counter step
    bitgen = np.random.Philox(key=int(seed) & (2**64 - 1), counter=int(first_toy) * stride)
    u = np.random.Generator(bitgen).random((n_toys, stride * 4))[:, :per_toy]
    return np.clip(u, 1e-300, None)


def _poisson_ppf(u: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """Inverse Poisson CDF per column (lam per column), exact, vectorised via CDF tables."""
    out = np.empty(u.shape)
    for b, lb in enumerate(lam):
        col = u[:, b]
        if lb <= 0:
            out[:, b] = 0.0
            continue
        width = 12.0 * np.sqrt(lb) + 20.0
        if width > 2e5:  # very large means: scipy's search per value
            out[:, b] = stats.poisson.ppf(col, lb)
            continue
        k0 = int(max(0.0, np.floor(lb - width)))
        k = np.arange(k0, int(np.ceil(lb + width)) + 1)
        cdf = stats.poisson.cdf(k, lb)
        idx = np.searchsorted(cdf, col, side="left")
        res = (k0 + idx).astype(np.float64)
        tails = (idx >= len(k)) | ((idx == 0) & (k0 > 0) & (col <= stats.poisson.cdf(k0 - 1, lb)))
        if tails.any():
            res[tails] = stats.poisson.ppf(col[tails], lb)
        out[:, b] = res
    return out


def generate_toys(model, truth_yields, n_toys: int, seed: int, *, first_toy: int = 0, aux_truth=None,
                  fluctuate_aux: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(main (n_toys, B), aux (n_toys, A)) drawn from ``truth_yields`` (B,) or {channel: yields}."""
    truth = _check_truth(model, truth_yields)
    n_toys, first_toy = int(n_toys), int(first_toy)
    if n_toys < 1 or first_toy < 0:
        raise AuditError(f"need n_toys >= 1 and first_toy >= 0, got {n_toys}, {first_toy}")
    A = model.n_aux
    u = _uniforms(seed, first_toy, n_toys, model.n_bins + A)
    main = _poisson_ppf(u[:, : model.n_bins], truth)
    centre = model.aux_nominal if aux_truth is None else np.asarray(aux_truth, dtype=np.float64)
    if centre.shape != (A,):
        raise AuditError(f"aux_truth must have {A} values (the constrained parameters), got {centre.shape}")
    aux = np.broadcast_to(centre, (n_toys, A)).copy()
    if fluctuate_aux and A:
        z = special.ndtri(u[:, model.n_bins:])
        aux = aux + z * model.aux_sigma
        fixed_aux = model.fixed[model.n_normfactors:]
        aux[:, fixed_aux] = centre[fixed_aux]
    return main, aux


def _check_truth(model, truth_yields) -> np.ndarray:
    truth = model.concat_channels(truth_yields, "truth yields")
    if truth.ndim != 1:
        raise AuditError(f"truth yields must be one vector of {model.n_bins} expected yields, got shape {truth.shape}")
    if not np.isfinite(truth).all():
        raise AuditError("truth yields contain NaN or inf")
    if (truth < 0).any():
        raise AuditError(f"truth yields are negative in bin(s) {np.flatnonzero(truth < 0).tolist()}")
    return truth


# ---------------------------------------------------------------------------- results
@dataclass
class ToyResult:
    """Per-toy arrays of one scenario (or a merge of chunks of it)."""

    toy_index: np.ndarray
    mu_hat: np.ndarray
    sigma_mu: np.ndarray
    converged: np.ndarray
    status: np.ndarray
    nll: np.ndarray
    q0: np.ndarray
    z: np.ndarray
    params: np.ndarray
    uncertainties: np.ndarray
    mu_true: float = 1.0
    seed: int = 0
    par_names: list = field(default_factory=list)

    _ARRAYS = ("toy_index", "mu_hat", "sigma_mu", "converged", "status", "nll", "q0", "z", "params", "uncertainties")

    def __len__(self) -> int:
        return len(self.toy_index)

    @property
    def n_failed(self) -> int:
        return int((~self.converged).sum())

    def save(self, path) -> None:
        """Write to an .npz file (arrays + JSON metadata), atomically."""
        from hsaudit.files import write_atomically

        meta = json.dumps({"mu_true": self.mu_true, "seed": self.seed, "par_names": self.par_names})
        arrays = {k: getattr(self, k) for k in self._ARRAYS}
        write_atomically(path, lambda fh: np.savez(fh, meta=np.array(meta), **arrays))

    @classmethod
    def load(cls, path) -> "ToyResult":
        with np.load(path, allow_pickle=False) as d:
            meta = json.loads(str(d["meta"]))
            return cls(**{k: d[k] for k in cls._ARRAYS}, **meta)


def run_pseudo_experiments(model, truth_yields, n_toys: int, seed: int, mu_true: float = 1.0, *,
                           first_toy: int = 0, aux_truth=None, significance: bool = True,
                           **fit_options) -> ToyResult:
    """Generate ``n_toys`` toys (indices ``first_toy ...``) from the truth and fit each with ``model``.

    ``mu_true`` is the signal strength the truth corresponds to (used for bias, pulls and
    coverage). ``significance=True`` also fits with mu = 0 for q0 / Z per toy.
    ``fit_options`` go to :func:`hsaudit.stats.fit.fit_toys` (device, max_iter, ...).
    """
    main, aux = generate_toys(model, truth_yields, n_toys, seed, first_toy=first_toy, aux_truth=aux_truth)
    res = fit_toys(model, main, aux, **fit_options)
    if significance:
        bonly = fit_toys(model, main, aux, fixed={model.poi: 0.0}, **fit_options)
        q0 = q0_from_fits(res, bonly)
    else:
        q0 = np.full(len(main), np.nan)
    return ToyResult(
        toy_index=np.arange(first_toy, first_toy + int(n_toys), dtype=np.int64),
        mu_hat=res.mu_hat, sigma_mu=res.sigma_mu, converged=res.converged, status=res.status,
        nll=res.nll, q0=q0, z=np.sqrt(q0), params=res.params, uncertainties=res.uncertainties,
        mu_true=float(mu_true), seed=int(seed), par_names=list(model.par_names),
    )


def run_scenarios(model, truths: dict, n_toys: int, seed, mu_true: float = 1.0, *, first_toy: int = 0,
                  significance=(), max_toys_per_call: int = 1 << 18, **fit_options) -> dict[str, ToyResult]:
    """:func:`run_pseudo_experiments` for many scenarios of one model, with the toys of all
    scenarios fitted together in as few engine calls as ``max_toys_per_call`` allows.

    ``truths``: {scenario: truth yields}; ``seed``: one seed for every scenario (common random
    numbers) or {scenario: seed}; ``significance``: the scenarios that also get the mu = 0
    fit (q0, Z). Each scenario's toys are generated exactly as run_pseudo_experiments
    generates them and a toy's fit does not depend on the other toys of its batch, so the
    results equal one run_pseudo_experiments per scenario number for number (tested): how
    scenarios are batched changes no number.
    """
    names = list(truths)
    if not names:
        raise AuditError("no scenarios to fit")
    if isinstance(seed, dict):
        missing = [s for s in names if s not in seed]
        if missing:
            raise AuditError(f"no toy seed for scenario(s) {missing}")
        seeds = {s: int(seed[s]) for s in names}
    else:
        seeds = {s: int(seed) for s in names}
    unknown = sorted(set(significance) - set(names))
    if unknown:
        raise AuditError(f"significance requested for unknown scenario(s) {unknown} (known: {names})")
    n_toys = int(n_toys)
    if int(max_toys_per_call) < 1:
        raise AuditError(f"max_toys_per_call must be >= 1, got {max_toys_per_call}")
    per_call = max(1, int(max_toys_per_call) // max(n_toys, 1))  # scenarios per engine call
    out: dict[str, ToyResult] = {}
    for start in range(0, len(names), per_call):
        group = names[start:start + per_call]
        toys = {s: generate_toys(model, truths[s], n_toys, seeds[s], first_toy=first_toy) for s in group}
        main = np.concatenate([toys[s][0] for s in group])
        aux = np.concatenate([toys[s][1] for s in group])
        res = fit_toys(model, main, aux, **fit_options)
        sig = [s for s in group if s in set(significance)]
        q0 = {}
        if sig:
            bonly = fit_toys(model, np.concatenate([toys[s][0] for s in sig]),
                             np.concatenate([toys[s][1] for s in sig]), fixed={model.poi: 0.0}, **fit_options)
            for k, s in enumerate(sig):
                part = slice(k * n_toys, (k + 1) * n_toys)
                q0[s] = q0_from_fits(_rows(res, slice(group.index(s) * n_toys, (group.index(s) + 1) * n_toys)),
                                     _rows(bonly, part))
        for k, s in enumerate(group):
            r = _rows(res, slice(k * n_toys, (k + 1) * n_toys))
            q = q0.get(s, np.full(n_toys, np.nan))
            out[s] = ToyResult(
                toy_index=np.arange(first_toy, first_toy + n_toys, dtype=np.int64),
                mu_hat=r.mu_hat, sigma_mu=r.sigma_mu, converged=r.converged, status=r.status,
                nll=r.nll, q0=q, z=np.sqrt(q), params=r.params, uncertainties=r.uncertainties,
                mu_true=float(mu_true), seed=seeds[s], par_names=list(model.par_names),
            )
    return out


def _rows(res, sl: slice):
    """The toys ``sl`` of a FitResult, as a FitResult."""
    from hsaudit.stats.fit import FitResult

    return FitResult(params=res.params[sl], uncertainties=res.uncertainties[sl], nll=res.nll[sl],
                     converged=res.converged[sl], status=res.status[sl], n_iter=res.n_iter[sl],
                     par_names=res.par_names, poi_index=res.poi_index,
                     covariance=None if res.covariance is None else res.covariance[sl])


def merge(chunks) -> ToyResult:
    """Concatenate chunk results of one scenario (sorted by toy index; overlaps are refused)."""
    chunks = list(chunks)
    if not chunks:
        raise AuditError("no toy chunks to merge")
    first = chunks[0]
    for c in chunks[1:]:
        if c.mu_true != first.mu_true or c.seed != first.seed or c.par_names != first.par_names:
            raise AuditError("cannot merge toy chunks of different scenarios (mu_true, seed or parameters differ)")
    idx = np.concatenate([c.toy_index for c in chunks])
    order = np.argsort(idx, kind="stable")
    if len(np.unique(idx)) != len(idx):
        raise AuditError("toy chunks overlap (the same toy index appears twice): check first_toy per chunk")
    arrays = {k: np.concatenate([getattr(c, k) for c in chunks])[order] for k in ToyResult._ARRAYS}
    return ToyResult(**arrays, mu_true=first.mu_true, seed=first.seed, par_names=list(first.par_names))


# ---------------------------------------------------------------------------- summaries
def gaussian_fit(x: np.ndarray, lo: float = -5.0, hi: float = 5.0, n_bins: int = 50) -> dict:
    """Binned Poisson-likelihood fit of N * Gauss(mean, width) to the histogram of x in
    [lo, hi] (values outside are ignored, as in a ROOT histogram fit). Returns mean,
    width and their Hessian uncertainties."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    edges = np.linspace(lo, hi, n_bins + 1)
    # np.histogram's conventions (values outside [lo, hi] ignored, hi in the last bin): the
    # counts are those of np.histogram(x, n_bins, (lo, hi)), as whole numbers in float64
    counts = weighted_histogram(x, None, edges, outside="drop", sums="cumulative", what="pull histogram")[0]
    n_in = counts.sum()
    if n_in < 10:
        m, s = (float(np.mean(x)), float(np.std(x))) if len(x) else (np.nan, np.nan)
        return {"mean": m, "mean_unc": np.nan, "width": s, "width_unc": np.nan, "n": int(n_in)}

    def nll(p):
        norm, mean, log_w = p
        cdf = special.ndtr((edges - mean) / np.exp(log_w))
        mu = np.clip(norm * np.diff(cdf), 1e-300, None)
        return float(np.sum(mu - special.xlogy(counts, mu)))

    m0, s0 = np.mean(np.clip(x, lo, hi)), max(np.std(np.clip(x, lo, hi)), 1e-3)
    best = optimize.minimize(nll, [n_in, m0, np.log(s0)], method="Nelder-Mead",
                             options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 20000, "maxfev": 20000})
    p = best.x
    # Hessian by central finite differences, in (norm, mean, width)
    def nll_w(q):
        return nll([q[0], q[1], np.log(q[2])])

    q = np.array([p[0], p[1], np.exp(p[2])])
    h = np.array([max(1e-4 * q[0], 1e-3), 1e-4 * max(q[2], 1e-3), 1e-4 * max(q[2], 1e-3)])
    H = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            ei, ej = np.eye(3)[i] * h[i], np.eye(3)[j] * h[j]
            H[i, j] = (nll_w(q + ei + ej) - nll_w(q + ei - ej) - nll_w(q - ei + ej) + nll_w(q - ei - ej)) / (4 * h[i] * h[j])
    try:
        cov = np.linalg.inv(H)
        unc = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        unc = np.full(3, np.nan)
    return {"mean": float(q[1]), "mean_unc": float(unc[1]), "width": float(q[2]), "width_unc": float(unc[2]),
            "n": int(n_in)}


def summarise(result: ToyResult, mu_true: float | None = None) -> dict:
    """Bias, pulls (Gaussian fit), coverage and significance quantiles, with uncertainties.

    Only converged toys enter; ``n_failed`` and ``failures`` count the others."""
    mu_true = result.mu_true if mu_true is None else float(mu_true)
    ok = result.converged & np.isfinite(result.sigma_mu) & (result.sigma_mu > 0)
    n = int(ok.sum())
    out: dict = {
        "n_toys": len(result), "n_converged": n, "n_failed": int(len(result) - n),
        "failure_fraction": float((len(result) - n) / max(len(result), 1)),
        "failures": {STATUS_TEXT[int(c)]: int((result.status[~ok] == c).sum()) for c in np.unique(result.status[~ok])},
        "mu_true": mu_true,
    }
    if n == 0:
        return out
    mu, sig = result.mu_hat[ok], result.sigma_mu[ok]
    d = mu - mu_true
    pull = d / sig
    g = gaussian_fit(pull)
    cover = np.abs(d) <= sig
    cov = float(cover.mean())
    sd = float(np.std(d, ddof=1)) if n > 1 else np.nan
    out.update({
        "bias": float(d.mean()), "bias_unc": sd / np.sqrt(n) if n > 1 else np.nan,
        "relative_bias": float(d.mean() / mu_true) if mu_true else np.nan,
        "mu_hat_mean": float(mu.mean()), "mu_hat_median": float(np.median(mu)), "mu_hat_std": sd,
        "sigma_mu_median": float(np.median(sig)),
        "pull_mean": g["mean"], "pull_mean_unc": g["mean_unc"],
        "pull_width": g["width"], "pull_width_unc": g["width_unc"],
        "pull_sample_mean": float(pull.mean()),
        "pull_sample_std": float(np.std(pull, ddof=1)) if n > 1 else np.nan,
        "coverage_68": cov, "coverage_68_unc": float(np.sqrt(max(cov * (1 - cov), 1e-12) / n)),
        "coverage_68_expected": float(COVERAGE_68),
    })
    z = result.z[ok]
    z = z[np.isfinite(z)]
    if len(z):
        q = np.quantile(z, [0.025, 0.16, 0.5, 0.84, 0.975])
        out["significance"] = {"mean": float(z.mean()), "median": float(q[2]), "q02.5": float(q[0]),
                               "q16": float(q[1]), "q84": float(q[3]), "q97.5": float(q[4]), "n": int(len(z))}
    return out


__all__ = ["generate_toys", "run_pseudo_experiments", "run_scenarios", "merge", "summarise", "gaussian_fit", "ToyResult"]
