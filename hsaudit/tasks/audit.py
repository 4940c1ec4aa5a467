"""AttackAudit: the end-to-end audit. Requires every stage for the configured models,
systematics and attacks and writes the report folder (summary.json, report.html, figures)."""

from __future__ import annotations

import json
from pathlib import Path

import law
import luigi

from hsaudit.tasks.attacks import (AttackBranches, AttackSeedSpread, AttackSystematic, CalibrateChecks, RandomControl,
                                   ValidateAttack)
from hsaudit.tasks.base import AuditTask, atomic_directory, short_hash
from hsaudit.tasks.fits import BuildLikelihood, MeasureImpacts, PseudoExperiments
from hsaudit.tasks.data import MergeFeatures
from hsaudit.tasks.training import EvaluateModel, TrainModel, load_nn_outputs, load_sample


def _json(target) -> dict:
    return json.loads(Path(target.path).read_text())


class AttackAudit(AuditTask):
    """The audit report: for every model and systematic, the quoted impact on mu against the
    largest impact of an attack that data at the analysis luminosity would not see, each with
    its uncertainty, and the verdict."""

    plot_style = luigi.ChoiceParameter(default="neutral", choices=("neutral", "CMS", "ATLAS"),
                                       significant=False, description="figure style (default: neutral)")

    def requires(self):
        return {
            "models": TrainModel.req(self, branch=-1),
            "evaluation": EvaluateModel.req(self, branch=-1),
            "likelihood": BuildLikelihood.req(self, branch=-1),
            "toys": PseudoExperiments.req(self, branch=-1),
            "attacks": AttackSystematic.req(self, branch=-1),
            "checks": ValidateAttack.req(self, branch=-1),
            "calibration": CalibrateChecks.req(self, branch=-1),
            "control": RandomControl.req(self, branch=-1),
            "impacts": MeasureImpacts.req(self, branch=-1),
            **self._spread_requirement(),
        }

    def _spread_requirement(self) -> dict:
        # the seed spread of the stochastic attacks (none when audit.attack_seeds is 0)
        spread = AttackSeedSpread.req(self, branch=-1)
        return {"spread": spread} if spread.get_branch_map() else {}

    def output(self):
        # the report depends on everything upstream: key it by the whole configuration
        return law.LocalDirectoryTarget(self.local_path(short_hash([self.cfg.raw])))

    def run(self):
        from hsaudit import __version__
        from hsaudit.attack_stage import attacked_systematics, configured_attacks
        from hsaudit.audit_stage import assemble, fit_warnings, input_summary
        from hsaudit.report import console_table, make_summary, write_html, write_summary

        cfg = self.cfg
        out = Path(self.output().path)
        with atomic_directory(out) as tmp:
            sample = load_sample(self)
            systematics, attacks = attacked_systematics(cfg), configured_attacks(cfg)
            # the inputs and branch maps are gathered once, then split by model
            inputs = self.input()
            maps = {"toys": PseudoExperiments.req(self, branch=-1).get_branch_map(),
                    "attacks": AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1)),
                    "control": RandomControl.req(self, branch=-1).get_branch_map(),
                    "spread": AttackSeedSpread.req(self, branch=-1).get_branch_map() if "spread" in inputs else {}}
            models = {m: self._model_inputs(i, m, sample, inputs, maps) for i, m in enumerate(cfg.models)}
            style = None if self.plot_style == "neutral" else self.plot_style
            entries, figures = assemble(cfg, sample, models, systematics, attacks, tmp, style)
            cutflows = {t["cutflow"].path.split("/")[-3]: _json(t["cutflow"])
                        for t in MergeFeatures.req(self, branch=-1).output()["collection"].targets.values()}
            summary = make_summary(tool_version=__version__, config=cfg.name, version=self.version,
                                   models=entries, figures=figures, config_path=str(cfg.path),
                                   inputs=input_summary(cutflows), notes=fit_warnings(entries))
            write_summary(summary, tmp / "summary.json")
            write_html(summary, tmp, tmp / "report.html")
        table = console_table(summary)
        print("\n" + table + f"\nreport: {out / 'report.html'}\n")
        self.publish_message(table)

    @staticmethod
    def _model_inputs(mi: int, mname: str, sample, inputs: dict, maps: dict):
        """The outputs of every stage for model ``mname``, as hsaudit.audit_stage.ModelInputs
        (``maps``: the branch maps of the toys, attacks, random controls and seed spreads)."""
        from hsaudit.audit_stage import AttackFiles, ModelInputs
        from hsaudit.stats.toys import ToyResult, merge

        lk = inputs["likelihood"]["collection"].targets[mi]
        chunks: dict = {}
        toy_targets = inputs["toys"]["collection"].targets
        for i, b in maps["toys"].items():
            if b["model"] == mname:
                # a branch holds every scenario of its model and toy chunk: {scenario: file}
                for scenario, target in toy_targets[i].items():
                    chunks.setdefault(scenario, []).append(ToyResult.load(target.path))
        attacks = {}
        for i, b in maps["attacks"].items():
            if b["model"] == mname:
                attacks[(b["systematic"], b["attack"])] = AttackFiles(
                    result=_json(inputs["attacks"]["collection"].targets[i]["result"]),
                    validation=_json(inputs["checks"]["collection"].targets[i]["checks"]),
                    events_path=inputs["attacks"]["collection"].targets[i]["events"].path,
                    outputs_path=inputs["checks"]["collection"].targets[i]["outputs"].path)
        control = {}
        for i, b in maps["control"].items():
            if b["model"] == mname:
                control[b["systematic"]] = _json(inputs["control"]["collection"].targets[i])
        spread = {(b["systematic"], b["attack"]): _json(inputs["spread"]["collection"].targets[i])
                  for i, b in maps["spread"].items() if b["model"] == mname}
        return ModelInputs(
            nn_outputs=load_nn_outputs(inputs["evaluation"]["collection"].targets[mi]["nn_outputs"], sample),
            evaluation=_json(inputs["evaluation"]["collection"].targets[mi]["evaluation"]),
            likelihood=_json(lk["likelihood"]), workspace=_json(lk["workspace"]),
            toys={sc: merge(c) for sc, c in chunks.items()},
            calibration=_json(inputs["calibration"]["collection"].targets[mi]["summary"]),
            impacts=_json(inputs["impacts"]["collection"].targets[mi]),
            attacks=attacks, random_control=control, seed_spread=spread)
