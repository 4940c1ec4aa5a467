"""Projected gradient descent (PGD) in the per-event, per-feature envelope box.

Madry et al. (2018) PGD with a weighted L-infinity ball: the per-feature ``eps`` of the
Adversarial Robustness Toolbox becomes the per-event box [lower, upper] of the systematic
(docs/science.md section 3.3). Sign-gradient ascent of the per-event objective with a
step of ``step_fraction`` times the box width, projection after every step, optional uniform
random start inside the box (counter-based noise, so independent of batching). The best
point seen per event is returned (the objective is evaluated at every iterate anyway).
An event whose iterate did not move in a step (it sits in a corner of its box with the same
gradient signs) would repeat that step for good, so it leaves the batch: same result, and
the remaining steps cost only the events still moving.
Integer features follow a continuous relaxation and are rounded by the projection; the
gradient passes the rounding straight through.
"""

from __future__ import annotations

import torch

from hsaudit.attacks.base import (
    Attack, AttackContext, model_logits, straight_through,
)
from hsaudit.attacks.envelope import project_box


class PGDAttack(Attack):
    name = "pgd"
    # settings and defaults: hsaudit.config_schema.PGDSettings

    def is_trivial(self, s):
        return s["steps"] == 0 and not s["random_start"]

    def run(self, ctx: AttackContext, s):
        width = ctx.upper - ctx.lower
        step_all = s["step_fraction"] * width
        x = ctx.x.clone()
        if s["random_start"]:
            x = ctx.lower + ctx.uniform(stream=2) * width
        # every iterate is clamped into the box, so the projection only matters for integer
        # features (rounding); without them it is skipped (it is the identity)
        has_int = bool(ctx.integer.any())
        x = ctx.project(x) if has_int else x.clamp_(ctx.lower, ctx.upper)
        best_x = x.clone()
        best_j = None
        # an event whose iterate did not move in a step sees the same gradient at the same
        # point again, so it stays there for good: it leaves the batch (the result is the same,
        # the remaining steps are cheaper once events sit in a corner of their box)
        live = torch.arange(x.shape[0], device=x.device)
        xl, lo, hi, stp, sgn = x, ctx.lower, ctx.upper, step_all, ctx.sign
        for _ in range(s["steps"]):
            xe = xl.detach().requires_grad_(True)
            xp = straight_through(_Rows(ctx, lo, hi), xe) if has_int else xe
            j = sgn * _logits(ctx, xp)
            (g,) = torch.autograd.grad(j.sum(), xe)
            with torch.no_grad():
                if s["keep_best"]:
                    best_j = _update_best_rows(best_x, best_j, live, xp.detach(), j.detach())
                x_new = torch.addcmul(xl, stp, torch.sign(g)).clamp_(lo, hi)
                moving = (x_new != xl).any(1)  # before x is written: xl may be a view of it
                x[live] = x_new
                if not bool(moving.all()):
                    live, xl, lo, hi, stp, sgn = live[moving], x_new[moving], lo[moving], hi[moving], stp[moving], sgn[moving]
                else:
                    xl = x_new
                if len(live) == 0:
                    break
        x = ctx.project(x) if has_int else x
        if s["keep_best"]:
            if len(live) > 0 and best_j is not None:
                with torch.no_grad():
                    xf = x[live]
                    _update_best_rows(best_x, best_j, live, xf, sgn * _logits(ctx, xf))
            elif best_j is None:
                return x, {}, {}
            return best_x, {}, {}
        return x, {}, {}


class _Rows:
    """The projection of a subset of the context's events (box rows ``lower``/``upper``)."""

    def __init__(self, ctx, lower, upper):
        self.lower, self.upper, self.integer = lower, upper, ctx.integer

    def project(self, x):
        return project_box(x, self.lower, self.upper, self.integer)


def _logits(ctx: AttackContext, x: torch.Tensor) -> torch.Tensor:
    return model_logits(ctx.model, x)


def _update_best_rows(best_x, best_j, live, x, j):
    """Best-so-far per event; ``best_j`` is a full-size (N,) buffer, ``live`` the rows of x."""
    if best_j is None:
        best_j = torch.full((best_x.shape[0],), -float("inf"), dtype=j.dtype, device=j.device)
    if len(live) == best_x.shape[0]:  # every event still in the batch: no index arithmetic
        better = j > best_j
        best_x.copy_(torch.where(better.unsqueeze(1), x, best_x))
        return torch.maximum(j, best_j)
    better = j > best_j[live]
    rows = live[better]
    best_x[rows] = x[better]
    best_j[rows] = j[better]
    return best_j
