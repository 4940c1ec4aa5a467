"""Per-systematic adversarial attacks (AttackSystematic) and their hidden-ness checks (ValidateAttack).

One branch per (model, systematic, attack): the branches are independent GPU-sized jobs, so
the workflow can be sent to a batch system (see docs/batch.md). Each branch's output path
carries a hash of exactly the settings it depends on: changing one attack's settings reruns
only that attack's branches and what depends on them.
"""

from __future__ import annotations

import numpy as np

from analysis.errors import AuditError
from tasks.base import AuditWorkflow, atomic_path, short_hash, write_json_atomic
from tasks.training import TrainModel, load_sample


def region_arrays(regions: dict) -> dict:
    """Region membership of the attacked events after the attack, as npz arrays."""
    names = list(regions)
    return {"region_names": np.array(names), "in_region_after": np.stack([regions[r] for r in names])}


def regions_from_arrays(f) -> dict:
    if "in_region_after" not in f.files or "region_names" not in f.files:
        name = getattr(getattr(f, "fid", None), "name", "an attack output")
        raise AuditError(f"{name} has no region membership "
                         "after the attack (written by an older version of the tool): rerun with a new --version "
                         "or remove the AttackSystematic outputs (--remove-output)")
    return {str(r): f["in_region_after"][i].astype(bool) for i, r in enumerate(f["region_names"])}


class AttackBranches(AuditWorkflow):
    """Branch map shared by the attack tasks: (model, systematic, attack)."""

    def create_branch_map(self):
        from analysis.attack_stage import attacked_systematics, configured_attacks

        cfg = self.cfg
        return dict(enumerate(
            dict(model=m, systematic=s, attack=a)
            for m in cfg.models for s in attacked_systematics(cfg) for a in configured_attacks(cfg)
        ))

    def model_branch(self) -> int:
        return list(self.cfg.models).index(self.branch_data["model"])

    def attack_hash(self) -> str:
        b = self.branch_data
        model_hash = TrainModel.req(self, branch=self.model_branch()).model_hash()
        audit = {k: v for k, v in self.cfg.audit.items() if k not in ("systematics", "attacks")}
        return short_hash([model_hash, self.cfg.raw["attacks"][b["attack"]],
                           self.cfg.raw["systematics"][b["systematic"]], audit, self.cfg.seed])

    def branch_dir(self) -> tuple[str, str, str]:
        b = self.branch_data
        return b["model"], b["systematic"], b["attack"]


class AttackSystematic(AttackBranches):
    """The worst mismodelling inside one systematic's envelope for one model and attack."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainModel.req(self, branch=-1)
        return reqs

    def requires(self):
        return TrainModel.req(self, branch=self.model_branch())

    def output(self):
        h = self.attack_hash()
        return {
            "events": self.local_target(*self.branch_dir(), h, "attacked.npz"),
            "result": self.local_target(*self.branch_dir(), h, "attack.json"),
        }

    def run(self):
        import torch

        from analysis.attack_stage import run_attack
        from analysis.ml.modelio import load_model

        b = self.branch_data
        sample = load_sample(self)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model, _ = load_model(self.input()["model"].path, device=device, available_features=sample.features)
        outcome = run_attack(model, sample, self.cfg, b["model"], b["systematic"], b["attack"])
        outputs = self.output()
        with atomic_path(outputs["events"], suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, rows=outcome.rows, x_adv=outcome.x_adv,
                                    event=sample.event_id["event"][outcome.rows],
                                    **region_arrays(outcome.regions))
        write_json_atomic(outputs["result"], {**b, "device": device, "info": outcome.info,
                                              "metrics": outcome.metrics})
        self.publish_message(f"{b['model']}/{b['systematic']}/{b['attack']}: fooling ratio "
                             f"{outcome.metrics.get('fooling_ratio', float('nan')):.3f}")


class ValidateAttack(AttackBranches):
    """Would the standard validation have noticed the attack? Checks per region."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["attacks"] = AttackSystematic.req(self, branch=-1)
        return reqs

    def requires(self):
        return {"attack": AttackSystematic.req(self, branch=self.branch),
                "model": TrainModel.req(self, branch=self.model_branch())}

    def output(self):
        h = short_hash([self.attack_hash(), self.cfg.raw.get("checks")])
        return {
            "checks": self.local_target(*self.branch_dir(), h, "checks.json"),
            "outputs": self.local_target(*self.branch_dir(), h, "nn_outputs.npz"),
        }

    def run(self):
        from analysis.attack_stage import validate_attack
        from analysis.ml.modelio import load_model

        b = self.branch_data
        sample = load_sample(self)
        model, _ = load_model(self.input()["model"]["model"].path, available_features=sample.features)
        with np.load(self.input()["attack"]["events"].path) as f:
            rows, x_adv, regions = f["rows"], f["x_adv"], regions_from_arrays(f)
        result = validate_attack(model, sample, rows, x_adv, self.cfg, b["systematic"], regions)
        outputs = self.output()
        with atomic_path(outputs["outputs"], suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, rows=rows, nominal=result["outputs_nominal"],
                                    attacked=result["outputs_attacked"], **region_arrays(regions))
        n_passed = sum(c["passed"] for c in result["checks"])
        write_json_atomic(outputs["checks"], {**b, "hidden": result["hidden"], "checks": result["checks"],
                                              "n_checks": len(result["checks"]), "n_passed": n_passed})
        self.publish_message(f"{b['model']}/{b['systematic']}/{b['attack']}: "
                             f"{'hidden' if result['hidden'] else 'visible'} ({n_passed}/{len(result['checks'])} checks pass)")
