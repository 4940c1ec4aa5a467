"""Hidden-ness checks: would an analyst's standard validation notice the attacked sample?

The checks of docs/science.md section 4, each comparing the attacked sample with the
nominal one in a region (control regions at least):

``ks``              per-feature weighted two-sample Kolmogorov-Smirnov statistic;
``chi2``            per-feature chi2 of weighted binned distributions (equal-population bins
                    of the nominal sample) with the MC statistical uncertainties (sum w^2) of
                    both samples, and its p-value (the samples share events, so this is
                    conservative: it understates the significance of a difference);
``jsd``             per-feature Jensen-Shannon distance (base 2, in [0, 1]) of histograms on
                    ``jsd_bins`` uniform bins over the nominal range;
``correlation``     relative Frobenius norm ||C_adv - C|| / ||C|| of the weighted Pearson
                    correlation matrices;
``nn_output_chi2``  chi2 p-value of the NN-output distribution (control regions);
``nn_output_ks``    KS statistic of the NN-output distribution;
``band``            per feature: every bin of the attacked histogram inside the band spanned
                    by the nominal and standard up/down histograms, widened by
                    ``band_tolerance_sigma`` times the MC statistical uncertainty.

Default thresholds come from the papers: KS 0.04 and NN-output KS 0.02 (Nachman & Shimmin
2019), JSD 0.06 and relative correlation change 0.006 (Bechtle et al. 2026, "Shapes are not
enough"), chi2 p-values 0.05. Every check returns a ``CheckResult`` with name, feature,
region, statistic, threshold and passed; ``is_hidden(checks)`` is True when all pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import stats

from hsaudit.arrays import finite_array, finite_weights
from hsaudit.errors import AuditError
# values outside the edges count in the first / last bin (outside='clip', the default)
from hsaudit.histograms import weighted_histogram

from hsaudit.config_schema import threshold_defaults

# the papers' thresholds and binnings with their defaults (keys of the config's ``checks``
# section; hsaudit.config_schema.ChecksSection documents them)
DEFAULT_THRESHOLDS = threshold_defaults()

FEATURE_CHECKS = ("ks", "chi2", "jsd")
ALL_CHECKS = ("ks", "chi2", "jsd", "correlation", "nn_output_chi2", "nn_output_ks", "band")


@dataclass
class CheckResult:
    name: str
    feature: str | None
    region: str
    statistic: float
    threshold: float
    passed: bool
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_thresholds(thresholds: dict | None) -> dict:
    """Defaults overridden by ``thresholds`` (e.g. the config's ``checks`` section)."""
    t = dict(DEFAULT_THRESHOLDS)
    if thresholds:
        unknown = sorted(set(thresholds) - set(DEFAULT_THRESHOLDS))
        if unknown:
            raise AuditError(f"unknown check thresholds {unknown}; known: {sorted(DEFAULT_THRESHOLDS)}")
        t.update(thresholds)
    for k, v in t.items():
        if isinstance(v, bool) or not np.isfinite(float(v)) or float(v) < 0:
            raise AuditError(f"check threshold '{k}' must be a finite number >= 0, got {v!r}")
    for k in ("bins", "jsd_bins"):
        if int(t[k]) != t[k] or t[k] < 1:
            raise AuditError(f"check setting '{k}' must be a positive integer, got {t[k]!r}")
        t[k] = int(t[k])
    return t


# ---------------------------------------------------------------------------- statistics
def _arr(name, a, ndim):
    return finite_array(a, name, ndim=ndim)


def _weights(name, w, n):
    return finite_weights(w, n, name)


def _two_samples(test: str, a, b, wa, wb):
    """The two weighted samples of a two-sample statistic, checked (non-empty, finite)."""
    a = _arr("a", a, 1)
    b = _arr("b", b, 1)
    if len(a) == 0 or len(b) == 0:
        raise AuditError(f"{test} needs non-empty samples")
    return a, b, _weights("wa", wa, len(a)), _weights("wb", wb, len(b))


def ks_statistic(a, b, wa=None, wb=None) -> float:
    """Weighted two-sample KS statistic max_x |F_a(x) - F_b(x)|."""
    a, b, wa, wb = _two_samples("KS test", a, b, wa, wb)
    fa, fb = weighted_cdfs(a, b, wa, wb, np.concatenate([a, b]))
    return float(np.max(np.abs(fa - fb)))


def weighted_cdfs(a: np.ndarray, b: np.ndarray, wa: np.ndarray, wb: np.ndarray, at: np.ndarray):
    """Weighted empirical CDFs of ``a`` and ``b`` (each normalised to its total weight,
    right-continuous) evaluated at the points ``at``: the common core of the KS statistic
    and the Wasserstein distance."""
    ia, ib = np.argsort(a, kind="stable"), np.argsort(b, kind="stable")
    ca = np.concatenate([[0.0], np.cumsum(wa[ia])]) / wa.sum()
    cb = np.concatenate([[0.0], np.cumsum(wb[ib])]) / wb.sum()
    return ca[np.searchsorted(a[ia], at, side="right")], cb[np.searchsorted(b[ib], at, side="right")]


def equal_population_edges(ref: np.ndarray, bins: int) -> np.ndarray:
    q = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)))
    if len(q) < 2:
        q = np.array([q[0] - 0.5, q[0] + 0.5])
    return q


def chi2_test(a, b, wa=None, wb=None, bins: int = 20, edges=None) -> tuple[float, int, float]:
    """chi2 = sum_k (A_k - B_k)^2 / (sigma_A,k^2 + sigma_B,k^2) over bins with entries;
    returns (chi2, ndf, p-value). Bins: equal-population bins of ``b`` (the reference)."""
    a, b, wa, wb = _two_samples("chi2 test", a, b, wa, wb)
    edges = equal_population_edges(b, bins) if edges is None else edges
    ha, sa = weighted_histogram(a, wa, edges)
    hb, sb = weighted_histogram(b, wb, edges)
    var = sa + sb
    use = var > 0
    chi2 = float(np.sum((ha[use] - hb[use]) ** 2 / var[use]))
    ndf = int(use.sum())
    p = float(stats.chi2.sf(chi2, ndf)) if ndf > 0 else 1.0
    return chi2, ndf, p


def histogram_jsd(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2) between two non-negative histograms.

    ``scipy.spatial.distance.jensenshannon(p, q, base=2)`` is the same quantity, but its
    ``rel_entr`` takes the logarithm through libm where ``np.log`` is vectorised: results
    differ in the last bits (relative 1e-12 for nearly equal histograms), so the published
    JSD values would change."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0, None)
    q = np.clip(np.asarray(q, dtype=np.float64), 0, None)
    if p.sum() <= 0 or q.sum() <= 0:
        return 0.0 if p.sum() == q.sum() else 1.0
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        kp = np.where(p > 0, p * np.log(p / m), 0.0).sum()
        kq = np.where(q > 0, q * np.log(q / m), 0.0).sum()
    return float(np.sqrt(max(0.5 * (kp + kq), 0.0) / np.log(2.0)))


def jsd_distance(a, b, wa=None, wb=None, bins: int = 100, value_range=None) -> float:
    """JSD of ``a`` vs ``b`` on ``bins`` uniform bins over ``value_range`` (default: b's range)."""
    a, b, wa, wb = _two_samples("JSD", a, b, wa, wb)
    lo, hi = (float(b.min()), float(b.max())) if value_range is None else value_range
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    return histogram_jsd(weighted_histogram(a, wa, edges)[0], weighted_histogram(b, wb, edges)[0])


def correlation_matrix(x, w=None) -> np.ndarray:
    """Weighted Pearson correlation matrix; constant features get zero correlations."""
    x = _arr("x", x, 2)
    w = _weights("weights", w, len(x))
    ws = w.sum()
    mu = (w[:, None] * x).sum(0) / ws
    d = x - mu
    cov = (w[:, None] * d).T @ d / ws
    sd = np.sqrt(np.clip(np.diag(cov), 0, None))
    good = sd > 0
    c = np.zeros_like(cov)
    c[np.ix_(good, good)] = cov[np.ix_(good, good)] / np.outer(sd[good], sd[good])
    return c


def correlation_change(x_nominal, x_attacked, w=None, w_attacked=None) -> float:
    """||C_adv - C||_F / ||C||_F (``w_attacked``: weights of the attacked sample when it is
    not the same events as the nominal one, e.g. after migration; default ``w``)."""
    c0 = correlation_matrix(x_nominal, w)
    c1 = correlation_matrix(x_attacked, w if w_attacked is None else w_attacked)
    return float(np.linalg.norm(c1 - c0) / max(np.linalg.norm(c0), 1e-12))


# ---------------------------------------------------------------------------- checks
def _check_pair(nominal, attacked, weights, weights_attacked):
    x0 = _arr("nominal", nominal, 2)
    x1 = _arr("attacked", attacked, 2)
    if x0.shape[1] != x1.shape[1]:
        raise AuditError(f"nominal has {x0.shape[1]} features, attacked has {x1.shape[1]}")
    if len(x0) == 0 or len(x1) == 0:
        raise AuditError("checks need non-empty nominal and attacked samples (is the region empty?)")
    w0 = _weights("weights", weights, len(x0))
    if weights_attacked is None and weights is not None and len(x1) != len(x0):
        raise AuditError(f"the attacked sample has {len(x1)} events and the nominal one {len(x0)}: "
                         "pass weights_attacked (the weights of the attacked events)")
    w1 = w0 if weights_attacked is None and len(x1) == len(x0) else _weights("weights_attacked", weights_attacked, len(x1))
    return x0, x1, w0, w1


def _names(feature_names, n):
    if feature_names is None:
        return [f"f{j}" for j in range(n)]
    if len(feature_names) != n:
        raise AuditError(f"{len(feature_names)} feature names for {n} features")
    return list(feature_names)


def feature_checks(nominal, attacked, weights=None, weights_attacked=None, feature_names=None, region: str = "",
                   thresholds=None, which=FEATURE_CHECKS) -> list[CheckResult]:
    """Per-feature KS / chi2 / JSD checks of attacked vs nominal (N, F) samples."""
    t = resolve_thresholds(thresholds)
    x0, x1, w0, w1 = _check_pair(nominal, attacked, weights, weights_attacked)
    names = _names(feature_names, x0.shape[1])
    out = []
    for j, name in enumerate(names):
        if "ks" in which:
            ks = ks_statistic(x1[:, j], x0[:, j], w1, w0)
            out.append(CheckResult("ks", name, region, ks, t["ks_max"], ks <= t["ks_max"]))
        if "chi2" in which:
            c2, ndf, p = chi2_test(x1[:, j], x0[:, j], w1, w0, t["bins"])
            out.append(CheckResult("chi2", name, region, p, t["chi2_pvalue_min"], p >= t["chi2_pvalue_min"],
                                   {"chi2": c2, "ndf": ndf, "statistic_is": "p-value"}))
        if "jsd" in which:
            d = jsd_distance(x1[:, j], x0[:, j], w1, w0, t["jsd_bins"])
            out.append(CheckResult("jsd", name, region, d, t["jsd_max"], d < t["jsd_max"]))
    return out


def correlation_check(nominal, attacked, weights=None, region: str = "", thresholds=None,
                      weights_attacked=None) -> CheckResult:
    """Relative change of the correlation matrix; the attacked sample may be other events
    (migration) when ``weights_attacked`` is given."""
    t = resolve_thresholds(thresholds)
    x0, x1, w0, w1 = _check_pair(nominal, attacked, weights, weights_attacked)
    r = correlation_change(x0, x1, w0, w1)
    return CheckResult("correlation", None, region, r, t["correlation_rel_max"], r < t["correlation_rel_max"])


def nn_output_checks(outputs_nominal, outputs_attacked, weights=None, weights_attacked=None, region: str = "",
                     thresholds=None, which=("nn_output_chi2", "nn_output_ks")) -> list[CheckResult]:
    t = resolve_thresholds(thresholds)
    o0 = _arr("outputs_nominal", outputs_nominal, 1)
    o1 = _arr("outputs_attacked", outputs_attacked, 1)
    w0 = _weights("weights", weights, len(o0))
    w1 = w0 if weights_attacked is None and len(o1) == len(o0) else _weights("weights_attacked", weights_attacked, len(o1))
    out = []
    if "nn_output_chi2" in which:
        c2, ndf, p = chi2_test(o1, o0, w1, w0, t["bins"])
        out.append(CheckResult("nn_output_chi2", "nn_output", region, p, t["nn_output_chi2_pvalue_min"],
                               p >= t["nn_output_chi2_pvalue_min"], {"chi2": c2, "ndf": ndf, "statistic_is": "p-value"}))
    if "nn_output_ks" in which:
        ks = ks_statistic(o1, o0, w1, w0)
        out.append(CheckResult("nn_output_ks", "nn_output", region, ks, t["nn_output_ks_max"], ks <= t["nn_output_ks_max"]))
    return out


def band_checks(nominal, attacked, up, down, weights=None, weights_attacked=None, weights_up=None, weights_down=None,
                feature_names=None, region: str = "", thresholds=None) -> list[CheckResult]:
    """Per feature: fraction of bins where the attacked histogram is outside the band of the
    nominal / up / down histograms (widened by ``band_tolerance_sigma`` x MC stat of the
    attacked histogram). Up/down may be different event sets (migration) with own weights."""
    t = resolve_thresholds(thresholds)
    x0, x1, w0, w1 = _check_pair(nominal, attacked, weights, weights_attacked)
    xu = _arr("up", up, 2)
    xd = _arr("down", down, 2)
    wu = _weights("weights_up", weights_up if weights_up is not None or len(xu) != len(x0) else w0, len(xu))
    wd = _weights("weights_down", weights_down if weights_down is not None or len(xd) != len(x0) else w0, len(xd))
    names = _names(feature_names, x0.shape[1])
    out = []
    for j, name in enumerate(names):
        edges = equal_population_edges(x0[:, j], t["bins"])
        h1, s1 = weighted_histogram(x1[:, j], w1, edges)
        hs = [weighted_histogram(v[:, j], w, edges)[0] for v, w in ((x0, w0), (xu, wu), (xd, wd))]
        tol = t["band_tolerance_sigma"] * np.sqrt(s1)
        lo = np.min(hs, axis=0) - tol
        hi = np.max(hs, axis=0) + tol
        outside = (h1 < lo - 1e-9 * np.abs(lo)) | (h1 > hi + 1e-9 * np.abs(hi))
        frac = float(outside.mean())
        out.append(CheckResult("band", name, region, frac, t["band_max_outside_fraction"],
                               frac <= t["band_max_outside_fraction"], {"bins_outside": int(outside.sum())}))
    return out


def run_checks(nominal, attacked, weights=None, feature_names=None, region: str = "", outputs_nominal=None,
               outputs_attacked=None, up=None, down=None, weights_up=None, weights_down=None, thresholds=None,
               which=None, weights_attacked=None) -> list[CheckResult]:
    """All configured checks for one region. ``which``: names from ``ALL_CHECKS`` (default:
    every check whose inputs are given: NN-output checks need outputs, band checks need up
    and down). ``weights_attacked``: weights of the attacked sample when it is not the
    nominal events one to one (events migrated into or out of the region)."""
    if which is None:
        which = list(FEATURE_CHECKS) + ["correlation"]
        if outputs_nominal is not None and outputs_attacked is not None:
            which += ["nn_output_chi2", "nn_output_ks"]
        if up is not None and down is not None:
            which.append("band")
    unknown = sorted(set(which) - set(ALL_CHECKS))
    if unknown:
        raise AuditError(f"unknown checks {unknown}; known: {list(ALL_CHECKS)}")
    out = feature_checks(nominal, attacked, weights, weights_attacked, feature_names, region, thresholds,
                         [c for c in which if c in FEATURE_CHECKS])
    if "correlation" in which:
        out.append(correlation_check(nominal, attacked, weights, region, thresholds, weights_attacked))
    nn = [c for c in which if c.startswith("nn_output")]
    if nn:
        if outputs_nominal is None or outputs_attacked is None:
            raise AuditError("NN-output checks need outputs_nominal and outputs_attacked")
        out += nn_output_checks(outputs_nominal, outputs_attacked, weights, weights_attacked, region, thresholds, nn)
    if "band" in which:
        if up is None or down is None:
            raise AuditError("the band check needs the standard up and down samples")
        out += band_checks(nominal, attacked, up, down, weights, weights_attacked, weights_up, weights_down,
                           feature_names, region, thresholds)
    return out


def is_hidden(checks) -> bool:
    """True when every configured check passed (an empty list is an error, not a pass)."""
    checks = list(checks)
    if not checks:
        raise AuditError("is_hidden needs at least one check result")
    return all(bool(c.passed if isinstance(c, CheckResult) else c["passed"]) for c in checks)
