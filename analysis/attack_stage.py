"""The attack stage of the audit: which events an attack may move, the envelope of a
systematic built from the event's own shifted variants, running one configured attack, and
the hidden-ness checks of its result in every region. The law tasks AttackSystematic and
ValidateAttack call these functions.

Conventions (documented in docs/audit.md):
- attacked events are those selected in some region in the nominal variant or in the
  attacked systematic's up or down variant (at most ``audit.max_events`` of them, a seeded
  random subset); after the attack the selection's kinematic cuts are re-applied to their
  attacked features, so events migrate across thresholds as in the standard shift
  (analysis.attack_regions);
- the envelope of a shift systematic is the box spanned by the event's down, nominal and up
  variants, scaled by ``audit.n_sigma``; features the systematic does not move stay fixed;
  integer features stay integer;
- the "shift_output" objective acts on the signal-region candidates (events in the signal
  region in the nominal, up or down variant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.config import AnalysisConfig
from analysis.errors import AuditError
from analysis.samples import EventSample
from analysis.seeds import derive_seed
from analysis.tables import NOMINAL


def feature_kinds(cfg: AnalysisConfig) -> dict[str, str]:
    """Kind of each feature: from the config where given, else the selection's registry."""
    kinds = {f.name: f.kind for f in cfg.features}
    if cfg.input.get("kind", "nanoaod") == "nanoaod":
        from analysis.selection.features import FEATURE_KINDS

        for name in kinds:
            if kinds[name] == "other" and name in FEATURE_KINDS:
                kinds[name] = FEATURE_KINDS[name]
    return kinds


def integer_features(cfg: AnalysisConfig) -> list[str]:
    return [n for n, k in feature_kinds(cfg).items() if k == "integer"]


def attack_rows(sample: EventSample, cfg: AnalysisConfig, systematic: str) -> np.ndarray:
    """Indices of the events an attack in ``systematic``'s envelope may move: selected in the
    nominal or in the systematic's up or down variant, with finite nominal features (an
    event whose nominal features cannot be computed has no envelope). Sorted; a seeded
    subset if there are more than ``audit.max_events``."""
    from analysis.attack_regions import candidates

    selected = np.zeros(len(sample), dtype=bool)
    for region in sample.regions:
        selected |= candidates(sample, region, systematic)
    selected &= np.isfinite(sample.X[NOMINAL]).all(axis=1)
    rows = np.flatnonzero(selected)
    if len(rows) == 0:
        raise AuditError("no selected events to attack: check the selection")
    max_events = int(cfg.audit.get("max_events", len(rows)))
    if max_events <= 0:
        raise AuditError(f"audit.max_events must be positive, got {max_events}")
    if len(rows) > max_events:
        rng = np.random.default_rng(derive_seed(cfg.seed, "attack-rows"))
        rows = np.sort(rng.choice(rows, size=max_events, replace=False))
    return rows


def attacked_systematics(cfg: AnalysisConfig) -> list[str]:
    names = cfg.audit.get("systematics") or cfg.shift_names
    for name in names:
        if cfg.systematics[name].type != "shift":
            raise AuditError(f"audit.systematics: '{name}' is a {cfg.systematics[name].type} systematic; "
                             "only shift systematics have an envelope in feature space")
    return list(names)


def configured_attacks(cfg: AnalysisConfig) -> list[str]:
    names = cfg.audit.get("attacks") or list(cfg.attacks)
    if not names:
        raise AuditError("no attacks configured (config section 'attacks')")
    return list(names)


def build_envelope(sample: EventSample, rows: np.ndarray, cfg: AnalysisConfig, systematic: str):
    from analysis.attacks.envelope import Envelope

    up, down = f"{systematic}_up", f"{systematic}_down"
    if up not in sample.variants:
        raise AuditError(f"systematic '{systematic}' has no shifted variants in the feature tables")
    return Envelope.from_variants(
        sample.X[NOMINAL][rows], sample.X[up][rows], sample.X[down][rows],
        n_sigma=float(cfg.audit.get("n_sigma", 1.0)), integer_features=integer_features(cfg),
        feature_names=sample.features, systematic=systematic, missing="fixed",
    )


def event_keys(sample: EventSample, rows: np.ndarray) -> np.ndarray:
    """One integer per event from (dataset, run, luminosityBlock, event): keys the attacks'
    per-event random numbers, so an event gets the same perturbation in any batch."""
    ids = sample.event_id[rows]
    with np.errstate(over="ignore"):
        key = ids["event"].astype(np.uint64)
        for part in (ids["luminosityBlock"], ids["run"], sample.dataset[rows]):
            key = key * np.uint64(0x100000001B3) ^ part.astype(np.uint64)
    return key


@dataclass
class AttackOutcome:
    rows: np.ndarray        # indices into the sample
    x_adv: np.ndarray       # (len(rows), F) attacked features
    regions: dict           # region -> (len(rows),) membership after the attack
    info: dict              # settings, seed, timing of the attack
    metrics: dict           # fooling ratio, AUC before/after, significance, distance, ...
    extra: dict             # attack-specific objects (e.g. the adversarial network's state)


def run_attack(model, sample: EventSample, cfg: AnalysisConfig, model_name: str, systematic: str,
               attack_name: str) -> AttackOutcome:
    from analysis.attack_regions import candidates, regions_after_attack
    from analysis.attacks.metrics import attack_metrics
    from analysis.attacks.registry import get_attack_class

    if attack_name not in cfg.attacks:
        raise AuditError(f"unknown attack '{attack_name}' (configured: {list(cfg.attacks)})")
    spec = dict(cfg.attacks[attack_name])
    kind = spec.pop("type", attack_name)
    objective = spec.pop("objective", cfg.audit.get("objective", "shift_output"))
    attack = get_attack_class(kind)(**spec)
    rows = attack_rows(sample, cfg, systematic)
    envelope = build_envelope(sample, rows, cfg, systematic)
    x = sample.X[NOMINAL][rows]
    y = sample.y[rows]
    w = sample.weight[rows]
    sr = cfg.signal_region
    mask = candidates(sample, sr, systematic)[rows] if objective == "shift_output" else None
    seed = derive_seed(cfg.seed, "attack", model_name, systematic, attack_name)
    def hidden(x_candidate) -> bool:
        """The audit's own verdict on a candidate result (attacks with keep_hidden use it)."""
        return validate_attack(model, sample, rows, x_candidate, cfg, systematic)["hidden"]

    result = attack.attack(model, x, envelope, objective=objective, labels=y, weights=w, seed=seed,
                           mask=mask, event_keys=event_keys(sample, rows), monitor=hidden)
    x_adv = result.numpy()
    regions = regions_after_attack(sample, rows, x_adv, cfg, systematic)
    metrics = attack_metrics(model, x, x_adv, envelope, labels=y, weights=w,
                             mask=sample.region[(sr, NOMINAL)][rows], mask_after=regions[sr])
    metrics["migration"] = {r: {"entered": int((m & ~sample.region[(r, NOMINAL)][rows]).sum()),
                                "left": int((~m & sample.region[(r, NOMINAL)][rows]).sum())}
                            for r, m in regions.items()}
    return AttackOutcome(rows=rows, x_adv=x_adv, regions=regions, info=result.info, metrics=metrics,
                         extra=result.extra)


def validate_attack(model, sample: EventSample, rows: np.ndarray, x_adv: np.ndarray, cfg: AnalysisConfig,
                    systematic: str, regions_after: dict[str, np.ndarray] | None = None) -> dict:
    """Hidden-ness checks per region: per-feature KS / chi2 / JSD, correlation change, NN
    output in control regions, and the standard +-1 sigma band. In each region the nominal
    events are compared with the attacked events in that region after the attack
    (``regions_after``, default: re-selected with analysis.attack_regions), as the standard
    variants are. The attack is hidden when every check in every region passes."""
    from analysis.attack_regions import regions_after_attack
    from analysis.attacks.checks import ALL_CHECKS, correlation_check, is_hidden, run_checks
    from analysis.ml.evaluation import predict

    if regions_after is None:
        regions_after = regions_after_attack(sample, rows, x_adv, cfg, systematic)
    thresholds = dict(cfg.checks)
    x_nom = sample.X[NOMINAL][rows]
    up = sample.X[f"{systematic}_up"][rows]
    down = sample.X[f"{systematic}_down"][rows]
    w = sample.weight[rows]
    p_nom = predict(model, x_nom)
    p_adv = predict(model, x_adv)
    checks = []
    for region in sample.regions:
        m = sample.region[(region, NOMINAL)][rows]
        ma = np.asarray(regions_after[region], dtype=bool)
        if m.sum() < 2 or ma.sum() < 2:
            continue
        mu = sample.region[(region, f"{systematic}_up")][rows]
        md = sample.region[(region, f"{systematic}_down")][rows]
        control = region != cfg.signal_region
        results = run_checks(
            x_nom[m], x_adv[ma], w[m], sample.features, region,
            outputs_nominal=p_nom[m] if control else None,
            outputs_attacked=p_adv[ma] if control else None,
            up=np.nan_to_num(up[mu]), down=np.nan_to_num(down[md]),
            weights_up=w[mu], weights_down=w[md], thresholds=thresholds, weights_attacked=w[ma],
            which=[c for c in ALL_CHECKS if c != "correlation" and (control or not c.startswith("nn_output"))],
        )
        # correlations: the same events (in the region before or after) with their nominal and
        # attacked features. Comparing the two event sets would measure the MC statistics of
        # the few migrating events (on the demo the random control attack changes the
        # signal-region correlations by 0.02 that way, 0.0016 event by event; threshold 0.006)
        both = m | ma
        results.append(correlation_check(x_nom[both], x_adv[both], w[both], region, thresholds))
        checks += [c.to_dict() for c in results]
    if not checks:
        raise AuditError("no region has enough attacked events to check")
    return {"checks": checks, "hidden": is_hidden(checks), "outputs_nominal": p_nom, "outputs_attacked": p_adv,
            "regions_after": regions_after}
