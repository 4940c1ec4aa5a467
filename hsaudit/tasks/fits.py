"""From NN outputs to physics numbers: BuildLikelihood (per model), MeasureImpacts (per
model: every impact on mu with its MC-statistics uncertainty) and PseudoExperiments (per
model, scenario and toy chunk; chunks merge exactly: closure and the toy cross-check)."""

from __future__ import annotations

import json
import os

import numpy as np

from hsaudit.errors import AuditError
from hsaudit.seeds import derive_seed
from hsaudit.tasks.attacks import AttackBranches, ValidateAttack
from hsaudit.tasks.base import AuditWorkflow, atomic_path, short_hash, write_json_atomic
from hsaudit.tasks.training import ModelWorkflow, TrainedModelWorkflow, TrainModel, load_sample


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class BuildLikelihood(TrainedModelWorkflow):
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
        from hsaudit.ml.evaluation import outputs_per_variant
        from hsaudit.ml.modelio import load_model
        from hsaudit.stats.model import Model

        sample = load_sample(self)
        model, _ = load_model(self.input()["model"].path, available_features=sample.features)
        outputs = outputs_per_variant(model, {v: sample.X[v] for v in sample.variants}, invalid="nan")
        lk = build_likelihood(outputs, sample, self.cfg)
        model_ = Model(lk["spec"])
        workspace = model_.to_pyhf_workspace(observed=model_.concat_channels(lk["truths"]["nominal"]))
        out = self.output()
        with atomic_path(out["rows"], suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **row_table(outputs["nominal"], sample, self.cfg))
        write_json_atomic(out["workspace"], _json_ready(workspace))
        write_json_atomic(out["likelihood"], _json_ready(lk))


class PseudoExperiments(AuditWorkflow):
    """Toys drawn from each scenario's truth (nominal, +-1 sigma, attacked templates), each
    fitted with the nominal model; one branch per (model, scenario, toy chunk)."""

    def create_branch_map(self):
        from hsaudit.attack_stage import attacked_systematics, configured_attacks
        from hsaudit.fit_stage import scenarios, variant_systematics

        cfg = self.cfg
        n_toys = int(cfg.fit.get("n_toys", 1000))
        per_chunk = int(cfg.fit.get("toys_per_chunk", n_toys))
        if n_toys <= 0 or per_chunk <= 0:
            raise AuditError("fit.n_toys and fit.toys_per_chunk must be positive")
        attacks = [(s, a) for s in attacked_systematics(cfg) for a in configured_attacks(cfg)]
        branches = []
        for m in cfg.models:
            for sc in scenarios(cfg, variant_systematics(cfg), attacks):
                for first in range(0, n_toys, per_chunk):
                    branches.append(dict(model=m, scenario=sc, first_toy=first,
                                         n_toys=min(per_chunk, n_toys - first)))
        return dict(enumerate(branches))

    def _model_branch(self) -> int:
        return list(self.cfg.models).index(self.branch_data["model"])

    def _attack_branch(self) -> int | None:
        b = self.branch_data
        if not b["scenario"].startswith("attack/"):
            return None
        _, syst, attack = b["scenario"].split("/")
        bm = AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1))
        for i, ab in bm.items():
            if ab == dict(model=b["model"], systematic=syst, attack=attack):
                return i
        raise AuditError(f"no attack branch for scenario {b['scenario']}")

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["likelihoods"] = BuildLikelihood.req(self, branch=-1)
        reqs["attacks"] = ValidateAttack.req(self, branch=-1)
        return reqs

    def requires(self):
        reqs = {"likelihood": BuildLikelihood.req(self, branch=self._model_branch())}
        ab = self._attack_branch()
        if ab is not None:
            reqs["attack"] = ValidateAttack.req(self, branch=ab)
        return reqs

    def output(self):
        b = self.branch_data
        lk = BuildLikelihood.req(self, branch=self._model_branch())
        # keyed by the upstream content hashes, not their paths: a path carries the config tag,
        # so a copy of the configuration with one attack changed would rerun every scenario;
        # the attacked NN outputs depend on the attack (its hash), not on the checks' settings
        parts = [os.path.basename(os.path.dirname(lk.output()["likelihood"].path)), self.cfg.seed, b]
        ab = self._attack_branch()
        if ab is not None:
            parts.append(ValidateAttack.req(self, branch=ab).attack_hash())
        name = b["scenario"].replace("/", "__")
        return self.local_target(b["model"], name, short_hash(parts), f"toys_{b['first_toy']}.npz")

    def run(self):
        from hsaudit.fit_stage import attacked_truth
        from hsaudit.stats.model import Model
        from hsaudit.stats.toys import run_pseudo_experiments

        b = self.branch_data
        inp = self.input()
        lk = json.loads(inp["likelihood"]["likelihood"].load(formatter="text"))
        if b["scenario"].startswith("attack/"):
            with np.load(inp["likelihood"]["rows"].path) as f:
                rows_info = {k: f[k] for k in f.files}
            from hsaudit.attack_stage import regions_from_arrays

            with np.load(inp["attack"]["outputs"].path) as f:
                weights = f["eval_weights"] if "eval_weights" in f.files else None
                truth = attacked_truth(lk, rows_info, f["rows"], f["attacked"], regions_from_arrays(f), weights)
        elif b["scenario"] in lk["truths"]:
            truth = lk["truths"][b["scenario"]]
        else:
            raise AuditError(f"scenario '{b['scenario']}' has no truth in the likelihood "
                             f"(known: {sorted(lk['truths'])})")
        model = Model(lk["spec"])
        truth = model.concat_channels(truth, f"truth of scenario {b['scenario']}")
        # one seed for every scenario of a model: common random numbers make the differences
        # between scenarios (the biases compared in the audit) less noisy
        seed = derive_seed(self.cfg.seed, "toys", b["model"])
        max_iter = int(self.cfg.fit.get("max_iterations", 500))
        # q0 (a second fit per toy) only where the report uses it: the nominal significance
        result = run_pseudo_experiments(model, truth, b["n_toys"], seed, mu_true=lk["mu_true"],
                                        first_toy=b["first_toy"], max_iter=max_iter,
                                        significance=b["scenario"] == "nominal")
        with atomic_path(self.output(), suffix=".npz") as tmp:
            result.save(tmp)


class MeasureImpacts(ModelWorkflow):
    """Per model: the quoted impact of every systematic and the impact of every attack on mu,
    both on expected (Asimov) data with the nominal model, each with its MC-statistics
    uncertainty from a Poisson bootstrap of the event weights (hsaudit.stats.impacts)."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainModel.req(self, branch=-1)
        reqs["attacks"] = ValidateAttack.req(self, branch=-1)
        return reqs

    def _attack_branches(self) -> dict:
        bm = AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1))
        return {i: b for i, b in bm.items() if b["model"] == self.model_name}

    def requires(self):
        reqs = {"model": TrainModel.req(self, branch=self.branch)}
        reqs.update({f"attack{i}": ValidateAttack.req(self, branch=i) for i in self._attack_branches()})
        return reqs

    def output(self):
        attacks = [ValidateAttack.req(self, branch=i).attack_hash() for i in sorted(self._attack_branches())]
        h = short_hash([self.model_hash(), self.cfg.raw.get("fit"), self.cfg.raw.get("systematics"), attacks,
                        self.cfg.seed])
        return self.local_target(self.model_name, h, "impacts.json")

    def run(self):
        from hsaudit.ml.evaluation import outputs_per_variant
        from hsaudit.ml.modelio import load_model
        from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty
        from hsaudit.attack_stage import regions_from_arrays

        sample = load_sample(self)
        inputs = self.input()
        model, _ = load_model(inputs["model"]["model"].path, available_features=sample.features)
        outputs = outputs_per_variant(model, {v: sample.X[v] for v in sample.variants}, invalid="nan")
        events = {}
        for i, b in self._attack_branches().items():
            with np.load(inputs[f"attack{i}"]["outputs"].path) as f:
                events[f"{b['systematic']}/{b['attack']}"] = AttackedEvents(
                    rows=f["rows"], attacked_outputs=f["attacked"], regions_after=regions_from_arrays(f),
                    eval_weights=f["eval_weights"] if "eval_weights" in f.files else None)
        n_replicas = int(self.cfg.fit.get("n_replicas", 50))
        table = impacts_with_uncertainty(outputs, sample, self.cfg, events, n_replicas=n_replicas,
                                         seed=derive_seed(self.cfg.seed, "bootstrap", self.model_name))
        result = table.to_dict()
        # the uncertainty of each attack's impact minus its systematic's quoted impact, from the
        # same replicas (both sides share the replica weights: their noise partly cancels)
        diff = {k: table.difference_unc(k, k.split("/")[0]) for k in events if k.split("/")[0] in table.standard}
        result["difference_unc"] = {k: (v if np.isfinite(v) else None) for k, v in diff.items()}
        write_json_atomic(self.output(), _json_ready(result))
