"""Adversarial attacks on the classifier, confined to systematic envelopes, with hidden-ness
checks and metrics (docs/science.md sections 3-4, docs/audit.md "A mismodelling is a property of the simulation",
"Attack", "Check").

Modules
-------
``envelope``             ``Envelope`` (from shifted variants or declared uncertainties; box and
                         nuisance-space views).
``base``                 the ``Attack`` interface, ``AttackResult``, objectives, counter-based
                         per-event randomness.
``random_attack``        uniform inside the envelope (the control).
``fgsm``                 iterated FGSM (Nachman & Shimmin 2019), projected into the envelope.
``pgd``                  PGD with projection onto the per-event per-feature box.
``nuisance_pgd``         PGD over a per-event nuisance parameter theta in [-k, k].
``nuisance_field``       a smooth bounded theta(x) of named physical inputs (universal).
``adversarial_network``  a learned universal g(x) = x + bounded delta(x) (Nachman & Shimmin).
``conservattack``        CONSERVAttack (Bechtle et al. 2026), vectorised.
``checks``               KS / chi2 / JSD / correlation / NN-output / band checks, ``is_hidden``.
``metrics``              fooling ratio, AUC, eps_S/sqrt(eps_B), yield and output shifts, distance.
``registry``             attack names -> classes (``make_attack``, ``run_attack``).
``toy``                  a small synthetic problem for tests and benchmarks.

No law/luigi imports here.
"""

from hsaudit.attacks.adversarial_network import (
    AdversarialGenerator,
    AdversarialNetworkAttack,
    apply_generator,
    load_generator,
    save_generator,
)
from hsaudit.attacks.base import OBJECTIVES, Attack, AttackResult, model_probabilities
from hsaudit.attacks.checks import (
    ALL_CHECKS,
    DEFAULT_THRESHOLDS,
    CheckResult,
    band_checks,
    correlation_check,
    feature_checks,
    is_hidden,
    nn_output_checks,
    resolve_thresholds,
    run_checks,
)
from hsaudit.attacks.conservattack import CONSERVAttack
from hsaudit.attacks.envelope import Envelope
from hsaudit.attacks.fgsm import FGSMAttack
from hsaudit.attacks.metrics import (
    attack_metrics,
    envelope_distance,
    fooling_ratio,
    output_shift,
    significance_curve,
    significance_summary,
    weighted_auc,
    yield_shift,
)
from hsaudit.attacks.nuisance_field import NuisanceField, NuisanceFieldAttack, apply_nuisance_field
from hsaudit.attacks.nuisance_pgd import NuisancePGDAttack
from hsaudit.attacks.pgd import PGDAttack
from hsaudit.attacks.random_attack import RandomAttack
from hsaudit.attacks.registry import ATTACKS, attack_from_config, attack_names, get_attack_class, make_attack, run_attack

__all__ = [
    "ALL_CHECKS", "ATTACKS", "DEFAULT_THRESHOLDS", "OBJECTIVES",
    "AdversarialGenerator", "AdversarialNetworkAttack", "Attack", "AttackResult", "CONSERVAttack", "CheckResult",
    "Envelope", "FGSMAttack", "NuisanceField", "NuisanceFieldAttack", "NuisancePGDAttack", "PGDAttack", "RandomAttack",
    "apply_generator", "apply_nuisance_field", "attack_from_config", "attack_metrics", "attack_names", "band_checks", "correlation_check",
    "envelope_distance", "feature_checks", "fooling_ratio", "get_attack_class", "is_hidden", "load_generator",
    "make_attack", "model_probabilities", "nn_output_checks", "output_shift", "resolve_thresholds", "run_attack",
    "run_checks", "save_generator", "significance_curve", "significance_summary", "weighted_auc", "yield_shift",
]
