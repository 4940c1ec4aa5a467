"""The two files of an attack branch, each a class that owns its layout and I/O:

* ``AttackedSample`` (AttackSystematic's ``attacked.npz``): the rows of the sample the attack
  moved, their attacked features, the weights they are judged with (twice the weight on the
  judging half of a universal attack, zero on its fitting half), their event numbers and
  their region membership after the attack;
* ``AttackedOutputs`` (ValidateAttack's ``nn_outputs.npz``): the same rows with the model's
  NN output before and after the attack, the judging weights and the regions after it; what
  the impacts, the seed spread, the augmented workspace and the report read.

Files are written to a temporary name and renamed into place. A file without region
membership (from an older version) is refused with a message naming what to rerun.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.files import write_atomically


def region_arrays(regions: dict) -> dict:
    """Region membership after the attack as npz arrays (names and one row per region)."""
    names = list(regions)
    return {"region_names": np.array(names), "in_region_after": np.stack([regions[r] for r in names])}


def regions_from_arrays(f) -> dict:
    """{region: (n,) bool} from an opened npz file written with ``region_arrays``."""
    if "in_region_after" not in f.files or "region_names" not in f.files:
        name = getattr(getattr(f, "fid", None), "name", "an attack output")
        raise AuditError(f"{name} has no region membership "
                         "after the attack (written by an older version of the tool): rerun with a new --version "
                         "or remove the AttackSystematic outputs (--remove-output)")
    return {str(r): f["in_region_after"][i].astype(bool) for i, r in enumerate(f["region_names"])}


def _open(path, kind: str):
    try:
        return np.load(path)
    except (OSError, ValueError) as e:
        raise AuditError(f"cannot read the {kind} {path}: {e}; rerun the task that wrote it") from e


def _eval_weights(f, rows, weights):
    if "eval_weights" in f.files:
        return f["eval_weights"]
    return None if weights is None else np.asarray(weights)[rows]


@dataclass(frozen=True)
class AttackedSample:
    rows: np.ndarray             # (n,) rows of the EventSample the attack was applied to
    x_adv: np.ndarray            # (n, F) attacked features
    eval_weights: np.ndarray     # (n,) weights the result is judged with
    event: np.ndarray            # (n,) event numbers (for reading the file on its own)
    regions: dict                # {region: (n,) bool} membership after the attack

    def save(self, path) -> None:
        arrays = dict(rows=self.rows, x_adv=self.x_adv, eval_weights=self.eval_weights, event=self.event,
                      **region_arrays(self.regions))
        if self.eval_weights is None:       # judged with the sample's own weights
            del arrays["eval_weights"]
        write_atomically(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path, weights=None) -> "AttackedSample":
        """``weights``: the sample's event weights, used as judging weights for files that
        predate them."""
        with _open(path, "attacked events") as f:
            rows = f["rows"]
            return cls(rows=rows, x_adv=f["x_adv"], eval_weights=_eval_weights(f, rows, weights),
                       event=f["event"] if "event" in f.files else np.zeros(len(rows), np.int64),
                       regions=regions_from_arrays(f))


@dataclass(frozen=True)
class AttackedOutputs:
    rows: np.ndarray             # (n,) rows of the EventSample
    nominal: np.ndarray          # (n,) NN output before the attack
    attacked: np.ndarray         # (n,) NN output after it
    eval_weights: np.ndarray     # (n,) judging weights
    regions: dict                # {region: (n,) bool} membership after the attack

    def save(self, path) -> None:
        arrays = dict(rows=self.rows, nominal=self.nominal, attacked=self.attacked, eval_weights=self.eval_weights,
                      **region_arrays(self.regions))
        if self.eval_weights is None:       # judged with the sample's own weights
            del arrays["eval_weights"]
        write_atomically(path, lambda fh: np.savez_compressed(fh, **arrays))

    @classmethod
    def load(cls, path, weights=None) -> "AttackedOutputs":
        with _open(path, "attacked NN outputs") as f:
            rows = f["rows"]
            return cls(rows=rows, nominal=f["nominal"], attacked=f["attacked"],
                       eval_weights=_eval_weights(f, rows, weights), regions=regions_from_arrays(f))

    def events(self):
        """The attacked events as the impact measurement takes them (hsaudit.stats.impacts)."""
        from hsaudit.stats.impacts import AttackedEvents

        return AttackedEvents(rows=self.rows, attacked_outputs=self.attacked, regions_after=self.regions,
                              eval_weights=self.eval_weights)
