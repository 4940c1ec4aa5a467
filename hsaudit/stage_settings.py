"""Load-time validation of the settings that later stages read: a mistake in the visibility
test (``checks``), the verdict (``audit.verdict``, ``audit.null_seeds``) or the fit's
statistical treatment (``fit.shape_treatment``, ``fit.closure``, ``fit.n_replicas``) ends in one
clear message when the configuration is loaded, before any task runs or writes anything,
instead of after generation, selection and training.

Each stage keeps the definition of its own settings (defaults and checks live with the code
that uses them); this module only calls them once, up front.
"""

from __future__ import annotations


def validate_stage_settings(cfg) -> None:
    """Raise hsaudit.errors.AuditError naming the key of the first invalid stage setting."""
    from hsaudit.audit_stage import verdict_settings
    from hsaudit.calibration_stage import visibility_settings
    from hsaudit.null_stage import null_seeds
    from hsaudit.stats.impacts import replicas_setting
    from hsaudit.stats.template_treatment import treatment_settings
    from hsaudit.verdict import closure_settings

    visibility_settings(cfg)
    verdict_settings(cfg)
    null_seeds(cfg)
    treatment_settings(cfg.fit.get("shape_treatment"))
    closure_settings(cfg.fit.get("closure"))
    replicas_setting(cfg)
    features = set(cfg.feature_names)
    for key in ("features", "pair_features"):
        names = (cfg.checks or {}).get(key) or []
        unknown = [n for n in names if n not in features]
        if unknown:
            from hsaudit.errors import AuditError

            raise AuditError(f"checks.{key}: unknown feature(s) {unknown}; the analysis has {sorted(features)}")
