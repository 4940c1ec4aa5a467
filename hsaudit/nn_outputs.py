"""The NN outputs of one model on every event and variant: computed once (EvaluateModel),
saved as one file with one column per variant, and read by every later stage (the
likelihood, impacts, the visibility calibration, the random control and the report) instead
of being predicted again.

A row is an event of the merged sample (``EventSample`` order); a variant's column is NaN
where that variant's features cannot be computed (the event is not selected there). The
file carries the feature list and the event count, so a table from another sample or model
is refused with a message instead of silently misaligned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.files import write_atomically

_PREFIX = "variant__"


@dataclass(frozen=True)
class NNOutputs:
    """``columns``: {variant: (N,) float32 NN output, NaN where the variant has no features}."""

    columns: dict
    features: tuple

    @classmethod
    def compute(cls, model, sample) -> "NNOutputs":
        """Predict ``model`` on every variant of ``sample`` (an ``EventSample``)."""
        from hsaudit.ml.evaluation import outputs_per_variant

        columns = outputs_per_variant(model, {v: sample.X[v] for v in sample.variants}, invalid="nan")
        return cls(columns=columns, features=tuple(sample.features))

    @property
    def n_events(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, variant: str) -> np.ndarray:
        try:
            return self.columns[variant]
        except KeyError:
            raise AuditError(f"NN outputs have no variant '{variant}'; known: {', '.join(self.columns)}") from None

    def as_dict(self) -> dict:
        """{variant: (N,) outputs}, the form the stage functions take."""
        return dict(self.columns)

    def save(self, path) -> None:
        """One npz file, written to a temporary name and renamed into place."""
        arrays = {f"{_PREFIX}{v}": np.asarray(c, dtype=np.float32) for v, c in self.columns.items()}
        arrays["features"] = np.asarray(self.features, dtype=str)
        write_atomically(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path, sample=None) -> "NNOutputs":
        """Read a saved table; with ``sample``, check that it belongs to it (event count,
        variants and features)."""
        try:
            with np.load(path) as f:
                columns = {k[len(_PREFIX):]: f[k] for k in f.files if k.startswith(_PREFIX)}
                features = tuple(str(s) for s in f["features"])
        except (OSError, ValueError, KeyError) as e:
            raise AuditError(f"cannot read the NN outputs {path}: {e}; rerun EvaluateModel") from e
        out = cls(columns=columns, features=features)
        if sample is not None:
            out.check_matches(sample, path)
        return out

    def check_matches(self, sample, where="NN outputs") -> None:
        if self.n_events != len(sample) or set(self.columns) != set(sample.variants) \
                or self.features != tuple(sample.features):
            raise AuditError(f"{where} do not belong to this sample ({self.n_events} events, variants "
                             f"{sorted(self.columns)}, vs {len(sample)} events, variants {sorted(sample.variants)}); "
                             f"rerun EvaluateModel")
