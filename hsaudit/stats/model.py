"""HistFactory-style binned model: channels x bins x samples with modifiers.

The model is built from a plain, JSON-able dict (the *spec*)::

    spec = {
        "poi": "mu",                                  # a normfactor (default "mu")
        "lumi": {"sigma": 0.017},                     # optional; relative uncertainty
        "parameters": {"mu": {"bounds": [-5, 10]}},   # optional overrides (scalar parameters)
        "channels": {
            "SR": {
                "edges": [0.0, 0.5, 1.0],             # optional, for plots/bookkeeping
                "samples": {
                    "signal": {"nominal": [5, 12], "normfactors": ["mu"], "lumi": True,
                               "staterror": [0.5, 0.9]},
                    "bkg": {"nominal": [100, 40], "lumi": True, "staterror": [3.0, 2.0],
                            "normsys": {"xsec": {"lo": 0.9, "hi": 1.1}},
                            "histosys": {"jes": {"down": [104, 38], "up": [97, 43]}}},
                },
            },
        },
        "observed": {"SR": [110, 50]},                # optional
    }

Modifiers and their conventions are exactly pyhf's (``pyhf.Model`` defaults):

=============  ========================================================================
normfactor     free factor, init 1, bounds [0, 10]
lumi           factor ``lumi`` with Gaussian constraint N(aux=1 | lumi, sigma); one
               parameter shared by every sample that sets ``"lumi": True``
normsys        factor with log-normal-like code4 interpolation between lo and hi
               (polynomial for |alpha| < 1, exponential outside), N(0 | alpha, 1)
histosys       additive template shift with code4p interpolation (piecewise linear
               outside |alpha| < 1, 6th order polynomial inside), N(0 | alpha, 1);
               a normsys and a histosys with the same name share one parameter
staterror      Barlow-Beeston lite: one gamma per channel-bin multiplying every sample
               that carries a staterror (given as absolute uncertainties, i.e.
               sqrt(sumw2)); constraint N(1 | gamma, sigma_b) with
               sigma_b = sqrt(sum_s unc_sb^2) / sum_{s with staterror} nominal_sb;
               bins with sigma_b = 0 have their gamma fixed to 1 (as pyhf does);
               bounds [1e-10, 10]
=============  ========================================================================

Expected yield of sample s in bin b:
``nu_sb = (nominal_sb + sum_histosys delta_sb) * prod(normfactors, lumi, normsys, gamma)``.

Parameter vector order (used by :mod:`hsaudit.stats.fit`): normfactors (the POI first),
lumi, alphas (normsys/histosys, first appearance), gammas (channel by channel). The
auxiliary-data vector is exactly the constrained part ``pars[n_normfactors:]``.
``to_pyhf_workspace`` / ``from_pyhf_workspace`` translate to and from pyhf's JSON.

Input problems (NaN, negative yields, mismatched binning, a bin with zero total
prediction, ...) raise :class:`hsaudit.errors.AuditError` naming the channel, sample
and bin. A bin with zero total prediction is refused because the Poisson term is
undefined there for data > 0: merge bins (see :mod:`hsaudit.stats.binning`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from hsaudit.arrays import float_array
from hsaudit.errors import AuditError

NORMFACTOR_INIT, NORMFACTOR_BOUNDS = 1.0, (0.0, 10.0)
ALPHA_INIT, ALPHA_BOUNDS = 0.0, (-5.0, 5.0)
GAMMA_INIT, GAMMA_BOUNDS = 1.0, (1e-10, 10.0)
LUMI_NAME = "lumi"
PYHF_SCHEMA_VERSION = "1.0.0"

_SAMPLE_KEYS = {"nominal", "normfactors", "lumi", "staterror", "normsys", "histosys"}


@dataclass(frozen=True)
class ParamSet:
    """A named block of parameters (scalar except staterror), like pyhf's paramsets."""

    name: str
    kind: str  # "normfactor", "lumi", "alpha", "staterror"
    slice: slice

    @property
    def n(self) -> int:
        return self.slice.stop - self.slice.start


def _array(value, what: str, n: int | None = None, allow_negative: bool = False) -> np.ndarray:
    """A model input (per-bin yields, edges) as a 1-d float64 array: the coercion of
    hsaudit.arrays, then the checks of a binned model (length, finite per bin, sign)."""
    arr = float_array(value, what, ndim=1)
    if n is not None and len(arr) != n:
        raise AuditError(f"{what}: has {len(arr)} bins, expected {n} (mismatched binning)")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise AuditError(f"{what}: non-finite value (NaN or inf) in bin(s) {np.flatnonzero(bad).tolist()}")
    if not allow_negative and (arr < 0).any():
        raise AuditError(
            f"{what}: negative value in bin(s) {np.flatnonzero(arr < 0).tolist()}; "
            "negative yields are not allowed in the model (see from_histograms' "
            "negative_yields option for a documented treatment)"
        )
    return arr


def _scalar(value, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise AuditError(f"{what}: expected a number, got {value!r:.80}") from None
    if not math.isfinite(x):
        raise AuditError(f"{what}: must be finite, got {x}")
    return x


def code4_coefficients(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """pyhf's code4 polynomial coefficients a_1..a_6 (alpha0 = 1), shape (6,) + lo.shape."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    a_inv = np.array(
        [
            [15.0 / 16, -15.0 / 16, -7.0 / 16, -7.0 / 16, 1.0 / 16, -1.0 / 16],
            [3.0 / 2, 3.0 / 2, -9.0 / 16, 9.0 / 16, 1.0 / 16, 1.0 / 16],
            [-5.0 / 8, 5.0 / 8, 5.0 / 8, 5.0 / 8, -1.0 / 8, 1.0 / 8],
            [3.0 / -2, 3.0 / -2, -7.0 / -8, 7.0 / -8, -1.0 / 8, -1.0 / 8],
            [3.0 / 16, -3.0 / 16, -3.0 / 16, -3.0 / 16, 1.0 / 16, -1.0 / 16],
            [1.0 / 2, 1.0 / 2, -5.0 / 16, 5.0 / 16, 1.0 / 16, 1.0 / 16],
        ]
    )
    lu, ld = np.log(hi), np.log(lo)
    b = np.stack([hi - 1.0, lo - 1.0, lu * hi, -ld * lo, lu**2 * hi, ld**2 * lo])
    return np.einsum("rc,c...->r...", a_inv, b)


class Model:
    """A binned likelihood model; build it with ``Model(spec)`` (see the module docstring).

    Useful attributes: ``par_names`` (one label per scalar parameter, pyhf style, e.g.
    ``staterror_SR[3]``), ``init``, ``bounds`` (P, 2), ``fixed`` (P,), ``poi_index``,
    ``n_bins``, ``channels``, ``samples``, ``aux_nominal`` / ``aux_sigma`` (constrained
    part), ``nominal`` (S, B).
    """

    def __init__(self, spec: dict):
        if not isinstance(spec, dict):
            raise AuditError(f"a model spec must be a dict, got {type(spec).__name__}")
        self._spec = copy.deepcopy(spec)
        self._build(self._spec)

    # ------------------------------------------------------------------ building
    def _build(self, spec: dict) -> None:
        channels = spec.get("channels")
        if not isinstance(channels, dict) or not channels:
            raise AuditError("model spec needs a non-empty 'channels' dict {channel: {'samples': {...}}}")
        unknown_top = set(spec) - {"poi", "lumi", "parameters", "channels", "observed"}
        if unknown_top:
            raise AuditError(f"model spec: unknown keys {sorted(unknown_top)}")
        self.poi = str(spec.get("poi", "mu"))

        # channels and bins
        self.channels: list[str] = []
        self.channel_nbins: dict[str, int] = {}
        self.channel_slices: dict[str, slice] = {}
        self.samples: list[str] = []
        start = 0
        for ch, cdef in channels.items():
            ch = str(ch)
            if not isinstance(cdef, dict) or not isinstance(cdef.get("samples"), dict) or not cdef["samples"]:
                raise AuditError(f"channel '{ch}': needs a non-empty 'samples' dict")
            unknown = set(cdef) - {"samples", "edges", "staterror_name"}
            if unknown:
                raise AuditError(f"channel '{ch}': unknown keys {sorted(unknown)}")
            nb = None
            for sname, sdef in cdef["samples"].items():
                if not isinstance(sdef, dict) or "nominal" not in sdef:
                    raise AuditError(f"channel '{ch}', sample '{sname}': needs a 'nominal' list")
                n_this = len(np.atleast_1d(np.asarray(sdef["nominal"], dtype=object)))
                if nb is None:
                    nb = n_this
                elif n_this != nb:
                    raise AuditError(
                        f"channel '{ch}': sample '{sname}' has {n_this} bins but other samples "
                        f"have {nb} (mismatched binning)"
                    )
                if sname not in self.samples:
                    self.samples.append(str(sname))
            if nb == 0:
                raise AuditError(f"channel '{ch}': has no bins")
            if "edges" in cdef and cdef["edges"] is not None:
                edges = _array(cdef["edges"], f"channel '{ch}' edges", allow_negative=True)
                if len(edges) != nb + 1 or np.any(np.diff(edges) <= 0):
                    raise AuditError(
                        f"channel '{ch}': 'edges' must be {nb + 1} increasing values (mismatched binning)"
                    )
            self.channels.append(ch)
            self.channel_nbins[ch] = nb
            self.channel_slices[ch] = slice(start, start + nb)
            start += nb
        self.n_bins = B = start
        S = len(self.samples)
        sidx = {s: i for i, s in enumerate(self.samples)}

        self.nominal = np.zeros((S, B))
        self.present = np.zeros((S, B), dtype=bool)
        nf_masks: dict[str, np.ndarray] = {}
        lumi_mask = np.zeros((S, B), dtype=bool)
        alpha_names: list[str] = []
        normsys: dict[str, dict] = {}  # name -> {"lo": (S,B), "hi": (S,B), "mask": (S,B)}
        histosys: dict[str, dict] = {}  # name -> {"down": (S,B), "up": (S,B), "mask"}
        stat_unc = np.zeros((S, B))
        stat_mask = np.zeros((S, B), dtype=bool)
        self.staterror_names: dict[str, str] = {}

        for ch in self.channels:
            cdef = channels[ch]
            sl = self.channel_slices[ch]
            nb = self.channel_nbins[ch]
            for sname, sdef in cdef["samples"].items():
                where = f"channel '{ch}', sample '{sname}'"
                unknown = set(sdef) - _SAMPLE_KEYS
                if unknown:
                    raise AuditError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(_SAMPLE_KEYS)}")
                i = sidx[sname]
                nom = _array(sdef["nominal"], f"{where} nominal", nb)
                self.nominal[i, sl] = nom
                self.present[i, sl] = True
                for nf in sdef.get("normfactors", []) or []:
                    nf_masks.setdefault(str(nf), np.zeros((S, B), dtype=bool))[i, sl] = True
                if sdef.get("lumi", False):
                    lumi_mask[i, sl] = True
                for name, d in (sdef.get("normsys") or {}).items():
                    name = str(name)
                    if not isinstance(d, dict) or set(d) != {"lo", "hi"}:
                        raise AuditError(f"{where}: normsys '{name}' must be {{'lo': factor, 'hi': factor}}")
                    lo = _scalar(d["lo"], f"{where} normsys '{name}' lo")
                    hi = _scalar(d["hi"], f"{where} normsys '{name}' hi")
                    if lo <= 0 or hi <= 0:
                        raise AuditError(
                            f"{where}: normsys '{name}' factors must be > 0 (log-normal), got lo={lo}, hi={hi}"
                        )
                    ent = normsys.setdefault(
                        name, {"lo": np.ones((S, B)), "hi": np.ones((S, B)), "mask": np.zeros((S, B), bool)}
                    )
                    ent["lo"][i, sl], ent["hi"][i, sl], ent["mask"][i, sl] = lo, hi, True
                    if name not in alpha_names:
                        alpha_names.append(name)
                for name, d in (sdef.get("histosys") or {}).items():
                    name = str(name)
                    if not isinstance(d, dict) or set(d) != {"up", "down"}:
                        raise AuditError(f"{where}: histosys '{name}' must be {{'up': [...], 'down': [...]}}")
                    up = _array(d["up"], f"{where} histosys '{name}' up", nb)
                    dn = _array(d["down"], f"{where} histosys '{name}' down", nb)
                    ent = histosys.setdefault(
                        name, {"up": np.zeros((S, B)), "down": np.zeros((S, B)), "mask": np.zeros((S, B), bool)}
                    )
                    ent["up"][i, sl], ent["down"][i, sl], ent["mask"][i, sl] = up, dn, True
                    if name not in alpha_names:
                        alpha_names.append(name)
                if sdef.get("staterror") is not None:
                    stat_unc[i, sl] = _array(sdef["staterror"], f"{where} staterror", nb)
                    stat_mask[i, sl] = True
            if stat_mask[:, sl].any():
                self.staterror_names[ch] = str(cdef.get("staterror_name") or f"staterror_{ch}")

        # total prediction must be positive in every bin
        total = self.nominal.sum(axis=0)
        for ch in self.channels:
            sl = self.channel_slices[ch]
            zero = np.flatnonzero(total[sl] <= 0)
            if len(zero):
                raise AuditError(
                    f"channel '{ch}': bin(s) {zero.tolist()} have zero total predicted yield; the "
                    "Poisson likelihood is undefined there: merge bins (hsaudit.stats.binning."
                    "optimised_edges) or remove them"
                )

        # names must not clash between parameter kinds
        if self.poi not in nf_masks:
            raise AuditError(
                f"parameter of interest '{self.poi}' is not a normfactor of any sample; "
                f"normfactors: {sorted(nf_masks)}"
            )
        kinds: dict[str, str] = {}
        for n in nf_masks:
            kinds[n] = "normfactor"
        for n in alpha_names:
            if n in kinds:
                raise AuditError(f"parameter name '{n}' is used both as a normfactor and as a normsys/histosys")
            kinds[n] = "alpha"
        lumi = spec.get("lumi")
        if lumi_mask.any() and not lumi:
            raise AuditError("some samples set 'lumi': True but the spec has no top-level 'lumi': {'sigma': ...}")
        self.lumi_name = None
        if lumi:
            if not isinstance(lumi, dict) or "sigma" not in lumi:
                raise AuditError("spec 'lumi' must be {'sigma': relative uncertainty, optional 'name', 'auxdata'}")
            self.lumi_name = str(lumi.get("name", LUMI_NAME))
            if self.lumi_name in kinds:
                raise AuditError(f"lumi parameter name '{self.lumi_name}' clashes with another parameter")
            kinds[self.lumi_name] = "lumi"
            self.lumi_sigma = _scalar(lumi["sigma"], "lumi sigma")
            self.lumi_aux = _scalar(lumi.get("auxdata", 1.0), "lumi auxdata")
            if self.lumi_sigma <= 0:
                raise AuditError(f"lumi sigma must be > 0, got {self.lumi_sigma}")
        for ch, n in self.staterror_names.items():
            if n in kinds:
                raise AuditError(f"staterror parameter name '{n}' (channel '{ch}') clashes with another parameter")
            kinds[n] = "staterror"

        # ---- parameters
        nf_names = [self.poi] + [n for n in nf_masks if n != self.poi]
        self.param_sets: list[ParamSet] = []
        names: list[str] = []
        init: list[float] = []
        bounds: list[tuple[float, float]] = []
        fixed: list[bool] = []

        def add(name, kind, labels, inits, bnds, fx):
            p0 = len(names)
            self.param_sets.append(ParamSet(name, kind, slice(p0, p0 + len(labels))))
            names.extend(labels)
            init.extend(inits)
            bounds.extend(bnds)
            fixed.extend(fx)

        for n in nf_names:
            add(n, "normfactor", [n], [NORMFACTOR_INIT], [NORMFACTOR_BOUNDS], [False])
        if self.lumi_name:
            s = self.lumi_sigma
            add(self.lumi_name, "lumi", [self.lumi_name], [self.lumi_aux],
                [(max(GAMMA_BOUNDS[0], self.lumi_aux - 10 * s), self.lumi_aux + 10 * s)], [False])
        for n in alpha_names:
            add(n, "alpha", [n], [ALPHA_INIT], [ALPHA_BOUNDS], [False])

        # staterror: relative uncertainty per bin, pyhf's formula
        gamma_bins: list[int] = []
        gamma_sigma: list[float] = []
        for ch, n in self.staterror_names.items():
            sl = self.channel_slices[ch]
            rows = stat_mask[:, sl].any(axis=1)
            for i in np.flatnonzero(rows):
                if not stat_mask[i, sl].all():  # pragma: no cover - masks are per channel
                    raise AuditError(f"channel '{ch}': staterror must cover all bins of sample '{self.samples[i]}'")
            nomsall = self.nominal[rows][:, sl].sum(axis=0)
            unc2 = (stat_unc[:, sl] ** 2).sum(axis=0)
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.where(nomsall > 0, np.sqrt(unc2) / np.where(nomsall > 0, nomsall, 1.0), 0.0)
            fx = rel == 0
            sig = np.where(fx, 1.0, rel)
            nb = self.channel_nbins[ch]
            add(n, "staterror", [f"{n}[{j}]" for j in range(nb)], [GAMMA_INIT] * nb, [GAMMA_BOUNDS] * nb, fx.tolist())
            gamma_bins.extend(range(sl.start, sl.stop))
            gamma_sigma.extend(sig.tolist())

        # user overrides (pyhf measurement-config style, scalar parameters)
        overrides = spec.get("parameters") or {}
        if not isinstance(overrides, dict):
            raise AuditError("spec 'parameters' must be a dict {name: {'bounds': [lo, hi], 'init': x, 'fixed': bool}}")
        for pname, cfg in overrides.items():
            ps = self._param_set(pname, names_known=kinds)
            if not isinstance(cfg, dict) or set(cfg) - {"bounds", "init", "fixed"}:
                raise AuditError(f"parameter '{pname}': overrides must be a dict with keys bounds/init/fixed")
            if ps.n != 1:
                raise AuditError(f"parameter '{pname}': overrides are supported for scalar parameters only")
            p = ps.slice.start
            if "bounds" in cfg:
                b = cfg["bounds"]
                if len(b) != 2:
                    raise AuditError(f"parameter '{pname}': bounds must be [lo, hi]")
                lo, hi = _scalar(b[0], f"{pname} lower bound"), _scalar(b[1], f"{pname} upper bound")
                if not lo < hi:
                    raise AuditError(f"parameter '{pname}': bounds must have lo < hi, got {b}")
                if ps.kind == "lumi" and lo <= 0:
                    raise AuditError(f"parameter '{pname}': lumi bounds must be > 0")
                bounds[p] = (lo, hi)
            if "init" in cfg:
                init[p] = _scalar(cfg["init"], f"{pname} init")
            if "fixed" in cfg:
                fixed[p] = bool(cfg["fixed"])
            if not bounds[p][0] <= init[p] <= bounds[p][1]:
                raise AuditError(f"parameter '{pname}': init {init[p]} outside bounds {bounds[p]}")

        self.par_names = names
        self.n_pars = len(names)
        self.init = np.array(init)
        self.bounds = np.array(bounds, dtype=np.float64).reshape(-1, 2)
        self.fixed = np.array(fixed, dtype=bool)
        self.poi_index = 0
        self.n_normfactors = len(nf_names)
        self.normfactor_masks = np.stack([nf_masks[n] for n in nf_names]).astype(np.float64)
        self.lumi_mask = lumi_mask.astype(np.float64) if self.lumi_name else None
        self.alpha_names = alpha_names
        K = len(alpha_names)
        self.normsys_lo = np.ones((K, S, B))
        self.normsys_hi = np.ones((K, S, B))
        self.histosys_up = np.zeros((K, S, B))  # absolute shifts up - nominal
        self.histosys_dn = np.zeros((K, S, B))  # absolute shifts nominal - down
        self.has_normsys = np.zeros(K, dtype=bool)
        self.has_histosys = np.zeros(K, dtype=bool)
        for k, n in enumerate(alpha_names):
            if n in normsys:
                self.normsys_lo[k], self.normsys_hi[k] = normsys[n]["lo"], normsys[n]["hi"]
                self.has_normsys[k] = True
            if n in histosys:
                m = histosys[n]["mask"]
                self.histosys_up[k] = np.where(m, histosys[n]["up"] - self.nominal, 0.0)
                self.histosys_dn[k] = np.where(m, self.nominal - histosys[n]["down"], 0.0)
                self.has_histosys[k] = True
        self.normsys_coef = code4_coefficients(self.normsys_lo, self.normsys_hi)  # (6, K, S, B)
        self.stat_mask = stat_mask.astype(np.float64)
        self.stat_unc = stat_unc
        self.gamma_bins = np.array(gamma_bins, dtype=np.int64)
        self.n_gammas = len(gamma_bins)
        n_constrained = self.n_pars - self.n_normfactors
        aux_nom = [self.lumi_aux] if self.lumi_name else []
        aux_sig = [self.lumi_sigma] if self.lumi_name else []
        aux_nom += [0.0] * K + [1.0] * self.n_gammas
        aux_sig += [1.0] * K + gamma_sigma
        self.aux_nominal = np.array(aux_nom, dtype=np.float64)
        self.aux_sigma = np.array(aux_sig, dtype=np.float64)
        assert len(self.aux_nominal) == n_constrained
        self.n_aux = n_constrained

        # observed data (optional)
        self.observed = None
        obs = spec.get("observed")
        if obs is not None:
            if not isinstance(obs, dict) or set(obs) != set(self.channels):
                raise AuditError(f"spec 'observed' must give data for exactly the channels {self.channels}")
            self.observed = np.concatenate(
                [_array(obs[ch], f"observed data of channel '{ch}'", self.channel_nbins[ch]) for ch in self.channels]
            )

    def _param_set(self, name: str, names_known=None) -> ParamSet:
        for ps in getattr(self, "param_sets", []):
            if ps.name == name:
                return ps
        known = list(names_known) if names_known is not None else [p.name for p in self.param_sets]
        raise AuditError(f"unknown parameter '{name}'; known: {known}")

    # ------------------------------------------------------------------ access
    @property
    def spec(self) -> dict:
        return copy.deepcopy(self._spec)

    def to_dict(self) -> dict:
        return self.spec

    @classmethod
    def from_dict(cls, spec: dict) -> "Model":
        return cls(spec)

    def par_slice(self, name: str) -> slice:
        return self._param_set(name).slice

    def param_vector(self, **values) -> np.ndarray:
        """The init vector with some parameters set, e.g. ``param_vector(mu=1, jes=1.0)``.

        Values of staterror sets are lists (one per bin)."""
        p = self.init.copy()
        for name, v in values.items():
            sl = self.par_slice(name)
            p[sl] = np.broadcast_to(np.asarray(v, dtype=np.float64), (sl.stop - sl.start,))
        return p

    def channel_data(self, data: np.ndarray) -> dict[str, np.ndarray]:
        """Split a concatenated (..., B) array into {channel: (..., nbins)}."""
        data = np.asarray(data)
        return {ch: data[..., self.channel_slices[ch]] for ch in self.channels}

    def concat_channels(self, per_channel, what: str = "data") -> np.ndarray:
        """{channel: array} (or an already concatenated array) -> (..., B) float64."""
        if isinstance(per_channel, dict):
            if set(per_channel) != set(self.channels):
                raise AuditError(f"{what}: needs exactly the channels {self.channels}, got {sorted(per_channel)}")
            parts = []
            for ch in self.channels:
                a = np.asarray(per_channel[ch], dtype=np.float64)
                if a.shape[-1] != self.channel_nbins[ch]:
                    raise AuditError(
                        f"{what}: channel '{ch}' has {a.shape[-1]} bins, the model has "
                        f"{self.channel_nbins[ch]} (mismatched binning)"
                    )
                parts.append(a)
            return np.concatenate(parts, axis=-1)
        a = np.asarray(per_channel, dtype=np.float64)
        if a.shape[-1] != self.n_bins:
            raise AuditError(f"{what}: has {a.shape[-1]} bins, the model has {self.n_bins} (mismatched binning)")
        return a

    def expected_by_sample(self, pars) -> np.ndarray:
        """Expected yields (..., S, B) at parameter vector(s) ``pars`` (..., P)."""
        from hsaudit.stats.fit import compiled  # local import: torch only when needed

        import torch

        cm = compiled(self, "cpu")
        p = torch.as_tensor(np.atleast_2d(np.asarray(pars, dtype=np.float64)))
        nu = cm.yields(p)[0].numpy()
        return nu.reshape(np.shape(pars)[:-1] + nu.shape[1:])

    def expected_main(self, pars=None) -> np.ndarray:
        """Expected main-data yields (..., B) at ``pars`` (default: init, i.e. mu=1)."""
        pars = self.init if pars is None else pars
        return self.expected_by_sample(pars).sum(axis=-2)

    def expected_data(self, pars=None) -> np.ndarray:
        """pyhf-style ``main + aux`` vector in *this* model's ordering."""
        pars = self.init if pars is None else np.asarray(pars, dtype=np.float64)
        aux = np.broadcast_to(self.aux_nominal, pars.shape[:-1] + (self.n_aux,))
        return np.concatenate([self.expected_main(pars), aux], axis=-1)

    def __repr__(self) -> str:
        return (
            f"Model(channels={self.channels}, bins={self.n_bins}, samples={self.samples}, "
            f"pars={self.n_pars}, poi='{self.poi}')"
        )

    # ------------------------------------------------------------------ pyhf
    def to_pyhf_workspace(self, observed=None) -> dict:
        """A pyhf JSON workspace (dict) equivalent to this model.

        Observations: ``observed`` ({channel: data} or a concatenated array), else the
        spec's ``observed``, else the Asimov data at the initial parameters (mu = 1).
        Validate with ``pyhf.Workspace(ws)``; build the model with ``ws.model()``.
        """
        if observed is not None:
            obs = self.concat_channels(observed, "observed")
        elif self.observed is not None:
            obs = self.observed
        else:
            obs = self.expected_main()
        spec = self._spec
        ws_channels = []
        for ch in self.channels:
            cdef = spec["channels"][ch]
            samples = []
            for sname, sdef in cdef["samples"].items():
                mods = []
                for nf in sdef.get("normfactors", []) or []:
                    mods.append({"name": str(nf), "type": "normfactor", "data": None})
                if sdef.get("lumi", False):
                    mods.append({"name": self.lumi_name, "type": "lumi", "data": None})
                for name, d in (sdef.get("normsys") or {}).items():
                    mods.append({"name": str(name), "type": "normsys", "data": {"hi": float(d["hi"]), "lo": float(d["lo"])}})
                for name, d in (sdef.get("histosys") or {}).items():
                    mods.append({
                        "name": str(name), "type": "histosys",
                        "data": {"hi_data": _floats(d["up"]), "lo_data": _floats(d["down"])},
                    })
                if sdef.get("staterror") is not None:
                    mods.append({"name": self.staterror_names[ch], "type": "staterror", "data": _floats(sdef["staterror"])})
                samples.append({"name": str(sname), "data": _floats(sdef["nominal"]), "modifiers": mods})
            ws_channels.append({"name": ch, "samples": samples})
        params = []
        if self.lumi_name:
            p = self.par_slice(self.lumi_name).start
            params.append({
                "name": self.lumi_name, "auxdata": [self.lumi_aux], "sigmas": [self.lumi_sigma],
                "bounds": [list(map(float, self.bounds[p]))], "inits": [float(self.init[p])],
                **({"fixed": True} if self.fixed[p] else {}),
            })
        for pname, cfg in (spec.get("parameters") or {}).items():
            if pname == self.lumi_name:
                continue
            p = self.par_slice(pname).start
            entry = {"name": pname}
            if "bounds" in cfg:
                entry["bounds"] = [list(map(float, self.bounds[p]))]
            if "init" in cfg:
                entry["inits"] = [float(self.init[p])]
            if cfg.get("fixed"):
                entry["fixed"] = True
            params.append(entry)
        return {
            "channels": ws_channels,
            "observations": [{"name": ch, "data": _floats(obs[self.channel_slices[ch]])} for ch in self.channels],
            "measurements": [{"name": "measurement", "config": {"poi": self.poi, "parameters": params}}],
            "version": PYHF_SCHEMA_VERSION,
        }

    @classmethod
    def from_pyhf_workspace(cls, workspace, measurement: str | None = None) -> "Model":
        """Build a model from a pyhf workspace (dict or ``pyhf.Workspace``).

        Supported modifiers: normfactor, lumi, normsys, histosys, staterror (one per
        channel); others (shapesys, shapefactor) raise AuditError. The measurement's
        POI, lumi auxdata/sigma and scalar parameter bounds/inits/fixed are taken over.
        The workspace's observations become the spec's ``observed``.
        """
        ws = dict(workspace)
        try:
            measurements = ws["measurements"]
            if measurement is None:
                meas = measurements[0]
            else:
                meas = next(m for m in measurements if m["name"] == measurement)
        except (KeyError, IndexError, StopIteration, TypeError):
            raise AuditError(f"workspace has no measurement {measurement or ''!r}") from None
        config = meas["config"]
        pcfg = {p["name"]: p for p in config.get("parameters", [])}
        spec: dict = {"poi": config["poi"], "channels": {}}
        lumi_name = None
        stat_names: dict[str, str] = {}
        for cdef in ws.get("channels", []):
            ch = cdef["name"]
            samples = {}
            for sdef in cdef["samples"]:
                s = {"nominal": list(sdef["data"])}
                for mod in sdef.get("modifiers", []):
                    t, n = mod["type"], mod["name"]
                    if t == "normfactor":
                        s.setdefault("normfactors", []).append(n)
                    elif t == "lumi":
                        if lumi_name not in (None, n):
                            raise AuditError(f"workspace has two lumi parameters ('{lumi_name}', '{n}'); unsupported")
                        lumi_name = n
                        s["lumi"] = True
                    elif t == "normsys":
                        s.setdefault("normsys", {})[n] = {"lo": mod["data"]["lo"], "hi": mod["data"]["hi"]}
                    elif t == "histosys":
                        s.setdefault("histosys", {})[n] = {"up": list(mod["data"]["hi_data"]),
                                                           "down": list(mod["data"]["lo_data"])}
                    elif t == "staterror":
                        if stat_names.get(ch, n) != n:
                            raise AuditError(f"channel '{ch}' has two staterror modifiers; unsupported")
                        if n in stat_names.values() and stat_names.get(ch) != n:
                            raise AuditError(f"staterror '{n}' spans several channels; unsupported")
                        stat_names[ch] = n
                        s["staterror"] = list(mod["data"])
                    else:
                        raise AuditError(
                            f"workspace modifier type '{t}' ('{n}', channel '{ch}') is not supported by "
                            "hsaudit.stats (supported: normfactor, lumi, normsys, histosys, staterror)"
                        )
                samples[sdef["name"]] = s
            spec["channels"][ch] = {"samples": samples}
            if ch in stat_names:
                spec["channels"][ch]["staterror_name"] = stat_names[ch]
        if lumi_name:
            lc = pcfg.get(lumi_name)
            if lc is None or "sigmas" not in lc:
                raise AuditError(f"workspace lumi parameter '{lumi_name}' has no sigmas in the measurement config")
            spec["lumi"] = {"name": lumi_name, "sigma": lc["sigmas"][0], "auxdata": lc.get("auxdata", [1.0])[0]}
        overrides = {}
        for name, pc in pcfg.items():
            entry = {}
            if "bounds" in pc:
                entry["bounds"] = list(pc["bounds"][0])
            if "inits" in pc:
                entry["init"] = pc["inits"][0]
            if pc.get("fixed"):
                entry["fixed"] = True
            if entry and not any(name == v for v in stat_names.values()):
                overrides[name] = entry
        if overrides:
            spec["parameters"] = overrides
        obs = {o["name"]: list(o["data"]) for o in ws.get("observations", [])}
        if obs:
            spec["observed"] = obs
        return cls(spec)


def _floats(a) -> list[float]:
    return [float(x) for x in np.asarray(a, dtype=np.float64)]


def to_pyhf_workspace(model: Model, observed=None) -> dict:
    """Function form of :meth:`Model.to_pyhf_workspace`."""
    return model.to_pyhf_workspace(observed)


def from_pyhf_workspace(workspace, measurement: str | None = None) -> Model:
    """Function form of :meth:`Model.from_pyhf_workspace`."""
    return Model.from_pyhf_workspace(workspace, measurement)


# ---------------------------------------------------------------------- pyhf orderings
# pyhf orders channels and parameter sets by name; these helpers translate vectors.
def pyhf_pars(model: Model, pyhf_model, pars) -> np.ndarray:
    """Parameter vector(s) (..., P) in this model's order -> pyhf's order."""
    pars = np.asarray(pars, dtype=np.float64)
    out = np.zeros(pars.shape[:-1] + (pyhf_model.config.npars,))
    for ps in model.param_sets:
        out[..., pyhf_model.config.par_slice(ps.name)] = pars[..., ps.slice]
    return out


def pars_from_pyhf(model: Model, pyhf_model, pyhf_vector) -> np.ndarray:
    """pyhf-ordered parameter vector(s) -> this model's order."""
    v = np.asarray(pyhf_vector, dtype=np.float64)
    out = np.zeros(v.shape[:-1] + (model.n_pars,))
    for ps in model.param_sets:
        out[..., ps.slice] = v[..., pyhf_model.config.par_slice(ps.name)]
    return out


def pyhf_data(model: Model, pyhf_model, main, aux=None) -> np.ndarray:
    """pyhf's data vector(s) ``main + auxdata`` from this model's main (..., B) and aux (..., A)."""
    main = np.asarray(main, dtype=np.float64)
    aux = np.broadcast_to(model.aux_nominal if aux is None else np.asarray(aux, dtype=np.float64),
                          main.shape[:-1] + (model.n_aux,))
    parts = [main[..., model.channel_slices[c]] for c in pyhf_model.config.channels]
    F = model.n_normfactors
    for name in pyhf_model.config.auxdata_order:
        sl = model.par_slice(name)
        parts.append(aux[..., sl.start - F: sl.stop - F])
    return np.concatenate(parts, axis=-1)
