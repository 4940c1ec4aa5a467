"""Iterated fast gradient sign method (FGSM) generalised to a systematic's envelope.

Nachman & Shimmin, "AI Safety for High Energy Physics" (2019), arXiv:1910.08606: each
iteration moves x -> x (1 + eps sign(grad)) for momenta and masses (relative steps) and
x -> x + eps sign(grad) for angles (absolute steps), with eps = 0.001 and 10 iterations
(total bound 0.01); the gradient is that of the per-event objective (for signal the BCE
towards the background label, i.e. the logit pushed down). Generalisation: after every
step the point is projected into the envelope box, so the total move is also bounded by
the systematic.

Which features step relatively is decided by the feature's *kind* (``momentum``, ``angle``,
``integer``, ``other``, as in the configuration's feature list): angles step absolutely,
everything else relatively. The kinds come from the ``feature_kinds`` setting (a mapping
{feature name: kind} or one kind per feature), else from an attribute ``feature_kinds`` of
the envelope (same forms), else from ``absolute_features`` (names or indices that step
absolutely); without any of them, names containing ``eta``, ``phi``, ``delta_r``, ``dr``,
``angle`` or ``theta`` are taken as angles (a fallback for bare arrays).
"""

from __future__ import annotations

import torch

from hsaudit.errors import AuditError
from hsaudit.attacks.base import Attack, AttackContext, straight_through

ANGLE_MARKERS = ("eta", "phi", "delta_r", "dr", "angle", "theta")


KINDS = ("momentum", "angle", "integer", "other")


def _kinds_per_feature(kinds, feature_names, n_features: int, where: str) -> list[str]:
    if isinstance(kinds, dict):
        if feature_names is None:
            raise AuditError(f"{where} given per feature name needs an envelope with feature_names")
        unknown = sorted(set(kinds) - set(feature_names))
        if unknown:
            raise AuditError(f"{where} names unknown features {unknown}; known: {list(feature_names)}")
        out = [str(kinds.get(n, "other")) for n in feature_names]
    elif isinstance(kinds, (list, tuple)):
        if len(kinds) != n_features:
            raise AuditError(f"{where} must give one kind per feature ({n_features}), got {len(kinds)}")
        out = [str(k) for k in kinds]
    else:
        raise AuditError(f"{where} must be a mapping {{feature: kind}} or a list of kinds, got {kinds!r}")
    bad = sorted({k for k in out if k not in KINDS})
    if bad:
        raise AuditError(f"{where} has unknown kinds {bad}; known: {list(KINDS)}")
    return out


def relative_feature_mask(feature_names, n_features: int, absolute_features=None, feature_kinds=None) -> torch.Tensor:
    """(F,) bool: True where FGSM steps are relative to |x| (see the module docstring)."""
    rel = torch.ones(n_features, dtype=torch.bool)
    if feature_kinds is not None:
        kinds = _kinds_per_feature(feature_kinds, feature_names, n_features, "feature_kinds")
        return torch.tensor([k != "angle" for k in kinds], dtype=torch.bool)
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
    # settings and defaults: hsaudit.config_schema.FGSMSettings

    def validate(self, s):
        if s["eps_abs"] is None:  # absolute steps as large as the relative ones
            s["eps_abs"] = s["eps"]
        fk = s["feature_kinds"]
        if fk is not None:
            vals = fk.values() if isinstance(fk, dict) else fk
            bad = sorted({str(v) for v in vals if v not in KINDS})
            if bad:
                raise AuditError(f"attack setting 'feature_kinds' has unknown kinds {bad}; known: {list(KINDS)}")
        return s

    def is_trivial(self, s):
        return s["eps"] == 0.0 and s["eps_abs"] == 0.0

    def run(self, ctx: AttackContext, s):
        kinds = s["feature_kinds"] if s["feature_kinds"] is not None else getattr(ctx.envelope, "feature_kinds", None)
        rel = relative_feature_mask(ctx.feature_names, ctx.x.shape[1], s["absolute_features"], kinds).to(ctx.device)
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
