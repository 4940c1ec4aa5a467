"""Event-matched feature tables: the contract between selection and everything after it.

One table per dataset, one row per event that passes the preselection in *any* variant
(nominal or a systematic shift), so that the same physical event can be followed across
variants. Stored as a parquet file with this layout (``LAYOUT_VERSION``):

=============================  =========  ==================================================
column                         dtype      meaning
=============================  =========  ==================================================
``run``                        uint32     event id, part 1
``luminosityBlock``            uint32     event id, part 2
``event``                      uint64     event id, part 3
``is_signal``                  bool       the dataset is a signal process
``weight``                     float64    nominal event weight (normalised to xs * lumi)
``weight__<variation>``        float64    weight of a weight-based variation, e.g.
                                          ``weight__tau_id_up``
``<feature>__<variant>``       float32    feature value in a variant; variants are
                                          ``nominal`` and ``<shift>_up`` / ``<shift>_down``
``region__<region>__<variant>`` bool      event is in the region in that variant
=============================  =========  ==================================================

The parquet schema metadata (key ``audit``) holds a JSON object with ``layout_version``,
``dataset``, ``process``, ``is_signal``, ``features``, ``variants``, ``weight_variations``,
``regions`` and ``extra`` (free-form provenance, e.g. cutflows).

Features are physical units (GeV, radians). A feature that cannot be computed for an event
in some variant is NaN there; such an event is never in a region in that variant.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsaudit.errors import AuditError

LAYOUT_VERSION = 1
ID_COLUMNS = ("run", "luminosityBlock", "event")
NOMINAL = "nominal"
# provenance numbers in ``meta.extra`` that add up when chunks are merged
SUMMED_EXTRA_KEYS = ("sum_genweight", "n_events_processed")
# provenance lists in ``meta.extra`` that are concatenated (per-file summaries, warnings)
LISTED_EXTRA_KEYS = ("files", "warnings", "chunks")


def feature_column(feature: str, variant: str = NOMINAL) -> str:
    return f"{feature}__{variant}"


def region_column(region: str, variant: str = NOMINAL) -> str:
    return f"region__{region}__{variant}"


def weight_column(variation: str | None = None) -> str:
    return "weight" if variation is None else f"weight__{variation}"


def shift_variants(shifts) -> list[str]:
    """Variant names for a list of shift systematics: nominal first, then up/down pairs."""
    out = [NOMINAL]
    for name in shifts:
        out += [f"{name}_up", f"{name}_down"]
    return out


@dataclass
class TableMeta:
    dataset: str
    process: str
    is_signal: bool
    features: list[str]
    variants: list[str]
    weight_variations: list[str] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    layout_version: int = LAYOUT_VERSION

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TableMeta":
        data = json.loads(text)
        if data.get("layout_version") != LAYOUT_VERSION:
            raise AuditError(
                f"feature table has layout version {data.get('layout_version')}, this tool "
                f"reads version {LAYOUT_VERSION}: rerun the selection (MergeFeatures) to rebuild it"
            )
        return cls(**data)


class FeatureTable:
    """Columns (numpy arrays of equal length) plus the metadata that explains them."""

    def __init__(self, columns: dict[str, np.ndarray], meta: TableMeta):
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.meta = meta
        self._validate()

    # -- structure -------------------------------------------------------------------
    def _expected_columns(self) -> list[str]:
        m = self.meta
        cols = list(ID_COLUMNS) + ["is_signal", "weight"]
        cols += [weight_column(v) for v in m.weight_variations]
        cols += [feature_column(f, v) for v in m.variants for f in m.features]
        cols += [region_column(r, v) for v in m.variants for r in m.regions]
        return cols

    def _validate(self) -> None:
        missing = [c for c in self._expected_columns() if c not in self.columns]
        if missing:
            raise AuditError(
                f"feature table for dataset '{self.meta.dataset}' lacks columns {missing[:5]}"
                + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            )
        lengths = {len(v) for v in self.columns.values()}
        if len(lengths) > 1:
            raise AuditError(f"feature table for '{self.meta.dataset}' has columns of unequal length")
        if NOMINAL not in self.meta.variants:
            raise AuditError("a feature table must contain the 'nominal' variant")

    @property
    def n_events(self) -> int:
        return len(self.columns["weight"])

    @property
    def features(self) -> list[str]:
        return list(self.meta.features)

    @property
    def variants(self) -> list[str]:
        return list(self.meta.variants)

    @property
    def regions(self) -> list[str]:
        return list(self.meta.regions)

    def __len__(self) -> int:
        return self.n_events

    # -- access ----------------------------------------------------------------------
    def _check_variant(self, variant: str) -> None:
        if variant not in self.meta.variants:
            raise AuditError(
                f"unknown variant '{variant}' for dataset '{self.meta.dataset}'; "
                f"known: {self.meta.variants}"
            )

    def features_of(self, variant: str = NOMINAL, features: list[str] | None = None) -> np.ndarray:
        """(n_events, n_features) float32 matrix of one variant, physical units."""
        self._check_variant(variant)
        names = self.meta.features if features is None else features
        unknown = [f for f in names if f not in self.meta.features]
        if unknown:
            raise AuditError(f"unknown features {unknown}; the table has {self.meta.features}")
        if not names:
            return np.zeros((self.n_events, 0), dtype=np.float32)
        return np.stack([self.columns[feature_column(f, variant)] for f in names], axis=1).astype(
            np.float32, copy=False
        )

    def weights(self, variation: str | None = None) -> np.ndarray:
        if variation is not None and variation not in self.meta.weight_variations:
            raise AuditError(
                f"unknown weight variation '{variation}'; known: {self.meta.weight_variations}"
            )
        return self.columns[weight_column(variation)].astype(np.float64, copy=False)

    def in_region(self, region: str, variant: str = NOMINAL) -> np.ndarray:
        self._check_variant(variant)
        if region not in self.meta.regions:
            raise AuditError(f"unknown region '{region}'; known: {self.meta.regions}")
        return self.columns[region_column(region, variant)].astype(bool, copy=False)

    def in_any_region(self, variant: str = NOMINAL) -> np.ndarray:
        mask = np.zeros(self.n_events, dtype=bool)
        for r in self.meta.regions:
            mask |= self.in_region(r, variant)
        return mask

    def event_ids(self) -> np.ndarray:
        out = np.empty(self.n_events, dtype=[("run", "u4"), ("luminosityBlock", "u4"), ("event", "u8")])
        for c in ID_COLUMNS:
            out[c] = self.columns[c]
        return out

    def subset(self, mask: np.ndarray) -> "FeatureTable":
        return FeatureTable({k: v[mask] for k, v in self.columns.items()}, self.meta)

    @classmethod
    def empty(cls, meta: TableMeta) -> "FeatureTable":
        """A table with zero rows and every column of ``meta`` (dtypes of the layout)."""
        cols = {"run": np.zeros(0, np.uint32), "luminosityBlock": np.zeros(0, np.uint32),
                "event": np.zeros(0, np.uint64), "is_signal": np.zeros(0, bool),
                "weight": np.zeros(0, np.float64)}
        cols.update({weight_column(v): np.zeros(0, np.float64) for v in meta.weight_variations})
        cols.update({feature_column(f, v): np.zeros(0, np.float32) for v in meta.variants for f in meta.features})
        cols.update({region_column(r, v): np.zeros(0, bool) for v in meta.variants for r in meta.regions})
        return cls(cols, meta)

    # -- combination -----------------------------------------------------------------
    @staticmethod
    def concat(tables: list["FeatureTable"]) -> "FeatureTable":
        """Concatenate chunk tables of one dataset (same metadata), sorted by event id."""
        if not tables:
            raise AuditError("no feature tables to merge")
        first = tables[0].meta
        for t in tables[1:]:
            for key in ("dataset", "features", "variants", "weight_variations", "regions"):
                if getattr(t.meta, key) != getattr(first, key):
                    raise AuditError(f"cannot merge feature tables that differ in '{key}'")
        cols = {k: np.concatenate([t.columns[k] for t in tables]) for k in tables[0].columns}
        order = np.lexsort((cols["event"], cols["luminosityBlock"], cols["run"]))
        cols = {k: v[order] for k, v in cols.items()}
        extra = dict(first.extra)
        if all("cutflow" in t.meta.extra for t in tables):
            extra["cutflow"] = _sum_cutflows([t.meta.extra["cutflow"] for t in tables])
        for key in SUMMED_EXTRA_KEYS:
            if all(key in t.meta.extra for t in tables):
                extra[key] = sum(t.meta.extra[key] for t in tables)
        for key in LISTED_EXTRA_KEYS:
            if any(key in t.meta.extra for t in tables):
                extra[key] = [x for t in tables for x in t.meta.extra.get(key, [])]
        # a zero-row chunk (a file with zero entries) carries no genWeight information
        if "has_gen_weight" in extra:
            extra["has_gen_weight"] = any(t.meta.extra.get("has_gen_weight", False) for t in tables
                                          if t.meta.extra.get("n_events_processed", 1))
        meta = TableMeta(**{**first.__dict__, "extra": extra})
        return FeatureTable(cols, meta)

    # -- files -----------------------------------------------------------------------
    def write(self, path: str | os.PathLike) -> None:
        """Write atomically: a temporary file in the same folder is renamed into place."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        order = self._expected_columns()
        arrays = [pa.array(self.columns[c]) for c in order]
        schema_meta = {b"audit": self.meta.to_json().encode()}
        table = pa.Table.from_arrays(arrays, names=order).replace_schema_metadata(schema_meta)
        from hsaudit.files import atomic_path

        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "FeatureTable":
        import pyarrow.parquet as pq

        path = Path(path)
        if not path.exists():
            raise AuditError(f"feature table {path} does not exist")
        try:
            table = pq.read_table(path)
        except Exception as err:  # pyarrow raises several types for broken files
            raise AuditError(f"cannot read feature table {path}: {err}") from None
        raw = (table.schema.metadata or {}).get(b"audit")
        if raw is None:
            raise AuditError(f"{path} is not a feature table written by this tool (no 'audit' metadata)")
        meta = TableMeta.from_json(raw.decode())
        columns = {name: table.column(name).to_numpy() for name in table.column_names}
        return cls(columns, meta)


def _sum_cutflows(cutflows: list[dict]) -> dict:
    """Cutflows are {variant: {step: count}} (counts may be float sums of weights)."""
    out: dict = {}
    for cf in cutflows:
        for variant, steps in cf.items():
            dst = out.setdefault(variant, {})
            for step, n in steps.items():
                dst[step] = dst.get(step, 0) + n
    return out


# -- weight sanity ---------------------------------------------------------------------------
# Defaults of ``input.weight_sanity``. A dataset's selected events (nominal, any region) are
# judged only from ``min_events`` on: with fewer, one event carries >= 1/N of the yield anyway.
# ``max_weight_share``: no single event may carry more than this fraction of the dataset's
# selected yield; ``min_effective_fraction``: the effective sample size (sum w)^2 / sum w^2
# must be at least this fraction of the number of selected events (NLO samples with 20-30%
# negative weights reach 0.16-0.36; a few events with weights 10^4 times the others < 0.01).
WEIGHT_SANITY_DEFAULTS = {"min_events": 20, "max_weight_share": 0.1,
                          "min_effective_fraction": 0.01, "action": "stop"}
WEIGHT_SANITY_ACTIONS = ("stop", "warn")


def weight_sanity_limits(section) -> dict:
    """``input.weight_sanity`` merged over the defaults; AuditError naming the key if bad."""
    section = section or {}
    if not isinstance(section, dict):
        raise AuditError("input.weight_sanity: expected a mapping "
                         f"(keys: {sorted(WEIGHT_SANITY_DEFAULTS)})")
    unknown = sorted(set(section) - set(WEIGHT_SANITY_DEFAULTS))
    if unknown:
        raise AuditError(f"input.weight_sanity.{unknown[0]}: unknown key (known: {sorted(WEIGHT_SANITY_DEFAULTS)})")
    out = {**WEIGHT_SANITY_DEFAULTS, **section}
    if out["action"] not in WEIGHT_SANITY_ACTIONS:
        raise AuditError(f"input.weight_sanity.action: must be one of {list(WEIGHT_SANITY_ACTIONS)}, got {out['action']!r}")
    n = out["min_events"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise AuditError(f"input.weight_sanity.min_events: must be a positive integer, got {n!r}")
    for key in ("max_weight_share", "min_effective_fraction"):
        x = out[key]
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not (0 <= x <= 1) or x != x:
            raise AuditError(f"input.weight_sanity.{key}: must be a number in [0, 1], got {x!r}")
    return out


def weight_sanity(table: FeatureTable, limits: dict | None = None) -> dict:
    """Per-dataset weight diagnostics of the nominally selected events: effective sample size
    ``(sum w)^2 / sum w^2`` and the largest single-event share of the yield ``max|w| / |sum w|``,
    the events with the largest weights, and which limits fail (``problems``; empty if none).
    A non-positive total weight of a non-empty selection is always a problem."""
    limits = weight_sanity_limits(limits)
    sel = table.in_any_region()
    w = table.weights()[sel]
    ids = table.event_ids()[sel]
    n = int(len(w))
    out = {"n_selected": n, "sum_weights": float(w.sum()), "limits": limits, "problems": []}
    if n == 0:
        out.update(effective_sample_size=0.0, effective_fraction=None, max_weight_share=None,
                   largest_weight_events=[])
        return out
    sw, sw2 = float(w.sum()), float((w ** 2).sum())
    ess = sw * sw / sw2 if sw2 > 0 else 0.0
    share = float(np.abs(w).max() / abs(sw)) if sw != 0 else float("inf")
    top = np.argsort(-np.abs(w), kind="stable")[:5]
    out.update(
        effective_sample_size=ess, effective_fraction=ess / n, max_weight_share=share,
        largest_weight_events=[
            {"run": int(ids["run"][i]), "luminosityBlock": int(ids["luminosityBlock"][i]),
             "event": int(ids["event"][i]), "weight": float(w[i]),
             "share": float(abs(w[i]) / abs(sw)) if sw != 0 else None}
            for i in top
        ],
    )
    name = table.meta.dataset
    if sw <= 0:
        out["fatal"] = True
        out["problems"].append(
            f"dataset '{name}': the weights of its {n} selected events sum to {sw:.6g} (not positive): "
            f"check the generator weights and the files of datasets.{name}")
        return out
    if n >= limits["min_events"]:
        events = ", ".join(f"{e['run']}:{e['luminosityBlock']}:{e['event']} (w={e['weight']:.4g}, "
                           f"{100 * e['share']:.1f}%)" for e in out["largest_weight_events"][:3])
        if share > limits["max_weight_share"]:
            out["problems"].append(
                f"dataset '{name}': one event carries {100 * share:.1f}% of the selected yield "
                f"(limit input.weight_sanity.max_weight_share = {limits['max_weight_share']}); "
                f"largest weights (run:lumi:event): {events}")
        if ess / n < limits["min_effective_fraction"]:
            out["problems"].append(
                f"dataset '{name}': effective sample size {ess:.1f} of {n} selected events "
                f"({ess / n:.3g} < input.weight_sanity.min_effective_fraction = "
                f"{limits['min_effective_fraction']}); largest weights (run:lumi:event): {events}")
    return out
