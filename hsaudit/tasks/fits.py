"""From NN outputs to physics numbers: BuildLikelihood (per model), MeasureImpacts (per
model: every impact on mu with its MC-statistics uncertainty) and PseudoExperiments (per
model and toy chunk, every scenario's toys fitted together; chunks merge exactly: closure
and the toy cross-check)."""

from __future__ import annotations

import os

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.jsonio import to_json
from hsaudit.seeds import derive_seed
from hsaudit.tasks.attacks import AttackBranches, ValidateAttack
from hsaudit.tasks.base import AuditWorkflow, atomic_path, short_hash, write_json_atomic
from hsaudit.tasks.training import EvaluatedModelWorkflow, EvaluateModel, ModelWorkflow, load_nn_outputs, load_sample


class BuildLikelihood(EvaluatedModelWorkflow):
    """Per model: binned likelihood from NN-output templates (pyhf workspace exported) and the
    expected yields of the nominal and standard +-1 sigma scenarios."""

    def output(self):
        h = short_hash([self.model_hash(), self.cfg.raw.get("fit"), self.cfg.raw.get("systematics")])
        return {
            "likelihood": self.local_target(self.model_name, h, "likelihood.json"),
            "workspace": self.local_target(self.model_name, h, "workspace.json"),
            "rows": self.local_target(self.model_name, h, "rows.npz"),
        }

    def run(self):
        from hsaudit.fit_stage import build_likelihood, row_table
        from hsaudit.stats.model import Model

        sample = load_sample(self)
        outputs = load_nn_outputs(self.input()["nn_outputs"], sample)
        lk = build_likelihood(outputs, sample, self.cfg)
        model_ = Model(lk["spec"])
        workspace = model_.to_pyhf_workspace(observed=model_.concat_channels(lk["truths"]["nominal"]))
        out = self.output()
        with atomic_path(out["rows"], suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **row_table(outputs["nominal"], sample, self.cfg))
        write_json_atomic(out["workspace"], to_json(workspace))
        write_json_atomic(out["likelihood"], to_json(lk))


class PseudoExperiments(AuditWorkflow):
    """Toys drawn from each scenario's truth (nominal, +-1 sigma, attacked templates), each
    fitted with the nominal model. One branch per (model, toy chunk): the likelihood is
    loaded and the model built once, and the toys of all its scenarios are fitted together
    in batched engine calls. The output is one file per scenario, keyed by the content
    hashes of what that scenario depends on: a branch whose attack changed refits only the
    scenarios whose file is missing and reuses the others."""

    def create_branch_map(self):
        cfg = self.cfg
        fit = cfg.section("fit")
        n_toys = fit.n_toys
        per_chunk = fit.toys_per_chunk or n_toys
        if n_toys <= 0 or per_chunk <= 0:
            raise AuditError("fit.n_toys and fit.toys_per_chunk must be positive")
        branches = []
        for m in cfg.models:
            for first in range(0, n_toys, per_chunk):
                branches.append(dict(model=m, first_toy=first, n_toys=min(per_chunk, n_toys - first)))
        return dict(enumerate(branches))

    def scenarios(self) -> list[str]:
        from hsaudit.attack_stage import attacked_systematics, configured_attacks
        from hsaudit.fit_stage import scenarios, variant_systematics

        cfg = self.cfg
        attacks = [(s, a) for s in attacked_systematics(cfg) for a in configured_attacks(cfg)]
        return scenarios(cfg, variant_systematics(cfg), attacks)

    def _model_branch(self) -> int:
        return list(self.cfg.models).index(self.branch_data["model"])

    def _attack_branches(self) -> dict[str, int]:
        """{attack scenario of this branch's model: ValidateAttack branch}, from one pass over
        the attack branch map."""
        bm = AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1))
        index = {(b["model"], b["systematic"], b["attack"]): i for i, b in bm.items()}
        model, out = self.branch_data["model"], {}
        for sc in self.scenarios():
            if sc.startswith("attack/"):
                _, syst, attack = sc.split("/")
                if (model, syst, attack) not in index:
                    raise AuditError(f"no attack branch for scenario {sc}")
                out[sc] = index[(model, syst, attack)]
        return out

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["likelihoods"] = BuildLikelihood.req(self, branch=-1)
        reqs["attacks"] = ValidateAttack.req(self, branch=-1)
        return reqs

    def requires(self):
        reqs = {"likelihood": BuildLikelihood.req(self, branch=self._model_branch())}
        for sc, ab in self._attack_branches().items():
            reqs[sc] = ValidateAttack.req(self, branch=ab)
        return reqs

    def output(self):
        """{scenario: toy-result file} of this branch's model and toy chunk."""
        b = self.branch_data
        lk = BuildLikelihood.req(self, branch=self._model_branch())
        lk_hash = os.path.basename(os.path.dirname(lk.output()["likelihood"].path))
        attacks = self._attack_branches()
        out = {}
        for sc in self.scenarios():
            # keyed by the upstream content hashes, not their paths: a path carries the config
            # tag, so a copy of the configuration with one attack changed would rerun every
            # scenario; the attacked NN outputs depend on the attack (its hash), not on the
            # checks' settings
            parts = [lk_hash, self.cfg.seed, dict(model=b["model"], scenario=sc, first_toy=b["first_toy"],
                                                  n_toys=b["n_toys"])]
            if sc in attacks:
                parts.append(ValidateAttack.req(self, branch=attacks[sc]).attack_hash())
            out[sc] = self.local_target(b["model"], sc.replace("/", "__"), short_hash(parts),
                                        f"toys_{b['first_toy']}.npz")
        return out

    def run(self):
        from hsaudit.fit_stage import pseudo_experiment_stage

        b = self.branch_data
        inp = self.input()
        # the scenarios whose result is there already (same content hash) are not refitted
        todo = {sc: t.path for sc, t in self.output().items() if not t.exists()}
        if todo:
            done = pseudo_experiment_stage(
                inp["likelihood"]["likelihood"].path, todo, n_toys=b["n_toys"], first_toy=b["first_toy"],
                # one seed for every scenario of a model: common random numbers
                seed=derive_seed(self.cfg.seed, "toys", b["model"]),
                rows_path=inp["likelihood"]["rows"].path,
                attack_paths={sc: inp[sc]["outputs"].path for sc in todo if sc.startswith("attack/")},
                max_iterations=self.cfg.section("fit").max_iterations)
            rate = f", {done['fits'] / max(done['seconds'], 1e-9):.0f} fits/s"
        else:
            rate = ""
        message = (f"model {b['model']}, toys {b['first_toy']}-{b['first_toy'] + b['n_toys'] - 1}: "
                   f"fitted {len(todo)} of {len(self.output())} scenarios{rate}")
        print(f"PseudoExperiments {message}")
        self.publish_message(message)


class MeasureImpacts(ModelWorkflow):
    """Per model: the quoted impact of every systematic and the impact of every attack on mu,
    both on expected (Asimov) data with the nominal model, each with its MC-statistics
    uncertainty from a Poisson bootstrap of the event weights (hsaudit.stats.impacts)."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["evaluations"] = EvaluateModel.req(self, branch=-1)
        reqs["attacks"] = ValidateAttack.req(self, branch=-1)
        return reqs

    def _attack_branches(self) -> dict:
        bm = AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1))
        return {i: b for i, b in bm.items() if b["model"] == self.model_name}

    def requires(self):
        reqs = {"evaluation": EvaluateModel.req(self, branch=self.branch)}
        reqs.update({f"attack{i}": ValidateAttack.req(self, branch=i) for i in self._attack_branches()})
        return reqs

    def output(self):
        attacks = [ValidateAttack.req(self, branch=i).attack_hash() for i in sorted(self._attack_branches())]
        h = short_hash([self.model_hash(), self.cfg.raw.get("fit"), self.cfg.raw.get("systematics"), attacks,
                        self.cfg.seed])
        return self.local_target(self.model_name, h, "impacts.json")

    def run(self):
        from hsaudit.attack_files import AttackedOutputs
        from hsaudit.stats.impacts import impacts_with_uncertainty

        sample = load_sample(self)
        inputs = self.input()
        outputs = load_nn_outputs(inputs["evaluation"]["nn_outputs"], sample)
        events = {}
        for i, b in self._attack_branches().items():
            events[f"{b['systematic']}/{b['attack']}"] = AttackedOutputs.load(inputs[f"attack{i}"]["outputs"].path).events()
        n_replicas = self.cfg.section("fit").n_replicas
        table = impacts_with_uncertainty(outputs, sample, self.cfg, events, n_replicas=n_replicas,
                                         seed=derive_seed(self.cfg.seed, "bootstrap", self.model_name))
        result = table.to_dict()
        # the uncertainty of each attack's impact minus its systematic's quoted impact, from the
        # same replicas (both sides share the replica weights: their noise partly cancels)
        diff = {k: table.difference_unc(k, k.split("/")[0]) for k in events if k.split("/")[0] in table.standard}
        result["difference_unc"] = {k: (v if np.isfinite(v) else None) for k, v in diff.items()}
        write_json_atomic(self.output(), to_json(result))
