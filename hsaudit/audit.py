"""The audit's building blocks: toy summaries, the standard shift's NN-output shift, the
flat metrics of an attack, and the figures of the report (assembled by
hsaudit.audit_stage).

Impacts on mu come from hsaudit.stats.impacts (Asimov fits with the nominal model, MC
statistics from bootstrap replicas); the toys here give closure and a cross-check.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from hsaudit.attack_files import AttackedOutputs, AttackedSample
from hsaudit.errors import AuditError


def toy_summary(result) -> dict:
    """Bias, pulls and coverage of one scenario (ToyResult merged over its chunks)."""
    from hsaudit.stats.toys import summarise

    s = summarise(result)
    if not s["n_converged"]:
        raise AuditError("no pseudo-experiment fit converged for a scenario: the model has no "
                         "sensitivity to mu (check the fit channels and the sample sizes)")
    return s


def _finite(x, default=0.0) -> float:
    x = float(x) if x is not None else default
    return x if math.isfinite(x) else default


def direction_entry(s: dict) -> dict:
    return {"bias": _finite(s["bias"]), "pull_mean": _finite(s["pull_mean"]),
            "pull_width": _finite(s["pull_width"], 1.0), "coverage": _finite(s["coverage_68"])}


def standard_toys(toys: dict[str, dict], systematic: str) -> dict:
    """Toy summaries of the standard +-1 sigma truths fitted with the nominal model (the
    nuisance parameter absorbs them: their bias stays close to the nominal one)."""
    return {d: direction_entry(toys[f"{systematic}_{d}"]) for d in ("up", "down")}


def nuisance_impact(model, truth_main: np.ndarray, parameter: str) -> float:
    """The quoted impact of a systematic on mu, as in an impact plot: fit the (Asimov) data,
    fix the systematic's nuisance parameter at its post-fit value +- its post-fit
    uncertainty, refit; the larger |mu shift|. This is the part of the mu uncertainty the
    analysis assigns to the systematic; a hidden mismodelling that biases mu by more is
    not covered by it."""
    from hsaudit.stats.fit import fit_toys

    if parameter not in model.par_names:
        raise AuditError(f"systematic '{parameter}' has no nuisance parameter in the likelihood "
                         f"(parameters: {model.par_names})")
    data = np.asarray(truth_main, dtype=np.float64)[None]
    free = fit_toys(model, data)
    if not free.converged[0]:
        return float("nan")
    j = model.par_names.index(parameter)
    lo, hi = model.bounds[j]
    shifts = []
    for sign in (1.0, -1.0):
        value = float(np.clip(free.params[0, j] + sign * free.uncertainties[0, j], lo, hi))
        fixed = fit_toys(model, data, fixed={parameter: value}, init=free.params[0])
        if fixed.converged[0]:
            shifts.append(abs(float(fixed.mu_hat[0] - free.mu_hat[0])))
    return max(shifts) if shifts else float("nan")


def standard_output_shift(p_nominal, p_variant, weights, in_nominal, in_variant, bins: int = 20) -> dict:
    """Shift of the signal-region NN-output distribution under the standard +-1 sigma variant,
    in the units of an attack's ``output_shift`` (Wasserstein-1 distance, mean shift, L1
    distance of the histograms on ``bins`` uniform bins relative to the nominal total
    weight); the variant has its own region membership (events migrate), hence two masks."""
    from hsaudit.attacks.metrics import output_shift

    w = np.asarray(weights, dtype=np.float64)
    shift = output_shift(p_nominal[in_nominal], p_variant[in_variant], w[in_nominal], bins,
                         weights_after=w[in_variant])
    return {k: _finite(shift[k]) for k in ("wasserstein", "mean_shift", "histogram_l1_relative")}


def flat_metrics(metrics: dict) -> dict:
    """The finite scalar metrics of an attack (fooling ratio, AUCs, significance, output
    shift) as one flat mapping."""
    flat = {}
    for key in ("fooling_ratio", "auc_before", "auc_after"):
        if key in metrics and metrics[key] is not None and math.isfinite(metrics[key]):
            flat[key] = float(metrics[key])
    for group in ("significance", "output_shift"):
        for key, value in (metrics.get(group) or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                flat[f"{group}_{key}"] = float(value)
    return flat


# ------------------------------------------------------------------------------ figures
def figure_impacts(summary_models: dict, directory: Path, style=None) -> list[dict]:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    out = []
    for model, m in summary_models.items():
        systs = list(m["systematics"])
        fig = plotting.impact_summary(
            systs, [m["systematics"][s]["standard_impact_mu"] for s in systs],
            [m["systematics"][s]["largest_hidden_impact_mu"] for s in systs],
            [m["systematics"][s]["verdict"] for s in systs],
            attacks=[m["systematics"][s]["responsible_attack"] for s in systs],
            standard_unc=[m["systematics"][s]["standard_impact_mu_unc"] for s in systs],
            hidden_unc=[m["systematics"][s]["largest_hidden_impact_mu_unc"] for s in systs],
            title=f"model {model}", style=style)
        name = f"impacts_{model}"
        out.append(figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                                f"Quoted impact on mu vs the largest impact of an attack that data would not see, "
                                f"per systematic, each +- its MC-statistics uncertainty, with the verdict "
                                f"(model {model})."))
    return out


def figure_toys(model: str, results: dict, scenarios: list[str], directory: Path, style=None) -> dict:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    pulls, mu_hat = {}, {}
    for sc in scenarios:
        r = results[sc]
        ok = r.converged & np.isfinite(r.sigma_mu) & (r.sigma_mu > 0)
        if ok.sum() < 5:
            continue
        pulls[sc] = (r.mu_hat[ok] - r.mu_true) / r.sigma_mu[ok]
        mu_hat[sc] = r.mu_hat[ok]
    if not pulls:
        raise AuditError(f"model {model}: too few converged toys to plot")
    mu_true = next(iter(results.values())).mu_true
    fig = plotting.toy_distributions(pulls, mu_hat, mu_true=mu_true, title=f"model {model}", style=style)
    name = f"toys_{model}"
    return figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                        f"Pull and mu_hat distributions of the pseudo-experiments per scenario (model {model}); "
                        "each scenario's toys are fitted with the nominal model.")


def figure_significance(model: str, systematic: str, curves: dict, directory: Path, style=None) -> dict:
    """``curves``: {"thresholds", "before", "after": {attack: curve}}"""
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    fig = plotting.significance_curves(curves["thresholds"], curves["before"], curves["after"],
                                       title=f"{model}, {systematic} envelope", style=style)
    name = f"significance_{model}_{systematic}"
    return figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                        f"Relative discovery significance eps_S/sqrt(eps_B) before and after each attack in "
                        f"the {systematic} envelope (model {model}, attacked events in the signal region, re-selected after the attack).")


def figure_feature(model: str, systematic: str, attack: str, region: str, feature: str, arrays: dict,
                   directory: Path, style=None) -> dict:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    fig = plotting.feature_comparison(
        arrays["nominal"], arrays["attacked"], arrays["up"], arrays["down"], bins=25,
        nominal_weights=arrays["w"], attacked_weights=arrays.get("w_attacked", arrays["w"]), up_weights=arrays["w_up"],
        down_weights=arrays["w_down"], feature=feature, region=region, systematic=systematic,
        attack=attack, style=style)
    name = f"feature_{model}_{systematic}_{attack}_{region}_{feature}"
    return figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                        f"{feature} in region {region}: nominal vs attacked ({attack} in the {systematic} "
                        f"envelope, model {model}) with the standard +-1 sigma band.")


def figure_correlation(model: str, systematic: str, attack: str, corr_nom, corr_adv, names, threshold,
                       directory: Path, style=None) -> dict:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    fig = plotting.correlation_change(corr_nom, corr_adv, names, threshold=threshold,
                                      title=f"{attack} in {systematic} ({model})", style=style)
    name = f"correlation_{model}_{systematic}_{attack}"
    return figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                        f"Change of the linear correlation matrix of the features under {attack} in the "
                        f"{systematic} envelope (model {model}).")


def figure_nn_output(model: str, region: str, nominal: dict, variations: dict, signal: list[str],
                     directory: Path, attacked: dict | None = None, attack: str = "", style=None) -> dict:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    fig = plotting.nn_output_with_bands(nominal, variations, bins=20, signal=signal, attacked=attacked,
                                        attack=attack or "attacked", region=region, style=style)
    name = f"nn_output_{model}_{region}"
    return figure_entry(name, plotting.save_figure(fig, directory / "figures", name), directory,
                        f"NN output in region {region} per process with the standard systematic band "
                        f"(model {model})" + (f" and the {attack} attacked total." if attacked else "."))


def figure_lambda_scan(models: dict, penalties: dict, directory: Path, style=None) -> dict:
    from hsaudit import plotting
    from hsaudit.report import figure_entry

    names = list(models)
    lambdas = [max(penalties[n].values()) if penalties[n] else 0.0 for n in names]

    def largest(m, key):
        vals = [s[key] for s in m["systematics"].values() if s[key] is not None]
        return max(vals) if vals else None

    fig = plotting.lambda_scan(
        lambdas, [models[n]["auc"] for n in names], [models[n]["expected_significance"] for n in names],
        [largest(models[n], "largest_hidden_impact_mu") for n in names],
        [largest(models[n], "standard_impact_mu") for n in names], labels=names, style=style)
    return figure_entry("lambda_scan", plotting.save_figure(fig, directory / "figures", "lambda_scan"), directory,
                        "Performance (AUC, expected significance) against robustness (largest standard and "
                        "hidden impact on mu) per model variant, as in the lambda scan of Wunsch et al.")


def model_figures(cfg, mname: str, inputs, model_summary: dict, sample, outputs: dict, report_dir: Path,
                  style=None) -> list[dict]:
    """The per-model figures: toys, significance curves per systematic, the most dangerous
    attack's feature and correlation change, the NN output per region with the standard bands
    and the attacked total. ``inputs``: hsaudit.audit_stage.ModelInputs."""
    from hsaudit.attacks.checks import correlation_matrix
    from hsaudit.roc import significance_curve
    from hsaudit.tables import NOMINAL

    results = inputs.toys
    figures = []
    systs = model_summary["systematics"]
    first = next(iter(systs))
    entry = systs[first]
    best = entry["responsible_attack"] or max(entry["attacks"], key=lambda a: entry["attacks"][a]["impact_mu"])
    scenarios = ["nominal", f"{first}_up", f"{first}_down", f"attack/{first}/{best}"]
    figures.append(figure_toys(mname, results, [s for s in scenarios if s in results], report_dir, style))

    thresholds = np.linspace(0.0, 1.0, 101)
    sr = cfg.signal_region
    for syst, e in systs.items():
        curves = {"thresholds": thresholds, "after": {}}
        for attack in e["attacks"]:
            a = AttackedOutputs.load(inputs.attacks[(syst, attack)].outputs_path, sample.weight)
            rows, p_nom, p_adv, after, ew = a.rows, a.nominal, a.attacked, a.regions, a.eval_weights
            y = sample.y[rows]
            judged = ew != 0
            # signal-region events before the attack and after it (migration included), judged events
            m = sample.region[(sr, NOMINAL)][rows] & judged
            ma = after[sr] & judged
            curves["before"] = significance_curve(p_nom[m], y[m], ew[m], thresholds)["rel_significance"]
            curves["after"][attack] = significance_curve(p_adv[ma], y[ma], ew[ma], thresholds)["rel_significance"]
        curves["before"] = np.nan_to_num(curves["before"])
        curves["after"] = {a: np.nan_to_num(c) for a, c in curves["after"].items()}
        figures.append(figure_significance(mname, syst, curves, report_dir, style))

    # the systematic's most dangerous attack: its features and correlations
    attack = best
    a = AttackedSample.load(inputs.attacks[(first, attack)].events_path, sample.weight)
    rows, x_adv, regions_after, ew = a.rows, a.x_adv, a.regions, a.eval_weights
    judged = ew != 0
    rows, x_adv, ew = rows[judged], x_adv[judged], ew[judged]
    regions_after = {r: v[judged] for r, v in regions_after.items()}
    ks = [c for c in entry["attacks"][attack]["published"] if c["name"] == "ks" and c["region"] == sr and c["feature"]]
    feature = max(ks, key=lambda c: c["statistic"])["feature"] if ks else sample.features[0]
    j = sample.features.index(feature)
    m = sample.region[(sr, NOMINAL)][rows]
    ma = regions_after[sr]
    mu = sample.region[(sr, f"{first}_up")][rows]
    md = sample.region[(sr, f"{first}_down")][rows]
    arrays = {"nominal": sample.X[NOMINAL][rows][m, j], "attacked": x_adv[ma, j], "w": ew[m], "w_attacked": ew[ma],
              "up": sample.X[f"{first}_up"][rows][mu, j], "w_up": ew[mu],
              "down": sample.X[f"{first}_down"][rows][md, j], "w_down": ew[md]}
    figures.append(figure_feature(mname, first, attack, sr, feature, arrays, report_dir, style))
    figures.append(figure_correlation(
        mname, first, attack, correlation_matrix(sample.X[NOMINAL][rows], ew), correlation_matrix(x_adv, ew),
        sample.features, cfg.section("checks").correlation_rel_max, report_dir, style))

    # NN output per process in each region, with the standard bands and the attacked total
    a = AttackedOutputs.load(inputs.attacks[(first, attack)].outputs_path, sample.weight)
    all_rows, all_attacked, all_regions, all_ew = a.rows, a.attacked, a.regions, a.eval_weights
    attacked_out = outputs[NOMINAL].copy()
    attacked_out[all_rows] = all_attacked
    attacked_w = sample.weight.astype(np.float64).copy()
    attacked_w[all_rows] = all_ew
    signal = [n for d, n in enumerate(sample.datasets) if (sample.y[sample.dataset == d] == 1).any()]
    for region in sample.regions:
        membership = sample.region[(region, NOMINAL)].copy()
        membership[all_rows] = all_regions[region]

        def per_process(variant, scores, member=None, weights=None):
            out = {}
            for d, name in enumerate(sample.datasets):
                sel = (sample.dataset == d) & (sample.region[(region, variant)] if member is None else member)
                if sel.any():  # a process absent from the region is not drawn there
                    out[name] = (scores[sel], (sample.weight if weights is None else weights)[sel])
            return out

        nominal = per_process(NOMINAL, outputs[NOMINAL])
        # processes that only migrate into the region under a shift are left out of its band
        variations = {s: {d: {p: v for p, v in per_process(f"{s}_{d}", outputs[f"{s}_{d}"]).items() if p in nominal}
                          for d in ("up", "down")}
                      for s in sample.shift_names()}
        attacked = {p: v for p, v in per_process(NOMINAL, attacked_out, membership, attacked_w).items() if p in nominal}
        if not any(n not in signal for n in nominal):
            continue  # no background in this region: nothing to compare
        figures.append(figure_nn_output(mname, region, nominal, variations, signal, report_dir,
                                        attacked=attacked, attack=f"{attack} ({first})", style=style))
    return figures
