"""Iterated fast gradient sign method (FGSM) generalised to a systematic's envelope.

Nachman & Shimmin, "AI Safety for High Energy Physics" (2019), arXiv:1910.08606: each
iteration moves x -> x (1 + eps sign(grad)) for momenta and masses (relative steps) and
x -> x + eps sign(grad) for angles (absolute steps), with eps = 0.001 and 10 iterations
(total bound 0.01); the gradient is that of the per-event objective (for signal the BCE
towards the background label, i.e. the logit pushed down). Generalisation: after every
step the point is projected into the envelope box, so the total move is also bounded by
the systematic. Features are relative unless named as angles: names containing ``eta``,
``phi``, ``delta_r``, ``dr``, ``angle`` or ``theta`` (or listed in ``absolute_features``).
"""

from __future__ import annotations

import torch

from analysis.errors import AuditError
from analysis.attacks.base import Attack, AttackContext, check_float, check_int, straight_through

ANGLE_MARKERS = ("eta", "phi", "delta_r", "dr", "angle", "theta")


def relative_feature_mask(feature_names, n_features: int, absolute_features=None) -> torch.Tensor:
    """(F,) bool: True where FGSM steps are relative to |x|."""
    rel = torch.ones(n_features, dtype=torch.bool)
    if absolute_features is not None:
        for a in absolute_features:
            if isinstance(a, str):
                if feature_names is None or a not in feature_names:
                    raise AuditError(f"absolute feature '{a}' is not a feature name; known: {feature_names}")
                rel[list(feature_names).index(a)] = False
            else:
                if not 0 <= int(a) < n_features:
                    raise AuditError(f"absolute feature index {a} out of range for {n_features} features")
                rel[int(a)] = False
    elif feature_names is not None:
        for j, name in enumerate(feature_names):
            low = name.lower()
            if any(m in low for m in ANGLE_MARKERS):
                rel[j] = False
    return rel


class FGSMAttack(Attack):
    name = "fgsm"
    defaults = {"eps": 0.001, "iterations": 10, "eps_abs": None, "absolute_features": None}

    def validate(self, s):
        s["eps"] = check_float("eps", s["eps"], 0.0)
        s["eps_abs"] = s["eps"] if s["eps_abs"] is None else check_float("eps_abs", s["eps_abs"], 0.0)
        s["iterations"] = check_int("iterations", s["iterations"], 1)
        af = s["absolute_features"]
        if af is not None and not isinstance(af, (list, tuple)):
            raise AuditError(f"attack setting 'absolute_features' must be a list of names or indices, got {af!r}")
        return s

    def is_trivial(self, s):
        return s["eps"] == 0.0 and s["eps_abs"] == 0.0

    def run(self, ctx: AttackContext, s):
        rel = relative_feature_mask(ctx.feature_names, ctx.x.shape[1], s["absolute_features"]).to(ctx.device)
        x = ctx.x.clone()
        for _ in range(s["iterations"]):
            xe = x.detach().requires_grad_(True)
            j = ctx.objective_values(straight_through(ctx, xe))
            (g,) = torch.autograd.grad(j.sum(), xe)
            with torch.no_grad():
                step = torch.where(rel, s["eps"] * x.abs(), torch.full_like(x, s["eps_abs"]))
                # continuous relaxation clamped to the box; integer rounding at the end
                x = torch.minimum(torch.maximum(x + step * torch.sign(g), ctx.lower), ctx.upper)
        return ctx.project(x), {}, {}
