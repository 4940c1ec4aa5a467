"""The seed ensembles of the audit: the random control attack (uniform noise inside the
systematic's envelope) over many seeds, per model and systematic (the null; the law task
RandomControl calls this), and the reruns of every stochastic attack with other seeds (the
seed part of its impact's uncertainty; the law task AttackSeedSpread calls this).

Two numbers come from it:
- the random control's *hidden rate*: the fraction of seeds whose result the calibrated
  visibility test calls hidden. Noise inside the envelope is not a mismodelling an analyst
  could see, so a well-calibrated test calls it hidden in nearly every seed;
- the null distribution of attack impacts on mu: how far MC statistics alone move mu when
  events are displaced at random inside the envelope. The largest of several attacks'
  impacts is biased upward, so the verdict compares it with the maximum of the same number
  of draws from this null (hsaudit.verdict).

The seed spread: an attack whose result depends on its seed (a random start, a randomly
initialised or minibatch-trained mapping: ``hsaudit.attack_stage.attack_is_stochastic``)
reports one draw of a random variable. Rerunning it with ``audit.attack_seeds`` other seeds
(default 3; 0 disables) and measuring each result's central impact exactly as the reported
one (Asimov fit of the nominal model, the same judging half and weights) gives the standard
deviation over seeds, which the audit adds in quadrature to the impact's MC-statistics
uncertainty. The random control needs no reruns: its null ensemble is that spread.
"""

from __future__ import annotations

import math

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.samples import EventSample
from hsaudit.seeds import derive_seed
from hsaudit.tables import NOMINAL

DEFAULT_NULL_SEEDS = 20
DEFAULT_ATTACK_SEEDS = 3


def null_seeds(cfg: AnalysisConfig) -> int:
    """``audit.null_seeds``: random-control seeds per (model, systematic) (the schema keeps it >= 2)."""
    return cfg.section("audit").null_seeds


def attack_seeds(cfg: AnalysisConfig) -> int:
    """``audit.attack_seeds``: how many extra seeds each stochastic attack is rerun with (0: no
    seed part)."""
    return cfg.section("audit").attack_seeds


def seed_spread_attacks(cfg: AnalysisConfig, attacks=None) -> list[str]:
    """The attacks (default: the audited ones) that get reruns with other seeds: the
    stochastic ones, except the random control whose null ensemble is its seed spread.
    Empty when ``audit.attack_seeds`` is 0."""
    from hsaudit.attack_stage import attack_is_stochastic, configured_attacks

    if attack_seeds(cfg) == 0:
        return []
    control = random_control_name(cfg)
    names = configured_attacks(cfg) if attacks is None else list(attacks)
    return [a for a in names if a != control and attack_is_stochastic(cfg, a)]


def random_control_name(cfg: AnalysisConfig) -> str:
    """The configured attack of type ``random`` (the first), else the built-in control."""
    from hsaudit.attack_stage import RANDOM_CONTROL

    for name in cfg.attacks:
        if cfg.attack_settings(name).type == "random":
            return name
    return RANDOM_CONTROL


def random_control(model, sample: EventSample, cfg: AnalysisConfig, model_name: str, systematic: str,
                   calibration, outputs: dict) -> dict:
    """Per seed: power, hidden and the attacked events' NN outputs turned into an impact on
    mu (Asimov fit with the nominal model, hsaudit.stats.impacts); and the hidden rate.
    ``outputs``: the model's NN outputs per variant (hsaudit.nn_outputs)."""
    from hsaudit.attack_regions import RegionCuts
    from hsaudit.attack_stage import run_attack, visibility
    from hsaudit.ml.evaluation import predict

    cuts = RegionCuts.from_config(cfg)
    n = null_seeds(cfg)
    name = random_control_name(cfg)
    nn_nominal = outputs[NOMINAL]
    seeds, attacked = [], {}
    for k in range(n):
        seed = derive_seed(cfg.seed, "random-control", model_name, systematic, k)
        outcome = run_attack(model, sample, cfg, model_name, systematic, name, seed=seed)
        vis = visibility(model, sample, outcome.rows, outcome.x_adv, cuts, systematic, calibration,
                         outcome.eval_weights, outcome.regions, nn_nominal=nn_nominal)
        seeds.append({"seed": seed, "power": vis["power"], "power_unc": vis["power_unc"], "hidden": vis["hidden"],
                      "output_shift_wasserstein": float(outcome.metrics["output_shift"]["wasserstein"])})
        attacked[f"seed{k}"] = (outcome.rows, predict(model, outcome.x_adv), outcome.regions, outcome.eval_weights)
    impacts = central_impacts(outputs, sample, cfg, attacked)
    for k, entry in enumerate(seeds):
        entry["impact_mu"], entry["bias_mu"] = impacts[f"seed{k}"]
    hidden = np.array([s["hidden"] for s in seeds])
    rate = float(hidden.mean())
    return {"attack": name, "n_seeds": n, "seeds": seeds, "hidden_rate": rate,
            "hidden_rate_unc": math.sqrt(max(rate * (1 - rate), 1.0 / n) / n),
            "impacts_mu": [s["impact_mu"] for s in seeds]}


def spread_of(biases) -> tuple[float, float]:
    """(standard deviation, its standard error) of signed impacts over seeds: ddof 1, and
    sd / sqrt(2 (n - 1)) (Gaussian approximation); (0, 0) for fewer than two values."""
    b = np.asarray(biases, dtype=np.float64)
    if not np.isfinite(b).all():
        raise AuditError("an attack seed's impact is NaN or inf (a failed fit?)")
    if len(b) < 2:
        return 0.0, 0.0
    sd = float(np.std(b, ddof=1))
    return sd, sd / math.sqrt(2.0 * (len(b) - 1))


def attack_seed_spread(model, sample: EventSample, cfg: AnalysisConfig, model_name: str, systematic: str,
                       attack: str, outputs: dict, calibration=None, reported=None) -> dict:
    """The spread of one attack's impact on mu over seeds (module docstring).

    Reruns ``attack`` with ``audit.attack_seeds`` seeds derived from the configuration seed
    (``outputs``: the model's NN outputs per variant, hsaudit.nn_outputs; ``calibration``:
    for attacks that keep only hidden states); ``reported``: the reported
    result as (rows, attacked NN outputs, regions after, eval weights), whose central impact
    joins the ensemble (the spread is over the reported seed and the extra ones). Every
    member's impact is the central value of hsaudit.stats.impacts (no bootstrap), each
    judged with its own ``eval_weights`` (the other half for universal attacks)."""
    from hsaudit.attack_stage import run_attack, seed_matters
    from hsaudit.ml.evaluation import predict

    if not seed_matters(cfg, sample, systematic, attack):
        # no random numbers are drawn on this sample (e.g. a nuisance field fitted in one batch)
        return {"attack": attack, "n_extra_seeds": 0, "n_seeds": 0, "seeds": [], "reported_bias_mu": None,
                "biases_mu": [], "sd": 0.0, "sd_unc": 0.0, "stochastic": False,
                "note": "the result does not depend on the seed on this sample: not rerun"}
    n = attack_seeds(cfg)
    attacked = {} if reported is None else {"reported": reported}
    seeds = []
    for k in range(n):
        seed = derive_seed(cfg.seed, "attack-seed", model_name, systematic, attack, k)
        outcome = run_attack(model, sample, cfg, model_name, systematic, attack, calibration, seed=seed,
                             nn_nominal=outputs[NOMINAL])
        attacked[f"seed{k}"] = (outcome.rows, predict(model, outcome.x_adv), outcome.regions, outcome.eval_weights)
        seeds.append({"seed": seed})
    impacts = central_impacts(outputs, sample, cfg, attacked) if attacked else {}
    for k, entry in enumerate(seeds):
        entry["impact_mu"], entry["bias_mu"] = impacts[f"seed{k}"]
    biases = [e["bias_mu"] for e in seeds]
    if reported is not None:
        biases = [impacts["reported"][1]] + biases
    sd, sd_unc = spread_of(biases)
    return {"attack": attack, "n_extra_seeds": n, "n_seeds": len(biases), "seeds": seeds,
            "reported_bias_mu": None if reported is None else impacts["reported"][1],
            "biases_mu": biases, "sd": sd, "sd_unc": sd_unc, "stochastic": True}


def central_impacts(outputs: dict, sample: EventSample, cfg: AnalysisConfig, attacked: dict) -> dict:
    """{name: (|bias|, signed bias)} of attack results (rows, attacked outputs, regions after,
    eval weights): the central values of hsaudit.stats.impacts (Asimov fits of the nominal
    model, no bootstrap: an ensemble's spread over seeds is its uncertainty), in one batched
    fit. ``outputs``: the model's NN outputs per variant."""
    from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty

    events = {k: AttackedEvents(rows=r, attacked_outputs=o, regions_after=g, eval_weights=e)
              for k, (r, o, g, e) in attacked.items()}
    table = impacts_with_uncertainty(outputs, sample, cfg, events, n_replicas=0)
    return {k: (float(table.attack[k][0]), float(table.attack_bias[k][0])) for k in events}


def control_seed_spread(control: dict) -> tuple[float, float, int]:
    """(sd, its uncertainty, n seeds) of the random control's signed impacts over its null
    ensemble (RandomControl's result): the seed part of the control's impact."""
    biases = [s["bias_mu"] for s in control["seeds"]]
    sd, sd_unc = spread_of(biases)
    return sd, sd_unc, len(biases)
