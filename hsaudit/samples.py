"""All datasets of an analysis as one event sample: the arrays that training, evaluation,
attacks and fits consume, assembled from the per-dataset feature tables.

Events are the rows of the feature tables: each row is one physical event, with its features
in every variant (nominal and each shift up/down), its weights for every weight variation,
and its region membership per variant. An event that migrates out of the selection in a
variant has weight zero there (and its features may be NaN), so histograms of any variant are
simply weighted histograms over all rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.tables import NOMINAL, FeatureTable


@dataclass
class EventSample:
    features: list[str]
    variants: list[str]
    regions: list[str]
    X: dict[str, np.ndarray]            # variant -> (N, F) float32
    y: np.ndarray                       # (N,) 1 for signal
    weight: np.ndarray                  # (N,) nominal weight of each row (before region masks)
    weight_variations: dict[str, np.ndarray]  # e.g. "tau_id_up" -> (N,)
    region: dict[tuple[str, str], np.ndarray]  # (region, variant) -> (N,) bool
    event_id: np.ndarray                # structured run/luminosityBlock/event
    dataset: np.ndarray                 # (N,) index into ``datasets``
    datasets: list[str]
    processes: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def selected(self, variant: str = NOMINAL, regions: list[str] | None = None) -> np.ndarray:
        """Row is in any of the given regions (default: all regions) in this variant."""
        mask = np.zeros(len(self), dtype=bool)
        for r in regions or self.regions:
            mask |= self.region[(r, variant)]
        return mask

    def variant_weight(self, variant: str = NOMINAL, regions: list[str] | None = None) -> np.ndarray:
        """Weights of the rows in a shift variant, zero where the event is not selected."""
        return np.where(self.selected(variant, regions), self.weight, 0.0)

    def subset(self, mask: np.ndarray) -> "EventSample":
        return EventSample(
            features=self.features, variants=self.variants, regions=self.regions,
            X={v: x[mask] for v, x in self.X.items()}, y=self.y[mask], weight=self.weight[mask],
            weight_variations={k: w[mask] for k, w in self.weight_variations.items()},
            region={k: m[mask] for k, m in self.region.items()}, event_id=self.event_id[mask],
            dataset=self.dataset[mask], datasets=self.datasets, processes=self.processes,
        )

    def shift_names(self) -> list[str]:
        return sorted({v.rsplit("_", 1)[0] for v in self.variants if v != NOMINAL})

    def training_systematics(self, names: list[str], weight_systematics: list[str] = ()) -> dict:
        """The ``systematics`` dict of hsaudit.ml.training: shifted features with weights that
        vanish where the event leaves the selection, or weight variations."""
        out = {}
        selected = self.selected(NOMINAL)
        for name in names:
            if name in weight_systematics:
                out[name] = {
                    "up": None, "down": None,
                    "w_up": np.where(selected, self.weight_variations[f"{name}_up"], 0.0),
                    "w_down": np.where(selected, self.weight_variations[f"{name}_down"], 0.0),
                }
            elif f"{name}_up" in self.variants:
                out[name] = {
                    "up": self.X[f"{name}_up"], "down": self.X[f"{name}_down"],
                    "w_up": self.variant_weight(f"{name}_up"), "w_down": self.variant_weight(f"{name}_down"),
                }
            else:
                raise AuditError(f"systematic '{name}' has no shifted variants or weight variations "
                                 f"in the feature tables (variants: {self.variants})")
        return out


def _declared_variants(tables: list[FeatureTable], features: list[str], variants: list[str]) -> dict:
    """{systematic: (X_up, X_down)} for declared per-feature uncertainties (flat tables'
    ``meta.extra["declared_uncertainties"] = {s: {feature: {"relative"|"absolute": x}}}``,
    ``{}`` for a dataset the systematic does not apply to): nominal +- sigma_i."""
    declared = {}
    for t in tables:
        for name in (t.meta.extra.get("declared_uncertainties") or {}):
            if f"{name}_up" not in variants:
                declared.setdefault(name, None)
    from hsaudit.flat_tables import declared_sigmas

    out = {}
    for name in declared:
        ups, downs = [], []
        for t in tables:
            x = t.features_of(NOMINAL, features)
            half = np.zeros_like(x)
            if name in (t.meta.extra.get("declared_uncertainties") or {}):
                sigma, relative = declared_sigmas(t, name)
                for feature, value in sigma.items():
                    if feature in features:
                        j = features.index(feature)
                        half[:, j] = value * np.abs(x[:, j]) if relative[feature] else value
            ups.append(x + half)
            downs.append(x - half)
        out[name] = (np.concatenate(ups), np.concatenate(downs))
    return out


def assemble(tables: list[FeatureTable], features: list[str] | None = None) -> EventSample:
    """Concatenate per-dataset tables (all with the same features, variants and regions)."""
    if not tables:
        raise AuditError("no feature tables given")
    first = tables[0].meta
    for t in tables[1:]:
        for key in ("features", "variants", "regions"):
            if getattr(t.meta, key) != getattr(first, key):
                raise AuditError(f"datasets '{first.dataset}' and '{t.meta.dataset}' differ in their "
                                 f"{key}: rerun the selection with one configuration")
    features = list(first.features) if features is None else list(features)
    # weight variations may differ per dataset (a scale factor that applies to some
    # processes only): missing ones equal the nominal weight
    wvars = sorted({v for t in tables for v in t.meta.weight_variations})
    X = {v: np.concatenate([t.features_of(v, features) for t in tables]) for v in first.variants}
    weight = np.concatenate([t.weights() for t in tables])
    wv = {
        name: np.concatenate([
            t.weights(name) if name in t.meta.weight_variations else t.weights() for t in tables
        ])
        for name in wvars
    }
    region = {
        (r, v): np.concatenate([t.in_region(r, v) for t in tables])
        for r in first.regions for v in first.variants
    }
    y = np.concatenate([np.full(t.n_events, t.meta.is_signal, dtype=np.int8) for t in tables])
    ids = np.concatenate([t.event_ids() for t in tables])
    ds_index = np.concatenate([np.full(t.n_events, i, dtype=np.int16) for i, t in enumerate(tables)])
    bad = ~np.isfinite(X[NOMINAL]) & np.concatenate([t.in_any_region() for t in tables])[:, None]
    if bad.any():
        col = int(np.argwhere(bad)[0, 1])
        raise AuditError(f"feature '{features[col]}' is NaN or infinite for {int(bad[:, col].sum())} "
                         "selected events in the nominal variant: fix the feature computation or input")
    variants = list(first.variants)
    for name, (up, down) in _declared_variants(tables, features, variants).items():
        # a declared systematic's standard +-1 sigma: every event shifted by sigma_i, region
        # membership unchanged (no selection to rerun on flat tables)
        for direction, shifted in (("up", up), ("down", down)):
            v = f"{name}_{direction}"
            X[v] = shifted
            variants.append(v)
            for r in first.regions:
                region[(r, v)] = region[(r, NOMINAL)]
    return EventSample(
        features=features, variants=variants, regions=list(first.regions), X=X, y=y,
        weight=weight, weight_variations=wv, region=region, event_id=ids, dataset=ds_index,
        datasets=[t.meta.dataset for t in tables], processes=[t.meta.process for t in tables],
    )
