"""Attack names -> attack classes, as used in the configuration's ``attacks`` section.

A config entry such as ``pgd: {type: pgd, steps: 40, step_fraction: 0.1}`` becomes
``make_attack("pgd", steps=40, step_fraction=0.1)`` (``attack_from_config`` strips ``type``).
"""

from __future__ import annotations

from hsaudit.errors import AuditError
from hsaudit.attacks.adversarial_network import AdversarialNetworkAttack
from hsaudit.attacks.base import Attack
from hsaudit.attacks.conservattack import CONSERVAttack
from hsaudit.attacks.fgsm import FGSMAttack
from hsaudit.attacks.nuisance_field import NuisanceFieldAttack
from hsaudit.attacks.nuisance_pgd import NuisancePGDAttack
from hsaudit.attacks.pgd import PGDAttack
from hsaudit.attacks.random_attack import RandomAttack

ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls
    for cls in (RandomAttack, FGSMAttack, PGDAttack, NuisancePGDAttack, NuisanceFieldAttack, AdversarialNetworkAttack,
                CONSERVAttack)
}


def attack_names() -> list[str]:
    return sorted(ATTACKS)


def get_attack_class(name: str) -> type[Attack]:
    if name not in ATTACKS:
        raise AuditError(f"unknown attack '{name}'; known attacks: {attack_names()}")
    return ATTACKS[name]


def make_attack(name: str, **settings) -> Attack:
    """An attack instance with validated settings (unknown settings -> AuditError)."""
    return get_attack_class(name)(**settings)


def attack_from_config(entry: dict) -> Attack:
    """From a config entry {type: <name>, objective: <objective>, <setting>: <value>, ...}
    (``objective`` belongs to the audit's call, not to the attack's settings: ignored here)."""
    if not isinstance(entry, dict) or "type" not in entry:
        raise AuditError(f"an attack config entry needs a 'type' (one of {attack_names()}), got {entry!r}")
    settings = {k: v for k, v in entry.items() if k not in ("type", "objective")}
    return make_attack(entry["type"], **settings)


def run_attack(name: str, model, x, envelope, objective: str = "shift_output", labels=None, weights=None,
               seed: int = 0, mask=None, event_keys=None, objective_mask=None, **settings):
    """One-call form: ``make_attack(name, **settings).attack(...)``."""
    atk = make_attack(name, **settings)
    return atk.attack(model, x, envelope, objective, labels=labels, weights=weights, seed=seed, mask=mask,
                      event_keys=event_keys, objective_mask=objective_mask)
