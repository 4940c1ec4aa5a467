"""The typed configuration: a typo or a bad value anywhere fails at load with the key path in
one line, the shipped configurations load, the schema's defaults are the ones the stages used,
and the generated reference is up to date."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from hsaudit.config import CONFIG_DIR, load_config
from hsaudit.config_schema import ATTACK_SETTINGS, AnalysisSettings, attack_defaults, known_keys
from hsaudit.errors import AuditError

TYPO = "zz_typo"


def _raw(name: str) -> dict:
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())


def _ci_with_optional_sections() -> dict:
    """ci.yaml plus the optional sections it leaves out, so that every section gets a typo."""
    raw = _raw("ci")
    raw["input"]["weight_sanity"] = {"action": "warn"}
    raw["input"]["branches"] = {"met": "MET"}
    raw["fit"]["shape_treatment"] = {"prune": True}
    raw["fit"]["closure"] = {"n_se": 2.0}
    raw["models"]["nominal"]["dropout"] = 0.0
    return raw


def _mapping_paths(node, path=()):
    """Every mapping in a configuration (top level included), as key paths."""
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            yield from _mapping_paths(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mapping_paths(value, path + (i,))


def _dotted(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


BASES = {"ci": _ci_with_optional_sections, "higgsml": lambda: _raw("higgsml")}
CASES = [(base, path) for base, make in BASES.items() for path in _mapping_paths(make())]


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _load_error(tmp_path, raw) -> str:
    with pytest.raises(AuditError) as err:
        load_config(_write(tmp_path, raw))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "user.yaml")), message
    return message


def test_the_cases_cover_every_section():
    covered = {_dotted(p).split(".")[0].split("[")[0] for _, p in CASES}
    assert set(AnalysisSettings.model_fields) - {"name", "seed", "luminosity", "signal_region"} <= covered
    ci_paths = {_dotted(p) for base, p in CASES if base == "ci"}
    for name in ATTACK_SETTINGS:  # every attack type has a typo case
        assert any(p == f"attacks.{a}" for a, spec in _raw("ci")["attacks"].items() if spec["type"] == name
                   for p in ci_paths), name


@pytest.mark.parametrize("base, path", CASES, ids=[f"{b}:{_dotted(p) or 'top'}" for b, p in CASES])
def test_a_typo_anywhere_fails_at_load_with_its_key_path(tmp_path, base, path):
    raw = BASES[base]()
    node = raw
    for key in path:
        node = node[key]
    node[TYPO] = 1
    message = _load_error(tmp_path, raw)
    where = _dotted(path)
    assert f"{where}." in message or f" {where}:" in message or not where, message
    assert TYPO in message, message


@pytest.mark.parametrize("name", sorted(ATTACK_SETTINGS))
def test_an_unknown_attack_setting_names_the_known_ones(tmp_path, name):
    raw = _raw("ci")
    raw["attacks"]["mine"] = {"type": name, "stpes": 3, **({"inputs": ["tau_pt"]} if name == "nuisance_field" else {})}
    message = _load_error(tmp_path, raw)
    known = ", ".join(known_keys(ATTACK_SETTINGS[name]))
    assert f"attacks.mine.stpes: unknown setting; known: {known}" in message


def test_the_contract_message_for_pgd(tmp_path):
    raw = _raw("ci")
    raw["attacks"]["pgd"]["stpes"] = 3
    assert _load_error(tmp_path, raw).endswith(
        "attacks.pgd.stpes: unknown setting; known: steps, step_fraction, random_start, keep_best, type, "
        "objective, batch_size, direction")


def _set(path, value):
    def edit(raw):
        node = raw
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("edit, expected", [
    (_set(["attacks", "pgd", "steps"], "3"), "attacks.pgd.steps: expected an integer, got '3'"),
    (_set(["attacks", "pgd", "step_fraction"], 1.5), "attacks.pgd.step_fraction: must be <= 1"),
    (_set(["attacks", "pgd", "type"], "banana"), "attacks.pgd.type: unknown attack type 'banana'; known: random"),
    (lambda raw: raw["attacks"]["pgd"].pop("type"), "attacks.pgd.type: missing; known: random"),
    (_set(["attacks", "conservattack", "max_step"], 0.001), "attacks.conservattack: max_step (0.001) must be >= step"),
    (_set(["attacks", "nuisance_field", "inputs"], None), "attacks.nuisance_field.inputs: missing"),
    (_set(["input", "kind"], "root"), "input.kind: unknown input kind 'root'; known: nanoaod, flat"),
    (_set(["audit", "n_sigma"], True), "audit.n_sigma: expected a number, got True"),
    (_set(["audit", "attacks"], ["pgd", "nope"]), "audit.attacks: unknown attack 'nope'"),
    (_set(["checks", "looks"], ["banana"]), "checks.looks[0]: unknown value 'banana'"),
    (_set(["checks", "features"], ["nope"]), "checks.features: unknown feature(s) ['nope']"),
    (_set(["fit", "closure", "n_se"], 0), "fit.closure.n_se: must be > 0"),
    (_set(["fit", "shape_treatment", "smoothing_width"], 4), "fit.shape_treatment.smoothing_width: must be an odd"),
    (_set(["fit", "mu_bounds"], [3.0, 1.0]), "fit.mu_bounds: expected [low, high] with low < high"),
    (_set(["training", "split", "train"], 0.0), "training: split fractions must be train > 0"),
    (_set(["training", "max_epochs"], float("nan")), "training.max_epochs: expected an integer"),
    (_set(["models", "nominal", "hidden"], [32, 0]), "models.nominal.hidden[1]: must be > 0"),
    (_set(["features", 3], {"name": "tau_eta", "kind": "angel"}), "features[3].kind: unknown value 'angel'"),
    (_set(["selection", "cuts"], {"tau_pt": {"min": 1}}), "selection.cuts: cuts on columns are for input.kind: flat"),
    (lambda raw: raw["selection"].pop("jet"), "selection.jet: missing"),
    (_set(["datasets", "ztt", "generate", "n_files"], 10 ** 6), "datasets.ztt.generate: n_files (1000000) must be <="),
    (_set(["regions", "signal", "charge"], "neutral"), "regions.signal.charge: unknown value 'neutral'"),
    (_set(["systematics", "tau_es", "processes"], ["nope"]), "systematics.tau_es.processes: unknown process 'nope'"),
])
def test_bad_values_name_the_key(tmp_path, edit, expected):
    raw = _raw("ci")
    edit(raw)
    assert expected in _load_error(tmp_path, raw)


def test_several_problems_are_counted(tmp_path):
    raw = _raw("ci")
    raw["attacks"]["pgd"]["stpes"] = 3
    raw["fit"]["n_bin"] = 3
    assert "(and 1 more problem)" in _load_error(tmp_path, raw)


# ---------------------------------------------------------------------------- shipped files
@pytest.mark.parametrize("name", sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
def test_shipped_configurations_load_typed(name):
    cfg = load_config(name)
    s = cfg.settings
    assert isinstance(s, AnalysisSettings) and s.name == cfg.name
    assert set(s.attacks) == set(cfg.attacks)
    for attack in cfg.attacks:
        typed = cfg.attack_settings(attack)
        assert typed.type == cfg.attacks[attack]["type"]
        assert typed == s.attacks[attack]
    assert cfg.section("fit") == s.fit and cfg.section("training") == s.training
    assert [f.name for f in s.features] == cfg.feature_names


def test_a_section_follows_a_replaced_mapping():
    cfg = load_config("ci")
    assert cfg.section("audit").null_seeds == 20
    other = dataclasses.replace(cfg, audit={**cfg.audit, "null_seeds": 7})
    assert other.section("audit").null_seeds == 7 and cfg.section("audit").null_seeds == 20
    with pytest.raises(AuditError, match=r"audit\.n_sigam: unknown setting"):
        dataclasses.replace(cfg, audit={"n_sigam": 1}).section("audit")


# ---------------------------------------------------------------------------- defaults
# what the code used before the schema owned the defaults (attack classes, check thresholds,
# the classifier stage's training settings, the fit stage, the visibility test ...)
BEFORE = {
    "attacks": {
        "random": {"fraction": 1.0},
        "fgsm": {"eps": 0.001, "iterations": 10, "eps_abs": None, "absolute_features": None, "feature_kinds": None},
        "pgd": {"steps": 40, "step_fraction": 0.1, "random_start": False, "keep_best": True},
        "nuisance_pgd": {"k": None, "steps": 40, "step_fraction": 0.1},
        "nuisance_field": {"inputs": None, "k": None, "knots": 8, "smoothness": 1.0, "steps": 200,
                           "learning_rate": 0.05, "train_batch_size": 8192},
        "adversarial_network": {"hidden": [300, 300, 300, 300], "epochs": 20, "train_batch_size": 512,
                                "learning_rate": 1e-3, "lambda_cls": 1.0, "lambda_obs": 0.1, "rho": 1.0,
                                "ks_obs_max": 0.04, "ks_nn_max": 0.02, "ks_check_every": 0, "lambda_corr": 0.0,
                                "corr_max": 0.0, "keep_hidden": False},
        "conservattack": {"iterations": 10, "bins": 100, "min_change": 0.003, "step": 0.01, "max_step": 3.0,
                          "n_steps": 24, "alpha": 1.0, "beta": 1.0, "jsd_cap": 0.005, "corr_cap": 0.005,
                          "constraint_mode": "global", "jsd_max": 0.06, "corr_rel_max": 0.006,
                          "jsd_total_cap": 0.005, "choose": "cheapest", "sub_bins": 1, "block_size": 128,
                          "retry": True, "max_rounds": 1000000, "block_rounds": 0},
    },
    "common": {"batch_size": 65536, "direction": 1},
    "thresholds": {"ks_max": 0.04, "chi2_pvalue_min": 0.05, "jsd_max": 0.06, "correlation_rel_max": 0.006,
                   "nn_output_chi2_pvalue_min": 0.05, "nn_output_ks_max": 0.02, "band_tolerance_sigma": 1.0,
                   "band_max_outside_fraction": 0.0, "bins": 20, "jsd_bins": 100},
    "training": {"learning_rate": 1e-3, "weight_decay": 0.0, "batch_size": 1000, "max_epochs": 200, "patience": 5,
                 "min_delta": 0.0, "seed": 0, "penalty_bins": 20, "penalty_warmup_epochs": 3,
                 "penalty_on": "background", "class_balance": True, "device": "auto",
                 "split": {"train": 0.6, "validation": 0.2, "test": 0.2}, "split_salt": "audit-split",
                 "progress": True},
    "fit": {"n_bins": 10, "binning": "optimised", "min_background_per_bin": 1.0,
            "max_relative_stat_uncertainty": 0.3, "n_toys": 1000, "mu_true": 1.0, "mu_bounds": [-5.0, 10.0],
            "mc_stat_uncertainty": True, "max_iterations": 500, "n_replicas": 50},
    "audit": {"n_sigma": 1.0, "objective": "shift_output", "null_seeds": 20, "attack_seeds": 3,
              "verdict": {"n_sigma": 2.0, "null_quantile": 0.95}},
}


@pytest.mark.parametrize("name", sorted(ATTACK_SETTINGS))
def test_attack_defaults_are_unchanged(name):
    from hsaudit.attacks import make_attack

    assert attack_defaults(name, common=False) == BEFORE["attacks"][name]
    assert attack_defaults(name) == {**BEFORE["common"], **BEFORE["attacks"][name]}
    settings = {"inputs": ["a"]} if name == "nuisance_field" else {}
    resolved = make_attack(name, **settings).settings
    expected = {**BEFORE["common"], **BEFORE["attacks"][name], **settings}
    if name == "fgsm":
        expected["eps_abs"] = expected["eps"]
    assert resolved == expected


def test_section_defaults_are_unchanged():
    from hsaudit.attacks.checks import DEFAULT_THRESHOLDS
    from hsaudit.config_schema import AuditSection, ChecksSection, FitSection, TrainingSection

    assert DEFAULT_THRESHOLDS == BEFORE["thresholds"]
    assert TrainingSection().model_dump() == BEFORE["training"]
    fit = FitSection().model_dump()
    assert {k: fit[k] for k in BEFORE["fit"]} == BEFORE["fit"]
    audit = AuditSection().model_dump()
    assert {k: audit[k] for k in BEFORE["audit"]} == BEFORE["audit"]
    assert {k: v for k, v in ChecksSection().model_dump().items() if k in BEFORE["thresholds"]} == BEFORE["thresholds"]


def test_schema_agrees_with_the_stages_that_keep_their_own_defaults():
    from hsaudit import null_stage
    from hsaudit.config_schema import ChecksSection, ClosureSettings, FitSection, ShapeTreatment, WeightSanity
    from hsaudit.stats.impacts import DEFAULT_REPLICAS
    from hsaudit.stats.template_treatment import DEFAULTS as TREATMENT
    from hsaudit.tables import WEIGHT_SANITY_DEFAULTS
    from hsaudit.verdict import CLOSURE_DEFAULTS
    from hsaudit.visibility.settings import VisibilitySettings

    visibility = VisibilitySettings().to_dict()
    visibility["n_test_toys"] = None  # "as many as n_toys", resolved by the dataclass
    checks = ChecksSection().model_dump()
    assert {k: checks[k] for k in visibility} == visibility
    assert ShapeTreatment().model_dump() == TREATMENT
    assert ClosureSettings().model_dump() == CLOSURE_DEFAULTS
    assert WeightSanity().model_dump() == WEIGHT_SANITY_DEFAULTS
    assert FitSection().n_replicas == DEFAULT_REPLICAS
    assert null_stage.DEFAULT_NULL_SEEDS == 20
    assert getattr(null_stage, "DEFAULT_ATTACK_SEEDS", 3) == 3


def test_training_settings_of_a_config_are_unchanged():
    from hsaudit.classifier_stage import training_settings

    cfg = load_config("ci")
    s = training_settings(cfg, "penalty_tes")
    assert (s.architecture, s.hidden_layers, s.lambdas, s.n_bins) == ("mlp", [32, 32], {"tau_es": 20.0}, 20)
    assert (s.learning_rate, s.batch_size, s.max_epochs, s.patience, s.seed) == (0.001, 1000, 8, 3, 1)
    assert s.split_fractions == (0.6, 0.2, 0.2) and s.penalty_warmup_epochs == 3
    bare = dataclasses.replace(cfg, training={})
    s = training_settings(bare, "nominal")
    assert (s.n_bins, s.max_epochs, s.patience, s.seed) == (20, 200, 5, 0)


# ---------------------------------------------------------------------------- documentation
def test_generated_reference_and_json_schema_are_up_to_date():
    from hsaudit.config_docs import main

    assert main(["--check"]) == 0, "run: python -m hsaudit.config_docs"


def test_reference_documents_every_key():
    from hsaudit.config_docs import MARKDOWN

    text = MARKDOWN.read_text()
    for key in ("checks.jsd_bins", "checks.band_tolerance_sigma", "attacks.<name>.keep_hidden",
                "attacks.<name>.lambda_corr", "training.penalty_warmup_epochs", "input.missing.flags",
                "fit.closure.n_se", "audit.verdict.null_quantile"):
        assert f"`{key}`" in text, key
    for name, model in ATTACK_SETTINGS.items():
        assert f"#### `type: {name}`" in text
        for key in model.model_fields:
            assert f"`attacks.<name>.{key}`" in text


def test_json_schema_refuses_unknown_keys_everywhere():
    import json

    from hsaudit.config_docs import JSON_SCHEMA

    schema = json.loads(JSON_SCHEMA.read_text())
    assert schema["additionalProperties"] is False
    assert {"datasets", "attacks", "fit"} <= set(schema["properties"])
    assert all(d.get("additionalProperties") is False for d in schema["$defs"].values() if d.get("type") == "object")
    assert len(schema["properties"]["attacks"]["additionalProperties"]["oneOf"]) == len(ATTACK_SETTINGS)
