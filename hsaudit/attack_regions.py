"""Region membership of attacked events: the selection re-applied to the attacked features.

A standard +-1 sigma shift re-runs the selection, so events migrate across its thresholds
(a tau at 24.5 GeV enters the signal region under TES +3%). An attack inside the same
envelope must be allowed the same, or a coherent shift leaves a visible gap above every
threshold (nothing fills [25, 25.75] GeV when every selected tau moves up by 3%) and the
audit measures an artefact of the bookkeeping instead of a mismodelling.

Rules (docs/audit.md, "Migration of attacked events"):
- the kinematic cuts of the selection and of each region are written as cuts on features
  (``RegionCuts``): nanoaod input: muon pt > selection.muon.pt_min (feature ``mu_pt``),
  tau pt > selection.tau.pt_min (``tau_pt``), mt_min < mT < mt_max (``mt_mu``); flat input:
  selection.cuts (min inclusive, max exclusive) and the regions' mT window on
  input.mt_column. A cut on a feature the network does not use cannot be re-applied and
  is left to the variants;
- an event is a *candidate* for a region when it is in that region in the nominal or in
  the attacked systematic's up or down variant: the requirements the attack cannot move
  (charge, identification, vetoes) hold in at least one point of its envelope;
- after the attack a candidate is in the region when it passes the region's feature cuts
  at its attacked features; an event whose cut features the attack left unchanged keeps
  its nominal membership exactly (a zero attack changes no region).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL


@dataclass(frozen=True)
class FeatureCut:
    feature: str
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = False
    high_inclusive: bool = False
    missing_value: float | None = None  # flat tables: this value never passes a window

    def passes(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(v)
        if self.missing_value is not None:
            ok &= v != self.missing_value
        with np.errstate(invalid="ignore"):
            if self.low is not None:
                ok &= (v >= self.low) if self.low_inclusive else (v > self.low)
            if self.high is not None:
                ok &= (v <= self.high) if self.high_inclusive else (v < self.high)
        return ok


@dataclass(frozen=True)
class RegionCuts:
    """Per region, the selection's and the region's kinematic cuts on the network's features
    (those on other quantities are left out: see the module docstring). Built once from the
    typed ``input``, ``selection`` and ``regions`` sections (``from_config``); what
    ``regions_after_attack`` needs of the configuration, and nothing else."""

    by_region: tuple[tuple[str, tuple[FeatureCut, ...]], ...]

    @classmethod
    def from_config(cls, cfg: AnalysisConfig) -> "RegionCuts":
        inp, sel = cfg.section("input"), cfg.section("selection")
        if inp.kind == "nanoaod":
            common = [FeatureCut(feature, low=float(obj.pt_min))
                      for feature, obj in (("mu_pt", sel.muon), ("tau_pt", sel.tau)) if obj is not None]
            mt_feature, mt_inclusive, missing = "mt_mu", False, None
        else:
            # flat tables: selection.cuts (min inclusive, max exclusive) and the regions' mT window on
            # input.mt_column (their references were checked when the configuration was loaded)
            missing = inp.missing.value
            common = [FeatureCut(col, low=c.min, high=c.max, low_inclusive=True, missing_value=missing)
                      for col, c in (sel.cuts or {}).items()]
            mt_feature, mt_inclusive = inp.mt_column, True
        features = set(cfg.feature_names)
        out = []
        for name, region in cfg.regions.items():
            cuts = list(common)
            if region.mt_min is not None or region.mt_max is not None:
                cuts.append(FeatureCut(mt_feature, low=region.mt_min, high=region.mt_max,
                                       low_inclusive=mt_inclusive, missing_value=missing))
            out.append((name, tuple(c for c in cuts if c.feature in features)))
        return cls(tuple(out))

    def as_dict(self) -> dict[str, list[FeatureCut]]:
        return {name: list(cuts) for name, cuts in self.by_region}


def region_cuts(cfg: AnalysisConfig) -> dict[str, list[FeatureCut]]:
    """{region: [FeatureCut]} of a configuration (``RegionCuts.from_config``)."""
    return RegionCuts.from_config(cfg).as_dict()


def candidates(sample: EventSample, region: str, systematic: str) -> np.ndarray:
    """(N,) events in ``region`` in the nominal or in the systematic's up or down variant."""
    mask = sample.region[(region, NOMINAL)].copy()
    for direction in ("up", "down"):
        key = (region, f"{systematic}_{direction}")
        if key not in sample.region:
            raise AuditError(f"systematic '{systematic}' has no {direction} variant with region '{region}'")
        mask |= sample.region[key]
    return mask


def regions_after_attack(sample: EventSample, rows: np.ndarray, x_adv: np.ndarray, cuts: RegionCuts,
                         systematic: str) -> dict[str, np.ndarray]:
    """{region: (len(rows),) bool}: membership of the attacked events ``rows`` with features
    ``x_adv`` under the region ``cuts`` (rules in the module docstring)."""
    rows = np.asarray(rows)
    x_adv = np.asarray(x_adv)
    if x_adv.shape != (len(rows), len(sample.features)):
        raise AuditError(f"attacked features have shape {x_adv.shape}, expected ({len(rows)}, {len(sample.features)})")
    x_nom = sample.X[NOMINAL][rows]
    out = {}
    for region, feature_cuts in cuts.by_region:
        nominal = sample.region[(region, NOMINAL)][rows]
        if not feature_cuts:
            out[region] = nominal.copy()
            continue
        cols = [sample.features.index(c.feature) for c in feature_cuts]
        moved = (x_adv[:, cols] != x_nom[:, cols]).any(axis=1)
        passes = np.ones(len(rows), dtype=bool)
        for c, j in zip(feature_cuts, cols):
            passes &= c.passes(x_adv[:, j])
        after = candidates(sample, region, systematic)[rows] & passes
        out[region] = np.where(moved, after, nominal)
    return out
