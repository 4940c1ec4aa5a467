"""The calibration stage of the audit: the data-visibility test of one model, calibrated on
pseudo-data drawn from the nominal simulation at the analysis luminosity, and the power of
every standard +-1 sigma shift against it. The law task CalibrateChecks calls this.

What it answers, per model (docs/audit.md, "Hidden"):
- the threshold of the global test (minimum p-value over every look of every region) that
  gives the configured false-alarm rate ``checks.alpha``, and the false-alarm rates of the
  global test and of each look measured on independent pseudo-data;
- how visible the quoted systematics are: the power of each standard up and down shift
  (the shift re-runs the selection, so its events migrate as an attack's do).
The looks are those of hsaudit.visibility: every feature per region, every feature pair
per region, and the NN output in the control regions (never in the signal region, where it
is the blinded fit observable).
"""

from __future__ import annotations

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.samples import EventSample
from hsaudit.seeds import derive_seed
from hsaudit.tables import NOMINAL


def visibility_settings(cfg: AnalysisConfig):
    """The calibrated test's settings: the ``checks`` keys that are not published thresholds."""
    from hsaudit.visibility import VisibilitySettings

    return VisibilitySettings.from_config(cfg.section("checks").visibility_keys())


def looks_use_nn_output(looks) -> bool:
    """Do the looks include the control-region NN output (then every shift needs its outputs)?"""
    from hsaudit.visibility.looks import NN_AXIS

    return any(NN_AXIS in lk.axes for lk in looks.looks)


def nominal_outputs(model, sample: EventSample) -> np.ndarray:
    """(N,) NN output of every row's nominal features (NaN where they cannot be computed)."""
    from hsaudit.ml.evaluation import outputs_per_variant

    return outputs_per_variant(model, {NOMINAL: sample.X[NOMINAL]}, invalid="nan")[NOMINAL]


def calibrate_model(outputs: dict, sample: EventSample, cfg: AnalysisConfig, model_name: str):
    """(Calibration, JSON-ready summary) of the model's visibility test; ``outputs``: the
    model's NN outputs per variant (hsaudit.nn_outputs)."""
    from hsaudit.visibility import build_looks, calibrate

    settings = visibility_settings(cfg)
    regions = {r: sample.region[(r, NOMINAL)] for r in sample.regions}
    control = [r for r in sample.regions if r != cfg.signal_region]
    looks = build_looks(sample.X[NOMINAL], sample.weight, regions, sample.features, control, settings,
                        nn_output=outputs[NOMINAL])
    calibration = calibrate(looks, sample.X[NOMINAL], sample.weight, regions, settings,
                            derive_seed(cfg.seed, "calibration", model_name), nn_output=outputs[NOMINAL])
    summary = calibration.summary()
    summary["standard_power"] = standard_shift_powers(outputs, sample, calibration)
    return calibration, summary


def standard_shift_powers(outputs: dict, sample: EventSample, calibration) -> dict:
    """{systematic: {"up": power, "down": power, "up_unc", "down_unc", "most_visible": ...}}
    for every shift systematic: the standard variant judged like an attack (``outputs``: NN
    outputs per variant)."""

    out = {}
    for syst in sample.shift_names():
        entry = {}
        for direction in ("up", "down"):
            variant = f"{syst}_{direction}"
            regions = {r: sample.region[(r, variant)] for r in sample.regions}
            nn = outputs[variant] if looks_use_nn_output(calibration.looks) else None
            shift = calibration.looks.shift(sample.X[variant], regions, nn_output_shifted=nn)
            result = calibration.power(shift)
            entry[direction] = float(result.power)
            entry[f"{direction}_unc"] = float(result.power_unc)
            entry[f"{direction}_most_visible"] = result.to_dict().get("most_visible")
        out[syst] = entry
    return out
