"""The feature registry: per-event observables of the mu + tau_h pair, jets and MET.

Every feature has a *kind* (``momentum`` | ``angle`` | ``integer`` | ``other``) that later stages
use to decide how a feature may be perturbed (relative for momenta, absolute for angles,
never for integers). Definitions follow the CMS H -> tau tau analyses (CMS Collaboration,
Phys. Lett. B 779 (2018) 283; Eur. Phys. J. C 83 (2023) 562), the collinear approximation
of Ellis, Hinchliffe, Soldate and van der Bij, Nucl. Phys. B 297 (1988) 221, and the D_zeta
variable introduced by CDF in its tau-pair searches. Units: GeV and radians.

======================  =========  ========================================================
feature                 kind       definition
======================  =========  ========================================================
mu_pt, mu_eta           momentum,  pair muon
                        angle
tau_pt, tau_eta,        momentum,  pair tau (visible decay products)
tau_mass                angle,
                        momentum
tau_decay_mode          integer    NanoAOD ``Tau_decayMode`` (0, 1, 10, 11)
met_pt                  momentum   |MET| (after the variant's propagation)
mt_mu, mt_tau           momentum   sqrt(2 pt MET (1 - cos Delta phi(object, MET)))
m_vis, pt_vis           momentum   mass and pt of the visible mu + tau four-vector
pt_tt                   momentum   |pt_mu + pt_tau + MET| (transverse vectors)
delta_r                 angle      Delta R(mu, tau)
delta_phi               angle      |Delta phi(mu, tau)| in [0, pi]
m_col                   momentum   collinear-approximation mass: MET = sum_i (1/x_i - 1) p_i,T
                                   solved for the visible fractions x_mu, x_tau;
                                   m_col = m_vis / sqrt(x_mu x_tau). **Fallback:** where the
                                   approximation fails (mu and tau collinear or back-to-back
                                   in phi: |sin Delta phi| < 1e-3, or a solved fraction
                                   outside (0, 1], i.e. MET pointing away from both) m_col =
                                   m_vis, the lower bound of the di-tau mass.
d_zeta                  momentum   D_zeta = p_zeta^miss - 0.85 p_zeta^vis, projections of MET
                                   and of p_mu + p_tau on the bisector of the mu and tau
                                   transverse directions (may be negative)
n_jets                  integer    selected jets (pt, |eta|, ID, Delta R to mu and tau)
jet1_pt, jet1_eta       momentum,  leading selected jet; **0 when there is no jet**
                        angle
jet2_pt                 momentum   subleading selected jet; 0 when fewer than 2 jets
m_jj, delta_eta_jj      momentum,  mass and |Delta eta| of the two leading jets; 0 when
                        angle      fewer than 2 jets
======================  =========  ========================================================

The jet defaults (0) keep network inputs finite; ``n_jets`` tells the network whether they
are real. Every feature is NaN for an event without a mu + tau pair in that variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np

from hsaudit import fourvectors as fv
from hsaudit.errors import AuditError
from hsaudit.fourvectors import delta_phi

D_ZETA_VIS_COEFFICIENT = 0.85
COLLINEAR_MIN_SIN_DPHI = 1e-3


@dataclass
class PairKinematics:
    """Per-event inputs of the features in one variant (float64; NaN where absent)."""

    has_pair: np.ndarray
    mu_pt: np.ndarray
    mu_eta: np.ndarray
    mu_phi: np.ndarray
    mu_mass: np.ndarray
    tau_pt: np.ndarray
    tau_eta: np.ndarray
    tau_phi: np.ndarray
    tau_mass: np.ndarray
    tau_decay_mode: np.ndarray
    met_px: np.ndarray
    met_py: np.ndarray
    n_jets: np.ndarray
    jet1_pt: np.ndarray
    jet1_eta: np.ndarray
    jet1_phi: np.ndarray
    jet1_mass: np.ndarray
    jet2_pt: np.ndarray
    jet2_eta: np.ndarray
    jet2_phi: np.ndarray
    jet2_mass: np.ndarray

    # four-vector helpers, computed once per variant
    @cached_property
    def mu_p4(self):
        return _p4(self.mu_pt, self.mu_eta, self.mu_phi, self.mu_mass)

    @cached_property
    def tau_p4(self):
        return _p4(self.tau_pt, self.tau_eta, self.tau_phi, self.tau_mass)

    @cached_property
    def vis_p4(self):
        return fv.add(self.mu_p4, self.tau_p4)

    @cached_property
    def met_pt(self):
        return fv.pt(self.met_px, self.met_py)

    @cached_property
    def met_phi(self):
        return fv.phi(self.met_px, self.met_py)

    @cached_property
    def m_vis(self):
        return _mass(self.vis_p4)

    @cached_property
    def zeta_axis(self):
        """(unit bisector x, y of the mu and tau directions, projection of p_mu + p_tau on it)."""
        ux = np.cos(self.mu_phi) + np.cos(self.tau_phi)
        uy = np.sin(self.mu_phi) + np.sin(self.tau_phi)
        norm = np.hypot(ux, uy)
        # back-to-back leptons have no bisector: take the direction perpendicular to the muon
        back = norm < 1e-9
        ux = np.where(back, -np.sin(self.mu_phi), ux)
        uy = np.where(back, np.cos(self.mu_phi), uy)
        norm = np.where(back, 1.0, norm)
        zx, zy = ux / norm, uy / norm
        p_vis = (self.mu_p4[0] + self.tau_p4[0]) * zx + (self.mu_p4[1] + self.tau_p4[1]) * zy
        return zx, zy, p_vis

    _PAIR_PROPERTIES = ("mu_p4", "tau_p4", "vis_p4", "m_vis", "zeta_axis")

    def share_pair_vectors(self, other: "PairKinematics") -> None:
        """Take over the pair four-vectors ``other`` has computed: for a variant with the same
        pair and the same muon and tau scales they are the same numbers."""
        for name in self._PAIR_PROPERTIES:
            if name in other.__dict__:
                self.__dict__[name] = other.__dict__[name]


def _p4(pt, eta, phi, mass):
    return fv.from_pt_eta_phi_m(pt, eta, phi, mass)


def _mass(p4):
    return fv.mass(*p4)


def _mt(pt, phi, k: PairKinematics):
    return fv.transverse_mass(pt, phi, k.met_pt, k.met_phi)


def _m_col(k: PairKinematics):
    mpx, mpy = k.mu_p4[0], k.mu_p4[1]
    tpx, tpy = k.tau_p4[0], k.tau_p4[1]
    det = mpx * tpy - mpy * tpx  # = pt_mu pt_tau sin(dphi)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.abs(det) > COLLINEAR_MIN_SIN_DPHI * k.mu_pt * k.tau_pt
        safe = np.where(ok, det, 1.0)
        nu_mu = (k.met_px * tpy - k.met_py * tpx) / safe  # 1/x_mu - 1
        nu_tau = (mpx * k.met_py - mpy * k.met_px) / safe  # 1/x_tau - 1
        ok &= (nu_mu >= 0) & (nu_tau >= 0)
        x_prod = 1.0 / ((1.0 + nu_mu) * (1.0 + nu_tau))
        return np.where(ok, k.m_vis / np.sqrt(np.where(ok, x_prod, 1.0)), k.m_vis)


def _d_zeta(k: PairKinematics):
    zx, zy, p_vis = k.zeta_axis
    p_miss = k.met_px * zx + k.met_py * zy
    return p_miss - D_ZETA_VIS_COEFFICIENT * p_vis


def _zero_if_nan(x):
    return np.where(np.isnan(x), 0.0, x)


def _m_jj(k: PairKinematics):
    j1 = _p4(k.jet1_pt, k.jet1_eta, k.jet1_phi, k.jet1_mass)
    j2 = _p4(k.jet2_pt, k.jet2_eta, k.jet2_phi, k.jet2_mass)
    return _zero_if_nan(_mass(fv.add(j1, j2)))


# what a feature reads -> the objects whose shifts can change it (the pair itself depends on the
# muon and tau scales; the selected jets on the pair and the jet scale; MET on all of them)
SHIFTED_BY = {
    "pair": ("muon", "tau"),
    "jets": ("muon", "tau", "jet"),
    "met": ("muon", "tau", "jet", "met_unclustered"),
}


@dataclass(frozen=True)
class Feature:
    name: str
    kind: str
    compute: Callable[[PairKinematics], np.ndarray]
    description: str
    reads: str = "pair"  # a key of SHIFTED_BY

    @property
    def shifted_by(self) -> tuple[str, ...]:
        """The shifted objects this feature depends on: a variant that scales none of them
        leaves its values bit-identical to the nominal ones."""
        return SHIFTED_BY[self.reads]


_REGISTRY = [
    Feature("mu_pt", "momentum", lambda k: k.mu_pt, "muon pt"),
    Feature("mu_eta", "angle", lambda k: k.mu_eta, "muon pseudorapidity"),
    Feature("tau_pt", "momentum", lambda k: k.tau_pt, "tau_h visible pt"),
    Feature("tau_eta", "angle", lambda k: k.tau_eta, "tau_h pseudorapidity"),
    Feature("tau_mass", "momentum", lambda k: k.tau_mass, "tau_h visible mass"),
    Feature("tau_decay_mode", "integer", lambda k: k.tau_decay_mode, "tau_h decay mode"),
    Feature("met_pt", "momentum", lambda k: k.met_pt, "missing transverse momentum", reads="met"),
    Feature("mt_mu", "momentum", lambda k: _mt(k.mu_pt, k.mu_phi, k), "transverse mass (mu, MET)", reads="met"),
    Feature("mt_tau", "momentum", lambda k: _mt(k.tau_pt, k.tau_phi, k), "transverse mass (tau, MET)", reads="met"),
    Feature("m_vis", "momentum", lambda k: k.m_vis, "visible di-tau mass"),
    Feature("pt_vis", "momentum", lambda k: fv.pt(k.vis_p4[0], k.vis_p4[1]), "visible di-tau pt"),
    Feature(
        "pt_tt", "momentum",
        lambda k: fv.pt(k.vis_p4[0] + k.met_px, k.vis_p4[1] + k.met_py), "pt of mu + tau + MET", reads="met",
    ),
    Feature(
        "delta_r", "angle",
        lambda k: fv.delta_r(k.mu_eta, k.mu_phi, k.tau_eta, k.tau_phi), "Delta R(mu, tau)",
    ),
    Feature("delta_phi", "angle", lambda k: np.abs(delta_phi(k.mu_phi, k.tau_phi)), "|Delta phi(mu, tau)|"),
    Feature("m_col", "momentum", _m_col, "collinear-approximation di-tau mass (fallback m_vis)", reads="met"),
    Feature("d_zeta", "momentum", _d_zeta, "D_zeta = p_zeta^miss - 0.85 p_zeta^vis", reads="met"),
    Feature("n_jets", "integer", lambda k: k.n_jets, "number of selected jets", reads="jets"),
    Feature("jet1_pt", "momentum", lambda k: _zero_if_nan(k.jet1_pt), "leading jet pt (0: none)", reads="jets"),
    Feature("jet1_eta", "angle", lambda k: _zero_if_nan(k.jet1_eta), "leading jet eta (0: none)", reads="jets"),
    Feature("jet2_pt", "momentum", lambda k: _zero_if_nan(k.jet2_pt), "subleading jet pt (0: none)", reads="jets"),
    Feature("m_jj", "momentum", _m_jj, "dijet mass (0: fewer than 2 jets)", reads="jets"),
    Feature(
        "delta_eta_jj", "angle",
        lambda k: _zero_if_nan(np.abs(k.jet1_eta - k.jet2_eta)), "|Delta eta(j1, j2)| (0: fewer than 2 jets)", reads="jets",
    ),
]

FEATURES: dict[str, Feature] = {f.name: f for f in _REGISTRY}
FEATURE_KINDS: dict[str, str] = {f.name: f.kind for f in _REGISTRY}


def resolve_features(names) -> list[Feature]:
    """The registry entries for ``names``; AuditError for an unknown name listing the known ones."""
    names = list(names)
    if not names:
        raise AuditError("no features requested; known features: " + ", ".join(FEATURES))
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise AuditError(
            f"unknown feature(s) {unknown} in the config's features; known features: {', '.join(FEATURES)}"
        )
    return [FEATURES[n] for n in names]


def feature_values(kin: PairKinematics, feature: Feature, values=None) -> np.ndarray:
    """One feature as float32, NaN for events without a pair (``values``: the float64 values
    when the caller has computed them already)."""
    with np.errstate(invalid="ignore"):
        if values is None:
            values = feature.compute(kin)
        return np.where(kin.has_pair, np.asarray(values, dtype=np.float64), np.nan).astype(np.float32)


def compute_features(kin: PairKinematics, features: list[Feature]) -> dict[str, np.ndarray]:
    """{name: float32 array}; NaN for events without a pair."""
    return {f.name: feature_values(kin, f) for f in features}
