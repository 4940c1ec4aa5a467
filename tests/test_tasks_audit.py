"""AttackAudit end to end on the tiny CI config: the report's content, not only its existence,
and incremental reruns (counted by which tasks ran)."""

import json
import math
import re
from html.parser import HTMLParser

import pytest
import yaml

from hsaudit.report import validate_summary
from law_cli import run_law


@pytest.fixture(scope="module")
def audit(law_data):
    res = run_law(law_data, "AttackAudit", "--config", "ci", "--version", "t", "--workers", "2")
    assert res.returncode == 0, res.output[-4000:]
    reports = sorted((law_data / "AttackAudit" / "ci" / "t").glob("*/summary.json"))
    assert len(reports) == 1
    return law_data, reports[0].parent, res


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_summary_content(audit):
    _, report, res = audit
    summary = json.loads((report / "summary.json").read_text())
    validate_summary(summary)
    assert summary["schema_version"] == 2 and summary["config"] == "ci"
    assert set(summary["models"]) == {"nominal", "penalty_tes"}
    for model in summary["models"].values():
        assert 0.5 < model["auc"] < 1.0
        closure = model["closure"]
        assert all(isinstance(closure[k], float) for k in ("pull_mean", "pull_width", "coverage_68"))
        assert 0 <= model["calibration"]["false_alarm_rate"] <= 1
        power_max = model["calibration"]["power_max"]
        assert set(model["systematics"]) == {"tau_es", "jet_es"}
        for syst in model["systematics"].values():
            assert set(syst["attacks"]) == {"random", "pgd", "nuisance_pgd", "conservattack", "nuisance_field"}
            for attack in syst["attacks"].values():
                assert isinstance(attack["power"], float) and 0.0 <= attack["power"] <= 1.0
                assert isinstance(attack["hidden"], bool) and attack["hidden"] == (attack["power"] <= power_max)
                assert attack["impact_mu_unc"] > 0
                # the papers' statistics are still reported, control regions included
                assert {c["name"] for c in attack["published"]} >= {"ks", "chi2", "jsd", "correlation", "band"}
            assert isinstance(syst["standard_power"]["up"], float) and isinstance(syst["standard_power"]["down"], float)
            assert syst["verdict"] in ("larger than quoted", "covered", "inconclusive")
            assert isinstance(syst["standard_impact_mu_unc"], float) and syst["standard_impact_mu_unc"] > 0
            if syst["largest_hidden_impact_mu"] is not None:
                assert isinstance(syst["largest_hidden_impact_mu_unc"], float) and syst["largest_hidden_impact_mu_unc"] > 0
            assert isinstance(syst["null"]["quantile_95"], float) and syst["null"]["n_seeds"] >= 20
            assert syst["verdict_reason"]
            # the standard shift's signal-region NN-output shift, comparable with the attacks'
            for d in ("up", "down"):
                assert syst["standard_output_shift"][d]["histogram_l1_relative"] >= 0
    assert all(math.isfinite(x) for x in _numbers(summary))
    # the console summary table reached the user
    assert "tau_es" in res.output and "verdict" in res.output.lower()


def test_report_references_every_figure(audit):
    _, report, _ = audit
    summary = json.loads((report / "summary.json").read_text())
    html = (report / "report.html").read_text()
    names = [f["name"] for f in summary["figures"]]
    assert any(n.startswith("impacts_") for n in names)
    assert any(n.startswith("toys_") for n in names)
    assert any(n.startswith("significance_") for n in names)
    assert any(n.startswith("feature_") for n in names)
    assert any(n.startswith("correlation_") for n in names)
    assert any(n.startswith("nn_output_") for n in names)
    assert "lambda_scan" in names
    for f in summary["figures"]:
        assert (report / f["png"]).stat().st_size > 1000
        assert (report / f["pdf"]).stat().st_size > 1000
        assert f["caption"].replace("<", "&lt;").replace(">", "&gt;")[:40] in html or f["name"] in html

    class Collect(HTMLParser):
        images = 0

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                src = dict(attrs).get("src", "")
                assert src.startswith("data:image/png;base64,")
                self.images += 1

    parser = Collect()
    parser.feed(html)
    assert parser.images == len(summary["figures"])
    assert not re.search(r"(src|href)=\"https?://", html)


def test_rerun_is_a_no_op_and_one_attack_change_reruns_only_its_branches(audit, tmp_path):
    data, _, _ = audit
    again = run_law(data, "AttackAudit", "--config", "ci", "--version", "t")
    assert again.returncode == 0
    assert again.ran("AttackSystematic") == 0 and again.ran("AttackAudit") == 0
    assert again.seconds < 60

    # a user's copy of the config with one attack's settings changed
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "ci.yaml").read_text())
    raw["attacks"]["pgd"]["steps"] = 5
    cfg = tmp_path / "ci_changed.yaml"
    cfg.write_text(yaml.safe_dump(raw, sort_keys=False))
    # reuse every output of the shipped config by linking its folders under the new config tag
    changed = run_law(data, "AttackAudit", "--config", str(cfg), "--version", "t", "--print-status", "0")
    assert changed.returncode == 0
    tag = re.search(r"AttackAudit/(ci_changed-[0-9a-f]+)/", changed.output)
    assert tag, changed.output[-2000:]
    for task in ("GenerateEvents", "SelectEvents", "MergeFeatures", "TrainModel", "EvaluateModel", "CalibrateChecks",
                 "RandomControl", "BuildLikelihood", "AttackSystematic", "ValidateAttack", "MeasureImpacts",
                 "PseudoExperiments", "AttackSeedSpread"):
        src = data / task / "ci"
        if src.exists():
            (data / task / tag.group(1)).symlink_to(src, target_is_directory=True)
    res = run_law(data, "AttackAudit", "--config", str(cfg), "--version", "t", "--workers", "2")
    assert res.returncode == 0, res.output[-3000:]
    # 2 models x 2 systematics: only the pgd branches and what depends on them
    assert res.ran("AttackSystematic") == 4
    assert res.ran("ValidateAttack") == 4
    assert res.ran("TrainModel") == 0 and res.ran("SelectEvents") == 0 and res.ran("BuildLikelihood") == 0
    # one PseudoExperiments branch per model; inside it only the changed attack's scenarios
    # (pgd on 2 systematics) are refitted, the other scenarios' results are reused
    assert res.ran("PseudoExperiments") == 2
    fitted = re.findall(r"PseudoExperiments model \S+, toys \d+-\d+: fitted (\d+) of (\d+) scenarios", res.output)
    assert len(fitted) == 2 and sum(int(n) for n, _ in fitted) == 4, fitted
    assert all(int(of) > 4 for _, of in fitted)
    # the impacts of a model are measured together (one bootstrap for all its attacks)
    assert res.ran("MeasureImpacts") == 2
    assert res.ran("CalibrateChecks") == 0 and res.ran("RandomControl") == 0
    # pgd (random start) is the ci config's stochastic attack: only its seed spreads rerun
    assert res.ran("AttackSeedSpread") == 4
    assert res.ran("AttackAudit") == 1
