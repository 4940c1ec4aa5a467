"""PGD in nuisance space: one theta per event in [-k, k].

The nuisance-space view of docs/audit.md ("Envelope"): the event's features are
x(theta) = nominal + theta * (up - nominal) for theta >= 0 and nominal - theta * (down -
nominal) below (piecewise linear between the event's own down, nominal and up variants).
The standard systematic is theta = +-1 for all events; this attack lets theta vary per
event, maximising the per-event objective by sign-gradient steps of ``step_fraction * k``,
clamped to [-k, k]. The corners theta = +-k are evaluated too, so every event ends at least
as far as the standard +-k shift would take it in the objective. Returns theta per event in
``extra["theta"]``.
"""

from __future__ import annotations

import torch

from hsaudit.errors import AuditError
from hsaudit.attacks.base import Attack, AttackContext
from hsaudit.attacks.envelope import interpolate_theta


def theta_features(ctx: AttackContext, theta: torch.Tensor) -> torch.Tensor:
    """Features of the context's events at per-event nuisance values ``theta`` (N,):
    piecewise linear between down (-1), nominal (0) and up (+1), projected into the box
    (integer features rounded) with a straight-through gradient. Shared by every attack in
    nuisance space."""
    x = interpolate_theta(theta, ctx.nominal, ctx.up_shift, ctx.down_shift)
    xp = ctx.project(x)  # rounds integer features; the clamp is a no-op up to float rounding
    return x + (xp - x).detach()


class NuisancePGDAttack(Attack):
    name = "nuisance_pgd"
    # settings and defaults: hsaudit.config_schema.NuisancePGDSettings

    def is_trivial(self, s):
        return s["k"] == 0.0

    def run(self, ctx: AttackContext, s):
        n_sigma = ctx.envelope.n_sigma
        k = n_sigma if s["k"] is None else s["k"]
        if k > n_sigma + 1e-12:
            raise AuditError(f"nuisance_pgd k = {k} exceeds the envelope's n_sigma = {n_sigma}; build the envelope with n_sigma >= k")
        n = ctx.x.shape[0]

        def features(theta):
            return theta_features(ctx, theta)

        with torch.no_grad():
            cands = [torch.zeros(n, device=ctx.device), torch.full((n,), k, device=ctx.device),
                     torch.full((n,), -k, device=ctx.device)]
            vals = [ctx.objective_values(features(t)) for t in cands]
            best_t, best_j = cands[0], vals[0]
            for t, v in zip(cands[1:], vals[1:]):
                better = v > best_j
                best_t, best_j = torch.where(better, t, best_t), torch.where(better, v, best_j)
        theta = torch.zeros(n, device=ctx.device)
        step = s["step_fraction"] * k
        for _ in range(s["steps"]):
            te = theta.detach().requires_grad_(True)
            j = ctx.objective_values(features(te))
            (g,) = torch.autograd.grad(j.sum(), te)
            with torch.no_grad():
                better = j > best_j
                best_t, best_j = torch.where(better, te, best_t), torch.where(better, j, best_j)
                theta = (theta + step * torch.sign(g)).clamp(-k, k)
        with torch.no_grad():
            j = ctx.objective_values(features(theta))
            better = j > best_j
            best_t = torch.where(better, theta, best_t)
            x = ctx.project(features(best_t))
        return x, {}, {"theta": best_t.detach()}
