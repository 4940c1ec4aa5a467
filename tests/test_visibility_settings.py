"""Data-visibility tests: settings validation and input errors end in one clear AuditError."""

import numpy as np
import pytest

from hsaudit.errors import AuditError
from hsaudit.visibility import VisibilitySettings, build_looks, calibrate
from hsaudit.visibility.synthetic import make_synthetic


@pytest.fixture(scope="module")
def sample():
    a = make_synthetic(3000, seed=5)
    x = a.features(0.0)
    return a, x, a.regions(x), a.nn_score(x)


def test_defaults_and_from_config_ignores_declared_other_keys():
    s = VisibilitySettings.from_config({"alpha": 0.1, "ks_max": 0.04, "jsd_max": 0.01, "looks": ["feature"]},
                                       known_other_keys=("ks_max", "jsd_max"))
    assert s.alpha == 0.1 and s.looks == ("feature",) and s.n_toys == 1000 and s.n_test_toys == 1000
    assert VisibilitySettings().power_max == 0.5
    with pytest.raises(AuditError, match="ks_max"):
        VisibilitySettings.from_config({"ks_max": 0.04})


@pytest.mark.parametrize("key,value,match", [
    ("alpha", 0.0, "alpha"), ("alpha", 1.0, "alpha"), ("alpha", "x", "alpha"),
    ("power_max", 0.0, "power_max"), ("power_max", 1.5, "power_max"),
    ("n_toys", 199, "n_toys"), ("n_test_toys", 10, "n_test_toys"), ("n_bins", 0, "n_bins"),
    ("n_bins", 2.5, "n_bins"), ("min_expected", -1.0, "min_expected"), ("pair_bins", 1, "pair_bins"),
    ("looks", ["feature", "moments"], "moments"), ("looks", [], "looks"), ("seed", -1, "seed"),
    ("noise_correction", "half", "noise_correction"), ("features", [], "features"),
])
def test_bad_settings_raise_audit_error_naming_the_key(key, value, match):
    with pytest.raises(AuditError, match=match):
        VisibilitySettings.from_config({key: value})


def test_power_max_one_is_allowed():
    assert VisibilitySettings(power_max=1.0).power_max == 1.0


def test_unknown_feature_names_and_regions(sample):
    a, x, reg, nn = sample
    s = VisibilitySettings(features=("tau_pt", "no_such_feature"))
    with pytest.raises(AuditError, match="no_such_feature"):
        build_looks(x, a.weights, reg, a.feature_names, ["cr_low"], s, nn_output=nn)
    with pytest.raises(AuditError, match="no_such_pair"):
        build_looks(x, a.weights, reg, a.feature_names, ["cr_low"], VisibilitySettings(pair_features=("no_such_pair",)))
    with pytest.raises(AuditError, match="cr_nowhere"):
        build_looks(x, a.weights, reg, a.feature_names, ["cr_nowhere"], VisibilitySettings())


def test_empty_region_and_zero_luminosity(sample):
    a, x, reg, nn = sample
    bad = dict(reg, cr_low=np.zeros(len(x), dtype=bool))
    with pytest.raises(AuditError, match="region 'cr_low' is empty"):
        build_looks(x, a.weights, bad, a.feature_names, ["cr_low"], VisibilitySettings())
    with pytest.raises(AuditError, match="empty"):
        build_looks(x, a.weights * 0.0, reg, a.feature_names, [], VisibilitySettings())


def test_bad_arrays(sample):
    a, x, reg, nn = sample
    s = VisibilitySettings()
    with pytest.raises(AuditError, match="weights"):
        build_looks(x, a.weights[:-1], reg, a.feature_names, [], s)
    xn = x.copy()
    xn[np.nonzero(reg["sr"])[0][0], 0] = np.nan
    with pytest.raises(AuditError, match="NaN"):
        build_looks(xn, a.weights, reg, a.feature_names, [], s)
    # NaN outside every region is fine (rows not in a region may have NaN features)
    outside = ~(reg["sr"] | reg["cr_low"] | reg["cr_high"])
    xo = x.copy()
    xo[outside, 0] = np.nan
    looks = build_looks(xo, a.weights, reg, a.feature_names, [], s)
    with pytest.raises(AuditError, match="nn_output_shifted|x_shifted"):
        looks.shift(x[:10], reg)
    with pytest.raises(AuditError, match="in_region_after"):
        looks.shift(x, {"sr": reg["sr"]})
    with pytest.raises(AuditError, match="other weights"):
        calibrate(looks, x, a.weights * 2, reg, VisibilitySettings(n_toys=200))
