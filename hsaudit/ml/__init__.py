"""The classifier under audit: torch models, training with the systematics-aware penalty,
model files and evaluation.

Modules
-------
``models``      configurable MLPs whose first layer is a fixed input standardisation, so a
                model takes features in physical units (``build_model``).
``penalty``     the differentiable-histogram penalty of Wunsch, Joerger, Wolf, Quast (2020),
                "Reducing the dependence of the neural network function to systematic
                uncertainties in the input space" (``soft_histogram``, ``variation_penalty``).
``training``    ``TrainingSettings`` (from a plain dict), ``split_by_event_id``,
                ``train_classifier`` (weighted BCE + sum_s lambda_s Lambda_s, Adam, early stopping).
``modelio``     save / load (state dict + spec JSON + TorchScript, never unpickling code),
                bring-your-own TorchScript model validation.
``evaluation``  NN outputs per variant, weighted ROC / AUC, eps_S/sqrt(eps_B) curve,
                NN-output histograms per region and variant.

No law/luigi imports here: numpy in, numpy / files out.
"""

from hsaudit.ml.evaluation import evaluate_classifier, predict, weighted_auc
from hsaudit.ml.models import MLP, ARCHITECTURES, build_model, standardisation_from_data
from hsaudit.ml.modelio import import_user_model, load_model, save_model
from hsaudit.ml.penalty import soft_histogram, variation_penalty, variation_penalty_numpy
from hsaudit.ml.training import (
    TrainingSettings,
    TrainingResult,
    split_by_event_id,
    train_classifier,
)

__all__ = [
    "evaluate_classifier",
    "predict",
    "weighted_auc",
    "import_user_model",
    "load_model",
    "save_model",
    "MLP",
    "ARCHITECTURES",
    "build_model",
    "standardisation_from_data",
    "soft_histogram",
    "variation_penalty",
    "variation_penalty_numpy",
    "TrainingSettings",
    "TrainingResult",
    "split_by_event_id",
    "train_classifier",
]
