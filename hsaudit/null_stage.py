"""The null ensemble of the audit: the random control attack (uniform noise inside the
systematic's envelope) over many seeds, per model and systematic. The law task
RandomControl calls this.

Two numbers come from it:
- the random control's *hidden rate*: the fraction of seeds whose result the calibrated
  visibility test calls hidden. Noise inside the envelope is not a mismodelling an analyst
  could see, so a well-calibrated test calls it hidden in nearly every seed;
- the null distribution of attack impacts on mu: how far MC statistics alone move mu when
  events are displaced at random inside the envelope. The largest of several attacks'
  impacts is biased upward, so the verdict compares it with the maximum of the same number
  of draws from this null (hsaudit.verdict).
"""

from __future__ import annotations

import math

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.errors import AuditError
from hsaudit.samples import EventSample
from hsaudit.seeds import derive_seed

DEFAULT_NULL_SEEDS = 20


def null_seeds(cfg: AnalysisConfig) -> int:
    n = cfg.audit.get("null_seeds", DEFAULT_NULL_SEEDS)
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise AuditError(f"audit.null_seeds must be an integer >= 2 (20 or more for a verdict), got {n!r}")
    return n


def random_control_name(cfg: AnalysisConfig) -> str:
    """The configured attack of type ``random`` (the first), else the built-in control."""
    from hsaudit.attack_stage import RANDOM_CONTROL

    for name, spec in cfg.attacks.items():
        if spec.get("type", name) == "random":
            return name
    return RANDOM_CONTROL


def random_control(model, sample: EventSample, cfg: AnalysisConfig, model_name: str, systematic: str,
                   calibration) -> dict:
    """Per seed: power, hidden and the attacked events' NN outputs turned into an impact on
    mu (Asimov fit with the nominal model, hsaudit.stats.impacts); and the hidden rate."""
    from hsaudit.attack_stage import run_attack, visibility
    from hsaudit.calibration_stage import nominal_outputs
    from hsaudit.ml.evaluation import predict

    n = null_seeds(cfg)
    name = random_control_name(cfg)
    nn_nominal = nominal_outputs(model, sample)
    seeds, attacked = [], {}
    for k in range(n):
        seed = derive_seed(cfg.seed, "random-control", model_name, systematic, k)
        outcome = run_attack(model, sample, cfg, model_name, systematic, name, seed=seed)
        vis = visibility(model, sample, outcome.rows, outcome.x_adv, cfg, systematic, calibration,
                         outcome.eval_weights, outcome.regions, nn_nominal=nn_nominal)
        seeds.append({"seed": seed, "power": vis["power"], "power_unc": vis["power_unc"], "hidden": vis["hidden"],
                      "output_shift_wasserstein": float(outcome.metrics["output_shift"]["wasserstein"])})
        attacked[f"seed{k}"] = (outcome.rows, predict(model, outcome.x_adv), outcome.regions, outcome.eval_weights)
    impacts = null_impacts(model, sample, cfg, attacked)
    for k, entry in enumerate(seeds):
        entry["impact_mu"], entry["bias_mu"] = impacts[f"seed{k}"]
    hidden = np.array([s["hidden"] for s in seeds])
    rate = float(hidden.mean())
    return {"attack": name, "n_seeds": n, "seeds": seeds, "hidden_rate": rate,
            "hidden_rate_unc": math.sqrt(max(rate * (1 - rate), 1.0 / n) / n),
            "impacts_mu": [s["impact_mu"] for s in seeds]}


def null_impacts(model, sample: EventSample, cfg: AnalysisConfig, attacked: dict) -> dict:
    """{name: (|bias|, signed bias)} of each attacked ensemble member, Asimov fits of the
    nominal model (no bootstrap: the null's spread over seeds is its uncertainty)."""
    from hsaudit.ml.evaluation import outputs_per_variant
    from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty

    outputs = outputs_per_variant(model, {v: sample.X[v] for v in sample.variants}, invalid="nan")
    events = {k: AttackedEvents(rows=r, attacked_outputs=o, regions_after=g, eval_weights=e)
              for k, (r, o, g, e) in attacked.items()}
    table = impacts_with_uncertainty(outputs, sample, cfg, events, n_replicas=0,
                                     seed=derive_seed(cfg.seed, "null-impacts"))
    return {k: (float(table.attack[k][0]), float(table.attack_bias[k][0])) for k in events}
