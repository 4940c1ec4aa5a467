"""The verdict of the audit per (model, systematic) as a measurement: the largest hidden
impact on mu against the quoted (standard) impact, each with its uncertainty, a
look-elsewhere-aware null distribution, and the closure of the nominal pseudo-experiments
that every bias is measured against (the look-elsewhere effect: Gross and Vitells, Eur. Phys.
J. C 70 (2010) 525; closure as in CMS Combine's bias studies).

Three outcomes:

* ``"larger than quoted"``: hidden - quoted > n_sigma * sigma_diff AND hidden > the null's
  quantile (the largest hidden impact is compared with the same maximum over as many random
  control attacks: the largest of K noisy impacts is biased upward);
* ``"covered"``: hidden + n_sigma * sigma_diff < quoted;
* ``"inconclusive"`` otherwise, with the factor by which the MC sample would have to grow to
  decide at the current central values (uncertainties scale as 1/sqrt(MC size)).

``sigma_diff`` is the uncertainty of the difference hidden - quoted: both sides carry MC noise
(the quoted impact is measured on the same finite templates), so "hidden + 2 sigma <
quoted" uses the combined sigma, sqrt(sigma_hidden^2 + sigma_quoted^2), or, better, the
bootstrap sd of the paired difference (:meth:`hsaudit.stats.impacts.ImpactTable.difference_unc`,
which includes the correlation of the two sides). The hidden impact's own sigma would claim
"covered" where the quoted impact itself is not resolved. One statistic
t = (hidden - quoted)/sigma_diff decides both ways, so "covered" and "larger than quoted"
are separated by the inconclusive band |t| <= n_sigma and never flip into each other under
a small change of the inputs.

No hidden attack (no attack passed every check): the largest hidden impact over an empty
set is 0, known exactly. The same rule then gives "covered" when the quoted impact is itself
resolved (quoted > n_sigma * sigma_quoted), else "inconclusive" (``no_hidden="covered"``,
the default; the explanation says that nothing hidden was found). ``no_hidden="inconclusive"``
reports every such systematic as inconclusive instead.

Closure: if the nominal toys of the model do not close, every bias of the model is relative
to an unknown offset: the verdict is "inconclusive" and says so (the verdict it would have
been is kept in ``verdict_if_closed``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import optimize, stats

from hsaudit.errors import AuditError

VERDICTS = ("larger than quoted", "covered", "inconclusive")
NULL_METHODS = ("gaussian", "order_statistic", "resample")
CLOSURE_DEFAULTS = {"pull_mean_max": 0.1, "coverage_68_tolerance": 0.02, "n_se": 2.0, "pull_width_tolerance": None}


# --------------------------------------------------------------------------- null
def null_quantile(null_impacts, n_looks: int, q: float = 0.95, seed: int = 0, method: str = "gaussian") -> float:
    """The q-quantile of max(|X_1|, ..., |X_K|) for K = ``n_looks`` impacts drawn from the null.

    ``null_impacts``: the null (random-control) biases over seeds, signed preferred (the
    impact of one look is |X|). Methods:

    * ``"gaussian"`` (default): X ~ Normal(mean, sd) fitted to the null; solves
      P(|X| <= x)^K = q. A control's bias is a sum over many events' small contributions,
      so it is close to Gaussian, and the fit extrapolates to the level q^(1/K) (0.993 for
      K = 7) that 20 seeds cannot reach empirically.
    * ``"order_statistic"``: the empirical quantile of |X| at level q^(1/K) (exact for any
      continuous null with enough seeds; capped at the largest null value when
      n_seeds < ~ K / (1 - q), where it underestimates the threshold).
    * ``"resample"``: the q-quantile of the maximum of K values drawn with replacement from
      |X| (20000 draws, ``seed``); capped at the largest null value like the order statistic.
    """
    x = np.asarray(null_impacts, dtype=np.float64).ravel()
    if len(x) < 2:
        raise AuditError(f"the null needs at least 2 impacts (random-control seeds), got {len(x)}")
    if not np.isfinite(x).all():
        raise AuditError("null impacts contain NaN or inf (a failed fit of a random control?)")
    if not isinstance(n_looks, (int, np.integer)) or n_looks < 1:
        raise AuditError(f"n_looks must be a positive integer (attacks compared), got {n_looks!r}")
    if not 0.0 < q < 1.0:
        raise AuditError(f"the null quantile q must be in (0, 1), got {q!r}")
    level = q ** (1.0 / int(n_looks))
    if method == "gaussian":
        m, s = float(x.mean()), float(x.std(ddof=1))
        if s == 0:
            return abs(m)

        def cdf_abs(v):
            return stats.norm.cdf((v - m) / s) - stats.norm.cdf((-v - m) / s)

        hi = abs(m) + 20 * s
        return float(optimize.brentq(lambda v: cdf_abs(v) - level, 0.0, hi, xtol=1e-12 * max(hi, 1e-300)))
    if method == "order_statistic":
        return float(np.quantile(np.abs(x), level, method="hazen"))
    if method == "resample":
        rng = np.random.default_rng(seed)
        draws = np.abs(x)[rng.integers(0, len(x), size=(20000, int(n_looks)))].max(axis=1)
        return float(np.quantile(draws, q))
    raise AuditError(f"unknown null method {method!r}; known: {list(NULL_METHODS)}")


# --------------------------------------------------------------------------- verdict
@dataclass
class Verdict:
    verdict: str
    reason: str
    mc_scale_needed: float | None  # MC size factor to decide (inconclusive only; inf: never)
    significance: float            # t = (hidden - quoted) / sigma_diff
    difference: float
    difference_unc: float
    hidden_above_null: bool | None
    no_hidden_attack: bool
    closure_ok: bool
    verdict_if_closed: str

    def to_dict(self) -> dict:
        """JSON-ready (strict JSON: no inf/NaN): an infinite MC factor (equal central values,
        more MC never decides) becomes None, as does an infinite significance (zero
        uncertainty), with ``decidable_with_more_mc`` saying which."""
        d = asdict(self)
        d["decidable_with_more_mc"] = d["mc_scale_needed"] is not None and math.isfinite(d["mc_scale_needed"])
        for k in ("mc_scale_needed", "significance"):
            if d[k] is not None and not math.isfinite(d[k]):
                d[k] = None
        return d


def _num(x, what):
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise AuditError(f"{what} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise AuditError(f"{what} must be finite, got {v} (a failed fit?)")
    return v


def decide(hidden_impact, hidden_unc, quoted_impact, quoted_unc, null_q, n_sigma: float = 2.0, *,
           difference_unc=None, closure_ok: bool = True, closure_reason: str = "",
           no_hidden: str = "covered") -> Verdict:
    """The verdict for one (model, systematic); see the module docstring.

    hidden_impact / hidden_unc: the largest hidden impact and its uncertainty (None: no
    attack passed every check); quoted_impact / quoted_unc: the standard impact and its
    uncertainty; null_q: the null's quantile (:func:`null_quantile`; None: no null, so
    never "larger than quoted"); difference_unc: the uncertainty of hidden - quoted if known
    (paired bootstrap), else the two combined in quadrature."""
    if no_hidden not in ("covered", "inconclusive"):
        raise AuditError(f"no_hidden must be 'covered' or 'inconclusive', got {no_hidden!r}")
    n_sigma = _num(n_sigma, "n_sigma")
    if n_sigma <= 0:
        raise AuditError(f"n_sigma must be positive, got {n_sigma}")
    q, qu = _num(quoted_impact, "the quoted impact"), _num(quoted_unc, "the quoted impact's uncertainty")
    none_hidden = hidden_impact is None
    h, hu = (0.0, 0.0) if none_hidden else (_num(hidden_impact, "the hidden impact"),
                                            _num(hidden_unc, "the hidden impact's uncertainty"))
    if hu < 0 or qu < 0:
        raise AuditError("uncertainties must be >= 0")
    sigma = math.hypot(hu, qu) if difference_unc is None or none_hidden else _num(difference_unc, "difference_unc")
    diff = h - q
    t = diff / sigma if sigma > 0 else (math.copysign(math.inf, diff) if diff else 0.0)
    above_null = None if null_q is None or none_hidden else bool(h > _num(null_q, "the null quantile"))
    scale = None
    what = "no attack passed every check (largest hidden impact 0)" if none_hidden else \
        f"hidden {h:.3g} +- {hu:.2g} vs quoted {q:.3g} +- {qu:.2g}"
    if t > n_sigma and above_null:
        verdict = "larger than quoted"
        reason = (f"{what}: the hidden impact exceeds the quoted one by {t:.1f} sigma and the null's "
                  f"quantile {float(null_q):.3g}.")
    elif t < -n_sigma and not (none_hidden and no_hidden == "inconclusive"):
        verdict = "covered"
        reason = (f"{what}: the quoted impact exceeds the hidden one by {-t:.1f} sigma."
                  if not none_hidden else f"{what}: nothing hidden was found and the quoted impact is "
                                           f"resolved ({-t:.1f} sigma from 0).")
    else:
        verdict = "inconclusive"
        if none_hidden and no_hidden == "inconclusive":
            reason = f"{what}: nothing hidden to compare with the quoted impact."
        elif t > n_sigma:
            null_text = "no null distribution given" if null_q is None else \
                f"not above the null's quantile {float(null_q):.3g}"
            reason = (f"{what}: {t:.1f} sigma above the quoted impact but {null_text}: "
                      "indistinguishable from a random mismodelling.")
        else:
            scale = (n_sigma * sigma / abs(diff)) ** 2 if diff else math.inf
            need = "never (equal central values)" if math.isinf(scale) else f"{scale:.2g}x the MC events"
            reason = f"{what}: the difference is {t:+.1f} sigma, within +-{n_sigma:g}; deciding needs {need}."
    verdict_if_closed = verdict
    if not closure_ok:
        verdict = "inconclusive"
        reason = (f"nominal toys do not close{': ' + closure_reason if closure_reason else ''}; the biases are "
                  f"relative to an unknown offset (with closure: {verdict_if_closed}). " + reason)
        scale = None
    return Verdict(verdict=verdict, reason=reason, mc_scale_needed=scale, significance=float(t),
                   difference=float(diff), difference_unc=float(sigma), hidden_above_null=above_null,
                   no_hidden_attack=none_hidden, closure_ok=bool(closure_ok), verdict_if_closed=verdict_if_closed)


# --------------------------------------------------------------------------- closure
def closure_settings(raw) -> dict:
    """Validated ``fit.closure`` settings (missing keys take :data:`CLOSURE_DEFAULTS`)."""
    if raw is None:
        return dict(CLOSURE_DEFAULTS)
    if not isinstance(raw, dict):
        raise AuditError(f"fit.closure must be a mapping, got {raw!r}")
    unknown = sorted(set(raw) - set(CLOSURE_DEFAULTS))
    if unknown:
        raise AuditError(f"fit.closure: unknown key(s) {unknown}; known: {sorted(CLOSURE_DEFAULTS)}")
    out = {**CLOSURE_DEFAULTS, **raw}
    for key, value in out.items():
        if value is None and key == "pull_width_tolerance":
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise AuditError(f"fit.closure.{key} must be a positive number, got {value!r}")
        out[key] = float(value)
    return out


def closure(nominal_result, mu_true: float | None = None, settings=None) -> dict:
    """Closure of the nominal pseudo-experiments (generated and fitted with the nominal model).

    Returns bias, pull mean and width (the Gaussian pull fit of hsaudit.stats.toys, the same
    as in the figures), 68% coverage, each with its uncertainty, n_toys, ``within_gate``
    (|pull_mean| < pull_mean_max and |coverage - 0.683| < coverage_68_tolerance, and the
    width if a tolerance is set) and ``passed``: every gated quantity is inside its gate OR
    compatible with its ideal value within ``n_se`` standard errors. A failure is thus a
    deviation that is both outside the gate and significant: with few toys (400 give a
    coverage standard error of 0.023, more than the 0.02 gate) a closing model would
    otherwise fail at random."""
    from hsaudit.stats.toys import COVERAGE_68, summarise

    cfg = closure_settings(settings)
    s = summarise(nominal_result, mu_true)
    if not s.get("n_converged"):
        raise AuditError("no nominal pseudo-experiment converged: closure cannot be measured")
    keys = ("bias", "bias_unc", "pull_mean", "pull_mean_unc", "pull_width", "pull_width_unc", "coverage_68",
            "coverage_68_unc")
    out = {k: float(s[k]) for k in keys}
    out.update({"n_toys": int(s["n_converged"]), "n_failed": int(s["n_failed"]),
                "sigma_mu_median": float(s["sigma_mu_median"])})
    gates = [("pull_mean", 0.0, cfg["pull_mean_max"]), ("coverage_68", float(COVERAGE_68), cfg["coverage_68_tolerance"])]
    if cfg["pull_width_tolerance"] is not None:
        gates.append(("pull_width", 1.0, cfg["pull_width_tolerance"]))
    inside, passed, failing = True, True, []
    for key, ideal, tol in gates:
        dev = abs(out[key] - ideal)
        unc = out[f"{key}_unc"]
        ok_gate = dev < tol
        ok_stat = math.isfinite(unc) and dev < cfg["n_se"] * unc
        inside &= ok_gate
        if not (ok_gate or ok_stat):
            passed = False
            failing.append(f"{key} {out[key]:.3f} +- {unc:.3f} (ideal {ideal:.3f}, gate +-{tol:g})")
    out.update({"within_gate": bool(inside), "passed": bool(passed), "failing": failing, "settings": cfg})
    return out


__all__ = ["VERDICTS", "null_quantile", "decide", "Verdict", "closure", "closure_settings"]
