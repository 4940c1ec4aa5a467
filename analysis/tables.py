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

from analysis.errors import AuditError

LAYOUT_VERSION = 1
ID_COLUMNS = ("run", "luminosityBlock", "event")
NOMINAL = "nominal"
# provenance numbers in ``meta.extra`` that add up when chunks are merged
SUMMED_EXTRA_KEYS = ("sum_genweight", "n_events_processed")


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
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()

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
