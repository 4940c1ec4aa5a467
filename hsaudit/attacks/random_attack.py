"""Random perturbation, uniform inside the envelope box: the control.

Any real attack must move the NN output much more than this (docs/science.md section
3.1). Integer features get a (nearly uniform) random integer inside their box. The random
numbers are counter-based (seed, event key, feature), so results do not depend on batching.
"""

from __future__ import annotations

from hsaudit.attacks.base import Attack, AttackContext


class RandomAttack(Attack):
    """x_adv = lower + u * (upper - lower), u ~ U(0, 1) per event and feature, scaled by
    ``fraction`` around the nominal point (1 = the whole box, 0 = no change)."""

    name = "random"
    # settings and defaults: hsaudit.config_schema.RandomSettings

    def is_trivial(self, s):
        return s["fraction"] == 0.0

    def run(self, ctx: AttackContext, s):
        u = ctx.uniform(stream=1)
        f = s["fraction"]
        lo = ctx.x + f * (ctx.lower - ctx.x)
        hi = ctx.x + f * (ctx.upper - ctx.x)
        return ctx.project(lo + u * (hi - lo)), {}, {}
