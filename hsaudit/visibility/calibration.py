"""The global data-visibility test, calibrated with null toys, and the power of a shift.

Global test (docs/science.md section 4, "Many looks"): reject "data = nominal" when the
smallest p-value over all looks of all regions is below p*. p* is calibrated on null toys
(hsaudit.visibility.pseudodata) as the alpha-quantile of the minimum p-value: the k-th
smallest of n toys with k = floor(alpha (n + 1)), so that a new, independent toy falls below it
with probability k / (n + 1) <= alpha. The false-alarm rates of the global test and of every
look (each at its own asymptotic level alpha) are then measured on an independent second set
of null toys (another random stream), with binomial standard errors.

Power of a shift (hsaudit.visibility.shift): per look asymptotically,
P(chi2_nc(ndf, lambda) > chi2.isf(p*, ndf)); for the global test with the correlations between
looks, by reusing the stored null residuals eps_tk = N_tk - m_k of the calibration toys:
T_l = sum_k (eps_tk + delta_k)^2 / (m_k + s_k^2), rejected when min_l p_l < p*. The shift is
*hidden* when that power is at most ``power_max``.

The min-p calibration is the resampling-based multiple-testing adjustment of P. H. Westfall
and S. S. Young, "Resampling-Based Multiple Testing" (Wiley, 1993), with the resampling done
at event level so that the correlations between looks are those of data.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.visibility.looks import Looks
from hsaudit.visibility.pseudodata import BinCounter, null_residuals
from hsaudit.visibility.settings import VisibilitySettings
from hsaudit.visibility.shift import Shift
from hsaudit.visibility.statistic import asymptotic_power, median_p_value, p_values, pearson

CALIBRATION_STREAM = 1
TEST_STREAM = 2


def _binomial_se(p: float | np.ndarray, n: int):
    return np.sqrt(np.asarray(p) * (1.0 - np.asarray(p)) / n)


def min_p_threshold(min_p: np.ndarray, alpha: float) -> float:
    """The k-th smallest minimum p-value, k = max(1, floor(alpha (n + 1)))."""
    k = max(1, int(np.floor(alpha * (min_p.size + 1))))
    return float(np.sort(min_p)[k - 1])


@dataclass
class ShiftSummary:
    """What the global test says about one shift."""
    power: float
    power_unc: float
    hidden: bool
    power_max: float
    alpha: float
    p_threshold: float
    n_toys: int
    noise_correction: str
    looks: list = field(default_factory=list)      # per look: id, name, kind, region, ndf, lambda, ...
    most_visible: dict = field(default_factory=dict)
    regions: dict = field(default_factory=dict)    # region -> power of that region's looks alone (at p*)

    def to_dict(self, top: int | None = None) -> dict:
        """JSON-ready; ``top``: keep only the ``top`` most visible looks (default all)."""
        looks = self.looks
        if top is not None:
            looks = sorted(looks, key=lambda r: (r["power"], r["lambda"]), reverse=True)[:int(top)]
        return {
            "power": float(self.power), "power_unc": float(self.power_unc), "hidden": bool(self.hidden),
            "power_max": float(self.power_max), "alpha": float(self.alpha), "p_threshold": float(self.p_threshold),
            "n_toys": int(self.n_toys), "noise_correction": str(self.noise_correction),
            "most_visible": dict(self.most_visible), "regions": dict(self.regions), "looks": [dict(lk) for lk in looks],
        }


class Calibration:
    """Null-toy calibration of the global test on a set of looks."""

    def __init__(self, looks: Looks, settings: VisibilitySettings, seed: int, residuals: np.ndarray,
                 min_p_cal: np.ndarray, min_p_test: np.ndarray, look_rejections: np.ndarray,
                 look_rejections_at_threshold: np.ndarray, toy_look_fraction: np.ndarray, seconds: dict,
                 region_rejections: np.ndarray | None = None):
        self.looks = looks
        self.settings = settings
        self.seed = int(seed)
        self.residuals = residuals                        # (n_toys, n_bins_total) float32, calibration set
        self.min_p_cal = min_p_cal
        self.min_p_test = min_p_test
        self.look_rejections = look_rejections            # (n_looks,) test toys with p_l < alpha
        self.look_rejections_at_threshold = look_rejections_at_threshold  # (n_looks,) p_l < p*
        self.toy_look_fraction = toy_look_fraction        # (n_test,) fraction of looks with p_l < alpha
        self.seconds = dict(seconds)
        # (n_regions,) test toys in which some look of the region has p < p*
        self.region_rejections = (np.zeros(len(looks.regions), dtype=np.int64) if region_rejections is None
                                  else np.asarray(region_rejections, dtype=np.int64))
        self.p_threshold = min_p_threshold(min_p_cal, settings.alpha)

    # ------------------------------------------------------------------ false alarms
    @property
    def n_toys(self) -> int:
        return int(self.min_p_cal.size)

    @property
    def n_test_toys(self) -> int:
        return int(self.min_p_test.size)

    @property
    def false_alarm_rate(self) -> float:
        return float(np.mean(self.min_p_test < self.p_threshold))

    @property
    def false_alarm_unc(self) -> float:
        return float(_binomial_se(self.false_alarm_rate, self.n_test_toys))

    @property
    def per_look_false_alarm(self) -> dict:
        """look id -> fraction of independent null toys with that look's p-value < alpha."""
        return dict(zip(self.looks.ids, (self.look_rejections / self.n_test_toys).tolist()))

    @property
    def per_look_false_alarm_unc(self) -> dict:
        rates = self.look_rejections / self.n_test_toys
        return dict(zip(self.looks.ids, _binomial_se(rates, self.n_test_toys).tolist()))

    def summary(self) -> dict:
        """JSON-ready figures of the calibration."""
        a, n = self.settings.alpha, self.n_test_toys
        rates = self.look_rejections / n
        se = float(_binomial_se(a, n))
        mean_rate = float(np.mean(self.toy_look_fraction))
        mean_se = float(np.std(self.toy_look_fraction, ddof=1) / np.sqrt(n))
        return {
            "alpha": a, "p_threshold": self.p_threshold, "n_toys": self.n_toys, "n_test_toys": n,
            "seed": self.seed, "false_alarm_rate": self.false_alarm_rate, "false_alarm_unc": self.false_alarm_unc,
            "n_looks": len(self.looks), "n_bins_total": int(self.looks.n_bins_total),
            "looks_by_kind": {k: sum(lk.kind == k for lk in self.looks.looks)
                              for k in sorted({lk.kind for lk in self.looks.looks})},
            "per_region_false_alarm": {r: float(k / n) for r, k in zip(self.looks.regions, self.region_rejections)},
            "per_look_mean_false_alarm": mean_rate, "per_look_mean_false_alarm_unc": mean_se,
            "per_look_fraction_outside_2p5_se": float(np.mean(np.abs(rates - a) > 2.5 * se)),
            "per_look_false_alarm": [
                {"id": i, "rate": float(r), "unc": float(u)}
                for i, r, u in zip(self.looks.ids, rates, _binomial_se(rates, n))
            ],
            "seconds": self.seconds, "settings": self.settings.to_dict(),
        }

    # ------------------------------------------------------------------ power
    def power(self, shift: Shift, noise_correction=None) -> ShiftSummary:
        """Power of the global test (toys) and of every look (asymptotic) against ``shift``;
        ``noise_correction`` "look" | "bin" | "none" (default: the settings')."""
        if not isinstance(shift, Shift):
            raise AuditError(f"power() needs a Shift from Looks.shift(), got {type(shift).__name__}")
        lk = self.looks
        if shift.d.shape != (lk.n_bins_total,):
            raise AuditError("the shift was made with other looks than this calibration's; "
                             "use calibration.looks.shift(...)")
        if noise_correction is None:
            noise_correction = self.settings.noise_correction
        delta = shift.delta(noise_correction)
        lam = shift.lam(noise_correction)
        lam_raw = shift.lam("none")
        rejected = 0
        look_hits = np.zeros(len(lk), dtype=np.int64)
        region_hits = np.zeros(len(lk.regions), dtype=np.int64)
        block = max(1, self.settings.toy_block)
        for s in range(0, self.n_toys, block):
            eps = self.residuals[s:s + block].astype(np.float64) + delta
            p = p_values(pearson(eps, lk.var, lk.offsets), lk.ndf)
            hit = p < self.p_threshold
            rejected += int(np.sum(hit.any(axis=1)))
            look_hits += hit.sum(axis=0)
            for j, r in enumerate(lk.regions):
                region_hits[j] += int(np.sum(hit[:, lk.region_looks[r]].any(axis=1)))
        pw = rejected / self.n_toys
        asym = asymptotic_power(lam, lk.ndf, self.p_threshold)
        med_p = median_p_value(lam, lk.ndf)
        rows = []
        for i, look in enumerate(lk.looks):
            d = look.describe()
            d.update({"lambda": float(lam[i]), "lambda_raw": float(lam_raw[i]), "power": float(asym[i]),
                      "toy_power": float(look_hits[i] / self.n_toys), "expected_p": float(med_p[i])})
            rows.append(d)
        best = int(np.lexsort((lam, asym))[-1])
        most = {k: rows[best][k] for k in ("id", "name", "kind", "region", "power", "toy_power", "lambda")}
        return ShiftSummary(
            power=pw, power_unc=float(_binomial_se(pw, self.n_toys)),
            hidden=bool(pw <= self.settings.power_max), power_max=self.settings.power_max,
            alpha=self.settings.alpha, p_threshold=self.p_threshold, n_toys=self.n_toys,
            noise_correction=str(noise_correction), looks=rows, most_visible=most,
            regions={r: float(k / self.n_toys) for r, k in zip(lk.regions, region_hits)},
        )

    def assess(self, x_shifted, in_region_after: dict, nn_output_shifted=None, eval_weights=None,
               noise_correction=None) -> ShiftSummary:
        """``power(looks.shift(...))`` in one call: is this shifted simulation visible in data?"""
        shift = self.looks.shift(x_shifted, in_region_after, nn_output_shifted, eval_weights)
        return self.power(shift, noise_correction)

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        meta = {"seed": self.seed, "seconds": self.seconds, "settings": self.settings.to_dict()}
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh, cal_meta=np.array(json.dumps(meta)), cal_residuals=self.residuals,
                cal_min_p_cal=self.min_p_cal, cal_min_p_test=self.min_p_test,
                cal_look_rejections=self.look_rejections,
                cal_look_rejections_at_threshold=self.look_rejections_at_threshold,
                cal_toy_look_fraction=self.toy_look_fraction, cal_region_rejections=self.region_rejections,
                **self.looks.to_arrays(),
            )

    @classmethod
    def load(cls, path) -> "Calibration":
        try:
            a = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise AuditError(f"cannot read the visibility calibration {path}: {exc}") from None
        with a:
            if "cal_meta" not in a.files:
                raise AuditError(f"{path} is not a visibility calibration (no cal_meta); recompute it")
            meta = json.loads(str(a["cal_meta"]))
            looks = Looks.from_arrays(a)
            return cls(looks, VisibilitySettings.from_config(meta["settings"]), meta["seed"], np.array(a["cal_residuals"]),
                       np.array(a["cal_min_p_cal"]), np.array(a["cal_min_p_test"]),
                       np.array(a["cal_look_rejections"]), np.array(a["cal_look_rejections_at_threshold"]),
                       np.array(a["cal_toy_look_fraction"]), meta["seconds"], np.array(a["cal_region_rejections"]))


def calibrate(looks: Looks, x_nominal, weights, in_region: dict, settings: VisibilitySettings | None = None,
              seed: int = 0, nn_output=None) -> Calibration:
    """Null-toy calibration of the global test on ``looks`` (see the module docstring).

    ``x_nominal``, ``weights``, ``in_region`` and ``nn_output`` must be those ``looks`` was
    built from (checked); ``settings`` defaults to the looks' settings; the toys use the seed
    ``settings.seed + seed``.
    """
    if not isinstance(looks, Looks):
        raise AuditError(f"calibrate() needs Looks from build_looks(), got {type(looks).__name__}")
    settings = looks.settings if settings is None else settings
    if not isinstance(settings, VisibilitySettings):
        raise AuditError(f"settings must be a VisibilitySettings, got {type(settings).__name__}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise AuditError(f"seed must be a non-negative integer, got {seed!r}")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != looks.weights.shape or not np.array_equal(w, looks.weights):
        raise AuditError("calibrate() got other weights than the looks were built from: pass the same rows and weights")
    if not isinstance(in_region, dict) or set(in_region) != set(looks.regions) or any(
            not np.array_equal(np.asarray(in_region[r]), looks._in[r]) for r in looks.regions):
        raise AuditError("calibrate() got other region masks than the looks were built from")
    x = np.asarray(x_nominal)
    if x.ndim != 2 or x.shape != (looks.n_events, len(looks.feature_names)):
        raise AuditError(f"x_nominal has shape {x.shape}, the looks were built on "
                         f"{(looks.n_events, len(looks.feature_names))}")
    cols = [looks.feature_names.index(f) for f in looks.used_features]
    if not np.array_equal(np.asarray(x[:, cols], dtype=np.float64), looks._x, equal_nan=True):
        raise AuditError("calibrate() got other nominal features than the looks were built from")
    full_seed = int(settings.seed) + int(seed)
    t0 = time.perf_counter()
    counter = BinCounter(looks, settings.max_matrix_mb)
    n_cal, n_test = settings.n_toys, settings.n_test_toys
    residuals = np.empty((n_cal, looks.n_bins_total), dtype=np.float32)
    min_p_cal = np.empty(n_cal)
    for start, eps in null_residuals(looks, counter, full_seed, CALIBRATION_STREAM, n_cal, settings.toy_block,
                                       settings.threads):
        residuals[start:start + eps.shape[0]] = eps
        min_p_cal[start:start + eps.shape[0]] = p_values(pearson(eps, looks.var, looks.offsets), looks.ndf).min(axis=1)
    t1 = time.perf_counter()
    p_star = min_p_threshold(min_p_cal, settings.alpha)
    min_p_test = np.empty(n_test)
    look_rej = np.zeros(len(looks), dtype=np.int64)
    look_rej_star = np.zeros(len(looks), dtype=np.int64)
    region_rej = np.zeros(len(looks.regions), dtype=np.int64)
    frac = np.empty(n_test)
    for start, eps in null_residuals(looks, counter, full_seed, TEST_STREAM, n_test, settings.toy_block,
                                       settings.threads):
        p = p_values(pearson(eps, looks.var, looks.offsets), looks.ndf)
        sl = slice(start, start + eps.shape[0])
        min_p_test[sl] = p.min(axis=1)
        below = p < settings.alpha
        look_rej += below.sum(axis=0)
        hit = p < p_star
        look_rej_star += hit.sum(axis=0)
        for j, r in enumerate(looks.regions):
            region_rej[j] += int(np.sum(hit[:, looks.region_looks[r]].any(axis=1)))
        frac[sl] = below.mean(axis=1)
    t2 = time.perf_counter()
    seconds = {"calibration_toys": t1 - t0, "test_toys": t2 - t1,
               "toys_per_second": (n_cal + n_test) / max(t2 - t0, 1e-9)}
    return Calibration(looks, settings, full_seed, residuals, min_p_cal, min_p_test, look_rej, look_rej_star,
                       frac, seconds, region_rej)
