"""Envelopes: how far a systematic may move each feature of each event.

The design follows docs/audit.md ("Envelope"). The allowed region for one event is a
per-feature box (a weighted L-infinity ball, as the per-feature ``eps`` of the Adversarial
Robustness Toolbox), built from one of two sources:

* the event's own shifted variants (``Envelope.from_variants``): per feature, the box spanned
  by the down, nominal and up values, scaled by ``n_sigma`` around the nominal value;
* declared per-feature uncertainties sigma_i (``Envelope.from_uncertainties``), absolute
  (GeV, rad) or relative (fraction of |x|), for systematics given that way and for flat tables
  without shifted variants.

Features no systematic touches have zero width and stay fixed. Integer features (number of
jets, decay mode) are projected onto integers inside the box, so they never take a
non-integer value.

The nuisance-space view: a per-event theta in [-k, k] interpolating piecewise-linearly
between the event's down (theta = -1), nominal (0) and up (+1) feature vectors and
extrapolating linearly beyond. The standard systematic is theta = +-1 for every event; a
hidden one lets theta vary from event to event. For |theta| <= n_sigma the point lies inside
the box, so both views describe the same allowed region along the shift direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from hsaudit.errors import AuditError


def _as_matrix(name: str, value, n_features: int | None = None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        t = value.detach().to(device="cpu", dtype=torch.float32)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise AuditError(f"envelope {name} must be a numeric (N, F) array: {exc}") from None
    if t.ndim != 2:
        raise AuditError(f"envelope {name} must be a 2-d (N, F) array, got shape {tuple(t.shape)}")
    if n_features is not None and t.shape[1] != n_features:
        raise AuditError(f"envelope {name} has {t.shape[1]} features, expected {n_features}")
    return t.clone()


def _integer_mask(integer_features, n_features: int, feature_names) -> torch.Tensor:
    mask = torch.zeros(n_features, dtype=torch.bool)
    for item in integer_features or ():
        if isinstance(item, str):
            if feature_names is None or item not in feature_names:
                raise AuditError(
                    f"integer feature '{item}' is not a known feature name; known: {list(feature_names or [])}"
                )
            idx = list(feature_names).index(item)
        else:
            idx = int(item)
            if not 0 <= idx < n_features:
                raise AuditError(f"integer feature index {idx} out of range for {n_features} features")
        mask[idx] = True
    return mask


@dataclass
class Envelope:
    """Per-event, per-feature allowed region of one systematic.

    ``nominal``: (N, F) float32 nominal features; ``up_shift`` / ``down_shift``: (N, F) the
    1-sigma displacement (up - nominal, down - nominal); ``n_sigma``: the size of the box in
    units of those displacements; ``integer``: (F,) bool, features that must stay integers.
    The box is ``[lower, upper]`` with lower = nominal + n_sigma * min(0, up_shift, down_shift)
    and upper = nominal + n_sigma * max(0, up_shift, down_shift).
    """

    nominal: torch.Tensor
    up_shift: torch.Tensor
    down_shift: torch.Tensor
    n_sigma: float = 1.0
    integer: torch.Tensor = None  # type: ignore[assignment]
    feature_names: list[str] | None = None
    systematic: str = ""
    lower: torch.Tensor = field(init=False, repr=False)
    upper: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        n, f = self.nominal.shape
        if self.integer is None:
            self.integer = torch.zeros(f, dtype=torch.bool)
        if not np.isfinite(self.n_sigma) or self.n_sigma < 0:
            raise AuditError(f"envelope n_sigma must be a finite number >= 0, got {self.n_sigma}")
        if self.feature_names is not None and len(self.feature_names) != f:
            raise AuditError(f"envelope has {f} features but {len(self.feature_names)} feature names")
        if bool(self.integer.any()):
            nom_int = self.nominal[:, self.integer]
            if not bool((nom_int == torch.round(nom_int)).all()):
                raise AuditError("a feature declared integer has non-integer nominal values; check integer_features")
        zero = torch.zeros_like(self.nominal)
        lo = torch.minimum(torch.minimum(self.up_shift, self.down_shift), zero)
        hi = torch.maximum(torch.maximum(self.up_shift, self.down_shift), zero)
        s = float(self.n_sigma)
        lower = self.nominal + s * lo
        upper = self.nominal + s * hi
        # integer features: the box is the integers inside it (always contains the nominal value)
        if bool(self.integer.any()):
            ints = self.integer.unsqueeze(0).expand_as(lower)
            lower = torch.where(ints, torch.minimum(torch.ceil(lower - 1e-4), self.nominal), lower)
            upper = torch.where(ints, torch.maximum(torch.floor(upper + 1e-4), self.nominal), upper)
        self.lower = torch.minimum(lower, self.nominal)
        self.upper = torch.maximum(upper, self.nominal)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_variants(
        cls,
        nominal,
        up,
        down,
        n_sigma: float = 1.0,
        integer_features=(),
        feature_names=None,
        systematic: str = "",
        missing: str = "error",
    ) -> "Envelope":
        """Envelope from the event's own shifted variants (event-matched rows).

        ``missing``: what to do with a NaN in an up/down variant (a feature that cannot be
        computed in that variant): ``"error"`` (default) or ``"fixed"`` (no shift in that
        direction). NaN or inf in the nominal features is always an error.
        """
        nom = _as_matrix("nominal", nominal)
        n, f = nom.shape
        if n == 0:
            raise AuditError("envelope needs at least one event; the selection is empty")
        upt = _as_matrix("up", up, f)
        dnt = _as_matrix("down", down, f)
        for name, t in (("up", upt), ("down", dnt)):
            if t.shape[0] != n:
                raise AuditError(f"envelope {name} variant has {t.shape[0]} events, nominal has {n}: rows must be event-matched")
        if not bool(torch.isfinite(nom).all()):
            raise AuditError("nominal features contain NaN or inf; fill or drop those events before building an envelope")
        if missing not in ("error", "fixed"):
            raise AuditError(f"envelope missing must be 'error' or 'fixed', got {missing!r}")
        for name, t in (("up", upt), ("down", dnt)):
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                if missing == "error":
                    raise AuditError(
                        f"the {name} variant of systematic '{systematic}' has NaN/inf in {int(bad.sum())} entries; "
                        "drop those events or pass missing='fixed'"
                    )
                t[bad] = nom[bad]
        integer = _integer_mask(integer_features, f, feature_names)
        return cls(nom, upt - nom, dnt - nom, float(n_sigma), integer, _names(feature_names), systematic)

    @classmethod
    def from_uncertainties(
        cls,
        nominal,
        sigma,
        relative=False,
        n_sigma: float = 1.0,
        integer_features=(),
        feature_names=None,
        systematic: str = "",
    ) -> "Envelope":
        """Envelope from declared per-feature uncertainties.

        ``sigma``: (F,) one uncertainty per feature (0 = not touched), or a dict
        {feature name: sigma} (needs ``feature_names``; missing features get 0).
        ``relative``: bool for all features, or (F,) bools / dict: sigma is a fraction of |x|.
        The up/down variants are nominal +- sigma (symmetric).
        """
        nom = _as_matrix("nominal", nominal)
        n, f = nom.shape
        if n == 0:
            raise AuditError("envelope needs at least one event; the selection is empty")
        if not bool(torch.isfinite(nom).all()):
            raise AuditError("nominal features contain NaN or inf; fill or drop those events before building an envelope")
        names = _names(feature_names)
        sig = _per_feature("sigma", sigma, f, names, 0.0)
        rel = _per_feature("relative", relative, f, names, False).astype(bool)
        if not np.all(np.isfinite(sig)) or np.any(sig < 0):
            raise AuditError(f"uncertainties sigma must be finite and >= 0, got {sig.tolist()}")
        sig_t = torch.as_tensor(sig.astype(np.float32))
        rel_t = torch.as_tensor(rel)
        half = torch.where(rel_t, sig_t * nom.abs(), sig_t.expand_as(nom))
        integer = _integer_mask(integer_features, f, names)
        return cls(nom, half, -half, float(n_sigma), integer, names, systematic)

    # ------------------------------------------------------------------ views
    @property
    def n_events(self) -> int:
        return int(self.nominal.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.nominal.shape[1])

    @property
    def width(self) -> torch.Tensor:
        return self.upper - self.lower

    @property
    def movable(self) -> torch.Tensor:
        """(F,) bool: features the systematic moves for at least one event."""
        return (self.width > 0).any(dim=0)

    def bounds(self, device=None, rows=None) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = self.lower, self.upper
        if rows is not None:
            lo, hi = lo[rows], hi[rows]
        return lo.to(device), hi.to(device)

    def project(self, x: torch.Tensor, lower=None, upper=None, integer=None) -> torch.Tensor:
        """Clamp into the box; integer features are rounded (the box ends are integers)."""
        lo = self.lower.to(x.device) if lower is None else lower
        hi = self.upper.to(x.device) if upper is None else upper
        return project_box(x, lo, hi, self.integer.to(x.device) if integer is None else integer)

    def contains(self, x, atol: float = 0.0) -> torch.Tensor:
        """(N, F) bool: x inside the box (and integer where required)."""
        x = torch.as_tensor(x).to("cpu", torch.float32)
        ok = (x >= self.lower - atol) & (x <= self.upper + atol)
        if bool(self.integer.any()):
            ok &= ~self.integer | (x == torch.round(x))
        return ok

    def interpolate(self, theta, rows=None, device=None) -> torch.Tensor:
        """Nuisance-space view: features at per-event theta ((N,) tensor), piecewise linear
        between down (-1), nominal (0) and up (+1); integer features rounded."""
        nom, up, dn = self.nominal, self.up_shift, self.down_shift
        if rows is not None:
            nom, up, dn = nom[rows], up[rows], dn[rows]
        theta = torch.as_tensor(theta)
        device = theta.device if device is None else device
        nom, up, dn = nom.to(device), up.to(device), dn.to(device)
        x = interpolate_theta(theta.to(device), nom, up, dn)
        if bool(self.integer.any()):
            x = torch.where(self.integer.to(device), torch.round(x), x)
        return x

    def subset(self, rows) -> "Envelope":
        rows = torch.as_tensor(rows)
        return Envelope(
            self.nominal[rows], self.up_shift[rows], self.down_shift[rows], self.n_sigma,
            self.integer.clone(), self.feature_names, self.systematic,
        )

    def scaled(self, n_sigma: float) -> "Envelope":
        return Envelope(self.nominal, self.up_shift, self.down_shift, float(n_sigma), self.integer.clone(),
                        self.feature_names, self.systematic)


def interpolate_theta(theta: torch.Tensor, nom: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """nominal + theta * up_shift for theta >= 0, nominal - theta * down_shift below.

    ``torch.where`` picks the up branch at theta = 0, so the gradient there is the up
    direction (non-zero), and a gradient step can still move to negative theta.
    """
    t = theta.unsqueeze(-1)
    return nom + torch.where(t >= 0, t * up, -t * down)


def project_box(x: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, integer: torch.Tensor) -> torch.Tensor:
    x = torch.minimum(torch.maximum(x, lower), upper)
    if bool(integer.any()):
        x = torch.where(integer, torch.minimum(torch.maximum(torch.round(x), lower), upper), x)
    return x


def _names(feature_names):
    return None if feature_names is None else [str(n) for n in feature_names]


def _per_feature(what: str, value, n_features: int, names, default) -> np.ndarray:
    if isinstance(value, dict):
        if names is None:
            raise AuditError(f"{what} given per feature name needs feature_names")
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise AuditError(f"{what} names unknown features {unknown}; known: {names}")
        return np.array([value.get(n, default) for n in names], dtype=np.float64)
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n_features, float(arr))
    if arr.shape != (n_features,):
        raise AuditError(f"{what} must have one value per feature ({n_features}), got shape {arr.shape}")
    return arr
