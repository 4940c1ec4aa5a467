"""The attack stage of the audit: which events an attack moves, the envelope of a
systematic built from the event's own shifted variants, running one configured attack, and
deciding whether its result would be visible in data. The law tasks AttackSystematic and
ValidateAttack call these functions.

Conventions (documented in docs/audit.md):
- a mismodelling is a property of the simulation, not of a region: every attack moves every
  selected event (selected in some region in the nominal variant or in the attacked
  systematic's up or down variant, with finite nominal features); nothing is subsampled, so
  no attack is diluted. After the attack the selection's kinematic cuts are re-applied to
  the attacked features, so events migrate across thresholds as in the standard shift
  (hsaudit.attack_regions);
- the objective (default "shift_output": push the NN output towards signal) is evaluated on
  the signal-region candidates (events in the signal region in the nominal, up or down
  variant). Event-wise attacks (random, FGSM, PGD, nuisance PGD, CONSERVAttack) optimise
  each event's own objective, which does not depend on the event's region: they move
  control-region events by the same rule. Universal attacks (one learned mapping: the
  adversarial network, the nuisance field) are fitted on the signal-region candidates and
  applied to every event;
- no optimising against the judge: a universal attack is fitted (and, with keep_hidden,
  monitored) on one half of the events (``fitting_half``: a hash of the event ids) and
  judged, like its impact, on the other half, whose weights count twice
  (``AttackOutcome.eval_weights``). Event-wise attacks fit nothing across events, so they
  are judged on every event with its own weight;
- the envelope of a shift systematic is the box spanned by the event's down, nominal and up
  variants, scaled by ``audit.n_sigma``; features the systematic does not move stay fixed;
  integer features stay integer;
- *hidden* means: the calibrated data-visibility test (hsaudit.visibility), at the
  analysis luminosity, would notice the attacked simulation with a probability (power) of
  at most ``checks.power_max``; the published statistics (KS, chi2, JSD, correlation change,
  standard band) are reported next to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.attack_regions import RegionCuts
from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.samples import EventSample
from hsaudit.attack_files import region_arrays, regions_from_arrays  # noqa: F401  (the files' layout)
from hsaudit.seeds import derive_seed
from hsaudit.tables import NOMINAL


def feature_kinds(cfg: AnalysisConfig) -> dict[str, str]:
    """Kind of each feature: from the config where given, else the selection's registry."""
    kinds = {f.name: f.kind for f in cfg.features}
    if cfg.section("input").kind == "nanoaod":
        from hsaudit.selection.features import FEATURE_KINDS

        for name in kinds:
            if kinds[name] == "other" and name in FEATURE_KINDS:
                kinds[name] = FEATURE_KINDS[name]
    return kinds


def integer_features(cfg: AnalysisConfig) -> list[str]:
    return [n for n, k in feature_kinds(cfg).items() if k == "integer"]


@dataclass(frozen=True)
class AttackStageSettings:
    """What the attack stage reads of the configuration, built once at its boundary
    (``from_config``) and handed to the functions that need it: the envelope's size and
    integer features, the signal region, the region cuts re-applied after an attack and the
    published statistics' thresholds. The configured attacks themselves are made by
    ``make_attack``."""

    signal_region: str
    n_sigma: float                        # audit.n_sigma: the envelope in units of the systematic
    integer_features: tuple[str, ...]     # features that stay integer (feature_kinds)
    region_cuts: RegionCuts               # hsaudit.attack_regions
    published_thresholds: dict            # checks: thresholds of the papers' statistics

    @classmethod
    def from_config(cls, cfg: AnalysisConfig) -> "AttackStageSettings":
        audit = cfg.section("audit")
        return cls(signal_region=cfg.signal_region, n_sigma=float(audit.n_sigma),
                   integer_features=tuple(integer_features(cfg)), region_cuts=RegionCuts.from_config(cfg),
                   published_thresholds=published_thresholds(cfg))


def attack_rows(sample: EventSample, systematic: str) -> np.ndarray:
    """Indices of the events an attack in ``systematic``'s envelope moves: every event
    selected in some region in the nominal or in the systematic's up or down variant, with
    finite nominal features (an event whose nominal features cannot be computed has no
    envelope). Sorted. All of them: a subset would dilute the mismodelling."""
    from hsaudit.attack_regions import candidates

    selected = np.zeros(len(sample), dtype=bool)
    for region in sample.regions:
        selected |= candidates(sample, region, systematic)
    selected &= np.isfinite(sample.X[NOMINAL]).all(axis=1)
    rows = np.flatnonzero(selected)
    if len(rows) == 0:
        raise AuditError("no selected events to attack: check the selection")
    return rows


def fitting_half(keys: np.ndarray) -> np.ndarray:
    """(N,) bool: the half of the events a universal attack is fitted on, from a hash of each
    event's key (the same event is always in the same half, whatever else is attacked)."""
    from hsaudit.hashing import splitmix64

    return (splitmix64(np.asarray(keys, dtype=np.uint64)) >> np.uint64(17)) & np.uint64(1) == np.uint64(0)


def attacked_systematics(cfg: AnalysisConfig) -> list[str]:
    names = cfg.section("audit").systematics or cfg.shift_names
    for name in names:
        if cfg.systematics[name].type != "shift":
            raise AuditError(f"audit.systematics: '{name}' is a {cfg.systematics[name].type} systematic; "
                             "only shift systematics have an envelope in feature space")
    return list(names)


def configured_attacks(cfg: AnalysisConfig) -> list[str]:
    names = cfg.section("audit").attacks or list(cfg.attacks)
    if not names:
        raise AuditError("no attacks configured (config section 'attacks')")
    return list(names)


# bump when the rule that turns variants into an envelope changes: attack outputs are keyed by it
ENVELOPE_RULE = "continuous-variants-v2"


def continuous_variant(nominal: np.ndarray, variant: np.ndarray, integer: list[int]) -> np.ndarray:
    """The variant where it is a continuous deformation of the event, else the nominal.

    Where a shift changes an integer feature of an event (a jet crosses the pt threshold, so
    the jet multiplicity changes), the variant is another object configuration, not a scaled
    version of the event: the features of the appearing or vanishing object jump between a
    filler and a real value (jet1_eta 0 -> 1.7, jet1_pt 0 -> 31 GeV). A box between the two
    contains unphysical events (a 15 GeV jet in an event with no jet), which even the random
    control fills, so that direction is dropped for that event: the attack may deform the event
    continuously but not invent or remove objects."""
    out = np.array(variant, dtype=nominal.dtype, copy=True)
    if integer:
        jumps = (np.nan_to_num(variant[:, integer], nan=np.inf) != nominal[:, integer]).any(axis=1)
        out[jumps] = nominal[jumps]
    return out


def build_envelope(sample: EventSample, rows: np.ndarray, n_sigma: float, integer_features: tuple[str, ...],
                   systematic: str):
    """The systematic's envelope of the attacked rows: the box spanned by each event's down,
    nominal and up variants (continuous deformations only, see ``continuous_variant``),
    scaled by ``n_sigma`` (``audit.n_sigma``); ``integer_features`` stay integer."""
    from hsaudit.attacks.envelope import Envelope

    up, down = f"{systematic}_up", f"{systematic}_down"
    if up not in sample.variants:
        raise AuditError(f"systematic '{systematic}' has no shifted variants in the feature tables")
    nominal = sample.X[NOMINAL][rows]
    integer = [sample.features.index(f) for f in integer_features if f in sample.features]
    return Envelope.from_variants(
        nominal, continuous_variant(nominal, sample.X[up][rows], integer),
        continuous_variant(nominal, sample.X[down][rows], integer),
        n_sigma=float(n_sigma), integer_features=list(integer_features),
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
    rows: np.ndarray          # indices into the sample
    x_adv: np.ndarray         # (len(rows), F) attacked features
    regions: dict             # region -> (len(rows),) membership after the attack
    eval_weights: np.ndarray  # (len(rows),) weights with which the result is judged and measured
    info: dict                # settings, seed, timing of the attack
    metrics: dict             # fooling ratio, AUC before/after, significance, distance, ...
    extra: dict               # attack-specific objects (e.g. the adversarial network's state)


def evaluation_weights(weights: np.ndarray, fit_half: np.ndarray | None) -> np.ndarray:
    """Weights with which an attack's result is judged: its own weight for every event, or,
    for an attack fitted on ``fit_half``, twice the weight on the other half and zero on the
    fitted half (the same expected yields, from events the attack never saw)."""
    w = np.asarray(weights, dtype=np.float64)
    return w.copy() if fit_half is None else np.where(fit_half, 0.0, 2.0 * w)


RANDOM_CONTROL = "random"


def make_attack(cfg: AnalysisConfig, attack_name: str):
    """(attack object, objective) of a configured attack."""
    from hsaudit.attacks.registry import get_attack_class

    if attack_name == RANDOM_CONTROL and attack_name not in cfg.attacks:
        # the random control always exists: the null ensemble needs it even where the
        # configuration lists no attack of that name
        return get_attack_class("random")(), cfg.section("audit").objective
    if attack_name not in cfg.attacks:
        raise AuditError(f"unknown attack '{attack_name}' (configured: {list(cfg.attacks)})")
    typed = cfg.attack_settings(attack_name)
    spec = {k: v for k, v in cfg.attacks[attack_name].items() if k not in ("type", "objective")}
    kind = typed.type
    objective = typed.objective or cfg.section("audit").objective
    if kind == "fgsm":
        # relative steps for momenta, absolute for angles: by the feature's kind, not its name
        spec.setdefault("feature_kinds", feature_kinds(cfg))
    return get_attack_class(kind)(**spec), objective


# attack types whose result does not depend on the seed (gradient steps from the nominal
# event, no random numbers); a type not named here or in STOCHASTIC_RULES counts as
# stochastic (its seed spread is then measured, and is 0 if it does not use the seed)
DETERMINISTIC_ATTACKS = ("fgsm", "nuisance_pgd", "conservattack")
# type -> settings -> does the result depend on the seed?
STOCHASTIC_RULES = {
    "random": lambda s: True,                      # uniform noise in the envelope
    "pgd": lambda s: bool(s["random_start"]),      # a random start inside the box
    "adversarial_network": lambda s: True,         # random initialisation, shuffled minibatches
    "nuisance_field": lambda s: s["steps"] > 0,    # random minibatches once the fit sample exceeds one batch
}


def attack_is_stochastic(cfg: AnalysisConfig, attack_name: str) -> bool:
    """Does the configured attack's result depend on its seed? (The seed spread of its impact
    is then part of the impact's uncertainty, hsaudit.null_stage.)"""
    attack, _ = make_attack(cfg, attack_name)
    if attack.is_trivial(attack.settings) or attack.name in DETERMINISTIC_ATTACKS:
        return False
    rule = STOCHASTIC_RULES.get(attack.name)
    return True if rule is None else bool(rule(attack.settings))


def seed_matters(cfg: AnalysisConfig, sample: EventSample, systematic: str, attack_name: str) -> bool:
    """Does the attack's result depend on its seed on this sample? ``attack_is_stochastic``,
    except for a nuisance field whose fit sample fits into one minibatch (then every step uses
    every event: no random numbers are drawn)."""
    if not attack_is_stochastic(cfg, attack_name):
        return False
    attack, objective = make_attack(cfg, attack_name)
    if attack.name != "nuisance_field":
        return True
    rows = attack_rows(sample, systematic)
    fit_half = fitting_half(event_keys(sample, rows)) if attack.universal else None
    # an upper bound of the events the field is fitted on (the objective's class may select fewer)
    n_fit = int(objective_events(sample, cfg.signal_region, systematic, rows, objective, fit_half).sum())
    return n_fit > attack.settings["train_batch_size"]


def objective_events(sample: EventSample, signal_region: str, systematic: str, rows: np.ndarray, objective: str,
                     fit_half: np.ndarray | None) -> np.ndarray:
    """(len(rows),) bool: the events whose objective an attack optimises (module docstring):
    the candidates of ``signal_region`` for ``shift_output``, else all; only the fitting half
    for a universal attack."""
    from hsaudit.attack_regions import candidates

    mask = candidates(sample, signal_region, systematic)[rows] if objective == "shift_output" \
        else np.ones(len(rows), bool)
    return mask if fit_half is None else mask & fit_half


def run_attack(model, sample: EventSample, cfg: AnalysisConfig, model_name: str, systematic: str,
               attack_name: str, calibration=None, seed: int | None = None,
               nn_nominal: np.ndarray | None = None) -> AttackOutcome:
    """Run one configured attack on every selected event (module docstring). ``calibration``
    (hsaudit.visibility.Calibration of this model) is needed by attacks that keep only
    hidden states (``keep_hidden``); ``seed`` overrides the derived seed (random-control
    ensembles); ``nn_nominal``: the model's nominal NN output of every row (hsaudit.nn_outputs;
    predicted when not given)."""
    from hsaudit.attack_regions import regions_after_attack
    from hsaudit.attacks.metrics import attack_metrics

    settings = AttackStageSettings.from_config(cfg)
    attack, objective = make_attack(cfg, attack_name)
    rows = attack_rows(sample, systematic)
    envelope = build_envelope(sample, rows, settings.n_sigma, settings.integer_features, systematic)
    x = sample.X[NOMINAL][rows]
    y = sample.y[rows]
    w = sample.weight[rows]
    keys = event_keys(sample, rows)
    sr = settings.signal_region
    fit_half = fitting_half(keys) if attack.universal else None
    objective_mask = objective_events(sample, sr, systematic, rows, objective, fit_half)
    eval_w = evaluation_weights(w, fit_half)
    if seed is None:
        seed = derive_seed(cfg.seed, "attack", model_name, systematic, attack_name)

    monitor = None if calibration is None else hidden_monitor(model, sample, rows, settings.region_cuts, systematic,
                                                                 calibration,
                                                                 w if fit_half is None else np.where(fit_half, 2.0 * w, 0.0),
                                                                 nn_nominal)

    result = attack.attack(model, x, envelope, objective=objective, labels=y, weights=w, seed=seed,
                           objective_mask=objective_mask, event_keys=keys, monitor=monitor)
    x_adv = result.numpy()
    regions = regions_after_attack(sample, rows, x_adv, settings.region_cuts, systematic)
    judged = eval_w != 0
    in_sr = sample.region[(sr, NOMINAL)][rows]
    metrics = attack_metrics(model, x[judged], x_adv[judged], envelope.subset(np.flatnonzero(judged)),
                             labels=y[judged], weights=eval_w[judged], mask=in_sr[judged],
                             mask_after=regions[sr][judged])
    metrics["migration"] = {r: {"entered": int((m & ~sample.region[(r, NOMINAL)][rows]).sum()),
                                "left": int((~m & sample.region[(r, NOMINAL)][rows]).sum())}
                            for r, m in regions.items()}
    metrics["n_events_moved"] = int((x_adv != x).any(axis=1).sum())
    metrics["n_events_judged"] = int(judged.sum())
    return AttackOutcome(rows=rows, x_adv=x_adv, regions=regions, eval_weights=eval_w, info=result.info,
                         metrics=metrics, extra=result.extra)


def hidden_monitor(model, sample: EventSample, rows: np.ndarray, cuts: RegionCuts, systematic: str, calibration,
                   monitor_weights: np.ndarray, nn_nominal: np.ndarray | None = None):
    """The monitor of ``keep_hidden``: x_candidate -> hidden? (regions after the candidate
    from the region ``cuts``) judged with ``monitor_weights``
    (twice the weight on the fitting half, zero elsewhere), so that the final verdict, on the
    other half, is on statistics the attack did not select on."""
    from hsaudit.calibration_stage import nominal_outputs

    if nn_nominal is None:
        nn_nominal = nominal_outputs(model, sample)

    def monitor(x_candidate) -> bool:
        return visibility(model, sample, rows, x_candidate, cuts, systematic, calibration, monitor_weights,
                          nn_nominal=nn_nominal)["hidden"]

    return monitor


def shifted_sample(sample: EventSample, rows: np.ndarray, x_adv: np.ndarray,
                   regions_after: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The whole sample's nominal features and region membership with the attacked rows
    replaced by their attacked features and membership after the attack."""
    x = sample.X[NOMINAL].copy()
    x[rows] = x_adv
    regions = {}
    for r in sample.regions:
        m = sample.region[(r, NOMINAL)].copy()
        m[rows] = np.asarray(regions_after[r], dtype=bool)
        regions[r] = m
    return x, regions


def nominal_regions(sample: EventSample) -> dict[str, np.ndarray]:
    return {r: sample.region[(r, NOMINAL)] for r in sample.regions}


def visibility(model, sample: EventSample, rows: np.ndarray, x_adv: np.ndarray, cuts: RegionCuts,
               systematic: str, calibration, eval_weights: np.ndarray | None = None,
               regions_after: dict[str, np.ndarray] | None = None, nn_nominal: np.ndarray | None = None,
               nn_attacked: np.ndarray | None = None) -> dict:
    """Would data at the analysis luminosity show the attacked simulation? The calibrated
    global test's power (hsaudit.visibility) for the attacked rows judged with
    ``eval_weights`` (default their weights); ``hidden`` when the power is at most
    ``checks.power_max``. ``regions_after``: the rows' membership after the attack (default:
    from the region ``cuts``). ``nn_nominal``: the model's nominal output of every row;
    ``nn_attacked``: its output of the attacked rows (each computed when not given)."""
    from hsaudit.attack_regions import regions_after_attack
    from hsaudit.calibration_stage import looks_use_nn_output, nominal_outputs
    from hsaudit.ml.evaluation import predict

    if regions_after is None:
        regions_after = regions_after_attack(sample, rows, x_adv, cuts, systematic)
    x_full, regions_full = shifted_sample(sample, rows, x_adv, regions_after)
    e_full = sample.weight.astype(np.float64).copy()
    if eval_weights is not None:
        e_full[rows] = eval_weights
    nn_full = None
    if looks_use_nn_output(calibration.looks):
        nn_full = (nominal_outputs(model, sample) if nn_nominal is None else nn_nominal).copy()
        nn_full[rows] = predict(model, x_adv) if nn_attacked is None else nn_attacked
    shift = calibration.looks.shift(x_full, regions_full, nn_output_shifted=nn_full, eval_weights=e_full)
    result = calibration.power(shift)
    return {"hidden": bool(result.hidden), "power": float(result.power), "power_unc": float(result.power_unc),
            "visibility": result.to_dict()}


def published_checks(sample: EventSample, rows: np.ndarray, x_adv: np.ndarray, signal_region: str,
                     thresholds: dict, systematic: str, regions_after: dict[str, np.ndarray],
                     eval_weights: np.ndarray, outputs_nominal: np.ndarray,
                     outputs_attacked: np.ndarray) -> list[dict]:
    """The papers' statistics per region (KS, chi2, JSD, correlation change, NN output in
    control regions, standard band) against their published thresholds: reported so that
    the papers' criteria can be read off; the verdict is the calibrated test's. Computed on
    the judged events (non-zero ``eval_weights``); ``outputs_nominal`` / ``outputs_attacked``:
    the model's outputs of the rows before and after the attack; ``thresholds``: the
    published thresholds (``published_thresholds``); the NN output is looked at outside
    ``signal_region`` only."""
    from hsaudit.attacks.checks import ALL_CHECKS, correlation_check, run_checks

    judged = np.asarray(eval_weights) != 0
    rows, x_adv, w = rows[judged], x_adv[judged], np.asarray(eval_weights)[judged]
    regions_after = {r: np.asarray(m, dtype=bool)[judged] for r, m in regions_after.items()}
    x_nom = sample.X[NOMINAL][rows]
    up = sample.X[f"{systematic}_up"][rows]
    down = sample.X[f"{systematic}_down"][rows]
    p_nom = np.asarray(outputs_nominal)[judged]
    p_adv = np.asarray(outputs_attacked)[judged]
    checks = []
    for region in sample.regions:
        m = sample.region[(region, NOMINAL)][rows]
        ma = regions_after[region]
        if m.sum() < 2 or ma.sum() < 2:
            continue
        mu = sample.region[(region, f"{systematic}_up")][rows]
        md = sample.region[(region, f"{systematic}_down")][rows]
        control = region != signal_region
        results = run_checks(
            x_nom[m], x_adv[ma], w[m], sample.features, region,
            outputs_nominal=p_nom[m] if control else None,
            outputs_attacked=p_adv[ma] if control else None,
            up=np.nan_to_num(up[mu]), down=np.nan_to_num(down[md]),
            weights_up=w[mu], weights_down=w[md], thresholds=thresholds, weights_attacked=w[ma],
            which=[c for c in ALL_CHECKS if c != "correlation" and (control or not c.startswith("nn_output"))],
        )
        # correlations: the same events (in the region before or after) with their nominal and
        # attacked features; between the two event sets it would measure the MC statistics of
        # the migrating events
        both = m | ma
        results.append(correlation_check(x_nom[both], x_adv[both], w[both], region, thresholds))
        checks += [c.to_dict() for c in results]
    return checks


def published_thresholds(cfg: AnalysisConfig) -> dict:
    """The ``checks`` keys of the published statistics (the rest configure the calibrated test)."""
    return cfg.section("checks").published_thresholds()


def validate_attack(model, sample: EventSample, rows: np.ndarray, x_adv: np.ndarray, cfg: AnalysisConfig,
                    systematic: str, calibration, regions_after: dict[str, np.ndarray] | None = None,
                    eval_weights: np.ndarray | None = None, nn_nominal: np.ndarray | None = None) -> dict:
    """The calibrated visibility of an attack result (``hidden``, ``power``) and the
    published statistics, with the NN outputs of the attacked rows before and after
    (``nn_nominal``: the model's nominal output of every row, predicted when not given)."""
    from hsaudit.attack_regions import regions_after_attack
    from hsaudit.ml.evaluation import predict

    settings = AttackStageSettings.from_config(cfg)
    if regions_after is None:
        regions_after = regions_after_attack(sample, rows, x_adv, settings.region_cuts, systematic)
    if eval_weights is None:
        eval_weights = sample.weight[rows].astype(np.float64)
    # both predicted on the same rows in the same batches: an event the attack did not move has
    # exactly its nominal output (the KS statistics are sensitive to last-bit differences of ties)
    p_nom = predict(model, sample.X[NOMINAL][rows])
    p_adv = predict(model, x_adv)
    result = visibility(model, sample, rows, x_adv, settings.region_cuts, systematic, calibration, eval_weights,
                        regions_after, nn_nominal=nn_nominal, nn_attacked=p_adv)
    result["published"] = published_checks(sample, rows, x_adv, settings.signal_region,
                                           settings.published_thresholds, systematic, regions_after, eval_weights,
                                           p_nom, p_adv)
    result["outputs_nominal"] = p_nom
    result["outputs_attacked"] = p_adv
    result["regions_after"] = regions_after
    return result
