"""The classifier stage of the audit, between feature tables and attacks: which events a
model is trained on, with which settings from the configuration, and what an evaluation
reports (AUC, ROC, relative discovery significance, NN-output histograms per region and
variant). The law tasks TrainModel / EvaluateModel call these functions.
"""

from __future__ import annotations

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.ml import evaluation
from hsaudit.ml.training import TEST, TrainingSettings, split_by_event_id, train_classifier
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL


def training_settings(cfg: AnalysisConfig, model_name: str) -> TrainingSettings:
    """Config sections ``training`` (shared) and ``models.<name>`` (architecture, penalty),
    typed by the schema (hsaudit.config_schema), which holds their defaults."""
    model = cfg.model_settings(model_name)
    tr = cfg.section("training")
    settings = tr.model_dump(exclude={"penalty_bins", "split"})
    settings.update(
        architecture=model.architecture, hidden_layers=model.hidden, lambdas=dict(model.penalty or {}),
        n_bins=tr.penalty_bins, split_fractions=(tr.split.train, tr.split.validation, tr.split.test),
    )
    for key in ("activation", "dropout"):
        if getattr(model, key) is not None:
            settings[key] = getattr(model, key)
    return TrainingSettings.from_dict(settings)


def training_rows(sample: EventSample) -> np.ndarray:
    """Events a classifier learns from: selected in some region in the nominal variant or in
    any shifted variant (the latter only enter the penalty)."""
    mask = np.zeros(len(sample), dtype=bool)
    for v in sample.variants:
        mask |= sample.selected(v)
    return mask


def probe_events(sample: EventSample, features: list[str] | None = None, n: int = 512) -> np.ndarray:
    """Up to ``n`` events to check an imported model on: selected in the nominal variant and
    with finite nominal features (an event selected only in a shifted variant has NaN nominal
    features). Columns in the order of ``features`` (default: the sample's features)."""
    features = list(sample.features) if features is None else list(features)
    unknown = [f for f in features if f not in sample.features]
    if unknown:
        raise AuditError(f"features {unknown} are not in the feature tables (available: {sample.features})")
    cols = [sample.features.index(f) for f in features]
    x = sample.X[NOMINAL][:, cols]
    rows = np.flatnonzero(sample.selected(NOMINAL) & np.isfinite(x).all(axis=1))
    if len(rows) == 0:
        raise AuditError("no event is selected with finite features in the nominal variant: "
                         "cannot check the imported model (check the selection)")
    return x[rows[:n]]


def train(sample: EventSample, cfg: AnalysisConfig, model_name: str, log=None):
    settings = training_settings(cfg, model_name)
    rows = training_rows(sample)
    if not rows.any():
        raise AuditError("no selected events to train on: check the selection")
    s = sample.subset(rows)
    weight_systs = [x.name for x in cfg.systematics_of_type("weight")]
    systematics = s.training_systematics(sorted(settings.lambdas), weight_systs) if settings.lambdas else None
    return train_classifier(
        s.X[NOMINAL], s.y, s.variant_weight(NOMINAL), s.event_id, settings=settings,
        systematics=systematics, features=s.features, log=log,
    )


def test_mask(sample: EventSample, cfg: AnalysisConfig, model_name: str) -> np.ndarray:
    """Events of the held-out test split (same hash as training, so no leakage)."""
    settings = training_settings(cfg, model_name)
    return split_by_event_id(sample.event_id, settings.split_fractions, settings.split_salt) == TEST


def evaluate(outputs: dict, sample: EventSample, cfg: AnalysisConfig, model_name: str, bins: int = 20) -> dict:
    """Everything EvaluateModel reports, as JSON-friendly numbers and arrays, from the
    model's NN outputs ({variant: (N,) outputs}, hsaudit.nn_outputs)."""
    test = test_mask(sample, cfg, model_name)
    if not test.any():
        raise AuditError("the test split is empty: increase the number of events or the test fraction")
    nominal = outputs[NOMINAL]
    w_sel = sample.variant_weight(NOMINAL)
    t = test & sample.selected(NOMINAL)
    auc = evaluation.weighted_auc(nominal[t], sample.y[t], w_sel[t])
    fpr, tpr, thr = evaluation.weighted_roc(nominal[t], sample.y[t], w_sel[t])
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), 200)).astype(int))
    sig = evaluation.significance_curve(nominal[t], sample.y[t], w_sel[t])

    # histograms per region and variant, over all events (fits and checks use the full sample)
    regions = {r: {v: sample.region[(r, v)] for v in sample.variants} for r in sample.regions}
    weights = {v: sample.weight for v in sample.variants}
    hists = {}
    for label, selector in (("signal", sample.y == 1), ("background", sample.y == 0)):
        reg = {r: {v: m & selector for v, m in masks.items()} for r, masks in regions.items()}
        hists[label] = evaluation.output_histograms(outputs, weights, reg, bins=bins)
    spread = {}
    for shift in sample.shift_names():
        h = hists["background"][cfg.signal_region]
        spread[shift] = evaluation.variation_spread(
            h[NOMINAL]["counts"], h[f"{shift}_up"]["counts"], h[f"{shift}_down"]["counts"])
    return {
        "model": model_name,
        "auc": auc,
        "roc": {"fpr": fpr[keep], "tpr": tpr[keep], "threshold": thr[keep]},
        "significance_curve": sig,
        "n_test_events": int(t.sum()),
        "output_histograms": hists,
        "background_spread_signal_region": spread,
    }
