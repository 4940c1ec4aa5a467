"""Projected gradient descent (PGD) in the per-event, per-feature envelope box.

Madry et al. (2018) PGD with a weighted L-infinity ball: the per-feature ``eps`` of the
Adversarial Robustness Toolbox becomes the per-event box [lower, upper] of the systematic
(../shared/SCIENCE.md section 3.3). Sign-gradient ascent of the per-event objective with a
step of ``step_fraction`` times the box width, projection after every step, optional uniform
random start inside the box (counter-based noise, so independent of batching). The best
point seen per event is returned (the objective is evaluated at every iterate anyway).
Integer features follow a continuous relaxation and are rounded by the projection; the
gradient passes the rounding straight through.
"""

from __future__ import annotations

import torch

from analysis.attacks.base import Attack, AttackContext, check_bool, check_float, check_int, straight_through


class PGDAttack(Attack):
    name = "pgd"
    defaults = {"steps": 40, "step_fraction": 0.1, "random_start": False, "keep_best": True}

    def validate(self, s):
        s["steps"] = check_int("steps", s["steps"], 0)
        s["step_fraction"] = check_float("step_fraction", s["step_fraction"], 0.0, 1.0)
        s["random_start"] = check_bool("random_start", s["random_start"])
        s["keep_best"] = check_bool("keep_best", s["keep_best"])
        return s

    def is_trivial(self, s):
        return s["steps"] == 0 and not s["random_start"]

    def run(self, ctx: AttackContext, s):
        step = s["step_fraction"] * (ctx.upper - ctx.lower)
        x = ctx.x.clone()
        if s["random_start"]:
            x = ctx.lower + ctx.uniform(stream=2) * (ctx.upper - ctx.lower)
        # every iterate is clamped into the box, so the projection only matters for integer
        # features (rounding); without them it is skipped (it is the identity)
        has_int = bool(ctx.integer.any())
        best_x = ctx.project(x)
        best_j = None
        for _ in range(s["steps"]):
            xe = x.detach().requires_grad_(True)
            xp = straight_through(ctx, xe) if has_int else xe
            j = ctx.objective_values(xp)
            (g,) = torch.autograd.grad(j.sum(), xe)
            with torch.no_grad():
                if s["keep_best"]:
                    best_x, best_j = _update_best(best_x, best_j, xp.detach(), j.detach())
                x = torch.addcmul(x, step, torch.sign(g)).clamp_(ctx.lower, ctx.upper)
        x = ctx.project(x) if has_int else x
        if s["keep_best"]:
            with torch.no_grad():
                best_x, best_j = _update_best(best_x, best_j, x, ctx.objective_values(x))
            return best_x, {}, {}
        return x, {}, {}


def _update_best(best_x, best_j, x, j):
    if best_j is None:
        return x, j
    better = j > best_j
    # in place: the buffers are ours (best_x starts as a projected copy, best_j as the first j)
    best_x.copy_(torch.where(better.unsqueeze(1), x, best_x))
    return best_x, torch.maximum(j, best_j)
