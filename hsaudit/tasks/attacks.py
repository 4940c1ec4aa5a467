"""The visibility test's calibration (CalibrateChecks, per model), per-systematic adversarial
attacks (AttackSystematic), their visibility in data (ValidateAttack), the random-control
ensemble (RandomControl, per model and systematic) and the seed spread of stochastic attacks
(AttackSeedSpread, per model, systematic and stochastic attack).

One attack branch per (model, systematic, attack): the branches are independent GPU-sized
jobs, so the workflow can be sent to a batch system (see docs/batch.md). Each branch's output
path carries a hash of exactly the settings it depends on: changing one attack's settings
reruns only that attack's branches and what depends on them.
"""

from __future__ import annotations

from hsaudit.attack_files import AttackedOutputs, AttackedSample
from hsaudit.tasks.base import AuditWorkflow, atomic_path, short_hash, write_json_atomic
from hsaudit.tables import NOMINAL
from hsaudit.tasks.training import EvaluatedModelWorkflow, EvaluateModel, TrainModel, load_nn_outputs, load_sample


# the audit settings an attack's result depends on (the lists of systematics and attacks, the
# verdict and the null ensemble do not change any attack)
ATTACK_AUDIT_KEYS = ("n_sigma", "objective")


def load_calibration(target):
    from hsaudit.visibility import Calibration

    return Calibration.load(target.path)


def model_sample_calibration(task):
    """(network, sample, calibration) of an attack-stage branch whose inputs hold its model
    ("model") and its model's calibration ("calibration")."""
    from hsaudit.ml.modelio import load_model

    sample = load_sample(task)
    inputs = task.input()
    model, _ = load_model(inputs["model"]["model"].path, available_features=sample.features)
    return model, sample, load_calibration(inputs["calibration"]["calibration"])


class CalibrateChecks(EvaluatedModelWorkflow):
    """Per model: the data-visibility test calibrated on pseudo-data drawn from the nominal
    simulation at the analysis luminosity (threshold of the global test, false-alarm rates),
    and the power of every standard +-1 sigma shift."""

    def calibration_hash(self) -> str:
        return short_hash([self.model_hash(), self.cfg.raw.get("checks"), self.cfg.seed])

    def output(self):
        h = self.calibration_hash()
        return {"calibration": self.local_target(self.model_name, h, "calibration.npz"),
                "summary": self.local_target(self.model_name, h, "calibration.json")}

    def run(self):
        from hsaudit.calibration_stage import calibrate_model

        sample = load_sample(self)
        outputs = load_nn_outputs(self.input()["nn_outputs"], sample)
        calibration, summary = calibrate_model(outputs, sample, self.cfg, self.model_name)
        out = self.output()
        with atomic_path(out["calibration"], suffix=".npz") as tmp:
            calibration.save(tmp)
        write_json_atomic(out["summary"], summary)
        self.publish_message(f"{self.model_name}: global false-alarm rate {summary['false_alarm_rate']:.3f} "
                             f"+- {summary['false_alarm_unc']:.3f}")


class AttackBranches(AuditWorkflow):
    """Branch map shared by the attack tasks: (model, systematic, attack)."""

    def create_branch_map(self):
        from hsaudit.attack_stage import attacked_systematics, configured_attacks

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
        audit = {k: v for k, v in self.cfg.audit.items() if k in ATTACK_AUDIT_KEYS}
        from hsaudit.attack_stage import ENVELOPE_RULE

        parts = [model_hash, self.cfg.raw["attacks"][b["attack"]], self.cfg.raw["systematics"][b["systematic"]],
                 audit, self.cfg.seed, ENVELOPE_RULE]
        if self.cfg.attack_settings(b["attack"]).type == "fgsm":
            from hsaudit.attack_stage import feature_kinds

            # FGSM steps relatively or absolutely by the features' kinds, resolved from the config
            parts.append(feature_kinds(self.cfg))
        if self.uses_monitor():
            # a monitored attack's result depends on the visibility test it is monitored with
            parts.append(CalibrateChecks.req(self, branch=self.model_branch()).calibration_hash())
        return short_hash(parts)

    def uses_monitor(self) -> bool:
        return self.cfg.attack_settings(self.branch_data["attack"]).keeps_hidden()

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
        reqs = {"model": TrainModel.req(self, branch=self.model_branch())}
        if self.uses_monitor():
            reqs["calibration"] = CalibrateChecks.req(self, branch=self.model_branch())
            reqs["evaluation"] = EvaluateModel.req(self, branch=self.model_branch())
        return reqs

    def output(self):
        h = self.attack_hash()
        return {
            "events": self.local_target(*self.branch_dir(), h, "attacked.npz"),
            "result": self.local_target(*self.branch_dir(), h, "attack.json"),
        }

    def run(self):
        import torch

        from hsaudit.attack_stage import run_attack
        from hsaudit.ml.modelio import load_model

        b = self.branch_data
        sample = load_sample(self)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        inputs = self.input()
        model, _ = load_model(inputs["model"]["model"].path, device=device, available_features=sample.features)
        calibration, nn_nominal = None, None
        if "calibration" in inputs:     # the keep_hidden monitor judges candidates with the visibility test
            calibration = load_calibration(inputs["calibration"]["calibration"])
            nn_nominal = load_nn_outputs(inputs["evaluation"]["nn_outputs"], sample)[NOMINAL]
        outcome = run_attack(model, sample, self.cfg, b["model"], b["systematic"], b["attack"], calibration,
                             nn_nominal=nn_nominal)
        outputs = self.output()
        AttackedSample(rows=outcome.rows, x_adv=outcome.x_adv, eval_weights=outcome.eval_weights,
                       event=sample.event_id["event"][outcome.rows], regions=outcome.regions).save(outputs["events"].path)
        write_json_atomic(outputs["result"], {**b, "device": device, "info": outcome.info,
                                              "metrics": outcome.metrics})
        self.publish_message(f"{b['model']}/{b['systematic']}/{b['attack']}: fooling ratio "
                             f"{outcome.metrics.get('fooling_ratio', float('nan')):.3f}")


class ValidateAttack(AttackBranches):
    """Would data at the analysis luminosity show the attack? The calibrated visibility test
    (hidden, power) and the published statistics per region."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["attacks"] = AttackSystematic.req(self, branch=-1)
        reqs["calibrations"] = CalibrateChecks.req(self, branch=-1)
        return reqs

    def requires(self):
        return {"attack": AttackSystematic.req(self, branch=self.branch),
                "model": TrainModel.req(self, branch=self.model_branch()),
                "evaluation": EvaluateModel.req(self, branch=self.model_branch()),
                "calibration": CalibrateChecks.req(self, branch=self.model_branch())}

    def output(self):
        h = short_hash([self.attack_hash(), self.cfg.raw.get("checks")])
        return {
            "checks": self.local_target(*self.branch_dir(), h, "checks.json"),
            "outputs": self.local_target(*self.branch_dir(), h, "nn_outputs.npz"),
        }

    def run(self):
        from hsaudit.attack_stage import validate_attack

        b = self.branch_data
        model, sample, calibration = model_sample_calibration(self)
        inputs = self.input()
        attacked = AttackedSample.load(inputs["attack"]["events"].path)
        rows, x_adv, regions, eval_w = attacked.rows, attacked.x_adv, attacked.regions, attacked.eval_weights
        nn = load_nn_outputs(inputs["evaluation"]["nn_outputs"], sample)
        result = validate_attack(model, sample, rows, x_adv, self.cfg, b["systematic"], calibration, regions, eval_w,
                                 nn_nominal=nn[NOMINAL])
        outputs = self.output()
        AttackedOutputs(rows=rows, nominal=result["outputs_nominal"], attacked=result["outputs_attacked"],
                        eval_weights=sample.weight[rows] if eval_w is None else eval_w,
                        regions=regions).save(outputs["outputs"].path)
        write_json_atomic(outputs["checks"], {**b, "hidden": result["hidden"], "power": result["power"],
                                              "power_unc": result["power_unc"], "visibility": result["visibility"],
                                              "published": result["published"]})
        self.publish_message(f"{b['model']}/{b['systematic']}/{b['attack']}: "
                             f"{'hidden' if result['hidden'] else 'visible'} (power {result['power']:.2f})")


class RandomControl(AuditWorkflow):
    """Per (model, systematic): the random control attack over ``audit.null_seeds`` seeds
    (default 20): how often pure noise inside the envelope is called hidden, and the null
    distribution of attack impacts on mu."""

    def create_branch_map(self):
        from hsaudit.attack_stage import attacked_systematics

        return dict(enumerate(dict(model=m, systematic=s) for m in self.cfg.models for s in attacked_systematics(self.cfg)))

    def model_branch(self) -> int:
        return list(self.cfg.models).index(self.branch_data["model"])

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["calibrations"] = CalibrateChecks.req(self, branch=-1)
        return reqs

    def requires(self):
        return {"model": TrainModel.req(self, branch=self.model_branch()),
                "evaluation": EvaluateModel.req(self, branch=self.model_branch()),
                "calibration": CalibrateChecks.req(self, branch=self.model_branch())}

    def output(self):
        from hsaudit.null_stage import random_control_name

        b = self.branch_data
        calibration = CalibrateChecks.req(self, branch=self.model_branch()).calibration_hash()
        audit = {k: v for k, v in self.cfg.audit.items() if k in ATTACK_AUDIT_KEYS + ("null_seeds",)}
        from hsaudit.attack_stage import ENVELOPE_RULE

        h = short_hash([calibration, self.cfg.raw["systematics"][b["systematic"]], audit, self.cfg.raw.get("fit"),
                        self.cfg.raw.get("attacks", {}).get(random_control_name(self.cfg)), self.cfg.seed,
                        ENVELOPE_RULE])
        return self.local_target(b["model"], b["systematic"], h, "random_control.json")

    def run(self):
        from hsaudit.null_stage import random_control

        b = self.branch_data
        model, sample, calibration = model_sample_calibration(self)
        outputs = load_nn_outputs(self.input()["evaluation"]["nn_outputs"], sample)
        result = random_control(model, sample, self.cfg, b["model"], b["systematic"], calibration, outputs)
        write_json_atomic(self.output(), {**b, **result})
        self.publish_message(f"{b['model']}/{b['systematic']}: random control hidden in "
                             f"{result['hidden_rate']:.2f} of {result['n_seeds']} seeds")


class AttackSeedSpread(AttackBranches):
    """Per (model, systematic, stochastic attack): the attack rerun with ``audit.attack_seeds``
    other seeds (default 3) and the standard deviation of its impact on mu over the reported
    seed and those (hsaudit.null_stage.attack_seed_spread): the seed part of the attack
    impact's uncertainty. Deterministic attacks and the random control (whose null ensemble
    is its spread) have no branch."""

    def create_branch_map(self):
        from hsaudit.attack_stage import attacked_systematics
        from hsaudit.null_stage import seed_spread_attacks

        cfg = self.cfg
        return dict(enumerate(
            dict(model=m, systematic=s, attack=a)
            for m in cfg.models for s in attacked_systematics(cfg) for a in seed_spread_attacks(cfg)
        ))

    def attack_branch(self) -> int:
        """The branch of the reported attack (AttackSystematic / ValidateAttack)."""
        b = self.branch_data
        for i, other in AttackBranches.get_branch_map(ValidateAttack.req(self, branch=-1)).items():
            if other == b:
                return i
        raise RuntimeError(f"no attack branch for {b}")  # cannot happen: the same maps

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["checks"] = ValidateAttack.req(self, branch=-1)
        reqs["calibrations"] = CalibrateChecks.req(self, branch=-1)
        return reqs

    def requires(self):
        return {"model": TrainModel.req(self, branch=self.model_branch()),
                "evaluation": EvaluateModel.req(self, branch=self.model_branch()),
                "calibration": CalibrateChecks.req(self, branch=self.model_branch()),
                "reported": ValidateAttack.req(self, branch=self.attack_branch())}

    def output(self):
        from hsaudit.null_stage import attack_seeds

        # the reruns depend on what the attack depends on; their impacts on the fit's settings
        h = short_hash([self.attack_hash(), attack_seeds(self.cfg), self.cfg.raw.get("fit"),
                        self.cfg.raw.get("systematics")])
        return self.local_target(*self.branch_dir(), h, "seed_spread.json")

    def run(self):
        from hsaudit.null_stage import attack_seed_spread

        b = self.branch_data
        model, sample, calibration = model_sample_calibration(self)
        outputs = load_nn_outputs(self.input()["evaluation"]["nn_outputs"], sample)
        a = AttackedOutputs.load(self.input()["reported"]["outputs"].path)
        reported = (a.rows, a.attacked, a.regions, a.eval_weights)
        result = attack_seed_spread(model, sample, self.cfg, b["model"], b["systematic"], b["attack"], outputs,
                                    calibration if self.uses_monitor() else None, reported=reported)
        write_json_atomic(self.output(), {**b, **result})
        self.publish_message(f"{b['model']}/{b['systematic']}/{b['attack']}: impact spread over "
                             f"{result['n_seeds']} seeds {result['sd']:.4f} +- {result['sd_unc']:.4f}")
