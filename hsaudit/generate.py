"""Demo NanoAOD events for an H->tautau search in the mu + hadronic-tau channel.

When a user has no ROOT files, the audit runs on events from this module: a seeded,
vectorised (numpy) toy event generator that writes NanoAOD-format ``Events`` TTrees with
uproot (``TTree``, not RNTuple), readable by ``coffea.nanoevents`` with ``NanoAODSchema``.

It is *not* a Monte Carlo generator in the sense of Pythia or MadGraph: each process is a
short chain of two-body (and tau three-body) decays in the rest frame of the parent,
boosted to the lab, plus parametrised initial-state radiation, fakes and detector
smearing. The aim is that the high-level features of a mu+tau_h selection (visible and
collinear mass, transverse mass, MET, pt of the di-tau system, jets, dijet mass, ...) are
correlated the way they are in real collisions, so that a signal-vs-background classifier
reaches a realistic, not perfect, separation. The physics and every approximation are
described in ``docs/demo_generator.md``.

Physics references for the modelled shapes:
- tau decays: Michel spectrum of tau -> l nu nu (PDG review "Tau branching fractions";
  L. Michel, Proc. Phys. Soc. A63 (1950) 514), hadronic decay-mode fractions and visible
  masses (pi, rho(770), a1(1260)) from the PDG.
- collinear approximation for the di-tau mass: R.K. Ellis et al., Nucl. Phys. B297 (1988) 221.
- the target channel and feature set follow the CMS H->tautau analyses
  (CMS, JHEP 2018 / Phys. Lett. B 779 (2018) 283) and the HiggsML challenge
  (Adam-Bourdarios et al., JMLR W&CP 42 (2015) 19).

Public API: ``PROCESSES`` and ``generate_events``.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from hsaudit import fourvectors as fv
from hsaudit.errors import AuditError
from hsaudit.files import atomic_path

# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------

#: process name -> description, is_signal and an approximate cross section in pb for
#: the *generated* final state (13 TeV cross section x branching ratio x generator
#: filter efficiency, see docs/demo_generator.md). The lead's config may use these.
PROCESSES: dict[str, dict] = {
    "ggH_htt": {
        "description": "gluon-fusion H(125) -> tautau, at least one tau -> mu",
        "is_signal": True,
        "cross_section_pb": 48.6 * 0.0627 * 0.3176,
    },
    "vbf_htt": {
        "description": "vector-boson-fusion H(125) -> tautau + 2 forward jets, at least one tau -> mu",
        "is_signal": True,
        "cross_section_pb": 3.78 * 0.0627 * 0.3176,
    },
    "ztt": {
        "description": "Drell-Yan Z/gamma* -> tautau (m > 50 GeV), at least one tau -> mu",
        "is_signal": False,
        "cross_section_pb": 6077.0 * 0.3176,
    },
    "zmm": {
        "description": "Drell-Yan Z/gamma* -> mumu (m > 50 GeV); a jet or a lost muon fakes the tau",
        "is_signal": False,
        "cross_section_pb": 6077.0,
    },
    "wjets": {
        "description": "W -> mu nu + jets; a jet fakes the tau (about 10% negative NLO weights)",
        "is_signal": False,
        "cross_section_pb": 61527.0 / 3.0,
    },
    "ttbar": {
        "description": "ttbar with at least one W -> mu nu; b jets, genuine or fake taus",
        "is_signal": False,
        "cross_section_pb": 833.9 * 0.2054,
    },
}

# events are generated in blocks of this size, each with its own random stream keyed by
# (seed, process, first_event, block): the content does not depend on chunk_size, and
# the first k events of a file do not depend on n_events.
_BLOCK = 8192
_EVENTS_PER_LUMIBLOCK = 1000

# masses and widths in GeV (PDG)
M_TAU = 1.77686
M_MU = 0.1056584
M_E = 0.000511
M_PI = 0.13957
M_B = 4.8
M_Z, W_Z = 91.1876, 2.4952
M_W, W_W = 80.379, 2.085
M_H, W_H = 125.0, 0.0041
M_TOP, W_TOP = 172.5, 1.42

# reconstructed hadronic tau decay modes (NanoAOD Tau_decayMode) and their fractions
# among genuine tau_h (PDG: h, h+pi0s, 3h, 3h+pi0) and among jets faking tau_h
_DECAY_MODES = np.array([0, 1, 10, 11])
_DM_FRAC_GENUINE = np.array([0.19, 0.55, 0.17, 0.09])
_DM_FRAC_FAKE = np.array([0.22, 0.38, 0.27, 0.13])

# DeepTau 2018v2p5 working points (NanoAOD v12 integer: number of WPs passed,
# VSjet/VSe: 1 = VVVLoose ... 8 = VVTight; VSmu: 1 = VLoose ... 4 = Tight).
# Cumulative pass probabilities per working point.
_VSJET_EFF_GENUINE = np.array([0.995, 0.985, 0.965, 0.93, 0.84, 0.73, 0.61, 0.47])
_VSJET_EFF_FAKE = np.array([0.92, 0.55, 0.32, 0.17, 0.075, 0.038, 0.018, 0.008])
_VSE_EFF_NOT_E = np.array([0.999, 0.995, 0.99, 0.97, 0.93, 0.87, 0.78, 0.65])
_VSE_EFF_E = np.array([0.9, 0.5, 0.2, 0.08, 0.03, 0.012, 0.005, 0.002])
_VSMU_EFF_NOT_MU = np.array([0.999, 0.997, 0.995, 0.99])
_VSMU_EFF_MU = np.array([0.3, 0.1, 0.03, 0.01])

# NanoAOD genPartFlav codes. Tau_genPartFlav: 1 prompt e, 2 prompt mu, 3 tau -> e,
# 4 tau -> mu, 5 genuine tau_h, 0 unmatched (jet). Muon_genPartFlav: 1 prompt, 15 from tau,
# 5 from b, 4 from c, 3 light / unknown, 0 unmatched.
_FLAV_PROMPT_MU, _FLAV_TAU_E, _FLAV_TAU_H = 2, 3, 5
_FLAV_UNMATCHED = 0
_MUFLAV_PROMPT, _MUFLAV_TAU, _MUFLAV_B = 1, 15, 5


# --------------------------------------------------------------------------------------
# four-vectors: arrays of shape (n, 4) holding (E, px, py, pz), computed by hsaudit.fourvectors
# --------------------------------------------------------------------------------------


def _stack(px, py, pz, e):
    return np.stack([e, px, py, pz], axis=-1)


def _p4(pt, eta, phi, m):
    return _stack(*fv.from_pt_eta_phi_m(pt, eta, phi, m))


def _p4_from_mt_y(m, px, py, y):
    return _stack(*fv.from_mt_rapidity(m, px, py, y))


def _pt(p):
    return fv.pt(p[..., 1], p[..., 2])


def _eta(p):
    return fv.eta(p[..., 1], p[..., 2], p[..., 3])


def _phi(p):
    return fv.phi(p[..., 1], p[..., 2])


def _mass(p):
    return fv.mass(p[..., 1], p[..., 2], p[..., 3], p[..., 0])


def _boost(p_rest, parent):
    """Boost momenta given in the parent's rest frame into the frame where it has ``parent``."""
    m = np.maximum(_mass(parent), 1e-9)
    gamma = parent[:, 0] / m
    beta = parent[:, 1:] / parent[:, :1]
    bp = np.einsum("ij,ij->i", beta, p_rest[:, 1:])
    # (gamma - 1) / beta^2 written so that it is finite at beta = 0
    g2 = gamma * gamma / (gamma + 1.0)
    out = np.empty_like(p_rest)
    out[:, 0] = gamma * (p_rest[:, 0] + bp)
    out[:, 1:] = p_rest[:, 1:] + (g2 * bp + gamma * p_rest[:, 0])[:, None] * beta
    return out


def _isotropic(rng, n):
    cos_t = rng.uniform(-1.0, 1.0, n)
    sin_t = np.sqrt(1.0 - cos_t * cos_t)
    phi = rng.uniform(-np.pi, np.pi, n)
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=-1)


def _two_body(rng, parent, m1, m2):
    """Isotropic two-body decay (no spin correlations); returns both daughters in the lab."""
    n = len(parent)
    m = _mass(parent)
    m1 = np.broadcast_to(m1, (n,)).astype(np.float64)
    m2 = np.broadcast_to(m2, (n,)).astype(np.float64)
    lam = (m * m - (m1 + m2) ** 2) * (m * m - (m1 - m2) ** 2)
    p = np.sqrt(np.maximum(lam, 0.0)) / (2.0 * np.maximum(m, 1e-9))
    d = _isotropic(rng, n) * p[:, None]
    d1 = np.concatenate([np.sqrt(p * p + m1 * m1)[:, None], d], axis=1)
    d2 = np.concatenate([np.sqrt(p * p + m2 * m2)[:, None], -d], axis=1)
    return _boost(d1, parent), _boost(d2, parent)


# Michel spectrum of an unpolarised tau -> l nu nu (massless lepton): dN/dx = 2 x^2 (3 - 2x),
# CDF F(x) = 2x^3 - x^4, inverted by interpolation on a fixed grid (deterministic).
_MICHEL_X = np.linspace(0.0, 1.0, 4001)
_MICHEL_F = 2 * _MICHEL_X**3 - _MICHEL_X**4


def _tau_to_lepton(rng, tau, m_lep):
    """tau -> l nu nu: the lepton energy follows the Michel spectrum in the tau rest frame."""
    n = len(tau)
    x = np.interp(rng.uniform(0.0, 1.0, n), _MICHEL_F, _MICHEL_X)
    e_max = (M_TAU**2 + m_lep**2) / (2 * M_TAU)
    e = m_lep + x * (e_max - m_lep)
    p = np.sqrt(np.maximum(e * e - m_lep * m_lep, 0.0))
    lep_rest = np.concatenate([e[:, None], _isotropic(rng, n) * p[:, None]], axis=1)
    lep = _boost(lep_rest, tau)
    return lep, tau - lep


def _truncated_bw(rng, n, m0, width, lo, hi):
    """Non-relativistic Breit-Wigner (Cauchy) truncated to [lo, hi] by inverse CDF."""
    a, b = np.arctan((lo - m0) / (width / 2)), np.arctan((hi - m0) / (width / 2))
    return m0 + width / 2 * np.tan(rng.uniform(a, b, n))


# visible-mass line shapes per decay mode (0, 1, 10, 11): pi; rho(770); a1(1260); a1 + pi0
_VIS_M0 = np.array([M_PI, 0.775, 1.23, 1.35])
_VIS_WIDTH = np.array([1e-6, 0.149, 0.42, 0.45])
_VIS_LO = np.array([M_PI, 0.28, 0.6, 0.75])
_VIS_HI = np.array([M_PI, 1.6, 1.7, 1.72])


def _visible_tau_mass(rng, dm):
    """Truncated Breit-Wigner visible mass for each decay mode (exactly m_pi for DM 0)."""
    k = np.searchsorted(_DECAY_MODES, dm)
    m0, half = _VIS_M0[k], _VIS_WIDTH[k] / 2
    a, b = np.arctan((_VIS_LO[k] - m0) / half), np.arctan((_VIS_HI[k] - m0) / half)
    m = m0 + half * np.tan(a + (b - a) * rng.uniform(size=len(dm)))
    return np.where(k == 0, M_PI, m)


def _decay_modes(rng, n, fractions):
    """Draw reconstructed tau_h decay modes (0, 1, 10, 11) with the given fractions."""
    return _DECAY_MODES[np.searchsorted(np.cumsum(fractions)[:-1], rng.uniform(size=n), side="right")]


def _tau_to_hadrons(rng, tau, dm):
    """tau -> tau_h nu as a two-body decay with the visible mass of the decay mode."""
    m_vis = _visible_tau_mass(rng, dm)
    vis, nu = _two_body(rng, tau, m_vis, 0.0)
    return vis, nu


def _kumaraswamy(rng, a, b, n):
    """Beta-like variable on [0, 1] with a closed-form inverse CDF (much faster than beta)."""
    return _kumaraswamy_u(rng.uniform(size=n), a, b)


def _kumaraswamy_u(u, a, b):
    return (1.0 - (1.0 - u) ** (1.0 / b)) ** (1.0 / a)


def _working_point(u, effs):
    """Integer NanoAOD working point: number of cumulative efficiencies that u is below."""
    return (u[:, None] < np.asarray(effs)[None, :]).sum(axis=1).astype(np.uint8)


# --------------------------------------------------------------------------------------
# per-block event record: collections of candidate objects (columns), MET, weights
# --------------------------------------------------------------------------------------


def _scatter(idx, n, values, fill=0):
    """Full-length array with ``values`` at rows ``idx`` and ``fill`` elsewhere."""
    values = np.asarray(values)
    out = np.full(n, fill, dtype=values.dtype)
    out[idx] = values
    return out


class _Collection:
    """Candidate objects as columns (one per possible object); sorted by pt at the end."""

    def __init__(self, n, fields):
        self.n = n
        self.fields = fields
        self.columns = []  # list of (valid, {field: array}, ref_slot or None)

    def add(self, valid, ref=None, **values):
        missing = set(self.fields) - set(values)
        if missing:  # programming error, not a user error
            raise KeyError(f"missing fields {missing}")
        cols = {k: np.broadcast_to(np.asarray(values[k]), (self.n,)) for k in self.fields}
        self.columns.append((np.asarray(valid, dtype=bool), cols, ref))
        return len(self.columns) - 1

    def valid_matrix(self):
        if not self.columns:
            return np.zeros((self.n, 0), dtype=bool)
        return np.stack([c[0] for c in self.columns], axis=1)

    def order_and_rank(self):
        """Per-event pt ordering (valid first, descending pt) and each slot's output index."""
        valid = self.valid_matrix()
        k = valid.shape[1]
        if k == 0:
            return np.zeros((self.n, 0), dtype=np.int64), np.zeros((self.n, 0), dtype=np.int64), valid
        pt = np.stack([c[1]["pt"] for c in self.columns], axis=1)
        key = np.where(valid, -pt, np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.broadcast_to(np.arange(k), order.shape), axis=1)
        return order, rank, valid


class _Block:
    """Everything generated for one block of events."""

    MUON_FIELDS = (
        "pt", "eta", "phi", "mass", "charge", "pfRelIso04_all", "tightId", "mediumId", "looseId",
        "dxy", "dz", "genPartFlav",
    )
    TAU_FIELDS = (
        "pt", "eta", "phi", "mass", "charge", "decayMode",
        "idDeepTau2018v2p5VSjet", "idDeepTau2018v2p5VSe", "idDeepTau2018v2p5VSmu", "dz", "genPartFlav",
    )
    JET_FIELDS = ("pt", "eta", "phi", "mass", "btagDeepFlavB", "jetId", "hadronFlavour")
    ELECTRON_FIELDS = ("pt", "eta", "phi", "mass", "charge", "cutBased", "pfRelIso03_all", "dxy", "dz")

    def __init__(self, rng, n):
        self.rng = rng
        self.n = n
        self.n_pu = rng.poisson(32.0, n)
        self.muons = _Collection(n, self.MUON_FIELDS)
        self.taus = _Collection(n, self.TAU_FIELDS)
        self.jets = _Collection(n, self.JET_FIELDS)
        self.electrons = _Collection(n, self.ELECTRON_FIELDS)
        self.muon_jet = {}  # muon slot -> jet slot (non-prompt muons inside jets)
        self.jet_muon = {}  # jet slot -> muon slot
        # MET starts from the true invisible momentum; detector effects are added per object
        self.met = np.zeros((n, 2))
        self.gen_weight = np.ones(n)

    # -- invisible ---------------------------------------------------------------------
    def add_invisible(self, p, where=True):
        mask = np.broadcast_to(np.asarray(where, dtype=bool), (self.n,))
        self.met += np.where(mask[:, None], p[:, 1:3], 0.0)

    def _met_correction(self, true_p, reco_pt, reco_phi, valid):
        """Type-1-like: MET moves opposite to the mismeasurement of a reconstructed object."""
        dx = reco_pt * np.cos(reco_phi) - true_p[:, 1]
        dy = reco_pt * np.sin(reco_phi) - true_p[:, 2]
        self.met[:, 0] -= np.where(valid, dx, 0.0)
        self.met[:, 1] -= np.where(valid, dy, 0.0)

    # -- jets --------------------------------------------------------------------------
    def _btag(self, flavour, abs_eta):
        rng, n = self.rng, len(flavour)
        # shapes tuned to DeepJet-like efficiencies at the 0.05 / 0.3 / 0.7 working points:
        # light 10% / 1% / 0.1%, charm 60% / 20% / 3%, b 92% / 80% / 65%
        u = rng.uniform(size=n)
        is_b, is_c = flavour == 5, flavour == 4
        a = np.where(is_b, 0.1, np.where(is_c, 0.5, 0.21))
        b = np.where(is_b, 0.48, np.where(is_c, 2.0, 3.0))
        x = _kumaraswamy_u(u, a, b)
        score = np.where(is_b, 1.0 - x, x)
        # no tracker beyond |eta| = 2.5: no b tagging there
        return np.where(abs_eta < 2.5, score, 0.1 * _kumaraswamy_u(u, 0.21, 3.0))

    def add_jet(self, true_p, exists=True, flavour=0):
        """A particle-level jet: smeared, stored if reco pt > 15 and |eta| < 4.7.

        Unstored jets are unclustered energy (measured with response 0.7 in MET); jets beyond
        |eta| = 4.7 are lost entirely. Returns the jet slot. Computed only on the events
        where the jet exists (most ISR slots are empty).
        """
        rng, n = self.rng, self.n
        idx = np.flatnonzero(np.broadcast_to(np.asarray(exists, dtype=bool), (n,)))
        m = len(idx)
        p = true_p[idx]
        flavour = np.broadcast_to(np.asarray(flavour), (n,))[idx]
        pt, eta, phi = _pt(p), _eta(p), _phi(p)
        abs_eta = np.abs(eta)
        # calorimeter resolution: noise, stochastic and constant terms; worse in the forward region
        sigma = np.sqrt(9.0 + 1.0 * pt + (0.05 * pt) ** 2) * np.where(abs_eta > 2.5, 1.3, 1.0)
        reco_pt = np.maximum(pt + sigma * rng.standard_normal(m), 0.5)
        reco_eta = eta + 0.01 * rng.standard_normal(m)
        reco_phi = phi + 0.01 * rng.standard_normal(m)
        in_acc = abs_eta < 4.7
        valid = in_acc & (reco_pt > 15.0)
        # MET: type-1-like correction for stored jets, 30% of unclustered ones, all of lost ones
        reco_xy = np.stack([reco_pt * np.cos(reco_phi), reco_pt * np.sin(reco_phi)], axis=1)
        true_xy = p[:, 1:3]
        self.met[idx] += np.where(
            valid[:, None], true_xy - reco_xy, np.where(in_acc[:, None], 0.3 * true_xy, true_xy)
        )
        mass_frac = 0.04 + 0.16 * _kumaraswamy(rng, 2.0, 3.0, m)
        u = rng.uniform(size=m)
        jet_id = np.where(u < 0.975, 6, np.where(u < 0.99, 2, 0))
        return self.jets.add(
            _scatter(idx, n, valid, False),
            pt=_scatter(idx, n, reco_pt), eta=_scatter(idx, n, reco_eta), phi=_scatter(idx, n, reco_phi),
            mass=_scatter(idx, n, reco_pt * mass_frac),
            btagDeepFlavB=_scatter(idx, n, self._btag(flavour, abs_eta)),
            jetId=_scatter(idx, n, jet_id), hadronFlavour=_scatter(idx, n, flavour),
        )

    def add_pileup_jets(self, max_jets=3):
        """Jets from pileup collisions: soft, flat in eta, light-flavour-like b-tag scores."""
        rng, n = self.rng, self.n
        n_jets = rng.poisson(0.018 * self.n_pu)
        for k in range(max_jets):
            pt = 15.0 + rng.exponential(7.0, n)
            eta = rng.uniform(-4.7, 4.7, n)
            phi = rng.uniform(-np.pi, np.pi, n)
            valid = n_jets > k
            # half of a pileup jet's momentum is not balanced by measured activity
            self.met[:, 0] -= np.where(valid, 0.5 * pt * np.cos(phi), 0.0)
            self.met[:, 1] -= np.where(valid, 0.5 * pt * np.sin(phi), 0.0)
            u = rng.uniform(size=n)
            self.jets.add(
                valid, pt=pt, eta=eta, phi=phi, mass=pt * rng.uniform(0.03, 0.15, n),
                btagDeepFlavB=self._btag(np.zeros(n, dtype=np.int64), np.abs(eta)),
                jetId=np.where(u < 0.7, 6, np.where(u < 0.85, 2, 0)), hadronFlavour=0,
            )

    def add_isr(self, mean, pt_min, power, max_jets=5):
        """Initial-state radiation: Poisson number of emissions with a power-law pt spectrum.

        Returns the summed transverse momentum (px, py) of the emissions, which the hard
        system recoils against, and the list of jet slots.
        """
        rng, n = self.rng, self.n
        n_em = np.minimum(rng.poisson(mean, n), max_jets)
        total = np.zeros((n, 2))
        slots = []
        for k in range(max_jets):
            exists = n_em > k
            pt = np.minimum(pt_min * rng.uniform(size=n) ** (-1.0 / power), 800.0)
            eta = rng.normal(0.0, 2.0, n)
            phi = rng.uniform(-np.pi, np.pi, n)
            p = _p4(pt, eta, phi, pt * 0.1)
            u = rng.uniform(size=n)
            flavour = np.where(u < 0.03, 5, np.where(u < 0.10, 4, 0))
            slots.append(self.add_jet(p, exists, flavour))
            total += np.where(exists[:, None], p[:, 1:3], 0.0)
        return total, slots

    # -- muons and electrons -----------------------------------------------------------
    def add_muon(self, true_p, charge, exists=True, prompt=True, flav=_MUFLAV_PROMPT, iso_extra=None):
        """A muon: smeared; stored if pt > 3 and |eta| < 2.4 and reconstructed (97%).

        Muons outside the acceptance leave their momentum in MET. Returns (slot, lost_mask)
        where lost marks muons in the acceptance that failed reconstruction.
        """
        rng, n = self.rng, self.n
        exists = np.broadcast_to(np.asarray(exists, dtype=bool), (n,))
        pt, eta, phi = _pt(true_p), _eta(true_p), _phi(true_p)
        rel = np.sqrt(0.012**2 + (0.0001 * pt) ** 2)
        reco_pt = pt * (1.0 + rel * rng.standard_normal(n))
        reco_eta = eta + 0.0005 * rng.standard_normal(n)
        reco_phi = phi + 0.0005 * rng.standard_normal(n)
        in_acc = np.abs(eta) < 2.4
        reconstructed = rng.uniform(size=n) < 0.97
        valid = exists & in_acc & reconstructed & (reco_pt > 3.0)
        lost = exists & in_acc & ~reconstructed
        self._met_correction(true_p, reco_pt, reco_phi, valid)
        self.met += np.where((exists & ~in_acc)[:, None], true_p[:, 1:3], 0.0)
        # isolation: prompt muons carry only underlying event and pileup in their cone
        iso_abs = rng.exponential(0.6, n) + 0.02 * self.n_pu * rng.exponential(1.0, n)
        # sometimes a jet or a pileup vertex overlaps the cone
        iso_abs = iso_abs + np.where(rng.uniform(size=n) < 0.08, rng.exponential(4.0, n), 0.0)
        if iso_extra is not None:
            iso_abs = iso_abs + iso_extra
        rel_iso = iso_abs / np.maximum(reco_pt, 1.0)
        u = rng.uniform(size=n)
        tight = u < (0.97 if prompt else 0.85)
        medium = u < (0.985 if prompt else 0.92)
        loose = u < (0.995 if prompt else 0.97)
        # impact parameters (cm): resolution for prompt muons, b-hadron flight for non-prompt
        dxy = rng.normal(0.0, 0.002, n) + (0.0 if prompt else rng.laplace(0.0, 0.02, n))
        dz = rng.normal(0.0, 0.006, n) + (0.0 if prompt else rng.laplace(0.0, 0.03, n))
        slot = self.muons.add(
            valid, pt=reco_pt, eta=reco_eta, phi=reco_phi, mass=M_MU, charge=charge,
            pfRelIso04_all=rel_iso, tightId=tight, mediumId=medium, looseId=loose, dxy=dxy, dz=dz,
            genPartFlav=flav,
        )
        return slot, lost

    def add_electron(self, true_p, charge, exists=True):
        rng, n = self.rng, self.n
        exists = np.broadcast_to(np.asarray(exists, dtype=bool), (n,))
        pt, eta, phi = _pt(true_p), _eta(true_p), _phi(true_p)
        reco_pt = pt * (1.0 + 0.025 * rng.standard_normal(n))
        valid = exists & (np.abs(eta) < 2.5) & (reco_pt > 5.0)
        self._met_correction(true_p, reco_pt, phi, valid)
        iso = (rng.exponential(0.6, n) + 0.02 * self.n_pu * rng.exponential(1.0, n)) / np.maximum(reco_pt, 1.0)
        u = rng.uniform(size=n)
        cut_based = np.where(u < 0.80, 4, np.where(u < 0.9, 3, np.where(u < 0.96, 2, 1)))
        self.electrons.add(
            valid, pt=reco_pt, eta=eta, phi=phi, mass=M_E, charge=charge,
            cutBased=cut_based, pfRelIso03_all=iso,
            dxy=rng.normal(0.0, 0.003, n), dz=rng.normal(0.0, 0.008, n),
        )
        return valid, reco_pt, eta, phi

    # -- taus --------------------------------------------------------------------------
    def _tau_ids(self, kind, closeness=None, n=None):
        rng = self.rng
        n = self.n if n is None else n
        u = rng.uniform(size=n)
        if kind == "fake_jet":
            # collimated jets (large visible fraction) look more tau-like
            u = u ** (0.5 + np.clip(closeness, 0.0, 1.0))
            vsjet = _working_point(u, _VSJET_EFF_FAKE)
        else:
            vsjet = _working_point(u, _VSJET_EFF_GENUINE)
        vse = _working_point(rng.uniform(size=n), _VSE_EFF_E if kind == "fake_e" else _VSE_EFF_NOT_E)
        vsmu = _working_point(rng.uniform(size=n), _VSMU_EFF_MU if kind == "fake_mu" else _VSMU_EFF_NOT_MU)
        return vsjet, vse, vsmu

    def _store_tau(self, exists, pt, eta, phi, mass, charge, dm, kind, flav, jet_slot=None, closeness=None):
        valid = exists & (pt > 18.0) & (np.abs(eta) < 2.5)
        vsjet, vse, vsmu = self._tau_ids(kind, closeness)
        return self.taus.add(
            valid, ref=jet_slot, pt=pt, eta=eta, phi=phi, mass=mass, charge=charge, decayMode=dm,
            idDeepTau2018v2p5VSjet=vsjet, idDeepTau2018v2p5VSe=vse, idDeepTau2018v2p5VSmu=vsmu,
            dz=self.rng.normal(0.0, 0.01, self.n), genPartFlav=flav,
        )

    def add_tau_h(self, vis_p, dm, charge, exists=True):
        """A genuine hadronic tau: smeared visible system, stored as Tau and as a Jet."""
        rng, n = self.rng, self.n
        exists = np.broadcast_to(np.asarray(exists, dtype=bool), (n,))
        pt, eta, phi = _pt(vis_p), _eta(vis_p), _phi(vis_p)
        reco_pt = pt * (1.0 + 0.06 * rng.standard_normal(n))
        reco_eta = eta + 0.003 * rng.standard_normal(n)
        reco_phi = phi + 0.003 * rng.standard_normal(n)
        m_vis = _mass(vis_p)
        reco_m = np.where(dm == 0, M_PI, np.clip(m_vis * (1.0 + 0.08 * rng.standard_normal(n)), 0.2, 2.0))
        # charge mis-assignment (mostly 3-prong)
        flip = rng.uniform(size=n) < np.where(dm >= 10, 0.03, 0.005)
        reco_q = np.where(flip, -charge, charge)
        tau_valid = exists & (reco_pt > 18.0) & (np.abs(reco_eta) < 2.5)
        self._met_correction(vis_p, reco_pt, reco_phi, tau_valid)
        # the same energy is clustered into an AK4 jet (plus a little underlying event)
        jet_pt = reco_pt * (1.0 + 0.04 * rng.standard_normal(n)) + rng.exponential(2.0, n)
        jet_valid = exists & (np.abs(reco_eta) < 4.7) & (jet_pt > 15.0)
        u = rng.uniform(size=n)
        jet_slot = self.jets.add(
            jet_valid, pt=jet_pt, eta=reco_eta, phi=reco_phi, mass=np.maximum(reco_m, jet_pt * 0.05),
            btagDeepFlavB=_kumaraswamy(rng, 0.21, 3.0, n), jetId=np.where(u < 0.98, 6, 2), hadronFlavour=0,
        )
        return self._store_tau(exists, reco_pt, reco_eta, reco_phi, reco_m, reco_q, dm, "genuine",
                               _FLAV_TAU_H, jet_slot)

    def add_fake_taus_from_jet(self, jet_slot, prob, ref_charge=None, p_os=0.5):
        """A reconstructed jet sometimes is also reconstructed as a (fake) tau_h candidate.

        The fake tau carries a fraction of the jet momentum (softer than the jet); its charge
        is opposite to ``ref_charge`` with probability ``p_os`` (about 50/50 for gluon jets).
        Computed only on the events where the candidate exists.
        """
        rng, n = self.rng, self.n
        valid_jet, cols, _ = self.jets.columns[jet_slot]
        idx = np.flatnonzero(valid_jet & (rng.uniform(size=n) < prob))
        m = len(idx)
        x = _kumaraswamy(rng, 3.0, 2.5, m)
        pt = cols["pt"][idx] * x
        eta = cols["eta"][idx] + 0.02 * rng.standard_normal(m)
        phi = cols["phi"][idx] + 0.02 * rng.standard_normal(m)
        dm = _decay_modes(rng, m, _DM_FRAC_FAKE)
        mass = np.where(dm == 0, M_PI, np.clip(_visible_tau_mass(rng, dm) * rng.normal(1.1, 0.15, m), 0.2, 2.5))
        if ref_charge is None:
            charge = np.where(rng.uniform(size=m) < 0.5, 1, -1)
        else:
            os_ = rng.uniform(size=m) < p_os
            q = np.broadcast_to(np.asarray(ref_charge), (n,))[idx]
            charge = np.where(os_, -q, q)
        vsjet, vse, vsmu = self._tau_ids("fake_jet", x, n=m)
        valid = (pt > 18.0) & (np.abs(eta) < 2.5)
        return self.taus.add(
            _scatter(idx, n, valid, False), ref=jet_slot,
            pt=_scatter(idx, n, pt), eta=_scatter(idx, n, eta), phi=_scatter(idx, n, phi),
            mass=_scatter(idx, n, mass), charge=_scatter(idx, n, charge), decayMode=_scatter(idx, n, dm),
            idDeepTau2018v2p5VSjet=_scatter(idx, n, vsjet), idDeepTau2018v2p5VSe=_scatter(idx, n, vse),
            idDeepTau2018v2p5VSmu=_scatter(idx, n, vsmu), dz=_scatter(idx, n, rng.normal(0.0, 0.015, m)),
            genPartFlav=_FLAV_UNMATCHED,
        )

    def add_fake_tau_from_lepton(self, true_p, charge, exists, kind, flav):
        """A muon (kind "fake_mu") or electron ("fake_e") reconstructed as a DM 0/1 tau_h."""
        rng, n = self.rng, self.n
        pt = _pt(true_p) * rng.normal(0.98, 0.03, n)
        dm = np.where(rng.uniform(size=n) < 0.8, 0, 1)
        mass = np.where(dm == 0, M_PI, rng.uniform(0.2, 0.6, n))
        return self._store_tau(exists, pt, _eta(true_p), _phi(true_p), mass, charge, dm, kind, flav)

    # -- detector-level MET ------------------------------------------------------------
    def finish_met(self):
        rng, n = self.rng, self.n
        # unclustered energy and pileup: Gaussian resolution per component
        sigma = np.sqrt(6.0**2 + (0.35 * self.n_pu) ** 2)
        self.met += sigma[:, None] * rng.standard_normal((n, 2))
        return fv.pt(self.met[:, 0], self.met[:, 1]), fv.phi(self.met[:, 0], self.met[:, 1])


# --------------------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------------------


def _boson(rng, n, mass, recoil, y_sigma):
    """A boson of given mass recoiling against ISR (plus intrinsic kT), rapidity ~ N(0, y_sigma)."""
    kt = rng.normal(0.0, 4.0, (n, 2))
    px, py = -recoil[:, 0] + kt[:, 0], -recoil[:, 1] + kt[:, 1]
    return _p4_from_mt_y(mass, px, py, rng.normal(0.0, y_sigma, n))


def _ditau(b: _Block, boson):
    """Boson -> tau tau with at least one tau -> mu nu nu (generator filter).

    Channels given the filter (PDG branching fractions): mu + tau_h 71%, mu + e 19.5%,
    mu + mu 9.5%.
    """
    rng, n = b.rng, b.n
    tau1, tau2 = _two_body(rng, boson, M_TAU, M_TAU)
    q1 = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    # tau1 -> mu nu nu always; tau2 -> h / e / mu
    mu, nu1 = _tau_to_lepton(rng, tau1, M_MU)
    b.add_invisible(nu1)
    b.add_muon(mu, q1, flav=_MUFLAV_TAU)
    u = rng.uniform(size=n)
    ch_h, ch_e = u < 0.710, (u >= 0.710) & (u < 0.905)
    ch_m = u >= 0.905
    dm = _decay_modes(rng, n, _DM_FRAC_GENUINE)
    vis_h, nu_h = _tau_to_hadrons(rng, tau2, dm)
    ele, nu_e = _tau_to_lepton(rng, tau2, M_E)
    mu2, nu_m = _tau_to_lepton(rng, tau2, M_MU)
    nu2 = np.where(ch_h[:, None], nu_h, np.where(ch_e[:, None], nu_e, nu_m))
    b.add_invisible(nu2)
    b.add_tau_h(vis_h, dm, -q1, exists=ch_h)
    e_valid, *_ = b.add_electron(ele, -q1, exists=ch_e)
    b.add_fake_tau_from_lepton(ele, -q1, e_valid & (rng.uniform(size=n) < 0.2), "fake_e", _FLAV_TAU_E)
    b.add_muon(mu2, -q1, exists=ch_m, flav=_MUFLAV_TAU)


def _gen_higgs_ggf(b: _Block):
    rng, n = b.rng, b.n
    recoil, slots = b.add_isr(mean=1.5, pt_min=15.0, power=1.5)
    higgs = _boson(rng, n, _truncated_bw(rng, n, M_H, W_H, 124.0, 126.0), recoil, 1.6)
    _ditau(b, higgs)
    for s in slots:
        b.add_fake_taus_from_jet(s, 0.3)


def _gen_higgs_vbf(b: _Block):
    rng, n = b.rng, b.n
    # two tag quark jets in opposite hemispheres (90%), large rapidity gap
    side = np.where(rng.uniform(size=n) < 0.5, 1.0, -1.0)
    opposite = np.where(rng.uniform(size=n) < 0.9, -1.0, 1.0)
    recoil = np.zeros((n, 2))
    tags = []
    for sgn in (side, side * opposite):
        eta = sgn * (0.5 + rng.gamma(4.0, 0.45, n))
        pt = 20.0 + rng.gamma(2.0, 25.0, n)
        p = _p4(pt, eta, rng.uniform(-np.pi, np.pi, n), pt * 0.1)
        recoil += p[:, 1:3]
        tags.append(b.add_jet(p, True, 0))
    isr, slots = b.add_isr(mean=0.4, pt_min=15.0, power=1.8)
    recoil += isr
    higgs = _boson(rng, n, _truncated_bw(rng, n, M_H, W_H, 124.0, 126.0), recoil, 1.2)
    _ditau(b, higgs)
    for s in tags + slots:
        b.add_fake_taus_from_jet(s, 0.3)


def _gen_ztt(b: _Block):
    rng, n = b.rng, b.n
    recoil, slots = b.add_isr(mean=1.0, pt_min=15.0, power=1.8)
    z = _boson(rng, n, _truncated_bw(rng, n, M_Z, W_Z, 50.0, 150.0), recoil, 1.9)
    _ditau(b, z)
    for s in slots:
        b.add_fake_taus_from_jet(s, 0.3)


def _gen_zmm(b: _Block):
    rng, n = b.rng, b.n
    recoil, slots = b.add_isr(mean=1.0, pt_min=15.0, power=1.8)
    z = _boson(rng, n, _truncated_bw(rng, n, M_Z, W_Z, 50.0, 150.0), recoil, 1.9)
    mu1, mu2 = _two_body(rng, z, M_MU, M_MU)
    q = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    for p, charge in ((mu1, q), (mu2, -q)):
        _, lost = b.add_muon(p, charge)
        # a muon that failed muon reconstruction is often a (fake) tau_h; rarely also otherwise
        prob = np.where(lost, 0.6, 0.04)
        fake = rng.uniform(size=n) < prob
        b.add_fake_tau_from_lepton(p, charge, fake, "fake_mu", _FLAV_PROMPT_MU)
    for s in slots:
        b.add_fake_taus_from_jet(s, 0.3, q, 0.55)


def _gen_wjets(b: _Block):
    rng, n = b.rng, b.n
    recoil, slots = b.add_isr(mean=1.2, pt_min=15.0, power=1.8)
    w = _boson(rng, n, _truncated_bw(rng, n, M_W, W_W, 50.0, 130.0), recoil, 2.0)
    # W+ : W- about 1.4 : 1 at the LHC
    q = np.where(rng.uniform(size=n) < 0.58, 1, -1)
    mu, nu = _two_body(rng, w, M_MU, 0.0)
    b.add_invisible(nu)
    b.add_muon(mu, q)
    for s in slots:
        # quark jets recoiling against the W are slightly charge-correlated with it
        b.add_fake_taus_from_jet(s, 0.35, q, 0.6)
    # NLO-like sample: a fraction of negative weights
    b.gen_weight = np.where(rng.uniform(size=n) < 0.10, -1.0, 1.0)


def _w_decay(b: _Block, w, q, leptonic_mu):
    """Decay W bosons from top quarks; ``leptonic_mu`` forces W -> mu nu (filter)."""
    rng, n = b.rng, b.n
    # given one W -> mu nu (filter), the other W: hadronic 71.3%, tau 12.0%, e 11.3%, mu 5.4%
    u = rng.uniform(size=n)
    had = ~leptonic_mu & (u < 0.713)
    tau = ~leptonic_mu & (u >= 0.713) & (u < 0.833)
    ele = ~leptonic_mu & (u >= 0.833) & (u < 0.946)
    mu = leptonic_mu | (u >= 0.946)
    lep_m = np.where(mu, M_MU, np.where(ele, M_E, M_TAU))
    lep, nu = _two_body(rng, w, lep_m, 0.0)
    q1, q2 = _two_body(rng, w, 0.0, 0.0)
    lep_like = ~had
    b.add_invisible(nu, lep_like)
    b.add_muon(lep, q, exists=mu)
    b.add_electron(lep, q, exists=ele)
    # tau from W: hadronic 65%, mu 17%, e 18%
    v = rng.uniform(size=n)
    tau_h, tau_m = tau & (v < 0.648), tau & (v >= 0.648) & (v < 0.822)
    tau_e = tau & (v >= 0.822)
    dm = _decay_modes(rng, n, _DM_FRAC_GENUINE)
    vis, nu_h = _tau_to_hadrons(rng, lep, dm)
    tmu, nu_m = _tau_to_lepton(rng, lep, M_MU)
    tel, nu_e = _tau_to_lepton(rng, lep, M_E)
    b.add_invisible(np.where(tau_h[:, None], nu_h, np.where(tau_m[:, None], nu_m, nu_e)), tau)
    b.add_tau_h(vis, dm, q, exists=tau_h)
    b.add_muon(tmu, q, exists=tau_m, flav=_MUFLAV_TAU)
    b.add_electron(tel, q, exists=tau_e)
    flav_c = rng.uniform(size=n) < 0.5  # W -> cs in half of hadronic decays
    j1 = b.add_jet(q1, had, np.where(flav_c, 4, 0))
    j2 = b.add_jet(q2, had, 0)
    return [j1, j2]


def _gen_ttbar(b: _Block):
    rng, n = b.rng, b.n
    recoil, slots = b.add_isr(mean=1.2, pt_min=15.0, power=1.5)
    m_t1 = _truncated_bw(rng, n, M_TOP, W_TOP, 160.0, 185.0)
    m_t2 = _truncated_bw(rng, n, M_TOP, W_TOP, 160.0, 185.0)
    m_tt = m_t1 + m_t2 + rng.gamma(1.8, 70.0, n)
    system = _boson(rng, n, m_tt, recoil, 1.0)
    t1, t2 = _two_body(rng, system, m_t1, m_t2)
    q = np.where(rng.uniform(size=n) < 0.5, 1, -1)  # charge of t1's W
    which_mu = rng.uniform(size=n) < 0.5  # which W is the filtered W -> mu nu
    jets = []
    for top, sign, forced in ((t1, 1, which_mu), (t2, -1, ~which_mu)):
        m_w = _truncated_bw(rng, n, M_W, W_W, 60.0, 100.0)
        w, bq = _two_body(rng, top, m_w, M_B)
        bslot = b.add_jet(bq, True, 5)
        jets.append(bslot)
        jets += _w_decay(b, w, sign * q, forced)
        _semileptonic_b(b, bq, bslot, -sign * q)
    for s in slots + jets:
        b.add_fake_taus_from_jet(s, 0.3)
    b.gen_weight = np.where(rng.uniform(size=n) < 0.005, -1.0, 1.0)


def _semileptonic_b(b: _Block, bq, bslot, charge):
    """b -> mu X (about 20% incl. cascades): a soft, non-isolated muon inside the b jet."""
    rng, n = b.rng, b.n
    exists = rng.uniform(size=n) < 0.2
    z = _kumaraswamy(rng, 1.3, 5.0, n)
    pt = _pt(bq) * z
    p = _p4(pt, _eta(bq) + 0.05 * rng.standard_normal(n), _phi(bq) + 0.05 * rng.standard_normal(n), M_MU)
    iso_extra = _pt(bq) * (1.0 - z) * rng.uniform(0.1, 0.7, n)
    slot, _ = b.add_muon(p, charge, exists=exists, prompt=False, flav=_MUFLAV_B, iso_extra=iso_extra)
    b.muon_jet[slot] = bslot
    b.jet_muon[bslot] = slot


_GENERATORS = {
    "ggH_htt": _gen_higgs_ggf,
    "vbf_htt": _gen_higgs_vbf,
    "ztt": _gen_ztt,
    "zmm": _gen_zmm,
    "wjets": _gen_wjets,
    "ttbar": _gen_ttbar,
}


# --------------------------------------------------------------------------------------
# block -> NanoAOD arrays
# --------------------------------------------------------------------------------------

_DTYPES = {
    "Muon": {
        "pt": np.float32, "eta": np.float32, "phi": np.float32, "mass": np.float32,
        "charge": np.int32, "pfRelIso04_all": np.float32, "tightId": np.bool_, "mediumId": np.bool_,
        "looseId": np.bool_, "dxy": np.float32, "dz": np.float32, "genPartFlav": np.uint8, "jetIdx": np.int16,
    },
    "Tau": {
        "pt": np.float32, "eta": np.float32, "phi": np.float32, "mass": np.float32,
        "charge": np.int32, "decayMode": np.int32, "idDeepTau2018v2p5VSjet": np.uint8,
        "idDeepTau2018v2p5VSe": np.uint8, "idDeepTau2018v2p5VSmu": np.uint8, "dz": np.float32,
        "genPartFlav": np.uint8, "jetIdx": np.int16,
    },
    "Jet": {
        "pt": np.float32, "eta": np.float32, "phi": np.float32, "mass": np.float32,
        "btagDeepFlavB": np.float32, "jetId": np.uint8, "hadronFlavour": np.uint8,
        "muonIdx1": np.int16, "muonIdx2": np.int16, "electronIdx1": np.int16, "electronIdx2": np.int16,
    },
    "Electron": {
        "pt": np.float32, "eta": np.float32, "phi": np.float32, "mass": np.float32,
        "charge": np.int32, "cutBased": np.uint8, "pfRelIso03_all": np.float32,
        "dxy": np.float32, "dz": np.float32, "jetIdx": np.int16,
    },
}


# mantissa bits kept for float branches, as NanoAOD does (``precision=`` in its table
# producers); it makes the files smaller and the numbers look like real NanoAOD numbers
_PRECISION = {
    "Muon": {"eta": 12, "phi": 12, "pfRelIso04_all": 6, "dxy": 10, "dz": 10},
    "Tau": {"pt": 10, "eta": 10, "phi": 10, "mass": 10, "dz": 14},
    "Jet": {"pt": 10, "eta": 12, "phi": 12, "mass": 10, "btagDeepFlavB": 10},
    "Electron": {"eta": 10, "phi": 10, "pfRelIso03_all": 8},
}


def _round_mantissa(x: np.ndarray, bits: int) -> np.ndarray:
    """Round float32 values to ``bits`` mantissa bits (round half up on the bit pattern)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    drop = 23 - bits
    raw = x.view(np.uint32)
    raw = (raw + np.uint32(1 << (drop - 1))) & np.uint32((0xFFFFFFFF << drop) & 0xFFFFFFFF)
    return raw.view(np.float32)


def _jagged(coll: _Collection, extra: dict, dtypes: dict, precision: dict | None = None):
    """Sort a collection by pt per event and return it as a jagged awkward record array."""
    import awkward as ak

    order, _rank, valid = coll.order_and_rank()
    n, k = valid.shape
    if k:
        valid_sorted = np.take_along_axis(valid, order, axis=1)
        counts = valid_sorted.sum(axis=1)
        # one gather index into slot-major (k, n) matrices, shared by all fields
        gather = (order * n + np.arange(n)[:, None])[valid_sorted]
    else:
        counts = np.zeros(n, dtype=np.int64)
    out = {}
    for name, dtype in dtypes.items():
        if k == 0:
            out[name] = np.zeros(0, dtype=dtype)
            continue
        if name in extra:
            mat = np.ascontiguousarray(extra[name].T)
        else:
            mat = np.stack([c[1][name] for c in coll.columns], axis=0)
        out[name] = mat.reshape(-1)[gather].astype(dtype)
        if precision and name in precision:
            out[name] = _round_mantissa(out[name], precision[name])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    layout = ak.contents.ListOffsetArray(
        ak.index.Index64(offsets),
        ak.contents.RecordArray([ak.contents.NumpyArray(out[f]) for f in dtypes], list(dtypes)),
    )
    return ak.Array(layout)


def _index_matrix(coll: _Collection, ref_rank, ref_valid, mapping=None):
    """(n, k) matrix of indices into another (sorted) collection, -1 meaning none."""
    n = coll.n
    cols = []
    for slot, (_, _, ref) in enumerate(coll.columns):
        if mapping is not None:
            ref = mapping.get(slot)
        if ref is None:
            cols.append(np.full(n, -1, dtype=np.int64))
        else:
            cols.append(np.where(ref_valid[:, ref], ref_rank[:, ref], -1))
    if not cols:
        return np.zeros((n, 0), dtype=np.int64)
    return np.stack(cols, axis=1)


def _generate_block(process: str, rng: np.random.Generator, n: int) -> dict:
    b = _Block(rng, n)
    _GENERATORS[process](b)
    b.add_pileup_jets()
    met_pt, met_phi = b.finish_met()

    _, jet_rank, jet_valid = b.jets.order_and_rank()
    _, mu_rank, mu_valid = b.muons.order_and_rank()
    none = lambda coll: np.full((n, len(coll.columns)), -1, dtype=np.int64)  # noqa: E731
    muon_jet = _index_matrix(b.muons, jet_rank, jet_valid, mapping=b.muon_jet)
    tau_jet = _index_matrix(b.taus, jet_rank, jet_valid)
    jet_muon = _index_matrix(b.jets, mu_rank, mu_valid, mapping=b.jet_muon)

    return {
        "Muon": _jagged(b.muons, {"jetIdx": muon_jet}, _DTYPES["Muon"], _PRECISION["Muon"]),
        "Tau": _jagged(b.taus, {"jetIdx": tau_jet}, _DTYPES["Tau"], _PRECISION["Tau"]),
        "Jet": _jagged(
            b.jets,
            {"muonIdx1": jet_muon, "muonIdx2": none(b.jets), "electronIdx1": none(b.jets),
             "electronIdx2": none(b.jets)},
            _DTYPES["Jet"],
            _PRECISION["Jet"],
        ),
        "Electron": _jagged(b.electrons, {"jetIdx": none(b.electrons)}, _DTYPES["Electron"],
                            _PRECISION["Electron"]),
        "MET_pt": met_pt.astype(np.float32),
        "MET_phi": met_phi.astype(np.float32),
        "PV_npvs": np.clip(np.round(0.7 * b.n_pu + rng.normal(0, 1.5, n)), 1, 255).astype(np.uint8),
        "Pileup_nPU": b.n_pu.astype(np.int32),
        "genWeight": b.gen_weight.astype(np.float32),
    }


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def _block_rng(process: str, seed: int, first_event: int, block: int) -> np.random.Generator:
    # a stable process key (crc32 of the name, not Python's randomised hash)
    key = zlib.crc32(process.encode())
    return np.random.default_rng(np.random.SeedSequence([seed, key, first_event, block]))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise AuditError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise AuditError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def generate_events(
    process: str,
    n_events: int,
    seed: int,
    path,
    first_event: int = 0,
    run: int = 1,
    chunk_size: int = 100_000,
) -> dict:
    """Generate ``n_events`` demo events of ``process`` into a NanoAOD-format ROOT file.

    The file holds one TTree ``Events`` with NanoAOD branch names and types. Events are
    numbered ``event = first_event + 1 ... first_event + n_events`` in run ``run``, with
    ``luminosityBlock = 1 + (first_event + i) // 1000``; files of one process with disjoint
    ranges [first_event, first_event + n_events) have unique (run, luminosityBlock, event).

    Deterministic: the same (process, n_events, seed, first_event, run) gives identical
    arrays, independent of ``chunk_size`` (which only sets how many events are generated
    and written at a time, i.e. the memory use). The file is written to a temporary name
    next to ``path`` and renamed into place, so an interrupted run leaves no file at ``path``.

    Returns ``{"process", "n_events", "sum_genweight", "sum_genweight2", "first_event",
    "run", "seed", "path", "is_signal", "cross_section_pb"}``.
    """
    import awkward as ak
    import uproot

    if process not in PROCESSES:
        raise AuditError(f"unknown demo process {process!r}; known processes: {sorted(PROCESSES)}")
    n_events = _check_int("n_events", n_events, 1)
    seed = _check_int("seed", seed, 0)
    first_event = _check_int("first_event", first_event, 0)
    run = _check_int("run", run, 1)
    chunk_size = _check_int("chunk_size", chunk_size, 1)
    if run > np.iinfo(np.uint32).max:
        raise AuditError(f"run must fit in uint32, got {run}")

    path = Path(path)
    if path.is_dir():
        raise AuditError(f"output path {path} is a directory; give a file name such as {path / 'events.root'}")
    path.parent.mkdir(parents=True, exist_ok=True)

    sum_w = 0.0
    sum_w2 = 0.0
    cache: dict[int, dict] = {}

    def block_arrays(index):
        if index not in cache:
            cache.clear()  # keep at most one block alive
            cache[index] = _generate_block(process, _block_rng(process, seed, first_event, index), _BLOCK)
        return cache[index]

    with atomic_path(path, suffix=".root") as tmp:
        with uproot.recreate(tmp, compression=uproot.LZ4(1)) as out:
            tree = None
            for start in range(0, n_events, chunk_size):
                stop = min(n_events, start + chunk_size)
                pieces = []
                for index in range(start // _BLOCK, (stop - 1) // _BLOCK + 1):
                    lo = max(start, index * _BLOCK) - index * _BLOCK
                    hi = min(stop, (index + 1) * _BLOCK) - index * _BLOCK
                    arrays = block_arrays(index)
                    pieces.append({k: v[lo:hi] for k, v in arrays.items()})
                chunk = {
                    k: (ak.concatenate([p[k] for p in pieces]) if isinstance(pieces[0][k], ak.Array)
                        else np.concatenate([p[k] for p in pieces]))
                    for k in pieces[0]
                }
                ids = np.arange(first_event + start, first_event + stop, dtype=np.uint64)
                branches = {
                    "run": np.full(stop - start, run, dtype=np.uint32),
                    "luminosityBlock": (1 + ids // _EVENTS_PER_LUMIBLOCK).astype(np.uint32),
                    "event": ids + np.uint64(1),
                    **chunk,
                }
                w = chunk["genWeight"].astype(np.float64)
                sum_w += float(w.sum())
                sum_w2 += float((w * w).sum())
                if tree is None:
                    # explicit mktree: since uproot 5.7 plain assignment writes an RNTuple
                    tree = out.mktree("Events", {k: v.type if isinstance(v, ak.Array) else v.dtype
                                                 for k, v in branches.items()})
                tree.extend(branches)

    return {
        "process": process,
        "n_events": n_events,
        "sum_genweight": sum_w,
        "sum_genweight2": sum_w2,
        "first_event": first_event,
        "run": run,
        "seed": seed,
        "path": str(path),
        "is_signal": PROCESSES[process]["is_signal"],
        "cross_section_pb": PROCESSES[process]["cross_section_pb"],
    }
