"""Smooth nuisance-field attack: the nuisance parameter as a smooth function of physics inputs.

The most physical hidden mismodelling (docs/science.md section 3; the universal,
smooth mapping of Nachman & Shimmin's adversarial network, in nuisance space): instead of
one theta per event (``nuisance_pgd``) or one theta for all events (the standard +-1 sigma
systematic), theta is a smooth, bounded function of a few physical variables the user
names, e.g. ``inputs: [tau_pt, tau_eta, tau_decay_mode]`` for the tau energy scale. Each
event is moved to its features at theta(x) between its own down (-1), nominal (0) and up
(+1) variants, exactly as ``nuisance_pgd`` does (``theta_features``). The result reads
like "the energy scale is 1.5 sigma high at low pt and 1 sigma low at high eta", which an
analyst can check against control data.

The field is additive over its inputs, theta(x) = clip(c + sum_i g_i(x_i), -k, k), each
g_i piecewise linear between ``knots`` knots at quantiles of the objective's events (the
distinct values for discrete inputs such as a decay mode; constant beyond the outer knots),
evaluated on the *nominal* values of the inputs, so theta is a property of the event, not of
its shifted features. The clip keeps |theta| <= k everywhere (its gradient is passed
straight through in the fit, so a saturated field can come back). Fitted by Adam on the
mean per-event objective of the objective's events (``ctx.target``, |weights|), minus
``smoothness`` times the mean squared second difference of the knot values of each g_i
(a smoothing-spline penalty; straight lines are free); the constant fields +k and -k (the
standard shift scaled to k) are evaluated too and the best of the three is kept. Universal:
the fitted field is applied to every event in ``mask``.

Returned: ``info["field"]`` a compact description (theta on the knot grid of each input with
the other inputs at their median, min/max, slope and roughness per input, a one-line text),
``info["field_state"]`` and ``extra["field"]`` (the same JSON-ready dict) everything ``apply_nuisance_field`` and ``hsaudit.plotting.
figure_nuisance_field`` need, ``extra["theta"]`` theta per event.
"""

from __future__ import annotations

import numpy as np
import torch

from hsaudit.errors import AuditError
from hsaudit.attacks.base import Attack, AttackContext
from hsaudit.attacks.envelope import Envelope, interpolate_theta, project_box
from hsaudit.attacks.nuisance_pgd import theta_features

GRID_POINTS = 41


def _interp(x: torch.Tensor, knots: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through (knots, values), constant outside."""
    if knots.numel() == 1:
        return values[0].expand_as(x)
    idx = (torch.searchsorted(knots, x.contiguous(), right=True) - 1).clamp(0, knots.numel() - 2)
    t0, t1 = knots[idx], knots[idx + 1]
    frac = ((x - t0) / (t1 - t0)).clamp(0, 1)
    return values[idx] + frac * (values[idx + 1] - values[idx])


class NuisanceField:
    """theta(x) = clip(offset + sum_i g_i(x[:, i]), -k, k) on the input columns."""

    def __init__(self, inputs, columns, knots, values, offset, k, medians, stds, discrete=None):
        self.inputs = list(inputs)
        self.columns = [int(c) for c in columns]
        self.knots = [torch.as_tensor(t, dtype=torch.float32) for t in knots]
        self.values = [torch.as_tensor(v, dtype=torch.float32) for v in values]
        self.offset = torch.as_tensor(offset, dtype=torch.float32).reshape(())
        self.k = float(k)
        self.medians = [float(m) for m in medians]
        self.stds = [float(s) for s in stds]
        self.discrete = [bool(v) for v in (discrete if discrete is not None else [False] * len(self.columns))]

    def raw(self, xin: torch.Tensor) -> torch.Tensor:
        u = self.offset.to(xin.device).expand(xin.shape[0])
        for i in range(len(self.columns)):
            u = u + _interp(xin[:, i], self.knots[i].to(xin.device), self.values[i].to(xin.device))
        return u

    def theta(self, xin: torch.Tensor) -> torch.Tensor:
        """Bounded field on (N, n_inputs) nominal input values; straight-through clip."""
        u = self.raw(xin)
        return u + (u.clamp(-self.k, self.k) - u).detach()

    def of_events(self, nominal: torch.Tensor) -> torch.Tensor:
        return self.theta(nominal[:, self.columns])

    def penalty(self) -> torch.Tensor:
        """Mean squared second difference of the knot values (per input, summed)."""
        p = self.offset * 0
        for v in self.values:
            if v.numel() >= 3:
                p = p + ((v[2:] - 2 * v[1:-1] + v[:-2]) ** 2).mean()
        return p

    def grid(self, i: int, points: int = GRID_POINTS) -> np.ndarray:
        t = self.knots[i].numpy()
        if t.size <= 1 or self.discrete[i]:  # discrete input: its values
            return t.astype(np.float64)
        return np.linspace(float(t[0]), float(t[-1]), points)

    def profile(self, i: int, grid=None) -> tuple[np.ndarray, np.ndarray]:
        """theta along input i on its grid, the other inputs at their median."""
        g = self.grid(i) if grid is None else np.asarray(grid, dtype=np.float64)
        xin = torch.tensor(self.medians, dtype=torch.float32).repeat(len(g), 1)
        xin[:, i] = torch.as_tensor(g, dtype=torch.float32)
        with torch.no_grad():
            th = self.theta(xin).numpy().astype(np.float64)
        return g, th

    def to_dict(self) -> dict:
        return {
            "inputs": self.inputs, "columns": self.columns, "k": self.k,
            "knots": [t.tolist() for t in self.knots], "values": [v.detach().tolist() for v in self.values],
            "offset": float(self.offset), "medians": self.medians, "stds": self.stds, "discrete": self.discrete,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "NuisanceField":
        try:
            return cls(d["inputs"], d["columns"], d["knots"], d["values"], d["offset"], d["k"], d["medians"], d["stds"],
                       d.get("discrete"))
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"not a valid nuisance field description: {exc}") from None

    @classmethod
    def constant(cls, value: float, inputs, columns, k: float) -> "NuisanceField":
        """theta(x) = value everywhere (the standard systematic at ``value`` sigma)."""
        n = len(columns)
        return cls(inputs, columns, [[0.0]] * n, [[0.0]] * n, float(value), k, [0.0] * n, [1.0] * n, [True] * n)

    def describe(self) -> dict:
        """Compact, JSON-serialisable description: theta on each input's knot grid (others at
        median), min/max, slope (theta per standard deviation of the input) and roughness
        (RMS second difference per squared standard deviation) on a uniform grid."""
        per_input = {}
        texts = []
        lo_all, hi_all = np.inf, -np.inf
        for i, name in enumerate(self.inputs):
            g, th = self.profile(i)
            gk, thk = self.profile(i, self.knots[i].numpy())
            sd = self.stds[i] if self.stds[i] > 0 else 1.0
            if len(g) >= 2:
                dx = np.diff(g) / sd
                slope = float(np.max(np.abs(np.diff(th)) / np.where(dx > 0, dx, np.inf)))
            else:
                slope = 0.0
            if len(g) >= 3 and len(g) == GRID_POINTS:
                h = (g[1] - g[0]) / sd
                rough = float(np.sqrt(np.mean(((th[2:] - 2 * th[1:-1] + th[:-2]) / h ** 2) ** 2)))
            else:
                rough = 0.0
            lo_all, hi_all = min(lo_all, float(th.min())), max(hi_all, float(th.max()))
            per_input[name] = {
                "grid": [round(float(v), 6) for v in gk], "theta": [round(float(v), 4) for v in thk],
                "theta_min": float(th.min()), "theta_max": float(th.max()),
                "at_min": float(g[int(np.argmin(th))]), "at_max": float(g[int(np.argmax(th))]),
                "max_slope_per_sd": slope, "roughness": rough,
            }
            texts.append(f"{name}: {th[0]:+.2f} sigma at {g[0]:.4g}, {th[-1]:+.2f} sigma at {g[-1]:.4g} "
                         f"(min {th.min():+.2f} at {g[int(np.argmin(th))]:.4g}, max {th.max():+.2f} at "
                         f"{g[int(np.argmax(th))]:.4g})")
        if all(t.numel() == 1 for t in self.knots):  # a constant field (the standard shift scaled)
            texts = [f"theta = {float(self.theta(torch.zeros(1, len(self.columns)))[0]):+.2f} sigma everywhere"]
        return {"inputs": self.inputs, "k": self.k, "per_input": per_input, "theta_min": lo_all, "theta_max": hi_all,
                "max_slope_per_sd": max((v["max_slope_per_sd"] for v in per_input.values()), default=0.0),
                "roughness": max((v["roughness"] for v in per_input.values()), default=0.0),
                "text": "; ".join(texts)}


def resolve_inputs(inputs, feature_names, n_features: int) -> list[int]:
    cols = []
    for item in inputs:
        if isinstance(item, str):
            if feature_names is None:
                raise AuditError(f"nuisance_field input '{item}' is a name but the envelope has no feature names; "
                                 "pass feature indices or build the envelope with feature_names")
            if item not in feature_names:
                raise AuditError(f"nuisance_field input '{item}' is not a feature; known: {list(feature_names)}")
            cols.append(list(feature_names).index(item))
        else:
            if not 0 <= int(item) < n_features:
                raise AuditError(f"nuisance_field input index {item} out of range for {n_features} features")
            cols.append(int(item))
    return cols


def apply_nuisance_field(field, envelope: Envelope, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Reapply a fitted field (``NuisanceField`` or its dict) to the events of ``envelope``:
    returns (x (N, F) float32, theta (N,)); events outside ``mask`` keep theta = 0."""
    fld = NuisanceField.from_dict(field) if isinstance(field, dict) else field
    if max(fld.columns, default=-1) >= envelope.n_features:
        raise AuditError(f"the field reads feature columns {fld.columns}; the envelope has {envelope.n_features}")
    with torch.no_grad():
        theta = fld.of_events(envelope.nominal)
        if mask is not None:
            theta = torch.where(torch.as_tensor(np.asarray(mask, bool)), theta, torch.zeros_like(theta))
        x = interpolate_theta(theta, envelope.nominal, envelope.up_shift, envelope.down_shift)
        x = project_box(x, envelope.lower, envelope.upper, envelope.integer)
    return x, theta


class NuisanceFieldAttack(Attack):
    name = "nuisance_field"
    per_event = False
    universal = True
    # settings and defaults: hsaudit.config_schema.NuisanceFieldSettings

    def validate(self, s):
        inp = s["inputs"]
        if inp is None:
            raise AuditError("attack setting 'inputs' of nuisance_field must be a non-empty list of feature names "
                             "(the physical variables theta depends on), got None")
        if len(set(inp)) != len(inp):
            raise AuditError(f"attack setting 'inputs' lists a feature twice: {list(inp)}")
        return s

    def is_trivial(self, s):
        return s["k"] == 0.0

    def run(self, ctx: AttackContext, s):
        dev = ctx.device
        n, f = ctx.x.shape
        n_sigma = ctx.envelope.n_sigma
        k = n_sigma if s["k"] is None else s["k"]
        if k > n_sigma + 1e-12:
            raise AuditError(f"nuisance_field k = {k} exceeds the envelope's n_sigma = {n_sigma}; "
                             "build the envelope with n_sigma >= k")
        cols = resolve_inputs(s["inputs"], ctx.feature_names, f)
        names = [ctx.feature_names[c] if ctx.feature_names is not None else f"x{c}" for c in cols]
        tgt = torch.nonzero(ctx.target & ctx.attacked).squeeze(1)
        if len(tgt) == 0:
            raise AuditError("nuisance_field has no events to fit on: the objective's events (objective_mask and "
                             "class) and the events allowed to move do not overlap")
        xin_t = ctx.nominal[tgt][:, cols].detach().cpu().to(torch.float64)
        knots, medians, stds, discrete = [], [], [], []
        for i in range(len(cols)):
            col = xin_t[:, i]
            uniq = torch.unique(col)
            discrete.append(len(uniq) <= s["knots"])
            if discrete[-1]:
                t = uniq
            else:
                t = torch.unique(torch.quantile(col, torch.linspace(0, 1, s["knots"], dtype=torch.float64)))
            knots.append(t.to(torch.float32))
            medians.append(float(torch.quantile(col, 0.5)))
            stds.append(float(col.std()) if len(col) > 1 else 1.0)
        fld = NuisanceField(names, cols, knots, [torch.zeros(len(t)) for t in knots], 0.0, k, medians, stds, discrete)
        fld.knots = [t.to(dev) for t in fld.knots]
        params = [torch.zeros((), device=dev, requires_grad=True)] + [
            torch.zeros(len(t), device=dev, requires_grad=True) for t in knots]
        fld.offset, fld.values = params[0], params[1:]
        sub = ctx.rows(tgt)
        w = sub.weights.abs()
        w = w / w.sum().clamp_min(1e-30)
        xin_dev = sub.nominal[:, cols]

        def mean_objective(idx=None) -> torch.Tensor:
            c = sub if idx is None else sub.rows(idx)
            ww = w if idx is None else w[idx] / w[idx].sum().clamp_min(1e-30)
            xi = xin_dev if idx is None else xin_dev[idx]
            return (ww * c.objective_values(theta_features(c, fld.theta(xi)))).sum()

        gen = torch.Generator().manual_seed(ctx.seed)
        opt = torch.optim.Adam(params, lr=s["learning_rate"])
        bs = s["train_batch_size"]
        history = []
        for step in range(s["steps"]):
            idx = None if len(tgt) <= bs else torch.randperm(len(tgt), generator=gen)[:bs].to(dev)
            obj = mean_objective(idx)
            loss = -obj + s["smoothness"] * fld.penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % max(1, s["steps"] // 10) == 0 or step == s["steps"] - 1:
                history.append({"step": step, "objective": float(obj.detach()), "penalty": float(fld.penalty().detach())})
        with torch.no_grad():
            fitted = NuisanceField(names, cols, [t.cpu() for t in fld.knots], [v.detach().cpu() for v in fld.values],
                                   float(fld.offset), k, medians, stds, discrete)
            cands = {"fitted": fitted,
                     "+k": NuisanceField.constant(k, names, cols, k),
                     "-k": NuisanceField.constant(-k, names, cols, k)}
            xin_c = xin_dev.cpu()
            score = {}
            for key, c in cands.items():
                th = c.theta(xin_c).to(dev)
                score[key] = float((w * sub.objective_values(theta_features(sub, th))).sum())
            zero = float((w * sub.objective_values(theta_features(sub, torch.zeros(len(tgt), device=dev)))).sum())
            chosen = max(cands, key=lambda key: (score[key], key == "fitted"))
            best = cands[chosen]
            theta_all = best.of_events(ctx.nominal.cpu()).to(dev)
            theta_all = torch.where(ctx.attacked, theta_all, torch.zeros_like(theta_all))
            x_adv = ctx.project(interpolate_theta(theta_all, ctx.nominal, ctx.up_shift, ctx.down_shift))
        desc = best.describe()
        info = {"field": desc, "field_state": best.to_dict(), "chosen": chosen, "objective_mean": score[chosen], "objective_mean_nominal": zero,
                "objective_gain": score[chosen] - zero, "objective_gain_fitted": score["fitted"] - zero,
                "n_fit_events": int(len(tgt)), "history": history,
                "theta_min": float(theta_all[ctx.attacked].min()), "theta_max": float(theta_all[ctx.attacked].max())}
        return x_adv, info, {"theta": theta_all.detach(), "field": best.to_dict()}
