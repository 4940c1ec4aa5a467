"""Discovery significance from the profile likelihood ratio (Cowan, Cranmer, Gross,
Vitells, "Asymptotic formulae for likelihood-based tests of new physics", EPJC 71 (2011)
1554).

q0 = 2 [NLL(mu = 0, profiled) - NLL(mu_hat)] for mu_hat >= 0, else 0, and Z = sqrt(q0).
The expected (Asimov) significance uses the Asimov data set: main data = expected yields
at mu (default 1) with all nuisance parameters at their nominal values, auxiliary data
nominal. Both fits are batched (:func:`hsaudit.stats.fit.fit_toys`).
"""

from __future__ import annotations

import numpy as np

from hsaudit.stats.fit import FitResult, fit_toys


def q0_from_fits(free: FitResult, background_only: FitResult) -> np.ndarray:
    """q0 per toy from a free fit and a fit with the POI fixed to 0 (NaN where a fit failed)."""
    q0 = 2.0 * (background_only.nll - free.nll)
    q0 = np.where(free.mu_hat >= 0, np.clip(q0, 0.0, None), 0.0)
    ok = free.converged & background_only.converged
    return np.where(ok, q0, np.nan)


def discovery_q0(model, data, aux=None, *, free_fit: FitResult | None = None, **fit_options) -> tuple[np.ndarray, np.ndarray]:
    """(q0, Z) per toy for data (N, B) and aux (N, A); pass ``free_fit`` to reuse a fit."""
    if free_fit is None:
        free_fit = fit_toys(model, data, aux, **fit_options)
    bonly = fit_toys(model, data, aux, fixed={model.poi: 0.0}, **fit_options)
    q0 = q0_from_fits(free_fit, bonly)
    return q0, np.sqrt(q0)


def asimov_data(model, mu: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(main (B,), aux (A,)): expected yields at POI = mu, nuisances nominal."""
    pars = model.param_vector(**{model.poi: mu})
    return model.expected_main(pars), model.aux_nominal.copy()


def asimov_significance(model, mu: float = 1.0, **fit_options) -> float:
    """Median expected discovery significance Z_A = sqrt(q0_A) for signal strength ``mu``."""
    main, aux = asimov_data(model, mu)
    q0, z = discovery_q0(model, main[None], aux[None], **fit_options)
    return float(z[0])
