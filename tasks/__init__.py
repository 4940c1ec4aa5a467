"""law tasks of the hidden-systematics audit. Thin: parameters, requirements, outputs;
each run() calls into ``analysis`` and writes its targets atomically."""

from tasks.errors import install_clean_error_reporting

install_clean_error_reporting()

from tasks.data import GenerateEvents, SelectEvents, MergeFeatures  # noqa: E402,F401
from tasks.training import TrainModel, EvaluateModel  # noqa: E402,F401
from tasks.attacks import AttackSystematic, ValidateAttack  # noqa: E402,F401
from tasks.fits import BuildLikelihood, PseudoExperiments  # noqa: E402,F401
from tasks.audit import AttackAudit  # noqa: E402,F401
