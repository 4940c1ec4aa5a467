"""The attack-seed part of an impact's uncertainty enters the verdict: a planted hidden impact
that is "larger than quoted" on MC statistics alone becomes "inconclusive" once its spread
over attack seeds is added, and the summary's validation checks the parts."""

import math

import pytest

from hsaudit import report
from hsaudit.audit_stage import attack_entry, with_seed_part
from hsaudit.errors import AuditError

NULL = {"attack": "random", "n_seeds": 20, "hidden_rate": 1.0, "hidden_rate_unc": 0.05, "impacts_mu": [0.01] * 20,
        "n_attacks_compared": 1, "quantile": 0.95, "quantile_95": 0.05, "mean_power": 0.1}
STANDARD = {d: {"bias": 0.0, "pull_mean": 0.0, "pull_width": 1.0, "coverage": 0.68} for d in ("up", "down")}


class Files:
    validation = {"hidden": True, "power": 0.2, "power_unc": 0.01, "published": [], "visibility": {}}
    result = {"metrics": {}}


def planted(seed_sd):
    """Quoted 0.20 +- 0.03, hidden 0.40 +- 0.05 (MC statistics; paired difference 0.05), the
    attack's spread over seeds ``seed_sd`` (None: a deterministic attack)."""
    seeds = None if seed_sd is None else {"sd": seed_sd, "sd_unc": seed_sd / 2, "n_seeds": 4}
    entry = attack_entry(Files(), {"value": 0.40, "mc_unc": 0.05, "bias": 0.40}, None, seeds)
    return report.systematic_entry(
        standard_impact_mu=0.20, standard_impact_mu_unc=0.03, standard_power={"up": 0.3, "down": 0.3},
        standard=STANDARD, attacks={"pgd": entry}, null=NULL, candidates=["pgd"], closure_passed=True,
        difference_unc={"pgd": with_seed_part(0.05, seeds)})


def test_seed_spread_turns_larger_than_quoted_into_inconclusive():
    without = planted(None)
    assert without["verdict"] == "larger than quoted"
    assert without["difference_unc"] == pytest.approx(0.05) and without["verdict_significance"] == pytest.approx(4.0)
    assert without["largest_hidden_impact_parts"] == {"mc_stat": 0.05, "attack_seeds": 0.0}
    with_seeds = planted(0.15)
    assert with_seeds["verdict"] == "inconclusive"
    # the verdict's sigma is the paired MC-statistics sigma and the seed spread in quadrature
    assert with_seeds["difference_unc"] == pytest.approx(math.hypot(0.05, 0.15))
    assert with_seeds["verdict_significance"] == pytest.approx(0.2 / math.hypot(0.05, 0.15))
    assert with_seeds["largest_hidden_impact_mu_unc"] == pytest.approx(math.hypot(0.05, 0.15))
    assert with_seeds["largest_hidden_impact_parts"] == {"mc_stat": 0.05, "attack_seeds": 0.15}
    assert with_seeds["attacks"]["pgd"]["attack_seeds"] == 4
    # a small spread leaves the verdict as it was
    assert planted(0.01)["verdict"] == "larger than quoted"


def test_without_a_paired_difference_the_combined_sigma_includes_the_seed_part():
    seeds = {"sd": 0.15, "sd_unc": 0.05, "n_seeds": 4}
    entry = attack_entry(Files(), {"value": 0.40, "mc_unc": 0.05, "bias": 0.40}, None, seeds)
    e = report.systematic_entry(
        standard_impact_mu=0.20, standard_impact_mu_unc=0.03, standard_power={"up": 0.3, "down": 0.3},
        standard=STANDARD, attacks={"pgd": entry}, null=NULL, candidates=["pgd"], closure_passed=True)
    assert e["difference_unc"] == pytest.approx(math.hypot(0.03, math.hypot(0.05, 0.15)))
    assert e["verdict"] == "inconclusive"


def summary_with(entry) -> dict:
    model = {"auc": 0.8, "expected_significance": 3.0, "penalty": {},
             "closure": {"pull_mean": 0.0, "pull_width": 1.0, "coverage_68": 0.68, "passed": True},
             "calibration": {"alpha": 0.05, "false_alarm_rate": 0.05, "false_alarm_unc": 0.01, "n_looks": 10,
                             "power_max": 0.5},
             "systematics": {"tau_es": entry}}
    return report.make_summary(tool_version="0", config="t", version="v", models={"m": model}, figures=[],
                               created="2026-01-01T00:00:00+00:00")


def test_console_table_and_html_show_the_parts(tmp_path):
    table = report.console_table(summary_with(planted(0.15)))
    row = next(line for line in table.splitlines() if line.startswith("tau_es"))
    assert "0.050 / 0.150" in row and "0.400+-0.158" in row and "inconclusive" in row
    assert "0.050 / -" in report.console_table(summary_with(planted(None)))
    html = report.render_html(summary_with(planted(0.15)), tmp_path)
    assert "0.150 (4 seeds)" in html and "attack seeds" in html
    assert "- (deterministic)" in report.render_html(summary_with(planted(None)), tmp_path)


def test_validation_refuses_parts_that_do_not_add_up():
    entry = planted(0.15)["attacks"]["pgd"]
    report._validate_attack(entry, "a", None)
    bad = {**entry, "impact_mu_unc": 0.05}
    with pytest.raises(AuditError, match="in quadrature"):
        report._validate_attack(bad, "a", None)
