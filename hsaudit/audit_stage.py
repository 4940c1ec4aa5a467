"""The audit's assembly: from the outputs of every stage to the per-model entries of
summary.json and the report's figures. The law task AttackAudit only gathers the inputs
(``AuditInputs``) and calls ``assemble``.

Per model and systematic (docs/audit.md):
- the quoted (standard) impact on mu and every attack's impact, both on expected (Asimov)
  data with the nominal model, each +- its MC-statistics uncertainty (bootstrap replicas,
  hsaudit.stats.impacts); the toys' mean bias difference is reported as a cross-check with
  its toy-statistics uncertainty;
- every attack's power in the calibrated visibility test and its hidden flag; the power of the
  standard up and down shifts; the random control's null ensemble (hidden rate, impacts);
- the verdict (hsaudit.verdict) on the largest hidden impact among the real attacks (the
  random control is the null, not a candidate), gated by the model's nominal closure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsaudit.config import AnalysisConfig
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL


@dataclass
class AttackFiles:
    result: dict                 # attack.json
    validation: dict             # checks.json
    events_path: str             # attacked.npz
    outputs_path: str            # nn_outputs.npz


@dataclass
class ModelInputs:
    nn_outputs: dict             # {variant: (N,) NN output} (EvaluateModel's nn_outputs.npz)
    evaluation: dict             # evaluation.json
    likelihood: dict             # likelihood.json
    workspace: dict              # workspace.json (pyhf)
    toys: dict                   # {scenario: ToyResult}
    calibration: dict            # calibration.json
    impacts: dict                # impacts.json (ImpactTable.to_dict)
    attacks: dict = field(default_factory=dict)         # {(systematic, attack): AttackFiles}
    random_control: dict = field(default_factory=dict)  # {systematic: random_control.json}
    seed_spread: dict = field(default_factory=dict)     # {(systematic, attack): seed_spread.json}


def _finite(x, default=0.0) -> float:
    x = float(x) if x is not None else default
    return x if math.isfinite(x) else default


def control_attacks(cfg: AnalysisConfig, attacks: list[str]) -> list[str]:
    """The configured attacks that are random controls (type random): the null, not candidates."""
    # an attack that is not configured is the built-in control of its name (attack_stage.make_attack)
    return [a for a in attacks if (cfg.attack_settings(a).type if a in cfg.attacks else a) == "random"]


def attack_entry(files: AttackFiles, impact: dict, toys: dict | None, seeds: dict | None = None) -> dict:
    """One ``attacks[ATTACK]`` entry: visibility (power, hidden), impact +- uncertainty and its
    parts, the published statistics, metrics.

    ``seeds``: the spread of the impact over attack seeds, ``{"sd", "sd_unc", "n_seeds",
    "stochastic"}`` (None: a deterministic attack). The impact's uncertainty is its MC
    statistics and the seed spread in quadrature; the toys' standard error belongs to the toy
    cross-check (a different estimate of the same impact), not to the Asimov impact."""
    from hsaudit.audit import flat_metrics

    v = files.validation
    published = [{k: c[k] for k in ("name", "region", "feature", "statistic", "threshold", "passed")}
                 for c in v["published"]]
    for c in published:
        c["statistic"] = _finite(c["statistic"])
    most = (v.get("visibility") or {}).get("most_visible") or {}
    entry = {
        "hidden": bool(v["hidden"]),
        "power": _finite(v["power"]),
        "power_unc": _finite(v["power_unc"]),
        "most_visible_look": most.get("id"),
        "impact_mu": _finite(impact["value"]),
        "impact_mu_unc": math.hypot(_finite(impact["mc_unc"]), _finite(seeds["sd"]) if seeds else 0.0),
        "impact_parts": {"mc_stat": _finite(impact["mc_unc"]), "attack_seeds": _finite(seeds["sd"]) if seeds else 0.0},
        "stochastic": bool(seeds and seeds.get("stochastic", True)),
        "attack_seeds": int(seeds["n_seeds"]) if seeds else 0,
        "attack_seeds_sd_unc": _finite(seeds["sd_unc"]) if seeds else 0.0,
        "bias_mu": _finite(impact.get("bias")),
        "fooling_ratio": _finite(files.result.get("metrics", {}).get("fooling_ratio")),
        "published": published,
        "published_passed": f"{sum(c['passed'] for c in published)}/{len(published)}",
        "metrics": flat_metrics(files.result.get("metrics", {})),
    }
    if toys is not None:
        entry["impact_mu_toys"] = _finite(abs(toys["mean"]))
        entry["impact_mu_toys_unc"] = _finite(toys["se"])
        entry["impact_parts"]["toys"] = _finite(toys["se"])
    return entry


def attack_seed_part(cfg: AnalysisConfig, attack: str, spread: dict | None, control: dict | None) -> dict | None:
    """The seed part of an attack's impact uncertainty: from its AttackSeedSpread result, from
    the null ensemble for the random control, zero over no extra seeds for a stochastic
    attack when ``audit.attack_seeds`` is 0, None for a deterministic attack."""
    from hsaudit.attack_stage import attack_is_stochastic
    from hsaudit.null_stage import control_seed_spread, random_control_name

    if spread is not None:
        return {"sd": spread["sd"], "sd_unc": spread["sd_unc"], "n_seeds": spread["n_seeds"],
                "stochastic": spread.get("stochastic", True)}
    if not attack_is_stochastic(cfg, attack):
        return None
    if attack == random_control_name(cfg) and control is not None:
        sd, sd_unc, n = control_seed_spread(control)
        return {"sd": sd, "sd_unc": sd_unc, "n_seeds": n, "stochastic": True}
    # stochastic, but not rerun (audit.attack_seeds: 0): no seed part measured
    return {"sd": 0.0, "sd_unc": 0.0, "n_seeds": 0, "stochastic": True}


def with_seed_part(difference_unc, seeds: dict | None):
    """The paired (bootstrap) uncertainty of hidden - quoted with the attack's seed spread
    added in quadrature (the seed noise is independent of the MC statistics); None stays None
    (the verdict then combines the two sides' uncertainties, which include the seed part)."""
    if difference_unc is None or seeds is None:
        return difference_unc
    return math.hypot(float(difference_unc), float(seeds["sd"]))


def null_entry(control: dict, n_candidates: int, q: float, seed: int) -> dict:
    from hsaudit.verdict import null_quantile

    # signed biases: the null's mean and spread (hsaudit.verdict.null_quantile)
    biases = np.asarray([s["bias_mu"] for s in control["seeds"]], dtype=np.float64)
    impacts = np.abs(biases)
    k = max(1, int(n_candidates))
    return {
        "attack": control["attack"], "n_seeds": int(control["n_seeds"]),
        "hidden_rate": _finite(control["hidden_rate"]), "hidden_rate_unc": _finite(control["hidden_rate_unc"]),
        "impacts_mu": [_finite(x) for x in impacts], "n_attacks_compared": k, "quantile": q,
        "quantile_95": _finite(null_quantile(biases, k, q=q, seed=seed)),
        "mean_power": _finite(np.mean([s["power"] for s in control["seeds"]])),
    }


def assemble(cfg: AnalysisConfig, sample: EventSample, models: dict[str, ModelInputs], systematics: list[str],
             attacks: list[str], report_dir: Path, style=None) -> tuple[dict, list]:
    """(summary models, figures) of the whole audit."""
    from hsaudit import audit
    from hsaudit.attack_stage import attack_rows
    from hsaudit.report import systematic_entry
    from hsaudit.seeds import derive_seed
    from hsaudit.stats.impacts import toy_difference
    from hsaudit.stats.model import Model
    from hsaudit.stats.significance import asimov_significance
    from hsaudit.verdict import closure

    controls = control_attacks(cfg, attacks)
    candidates = [a for a in attacks if a not in controls]
    settings = verdict_settings(cfg)
    closure_setting = cfg.section("fit").closure.model_dump()
    out, figures = {}, []
    for mname, m in models.items():
        outputs = m.nn_outputs
        lk = m.likelihood
        model = Model(lk["spec"])
        toys = m.toys
        closure_entry = closure(toys["nominal"], lk["mu_true"], closure_setting)
        imp = m.impacts
        systs = {}
        for syst in systematics:
            rows = attack_rows(sample, syst)
            entries, seeds = {}, {}
            for a in attacks:
                key = f"{syst}/{a}"
                impact = dict(imp["attack"][key])
                impact["bias"] = imp["attack_bias"][key]["value"]
                scenario = f"attack/{syst}/{a}"
                td = toy_difference(toys["nominal"], toys[scenario]) if scenario in toys else None
                seeds[a] = attack_seed_part(cfg, a, m.seed_spread.get((syst, a)), m.random_control.get(syst))
                entries[a] = attack_entry(m.attacks[(syst, a)], impact, td, seeds[a])
            standard = imp["standard"].get(syst, {"value": 0.0, "mc_unc": 0.0})
            output_shift = {d: audit.standard_output_shift(
                outputs[NOMINAL][rows], outputs[f"{syst}_{d}"][rows], sample.weight[rows],
                sample.region[(cfg.signal_region, NOMINAL)][rows], sample.region[(cfg.signal_region, f"{syst}_{d}")][rows])
                for d in ("up", "down")}
            power = m.calibration["standard_power"][syst]
            null = null_entry(m.random_control[syst], len(candidates), settings["null_quantile"],
                              derive_seed(cfg.seed, "null-quantile", mname, syst))
            systs[syst] = systematic_entry(
                standard_impact_mu=_finite(standard["value"]), standard_impact_mu_unc=_finite(standard["mc_unc"]),
                standard_power={"up": power["up"], "down": power["down"], "up_unc": power["up_unc"],
                                "down_unc": power["down_unc"]},
                standard=audit.standard_toys({f"{syst}_{d}": audit.toy_summary(toys[f"{syst}_{d}"])
                                              for d in ("up", "down")}, syst),
                attacks=entries, null=null, candidates=candidates, closure_passed=closure_entry["passed"],
                n_sigma=settings["n_sigma"],
                difference_unc={a: with_seed_part(imp.get("difference_unc", {}).get(f"{syst}/{a}"), seeds[a])
                                for a in attacks},
                description=cfg.systematics[syst].description,
                standard_output_shift=output_shift)
        for syst, e in systs.items():
            if e["verdict"] != "covered" and e["responsible_attack"] is not None:
                e.update(augmented_workspace(cfg, sample, m, outputs, mname, syst, e["responsible_attack"], report_dir))
        z = float(asimov_significance(model, mu=lk["mu_true"]))
        cal = m.calibration
        out[mname] = {
            "auc": float(m.evaluation["auc"]),
            "expected_significance": z if np.isfinite(z) else 0.0,
            "expected_significance_fit_failed": not np.isfinite(z),
            "penalty": dict(cfg.models[mname].get("penalty") or {}),
            "closure": closure_entry,
            "calibration": {**{k: cal[k] for k in ("alpha", "p_threshold", "n_toys", "n_test_toys", "false_alarm_rate",
                                                   "false_alarm_unc", "n_looks", "per_look_mean_false_alarm",
                                                   "per_look_mean_false_alarm_unc", "per_look_fraction_outside_2p5_se",
                                                   "looks_by_kind")},
                            "power_max": cal["settings"]["power_max"]},
            "expected_sigma_mu": _finite(imp.get("nominal_sigma_mu")),
            "systematics": systs,
        }
        figures += audit.model_figures(cfg, mname, m, out[mname], sample, outputs, report_dir, style)
    figures += audit.figure_impacts(out, report_dir, style)
    if len(out) > 1:
        penalties = {n: dict(cfg.models[n].get("penalty") or {}) for n in out}
        figures.append(audit.figure_lambda_scan(out, penalties, report_dir, style))
    return out, figures


def verdict_settings(cfg: AnalysisConfig) -> dict:
    """``audit.verdict`` of the typed audit section (hsaudit.config_schema.VerdictSettings:
    keys, ranges and defaults): {"n_sigma", "null_quantile"}; the closure gate is
    ``fit.closure`` (hsaudit.verdict.closure_settings)."""
    verdict = cfg.section("audit").verdict
    return {"n_sigma": float(verdict.n_sigma), "null_quantile": float(verdict.null_quantile)}


def augmented_workspace(cfg: AnalysisConfig, sample: EventSample, m: ModelInputs, outputs: dict, mname: str,
                        systematic: str, attack: str, report_dir: Path) -> dict:
    """Write the model's pyhf workspace with the worst hidden mismodelling of ``systematic``
    as an extra shape nuisance parameter (hsaudit.stats.augment) into the report folder;
    return the summary keys (path, expected sigma_mu without and with it)."""
    import json

    from hsaudit.attack_files import AttackedOutputs
    from hsaudit.fit_stage import row_table
    from hsaudit.files import write_atomically
    from hsaudit.stats.augment import attacked_sample_templates, augment_workspace as augment

    events = AttackedOutputs.load(m.attacks[(systematic, attack)].outputs_path).events()
    templates = attacked_sample_templates(m.likelihood, row_table(outputs[NOMINAL], sample, cfg), events)
    if not templates:
        return {"augmented_workspace": None}
    workspace, info = augment(m.workspace, templates, systematic)
    rel = f"workspaces/{mname}_{systematic}.json"
    write_atomically(Path(report_dir) / rel, lambda fh: fh.write(json.dumps(workspace, indent=1).encode()))
    return {"augmented_workspace": rel, "augmented_parameter": info["parameter"],
            "expected_sigma_mu_without_hidden": _finite(info["sigma_mu_without"]),
            "expected_sigma_mu_with_hidden": _finite(info["sigma_mu_with"])}


def input_summary(cutflows: dict[str, dict]) -> dict:
    """Per dataset, from MergeFeatures' cutflow.json: selected events, yield and the weight
    sanity figures (effective sample size, largest single-event weight share, problems)."""
    out = {}
    for name, c in cutflows.items():
        ws = c.get("weight_sanity") or {}
        def number(key):
            return None if ws.get(key) is None else _finite(ws[key])

        out[name] = {"n_selected": ws.get("n_selected"), "yield": number("sum_weights"),
                     "effective_sample_size": number("effective_sample_size"),
                     "max_weight_share": number("max_weight_share"),
            "problems": [str(p) for p in ws.get("problems", [])]}
    return out


def fit_warnings(models: dict) -> list[str]:
    """Flags of degenerate fits, for the report's notes: nominal pull widths far from 1 and
    identical impacts across model variants (a sign that the fit sees none of the network)."""
    notes = []
    for name, m in models.items():
        c = m["closure"]
        if abs(c["pull_width"] - 1.0) > max(0.2, 3 * c.get("pull_width_unc", 0.0)):
            notes.append(f"model {name}: the nominal toys' pull width is {c['pull_width']:.2f} +- "
                         f"{c.get('pull_width_unc', 0.0):.2f}, far from 1: the fit's uncertainties are not trustworthy")
    names = list(models)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            sa, sb = models[a]["systematics"], models[b]["systematics"]
            common = [s for s in sa if s in sb]
            if common and all(math.isclose(sa[s]["standard_impact_mu"], sb[s]["standard_impact_mu"], rel_tol=1e-9)
                              for s in common):
                notes.append(f"models {a} and {b} have identical quoted impacts for every systematic: "
                             "the fit does not depend on the network (check the inputs and the weights)")
    return notes
