"""law tasks of the hidden-systematics audit. Thin: parameters, requirements, outputs;
each run() calls into the library (``hsaudit``) and writes its targets atomically."""

from hsaudit.tasks.errors import install_clean_error_reporting

install_clean_error_reporting()

from hsaudit.tasks.data import GenerateEvents, SelectEvents, MergeFeatures  # noqa: E402,F401
from hsaudit.tasks.training import TrainModel, EvaluateModel  # noqa: E402,F401
from hsaudit.tasks.attacks import AttackSystematic, CalibrateChecks, RandomControl, ValidateAttack  # noqa: E402,F401
from hsaudit.tasks.fits import BuildLikelihood, MeasureImpacts, PseudoExperiments  # noqa: E402,F401
from hsaudit.tasks.audit import AttackAudit  # noqa: E402,F401


def _preload_for_workers() -> None:
    """luigi forks one process per task when --workers > 1: importing torch, coffea and the
    science modules once in the parent saves every branch task (hundreds in an audit) the
    seconds of importing them again. Skipped for commands that run no task (law index)."""
    import sys

    if "run" not in sys.argv[1:3] or not _config_loads(sys.argv):
        return
    import hsaudit.attack_stage  # noqa: F401
    import hsaudit.audit_stage  # noqa: F401
    import hsaudit.calibration_stage  # noqa: F401
    import hsaudit.attacks.registry  # noqa: F401
    import hsaudit.classifier_stage  # noqa: F401
    import hsaudit.fit_stage  # noqa: F401
    import hsaudit.selection.run  # noqa: F401
    import hsaudit.stats.impacts  # noqa: F401
    import hsaudit.stats.toys  # noqa: F401
    import hsaudit.visibility  # noqa: F401


def _config_loads(argv) -> bool:
    """Whether the run's --config loads: a broken one stops the run at load (one line naming
    the key), so there is nothing to preload and no reason to make the user wait for it."""
    from hsaudit.config import load_config
    from hsaudit.errors import AuditError

    name = "demo"
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            name = argv[i + 1]
        elif arg.startswith("--config="):
            name = arg.split("=", 1)[1]
    try:
        load_config(name)
    except AuditError:
        return False
    return True


_preload_for_workers()
