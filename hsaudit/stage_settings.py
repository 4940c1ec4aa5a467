"""Load-time checks of what the schema (``hsaudit.config_schema``) cannot see alone: the
settings whose meaning a stage defines, checked by that stage's own function once, up front,
so that a mistake ends in one clear message when the configuration is loaded, before any task
runs or writes anything, instead of after generation, selection and training.

* the visibility test (``checks``), the verdict (``audit.verdict``, ``audit.null_seeds``,
  ``audit.attack_seeds``) and the fit's statistical treatment (``fit.shape_treatment``,
  ``fit.closure``, ``fit.n_replicas``);
* flat-table inputs: the references of ``input`` to features, systematics and regions
  (``hsaudit.flat_tables.parse_flat_options``).
"""

from __future__ import annotations


def validate_stage_settings(cfg) -> None:
    """Raise hsaudit.errors.AuditError naming the key of the first invalid stage setting."""
    from hsaudit.audit_stage import verdict_settings
    from hsaudit.calibration_stage import visibility_settings
    from hsaudit import null_stage
    from hsaudit.stats.impacts import replicas_setting
    from hsaudit.stats.template_treatment import treatment_settings
    from hsaudit.verdict import closure_settings

    visibility_settings(cfg)
    verdict_settings(cfg)
    null_stage.null_seeds(cfg)
    if hasattr(null_stage, "attack_seeds"):
        null_stage.attack_seeds(cfg)
    treatment_settings(cfg.fit.get("shape_treatment"))
    closure_settings(cfg.fit.get("closure"))
    replicas_setting(cfg)
    if cfg.section("input").kind == "flat":
        from hsaudit.flat_tables import parse_flat_options

        parse_flat_options(cfg)
