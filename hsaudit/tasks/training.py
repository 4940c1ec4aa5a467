"""The network under audit: TrainModel (or import a user's TorchScript model) and EvaluateModel."""

from __future__ import annotations

import law

from hsaudit.errors import AuditError
from hsaudit.tasks.base import AuditWorkflow, short_hash, write_json_atomic
from hsaudit.tasks.data import SELECTION_SECTIONS, MergeFeatures


_SAMPLE_CACHE: dict = {}


def load_sample(task):
    """All MergeFeatures tables of the task's config as one EventSample. Kept in memory for
    the next task of the same process (many attack branches read the same tables)."""
    import os

    from hsaudit.samples import assemble
    from hsaudit.tables import FeatureTable

    merged = MergeFeatures.req(task, branch=-1)
    outputs = merged.output()["collection"].targets
    paths = [outputs[i]["table"].path for i in sorted(outputs)]
    key = (tuple((p, os.stat(p).st_mtime_ns) for p in paths), tuple(task.cfg.feature_names))
    if key not in _SAMPLE_CACHE:
        _SAMPLE_CACHE.clear()
        _SAMPLE_CACHE[key] = assemble([FeatureTable.read(p) for p in paths], task.cfg.feature_names)
    return _SAMPLE_CACHE[key]


class ModelWorkflow(AuditWorkflow):
    """A workflow with one branch per configured model variant (config section ``models``)."""

    def create_branch_map(self):
        return dict(enumerate(self.cfg.models))

    @property
    def model_name(self) -> str:
        return self.branch_data

    def model_hash(self) -> str:
        """Changes when anything that shapes this model changes."""
        return short_hash([
            self.section_hash(*SELECTION_SECTIONS, "datasets", "luminosity", "training"),
            self.cfg.raw["models"][self.model_name],
        ])


class TrainModel(ModelWorkflow):
    """Trains each configured model variant (e.g. nominal and systematics-aware penalty), or
    imports a user's TorchScript model when ``models.<name>.torchscript`` is set."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["features"] = MergeFeatures.req(self, branch=-1)
        return reqs

    def requires(self):
        return MergeFeatures.req(self, branch=-1)

    def output(self):
        h = self.model_hash()
        return {
            "model": law.LocalDirectoryTarget(self.local_path(self.model_name, h, "model")),
            "metrics": self.local_target(self.model_name, h, "training.json"),
        }

    def run(self):
        from hsaudit.classifier_stage import train
        from hsaudit.ml.modelio import import_user_model, save_model

        outputs = self.output()
        spec = self.cfg.models[self.model_name]
        if "torchscript" in spec:
            from hsaudit.classifier_stage import probe_events
            from hsaudit.ml.modelio import check_feature_list

            declared = self.cfg.model_settings(self.model_name).features
            features = self.cfg.feature_names if declared is None else declared
            sample = load_sample(self)
            # probe on selected events with finite nominal features, in the model's order
            probe = probe_events(sample, check_feature_list(features, sample.features))
            import_user_model(spec["torchscript"], features, self.cfg.feature_names,
                              outputs["model"].path, probe=probe)
            write_json_atomic(outputs["metrics"], {"model": self.model_name, "kind": "torchscript",
                                                   "source": spec["torchscript"]})
            return
        sample = load_sample(self)
        result = train(sample, self.cfg, self.model_name, log=self.publish_message)
        summary = result.summary()
        save_model(result.model, outputs["model"].path, result.spec, sample.features, extra=summary)
        write_json_atomic(outputs["metrics"], {"model": self.model_name, "kind": "native",
                                               **summary, "history": result.history})


class EvaluateModel(ModelWorkflow):
    """NN outputs for nominal and every shifted variant, computed once and saved for every
    later stage (hsaudit.nn_outputs); ROC and AUC, relative discovery significance, NN-output
    histograms per region and variant."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainModel.req(self)
        return reqs

    def requires(self):
        return TrainModel.req(self, branch=self.branch)

    def output(self):
        h = self.model_hash()
        return {"evaluation": self.local_target(self.model_name, h, "evaluation.json"),
                "nn_outputs": self.local_target(self.model_name, h, "nn_outputs.npz")}

    def run(self):
        from hsaudit.classifier_stage import evaluate
        from hsaudit.ml.modelio import load_model
        from hsaudit.nn_outputs import NNOutputs

        sample = load_sample(self)
        model, _ = load_model(self.input()["model"].path, available_features=sample.features)
        outputs = NNOutputs.compute(model, sample)
        result = evaluate(outputs.as_dict(), sample, self.cfg, self.model_name)
        if result["auc"] != result["auc"]:
            raise AuditError(f"model '{self.model_name}': AUC is undefined (one class missing in the test split)")
        out = self.output()
        outputs.save(out["nn_outputs"].path)
        write_json_atomic(out["evaluation"], result)
        self.publish_message(f"model {self.model_name}: AUC {result['auc']:.4f}")


class TrainedModelWorkflow(ModelWorkflow):
    """A per-model workflow whose branch needs its model's TrainModel output."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["models"] = TrainModel.req(self, branch=-1)
        return reqs

    def requires(self):
        return TrainModel.req(self, branch=self.branch)


class EvaluatedModelWorkflow(ModelWorkflow):
    """A per-model workflow whose branch needs its model's NN outputs (EvaluateModel)."""

    def workflow_requires(self):
        reqs = super().workflow_requires()
        reqs["evaluations"] = EvaluateModel.req(self, branch=-1)
        return reqs

    def requires(self):
        return EvaluateModel.req(self, branch=self.branch)


def load_nn_outputs(target, sample):
    """The NN outputs EvaluateModel saved (``target``: its "nn_outputs" output), checked
    against ``sample``, as {variant: (N,) outputs}."""
    from hsaudit.nn_outputs import NNOutputs

    return NNOutputs.load(target.path, sample).as_dict()
