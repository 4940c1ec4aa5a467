"""Data-visibility tests: would a mismodelling of the simulation be visible in data at the
analysis luminosity? (docs/science.md section 4.)

    settings = VisibilitySettings.from_config(checks_dict, known_other_keys=...)
    looks = build_looks(x_nominal, weights, in_region, feature_names, control_regions, settings, nn_output)
    cal = calibrate(looks, x_nominal, weights, in_region, settings, seed, nn_output)
    res = cal.power(looks.shift(x_shifted, in_region_after, nn_output_shifted))
    res.power, res.hidden, res.most_visible

Modules: settings (validated knobs), binning (equal-population bins), looks (the binned views
and their nominal prediction), shift (d, v, noise-corrected delta, lambda), statistic
(Pearson T, chi2 / non-central chi2), pseudodata (event-level null toys), calibration (the
min-p global test, false-alarm rates, power).
"""

from hsaudit.visibility.calibration import Calibration, ShiftSummary, calibrate
from hsaudit.visibility.looks import Look, Looks, build_looks
from hsaudit.visibility.settings import VisibilitySettings
from hsaudit.visibility.shift import Shift

__all__ = ["Calibration", "Look", "Looks", "Shift", "ShiftSummary", "VisibilitySettings", "build_looks", "calibrate"]
