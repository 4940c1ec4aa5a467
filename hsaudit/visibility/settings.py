"""Settings of the data-visibility tests, validated once from the ``checks`` section of a config.

The data-visibility tests answer "would this mismodelling be visible in data at the analysis
luminosity?" (docs/science.md section 4, "Statistics of a verdict"). Their knobs:

* ``alpha`` (0.05): size of the global test (false-alarm rate of "any look rejects").
* ``power_max`` (0.5): a shift is *hidden* when the global test's power is at most this.
* ``n_bins`` (10), ``min_expected`` (10.0): equal-population bins per feature look, merged
  until every bin expects at least ``min_expected`` events (so chi2 asymptotics hold).
* ``pair_bins`` (3): grid per axis of a feature-pair look (3 x 3 nominal terciles).
* ``looks`` (["feature", "pair", "nn_output"]): which kinds of looks to make.
* ``features`` (all): the features that get looks; ``pair_features`` (= ``features``): the
  features whose pairs get looks (pairs grow as F^2 and dominate the cost at ~20 features).
* ``n_toys`` (1000, >= 200): null toys calibrating the minimum p-value; ``n_test_toys``
  (= ``n_toys``, >= 200): independent null toys measuring the false-alarm rates.
* ``noise_correction`` ("look"): how the MC noise of events crossing bin edges is removed from
  a shift (hsaudit.visibility.shift): "look" (default), "bin" or "none".
* ``seed`` (0): offset added to the caller's seed.
* ``toy_block`` (200): toys per block (bounds memory), ``max_matrix_mb`` (64): size of one
  dense one-hot block, ``n_threads`` (0 = all cores): threads drawing the toys (the results do
  not depend on it).

Keys of other checks (the published thresholds ks_max, jsd_max, ...) are not ours: pass their
names as ``known_other_keys`` and they are ignored; any other key is an error.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from hsaudit.errors import AuditError

LOOK_KINDS = ("feature", "pair", "nn_output")
MIN_TOYS = 200


@dataclass(frozen=True)
class VisibilitySettings:
    alpha: float = 0.05
    power_max: float = 0.5
    n_bins: int = 10
    min_expected: float = 10.0
    min_effective: float = 10.0
    pair_bins: int = 3
    looks: tuple = LOOK_KINDS
    features: tuple | None = None
    pair_features: tuple | None = None
    n_toys: int = 1000
    n_test_toys: int | None = None
    noise_correction: str = "look"
    seed: int = 0
    toy_block: int = 200
    max_matrix_mb: float = 64.0
    n_threads: int = 0

    def __post_init__(self):
        def fail(key, why):
            raise AuditError(f"checks.{key} {why}, got {getattr(self, key)!r}")

        def number(key):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                fail(key, "must be a number")
            return float(v)

        def integer(key, minimum):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) and not (isinstance(v, float) and v.is_integer()):
                fail(key, "must be an integer")
            if int(v) < minimum:
                fail(key, f"must be >= {minimum}")
            object.__setattr__(self, key, int(v))

        a = number("alpha")
        if not 0.0 < a < 1.0:
            fail("alpha", "must lie strictly between 0 and 1")
        p = number("power_max")
        if not 0.0 < p <= 1.0:
            fail("power_max", "must lie in (0, 1]")
        m = number("min_expected")
        if not m > 0.0:
            fail("min_expected", "must be > 0 (expected events per bin)")
        if not number("min_effective") >= 0.0:
            fail("min_effective", "must be >= 0 (effective MC events per bin)")
        mb = number("max_matrix_mb")
        if not mb > 0.0:
            fail("max_matrix_mb", "must be > 0")
        integer("n_bins", 1)
        integer("pair_bins", 2)
        integer("n_toys", MIN_TOYS)
        if self.n_test_toys is None:
            object.__setattr__(self, "n_test_toys", self.n_toys)
        integer("n_test_toys", MIN_TOYS)
        integer("seed", 0)
        if self.noise_correction not in ("look", "bin", "none"):
            fail("noise_correction", "must be one of ['look', 'bin', 'none']")
        integer("toy_block", 1)
        integer("n_threads", 0)
        looks = self.looks
        if isinstance(looks, str) or not isinstance(looks, (list, tuple)) or not looks:
            fail("looks", f"must be a non-empty list of look kinds out of {list(LOOK_KINDS)}")
        unknown = [k for k in looks if k not in LOOK_KINDS]
        if unknown:
            fail("looks", f"names unknown look kind(s) {unknown}; known: {list(LOOK_KINDS)}")
        object.__setattr__(self, "looks", tuple(dict.fromkeys(looks)))
        for key in ("features", "pair_features"):
            v = getattr(self, key)
            if v is None:
                continue
            if isinstance(v, str) or not isinstance(v, (list, tuple)) or not all(isinstance(s, str) for s in v):
                fail(key, "must be a list of feature names")
            if not v:
                fail(key, "must not be empty (leave it out to use all features)")
            object.__setattr__(self, key, tuple(dict.fromkeys(v)))

    @property
    def threads(self) -> int:
        return self.n_threads or (os.cpu_count() or 1)

    @classmethod
    def from_config(cls, config: dict | None, known_other_keys=()) -> "VisibilitySettings":
        """From a ``checks`` config dict; keys in ``known_other_keys`` are ignored, unknown ones
        raise AuditError naming them."""
        if config is not None and not isinstance(config, dict):
            raise AuditError(f"the checks section must be a mapping, got {type(config).__name__}")
        config = dict(config or {})
        ours = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        unknown = sorted(k for k in config if k not in ours and k not in set(known_other_keys))
        if unknown:
            raise AuditError(
                f"unknown key(s) {unknown} in the checks section; visibility-test keys are "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        for key in ("looks", "features", "pair_features"):
            if isinstance(ours.get(key), list):
                ours[key] = tuple(ours[key])
        return cls(**ours)

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("looks", "features", "pair_features"):
            if d[key] is not None:
                d[key] = list(d[key])
        return d
