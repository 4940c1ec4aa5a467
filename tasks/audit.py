"""AttackAudit: the end-to-end audit. Requires every stage for the configured models,
systematics and attacks and writes the report folder (summary.json, report.html, figures)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import law
import luigi
import numpy as np

from analysis.errors import AuditError
from tasks.attacks import AttackBranches, AttackSystematic, ValidateAttack, regions_from_arrays
from tasks.base import AuditTask, short_hash
from tasks.fits import BuildLikelihood, PseudoExperiments
from tasks.training import EvaluateModel, TrainModel, load_sample


class AttackAudit(AuditTask):
    """The audit report: for every model and systematic, the standard +-1 sigma impact on mu
    against the largest impact of an attack that passes every standard check."""

    plot_style = luigi.ChoiceParameter(default="neutral", choices=("neutral", "CMS", "ATLAS"),
                                       significant=False, description="figure style (default: neutral)")

    def requires(self):
        return {
            "evaluation": EvaluateModel.req(self, branch=-1),
            "likelihood": BuildLikelihood.req(self, branch=-1),
            "toys": PseudoExperiments.req(self, branch=-1),
            "attacks": AttackSystematic.req(self, branch=-1),
            "checks": ValidateAttack.req(self, branch=-1),
        }

    def output(self):
        # the report depends on everything upstream: key it by the whole configuration
        h = short_hash([self.cfg.raw])
        return law.LocalDirectoryTarget(self.local_path(h))

    def run(self):
        from analysis import __version__
        from analysis.report import console_table, make_summary, write_html, write_summary

        out = Path(self.output().path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            tmp.mkdir()
            models, figures = self._collect(tmp)
            summary = make_summary(tool_version=__version__, config=self.cfg.name, version=self.version,
                                   models=models, figures=figures, config_path=str(self.cfg.path))
            write_summary(summary, tmp / "summary.json")
            write_html(summary, tmp, tmp / "report.html")
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        table = console_table(summary)
        print("\n" + table + f"\nreport: {out / 'report.html'}\n")
        self.publish_message(table)

    # ------------------------------------------------------------------------------
    def _collect(self, report_dir: Path):
        from analysis import audit
        from analysis.attack_stage import attack_rows, attacked_systematics, configured_attacks
        from analysis.ml.evaluation import outputs_per_variant
        from analysis.tables import NOMINAL
        from analysis.stats.model import Model
        from analysis.stats.significance import asimov_significance

        cfg = self.cfg
        style = None if self.plot_style == "neutral" else self.plot_style
        inputs = self.input()
        toy_targets = inputs["toys"]["collection"].targets
        toy_branches = PseudoExperiments.req(self, branch=-1).get_branch_map()
        attack_map = AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1))
        attack_index = {(b["model"], b["systematic"], b["attack"]): i for i, b in attack_map.items()}
        systematics, attacks = attacked_systematics(cfg), configured_attacks(cfg)
        sample = load_sample(self)

        models, figures = {}, []
        for mi, mname in enumerate(cfg.models):
            evaluation = json.loads(Path(inputs["evaluation"]["collection"].targets[mi].path).read_text())
            lk = json.loads(Path(inputs["likelihood"]["collection"].targets[mi]["likelihood"].path).read_text())
            results = self._toys(mname, toy_branches, toy_targets)
            summaries = {sc: audit.toy_summary(r) for sc, r in results.items()}
            network = self._network(mi, sample)
            outputs = outputs_per_variant(network, {v: sample.X[v] for v in sample.variants}, invalid="nan")
            model = Model(lk["spec"])
            asimov = model.concat_channels({ch: np.asarray(v) for ch, v in lk["truths"]["nominal"].items()},
                                           "nominal truth")
            sr = cfg.signal_region
            systs = {}
            for syst in systematics:
                rows = attack_rows(sample, cfg, syst)
                impact = audit.nuisance_impact(model, asimov, syst)
                standard = audit.standard_toys(summaries, syst)
                impact_failed = not np.isfinite(impact)
                entries = {}
                for attack in attacks:
                    i = attack_index[(mname, syst, attack)]
                    validation = json.loads(Path(inputs["checks"]["collection"].targets[i]["checks"].path).read_text())
                    result = json.loads(Path(inputs["attacks"]["collection"].targets[i]["result"].path).read_text())
                    entries[attack] = audit.attack_entry(summaries, f"attack/{syst}/{attack}", validation, result)
                from analysis.report import systematic_entry

                # the standard shift's effect on the signal-region NN output, on the attacked events
                output_shift = {d: audit.standard_output_shift(
                    outputs[NOMINAL][rows], outputs[f"{syst}_{d}"][rows], sample.weight[rows],
                    sample.region[(sr, NOMINAL)][rows], sample.region[(sr, f"{syst}_{d}")][rows])
                    for d in ("up", "down")}
                # the random control's impact: how far MC statistics alone move mu (noise floor)
                controls = [a for a in attacks if cfg.attacks[a].get("type", a) == "random"]
                control = {"control_impact_mu": max(entries[a]["impact_mu"] for a in controls)} if controls else {}
                systs[syst] = systematic_entry(0.0 if impact_failed else impact, standard, entries,
                                               standard_impact_fit_failed=impact_failed,
                                               description=cfg.systematics[syst].description,
                                               standard_output_shift=output_shift, **control)
            z_asimov = float(asimov_significance(model, mu=lk["mu_true"]))
            models[mname] = {
                "auc": float(evaluation["auc"]),
                # NaN when the Asimov fit fails (no sensitivity): reported as 0 with a flag
                "expected_significance": z_asimov if np.isfinite(z_asimov) else 0.0,
                "expected_significance_fit_failed": not np.isfinite(z_asimov),
                "penalty": dict(cfg.models[mname].get("penalty") or {}),
                "systematics": systs,
            }
            figures += self._model_figures(mname, network, models[mname], results, sample, outputs, attack_index,
                                           inputs, report_dir, style)
        figures += audit.figure_impacts(models, report_dir, style)
        if len(models) > 1:
            penalties = {m: dict(cfg.models[m].get("penalty") or {}) for m in models}
            figures.append(audit.figure_lambda_scan(models, penalties, report_dir, style))
        return models, figures

    @staticmethod
    def _toys(model: str, branches: dict, targets: dict) -> dict:
        from analysis.stats.toys import ToyResult, merge

        chunks: dict = {}
        for i, b in branches.items():
            if b["model"] == model:
                chunks.setdefault(b["scenario"], []).append(ToyResult.load(targets[i].path))
        return {sc: merge(c) for sc, c in chunks.items()}

    def _network(self, mi: int, sample):
        """The trained network of model ``mi``, loaded once for outputs and figures."""
        from analysis.ml.modelio import load_model

        model, _ = load_model(TrainModel.req(self, branch=mi).output()["model"].path,
                              available_features=sample.features)
        return model

    def _model_figures(self, mname, model, model_summary, results, sample, outputs, attack_index, inputs,
                       report_dir, style):
        from analysis import audit
        from analysis.attacks.checks import correlation_matrix
        from analysis.ml.evaluation import predict, significance_curve
        from analysis.tables import NOMINAL

        cfg = self.cfg
        figures = []
        systs = model_summary["systematics"]
        first = next(iter(systs))
        scenarios = ["nominal", f"{first}_up", f"{first}_down"]
        best = systs[first]["responsible_attack"] or max(
            systs[first]["attacks"], key=lambda a: systs[first]["attacks"][a]["impact_mu"])
        scenarios.append(f"attack/{first}/{best}")
        figures.append(audit.figure_toys(mname, results, [s for s in scenarios if s in results], report_dir, style))

        thresholds = np.linspace(0.0, 1.0, 101)
        for syst, entry in systs.items():
            curves = {"thresholds": thresholds, "after": {}}
            for attack in entry["attacks"]:
                i = attack_index[(mname, syst, attack)]
                with np.load(inputs["checks"]["collection"].targets[i]["outputs"].path) as f:
                    rows, p_nom, p_adv, after = f["rows"], f["nominal"], f["attacked"], regions_from_arrays(f)
                y, w = sample.y[rows], sample.weight[rows]
                # signal-region events before the attack and after it (migration included)
                m, ma = sample.region[(cfg.signal_region, NOMINAL)][rows], after[cfg.signal_region]
                curves["before"] = significance_curve(p_nom[m], y[m], w[m], thresholds)["rel_significance"]
                curves["after"][attack] = significance_curve(p_adv[ma], y[ma], w[ma], thresholds)["rel_significance"]
            curves["before"] = np.nan_to_num(curves["before"])
            curves["after"] = {a: np.nan_to_num(c) for a, c in curves["after"].items()}
            figures.append(audit.figure_significance(mname, syst, curves, report_dir, style))

        # the systematic's most dangerous attack: its features and correlations
        attack = best
        i = attack_index[(mname, first, attack)]
        with np.load(inputs["attacks"]["collection"].targets[i]["events"].path) as f:
            rows, x_adv, regions_after = f["rows"], f["x_adv"], regions_from_arrays(f)
        checks = systs[first]["attacks"][attack]["checks"]
        sr = cfg.signal_region
        ks = [c for c in checks if c["name"] == "ks" and c["region"] == sr and c["feature"]]
        feature = max(ks, key=lambda c: c["statistic"])["feature"] if ks else sample.features[0]
        j = sample.features.index(feature)
        m = sample.region[(sr, NOMINAL)][rows]
        ma = regions_after[sr]
        mu = sample.region[(sr, f"{first}_up")][rows]
        md = sample.region[(sr, f"{first}_down")][rows]
        w = sample.weight[rows]
        arrays = {"nominal": sample.X[NOMINAL][rows][m, j], "attacked": x_adv[ma, j], "w": w[m], "w_attacked": w[ma],
                  "up": sample.X[f"{first}_up"][rows][mu, j], "w_up": w[mu],
                  "down": sample.X[f"{first}_down"][rows][md, j], "w_down": w[md]}
        figures.append(audit.figure_feature(mname, first, attack, sr, feature, arrays, report_dir, style))
        figures.append(audit.figure_correlation(
            mname, first, attack, correlation_matrix(sample.X[NOMINAL][rows], w), correlation_matrix(x_adv, w),
            sample.features, float(cfg.checks.get("correlation_rel_max", 0.006)), report_dir, style))

        # NN output per process in each region, with the standard bands and the attacked total
        attacked_out = outputs[NOMINAL].copy()
        attacked_out[rows] = predict(model, x_adv)
        attacked_regions = {}
        for region in sample.regions:
            attacked_regions[region] = sample.region[(region, NOMINAL)].copy()
            attacked_regions[region][rows] = regions_after[region]
        signal = [n for d, n in enumerate(sample.datasets) if (sample.y[sample.dataset == d] == 1).any()]
        for region in sample.regions:
            def per_process(variant, scores, membership=None):
                out = {}
                for d, name in enumerate(sample.datasets):
                    sel = (sample.dataset == d) & (sample.region[(region, variant)] if membership is None
                                                   else membership)
                    if sel.any():  # a process absent from the region is not drawn there
                        out[name] = (scores[sel], sample.weight[sel])
                return out

            nominal = per_process(NOMINAL, outputs[NOMINAL])
            # processes that only migrate into the region under a shift are left out of its band
            variations = {s: {d: {p: v for p, v in per_process(f"{s}_{d}", outputs[f"{s}_{d}"]).items()
                                  if p in nominal}
                              for d in ("up", "down")}
                          for s in sample.shift_names()}
            attacked = per_process(NOMINAL, attacked_out, attacked_regions[region])
            if not any(n not in signal for n in nominal):
                continue  # no background in this region: nothing to compare
            figures.append(audit.figure_nn_output(f"{mname}", region, nominal, variations, signal, report_dir,
                                                  attacked=attacked, attack=f"{attack} ({first})", style=style))
        return figures
