"""Object-level systematic shifts, their propagation to MET, and weight variations.

Standard treatment of experimental uncertainties in CMS H -> tau tau analyses (CMS
Collaboration, Eur. Phys. J. C 83 (2023) 562; for the tau energy scale see also the HiggsML
systematics of Estrade et al., "Adversarial learning to eliminate systematic errors", and
Wunsch et al., Comput. Softw. Big Sci. 4 (2020) 11):

* ``type: shift`` systematics scale the momenta of one object type by ``1 +- uncertainty``
  and every feature and the whole selection are re-evaluated (events migrate):

  - ``object: tau``  every tau's pt and mass (energy scale);
  - ``object: muon`` every muon's pt (and mass: the four-vector is scaled);
  - ``object: jet``  every jet's pt and mass;
  - ``object: met_unclustered`` the unclustered part of MET, see :func:`shifted_met`.

  MET receives the opposite change of the transverse momentum of the *selected* objects
  whose momentum changed: the pair muon (muon shift), the pair tau (tau shift), and the jets
  that are not the leptons (Delta R > ``lepton_delta_r_min`` to both), pass the jet ID and
  have nominal pt > ``MET_JET_PT_MIN`` = 15 GeV, the type-1 MET threshold (jet shift). Taus
  and muons outside the pair are not propagated: in NanoAOD they mostly duplicate jets that
  are already in MET, so propagating them would double count.
* ``type: weight`` systematics change only the event weight: ``w * (1 +- rel)`` with
  ``rel = uncertainty + pt_slope * (pt - 25 GeV)`` on the pair object's nominal pt (``object``
  tau or muon; ``rel`` is clipped at 0), for the listed processes only (elsewhere the
  varied weight equals the nominal one).
* ``type: normalization`` systematics are rate uncertainties handled in the fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from coffea.analysis_tools import Weights

from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.tables import NOMINAL, weight_column

MET_JET_PT_MIN = 15.0  # GeV, jets that enter the type-1 MET correction
WEIGHT_PT_PIVOT = 25.0  # GeV, where a pt-dependent scale-factor uncertainty equals `uncertainty`


@dataclass(frozen=True)
class Variant:
    """One variant of the event content: nominal, or one shift up/down."""

    name: str
    systematic: str | None = None
    object: str | None = None
    factor: float = 1.0  # the scale factor applied to ``object``

    def scale(self, obj: str) -> float:
        return self.factor if self.object == obj else 1.0

    @property
    def pair_key(self) -> tuple[float, float]:
        """Variants with equal muon and tau scales select the same mu + tau pair."""
        return (self.scale("muon"), self.scale("tau"))


def build_variants(config: AnalysisConfig) -> list[Variant]:
    """Nominal first, then ``<shift>_up`` / ``<shift>_down`` in config order (the order of
    :func:`hsaudit.tables.shift_variants`)."""
    out = [Variant(NOMINAL)]
    for syst in config.systematics_of_type("shift"):
        if syst.object not in ("tau", "jet", "muon", "met_unclustered"):
            raise AuditError(f"systematic '{syst.name}': cannot shift object '{syst.object}'")
        if not 0 <= syst.uncertainty < 1:
            raise AuditError(f"systematic '{syst.name}': uncertainty must be in [0, 1), got {syst.uncertainty}")
        out.append(Variant(f"{syst.name}_up", syst.name, syst.object, 1.0 + syst.uncertainty))
        out.append(Variant(f"{syst.name}_down", syst.name, syst.object, 1.0 - syst.uncertainty))
    return out


def shifted_met(
    met_px: np.ndarray, met_py: np.ndarray, variant: Variant, *,
    mu_px_nom, mu_py_nom, tau_px_nom, tau_py_nom, jets_px_nom, jets_py_nom,
) -> tuple[np.ndarray, np.ndarray]:
    """MET (px, py) in a variant, per event, from the nominal MET and the nominal transverse
    momenta of the selected objects of that variant (pair muon, pair tau, summed MET jets;
    0 where absent).

    An object scaled by ``f`` changes its momentum by ``(f - 1) p``; MET changes by the
    opposite. The unclustered part is ``U = -(MET + p_mu + p_tau + sum p_jets)``; scaling it
    by ``f`` moves MET to ``MET - (f - 1) U``.
    """
    d = variant.factor - 1.0
    if variant.object is None or d == 0.0:
        return met_px, met_py
    if variant.object == "tau":
        return met_px - d * tau_px_nom, met_py - d * tau_py_nom
    if variant.object == "muon":
        return met_px - d * mu_px_nom, met_py - d * mu_py_nom
    if variant.object == "jet":
        return met_px - d * jets_px_nom, met_py - d * jets_py_nom
    if variant.object == "met_unclustered":
        ux = -(met_px + mu_px_nom + tau_px_nom + jets_px_nom)
        uy = -(met_py + mu_py_nom + tau_py_nom + jets_py_nom)
        return met_px - d * ux, met_py - d * uy
    raise AuditError(f"cannot shift object '{variant.object}'")


def event_weights(
    config: AnalysisConfig, process: str, weight: np.ndarray, object_pt: dict[str, np.ndarray]
) -> Weights:
    """The event weights as a coffea :class:`~coffea.analysis_tools.Weights`: ``genWeight``
    (``weight``, float64) and, for every ``type: weight`` systematic, a correction of 1 with
    the variations ``1 +- rel`` (``Weights.weight("<name>Up")`` = ``weight * (1 + rel)``).

    ``object_pt[obj]`` is the pt of the pair muon / tau per event (NaN where it has none in
    any variant: then the pt-dependent term is dropped).
    """
    weights = Weights(len(weight))
    weights.add("genWeight", weight)
    for syst in config.systematics_of_type("weight"):
        if syst.uncertainty < 0:
            raise AuditError(f"systematic '{syst.name}': negative uncertainty {syst.uncertainty}")
        if not syst.applies_to(process):
            rel = np.zeros_like(weight)
        else:
            rel = np.full_like(weight, syst.uncertainty, dtype=np.float64)
            if syst.pt_slope:
                if syst.object not in object_pt:
                    raise AuditError(
                        f"systematic '{syst.name}': a pt-dependent weight needs object tau or muon, "
                        f"got '{syst.object}'"
                    )
                pt = object_pt[syst.object]
                rel = rel + np.where(np.isfinite(pt), syst.pt_slope * (pt - WEIGHT_PT_PIVOT), 0.0)
            rel = np.maximum(rel, 0.0)
        weights.add(syst.name, np.ones(len(weight)), weightUp=1.0 + rel, weightDown=1.0 - rel)
    return weights


def weight_columns(config: AnalysisConfig, weights: Weights) -> dict[str, np.ndarray]:
    """``weight__<name>_up/down`` columns of the ``type: weight`` systematics in ``weights``."""
    out = {}
    for syst in config.systematics_of_type("weight"):
        out[weight_column(f"{syst.name}_up")] = weights.weight(f"{syst.name}Up")
        out[weight_column(f"{syst.name}_down")] = weights.weight(f"{syst.name}Down")
    return out


def weight_variations(
    config: AnalysisConfig, process: str, weight: np.ndarray, object_pt: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``weight__<name>_up/down`` columns for every ``type: weight`` systematic
    (:func:`event_weights`)."""
    return weight_columns(config, event_weights(config, process, np.asarray(weight, dtype=np.float64), object_pt))
