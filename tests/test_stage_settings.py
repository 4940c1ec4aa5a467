"""Statistical settings of later stages (visibility test, verdict, template treatment, closure,
bootstrap) are checked when the configuration is loaded: a mistake ends in one line naming
the key, before anything runs or writes."""

import pytest

from hsaudit.config import load_config
from hsaudit.errors import AuditError


def _set(section, key, value):
    def edit(raw):
        target = raw.setdefault(section, {})
        if isinstance(key, tuple):
            target = target.setdefault(key[0], {})
            target[key[1]] = value
        else:
            target[key] = value
    return edit


@pytest.mark.parametrize("edit, match", [
    (_set("checks", "alpha", 0.0), r"checks\.alpha"),
    (_set("checks", "alpha", 1.0), r"checks\.alpha"),
    (_set("checks", "power_max", 0.0), r"checks\.power_max"),
    (_set("checks", "power_max", 1.5), r"checks\.power_max"),
    (_set("checks", "looks", ["feature", "histogram"]), r"checks\.looks"),
    (_set("checks", "features", ["tau_pt", "no_such_feature"]), r"no_such_feature"),
    (_set("checks", "n_toys", 10), r"checks\.n_toys"),
    (_set("audit", "null_seeds", 1), r"audit\.null_seeds"),
    (_set("audit", ("verdict", "n_sigma"), -1), r"audit\.verdict\.n_sigma"),
    (_set("audit", ("verdict", "null_quantile"), 1.0), r"audit\.verdict\.null_quantile"),
    (_set("audit", ("verdict", "n_sgima"), 2), r"audit\.verdict\.n_sgima: unknown setting; known: n_sigma, null_quantile"),
    (_set("fit", ("shape_treatment", "smoothing"), "spline"), r"fit\.shape_treatment\.smoothing"),
    (_set("fit", ("closure", "pull_mean_max"), 0), r"fit\.closure\.pull_mean_max"),
    (_set("fit", "n_replicas", 1), r"fit\.n_replicas"),
])
def test_bad_stage_settings_are_refused_at_load(write_config, edit, match):
    path = write_config("ci", edit)
    with pytest.raises(AuditError, match=match) as err:
        load_config(path)
    assert str(path.name) in str(err.value) and "\n" not in str(err.value)


def test_shipped_configurations_load():
    for name in ("ci", "demo", "higgsml"):
        load_config(name)


@pytest.mark.slow
def test_a_bad_visibility_setting_stops_before_any_output(write_config, tmp_path):
    from law_cli import files_below, run_law

    data = tmp_path / "data"
    path = write_config("ci", _set("checks", "alpha", 1.5))
    res = run_law(data, "MergeFeatures", "--config", str(path), "--version", "t", timeout=300)
    assert res.returncode != 0 and "checks.alpha" in res.output, res.output[-2000:]
    assert "Traceback" not in res.output
    assert files_below(data) == []
