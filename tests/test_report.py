"""summary.json schema, verdict rule, console table and the self-contained HTML report."""

import base64
import copy
import json
import os
import re
import stat
from html.parser import HTMLParser

import numpy as np
import pytest

from hsaudit import report
from hsaudit.errors import AuditError

# A 1x1 PNG (valid signature and chunks), so the HTML tests need no matplotlib.
TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5f2d6a80000000049454e44ae426082"
)


def _checks(passed):
    return [
        {"name": "ks", "region": "CR", "feature": "tau_pt", "statistic": 0.01, "threshold": 0.04, "passed": passed[0]},
        {"name": "correlation", "region": "CR", "feature": None, "statistic": 0.004, "threshold": 0.006,
         "passed": passed[1], "details": {"n": 3}},
    ]


def _standard():
    d = {"bias": 0.05, "pull_mean": 0.4, "pull_width": 1.02, "coverage": 0.66}
    return {"up": dict(d), "down": dict(d, bias=-0.04)}


def _attack(hidden, impact, fooling=0.2, unc=0.01):
    return {"hidden": hidden, "power": 0.1 if hidden else 0.9, "power_unc": 0.01, "impact_mu": impact,
            "impact_mu_unc": unc, "fooling_ratio": fooling, "published": _checks((True, not hidden)),
            "metrics": {"rel_significance_loss": 0.25}}


NULL = {"attack": "random", "n_seeds": 20, "hidden_rate": 0.95, "hidden_rate_unc": 0.05, "impacts_mu": [0.01] * 20,
        "n_attacks_compared": 3, "quantile": 0.95, "quantile_95": 0.03}
POWER = {"up": 0.4, "down": 0.3, "up_unc": 0.02, "down_unc": 0.02}


def _entry(quoted, attacks, quoted_unc=0.01, closure=True, null=NULL, **kw):
    return report.systematic_entry(standard_impact_mu=quoted, standard_impact_mu_unc=quoted_unc, standard_power=POWER,
                                   standard=_standard(), attacks=attacks, null=null,
                                   candidates=[a for a in attacks if a != "random"], closure_passed=closure, **kw)


def _model(systematics, **kw):
    m = {"auc": 0.88, "expected_significance": 6.7, "penalty": {},
         "closure": {"pull_mean": 0.02, "pull_width": 1.01, "coverage_68": 0.68, "passed": True},
         "calibration": {"alpha": 0.05, "false_alarm_rate": 0.05, "false_alarm_unc": 0.007, "n_looks": 100,
                         "power_max": 0.5},
         "systematics": systematics}
    m.update(kw)
    return m


def make_valid_summary(figures=()):
    tes = _entry(0.07, {"pgd": _attack(True, 0.2), "fgsm": _attack(True, np.float64(0.1)),
                        "random": _attack(True, 0.5), "nuisance_pgd": _attack(False, 0.6)})
    jes = _entry(0.05, {"pgd": _attack(False, 0.3)})
    met = _entry(0.04, {"pgd": _attack(True, 0.01, 0.05)})
    models = {
        "nominal": _model({"tes": tes, "jes": jes, "met_soft_term_long_name": met}),
        "penalty20": _model({"tes": _entry(0.02, {"pgd": _attack(True, 0.015, unc=0.05)}),
                             "jes": _entry(0.05, {"pgd": _attack(True, 0.06)})},
                            auc=np.float32(0.82), expected_significance=5.2, penalty={"tes": 20.0}, label="lambda = 20"),
    }
    return report.make_summary(tool_version="0.1.0", config="ci", version="v1", models=models,
                               figures=list(figures), created="2026-01-31T12:00:00+00:00")


@pytest.fixture
def summary():
    return make_valid_summary()


# --------------------------------------------------------------------------- verdict


def test_systematic_entry_applies_the_three_outcome_rule():
    # 3x the quoted impact, well resolved, above the null: larger than quoted
    e = _entry(0.07, {"pgd": _attack(True, 0.21)})
    assert e["verdict"] == report.LARGER == "larger than quoted" and e["responsible_attack"] == "pgd"
    # the same impact below the null's quantile (look-elsewhere): not larger
    assert _entry(0.07, {"pgd": _attack(True, 0.21)}, null=dict(NULL, quantile_95=0.3))["verdict"] == report.INCONCLUSIVE
    # well below the quoted impact: covered
    assert _entry(0.2, {"pgd": _attack(True, 0.05)})["verdict"] == report.COVERED
    # equal within large MC noise: inconclusive, saying how much more MC would decide
    e = _entry(0.1, {"pgd": _attack(True, 0.12, unc=0.08)}, quoted_unc=0.08)
    assert e["verdict"] == report.INCONCLUSIVE and e["mc_scale_to_decide"] > 1 and "MC events" in e["verdict_reason"]
    # nominal toys that do not close: no decision either way
    e = _entry(0.07, {"pgd": _attack(True, 0.21)}, closure=False)
    assert e["verdict"] == report.INCONCLUSIVE and "do not close" in e["verdict_reason"]
    with pytest.raises(AuditError, match="standard_impact_mu must be a finite"):
        _entry(float("nan"), {"pgd": _attack(True, 0.1)})
    with pytest.raises(AuditError, match="needs 'impact_mu_unc'"):
        _entry(0.1, {"pgd": {k: v for k, v in _attack(True, 0.1).items() if k != "impact_mu_unc"}})


def test_systematic_entry_derives_largest_hidden_and_ratio(summary):
    tes = summary["models"]["nominal"]["systematics"]["tes"]
    # 'nuisance_pgd' has the largest impact but data would see it; 'random' is the control, no candidate
    assert tes["largest_hidden_impact_mu"] == 0.2 and tes["largest_hidden_impact_mu_unc"] == 0.01
    assert tes["responsible_attack"] == "pgd"
    assert tes["ratio_hidden_to_standard"] == pytest.approx(0.2 / 0.07)
    assert tes["verdict"] == report.LARGER
    jes = summary["models"]["nominal"]["systematics"]["jes"]
    assert jes["largest_hidden_impact_mu"] is None and jes["responsible_attack"] is None
    assert jes["ratio_hidden_to_standard"] is None and jes["verdict"] == report.COVERED
    assert "nothing hidden" in jes["verdict_reason"]
    assert summary["models"]["nominal"]["systematics"]["met_soft_term_long_name"]["verdict"] == report.COVERED
    assert summary["models"]["penalty20"]["systematics"]["tes"]["verdict"] == report.INCONCLUSIVE
    # numpy scalars became plain floats, so json works
    assert type(summary["models"]["penalty20"]["auc"]) is float
    json.dumps(summary, allow_nan=False)


# --------------------------------------------------------------------------- validator


def test_valid_summary_passes_and_roundtrips(summary, tmp_path):
    report.validate_summary(summary)
    path = report.write_summary(summary, tmp_path / "out" / "summary.json")
    assert report.load_summary(path) == summary
    assert not [p for p in path.parent.iterdir() if p.name != "summary.json"]  # no temp files left


def test_written_files_follow_the_umask_not_the_private_temp_mode(summary, tmp_path):
    old = os.umask(0o022)
    try:
        path = report.write_summary(summary, tmp_path / "summary.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def _broken(summary, edit):
    s = copy.deepcopy(summary)
    edit(s)
    return s


TES = ("models", "nominal", "systematics", "tes")


def _at(s, *keys):
    for k in keys:
        s = s[k]
    return s


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s.pop("models"), "summary is missing the required key 'models'"),
        (lambda s: s.update(schema_version=1), "schema_version must be 2"),
        (lambda s: s.update(created="yesterday"), "summary.created must be an ISO 8601"),
        (lambda s: s.update(config=3), "summary.config must be a string"),
        (lambda s: s["models"]["nominal"].pop("auc"), "summary.models.nominal is missing the required key 'auc'"),
        (lambda s: s["models"]["nominal"].update(auc="0.9"), "summary.models.nominal.auc must be a number"),
        (lambda s: s["models"]["nominal"].update(auc=1.5), "summary.models.nominal.auc must be <= 1"),
        (lambda s: s["models"]["nominal"].update(expected_significance=float("inf")),
         "expected_significance must be a finite number"),
        (lambda s: s["models"]["nominal"].pop("closure"), "nominal is missing the required key 'closure'"),
        (lambda s: s["models"]["nominal"]["closure"].pop("coverage_68"), "closure is missing the required key"),
        (lambda s: s["models"]["nominal"].update(systematics={}), "summary.models.nominal.systematics is empty"),
        (lambda s: _at(s, *TES).update(standard_impact_mu=float("nan")),
         "summary.models.nominal.systematics.tes.standard_impact_mu must be a finite number"),
        (lambda s: _at(s, *TES).pop("standard_impact_mu_unc"), "missing the required key 'standard_impact_mu_unc'"),
        (lambda s: _at(s, *TES, "standard_power").update(up=1.5), "standard_power.up must be <= 1"),
        (lambda s: _at(s, *TES, "standard").pop("down"),
         "summary.models.nominal.systematics.tes.standard is missing the required key 'down'"),
        (lambda s: _at(s, *TES, "standard", "up").update(coverage=1.2), "standard.up.coverage must be <= 1"),
        (lambda s: _at(s, *TES, "attacks", "pgd").update(hidden="yes"), "attacks.pgd.hidden must be true or false"),
        (lambda s: _at(s, *TES, "attacks", "pgd").update(power=0.9),
         "attacks.pgd.hidden is True but its power 0.9 is above the limit 0.5"),
        (lambda s: _at(s, *TES, "attacks", "pgd").update(fooling_ratio=float("nan")),
         "attacks.pgd.fooling_ratio must be a finite number"),
        (lambda s: _at(s, *TES, "attacks", "pgd", "published")[0].pop("threshold"),
         r"attacks.pgd.published\[0\] is missing the required key 'threshold'"),
        (lambda s: _at(s, *TES, "attacks", "pgd", "published")[1].update(feature=3),
         r"published\[1\].feature must be a string or null"),
        (lambda s: _at(s, *TES, "attacks", "pgd", "metrics").update(x=float("inf")), "metrics.x must be a finite"),
        (lambda s: _at(s, *TES).update(largest_hidden_impact_mu=0.3),
         "largest_hidden_impact_mu is 0.3 but the largest impact_mu among hidden candidate attacks is 0.2"),
        (lambda s: _at(s, *TES).update(largest_hidden_impact_mu_unc=0.5), "largest_hidden_impact_mu_unc is 0.5"),
        (lambda s: _at(s, *TES).update(responsible_attack="fgsm"), "responsible_attack 'fgsm' is not a hidden attack"),
        (lambda s: _at(s, *TES).update(responsible_attack="random"), "'random' is not one of the candidates"),
        (lambda s: _at(s, *TES).update(ratio_hidden_to_standard=1.0), "ratio_hidden_to_standard is 1.0"),
        (lambda s: _at(s, *TES).update(verdict="covered"), "tes.verdict is 'covered' but the impacts give"),
        (lambda s: _at(s, *TES).update(verdict="fine"), "tes.verdict must be one of"),
        (lambda s: _at(s, *TES, "null").update(n_seeds=0), "null.n_seeds must be a positive integer"),
        (lambda s: s["figures"].append({"name": "a", "png": "/abs/a.png", "pdf": "a.pdf", "caption": ""}),
         r"figures\[0\].png must be a relative path"),
        (lambda s: s["figures"].append({"name": "a", "png": "../a.png", "pdf": "a.pdf", "caption": ""}),
         r"figures\[0\].png must be a relative path"),
        (lambda s: s["figures"].extend([{"name": "a", "png": "a.png", "pdf": "a.pdf", "caption": ""}] * 2),
         r"figures\[1\].name 'a' is used by two figures"),
        (lambda s: s["figures"].append({"name": "a", "png": "a.png", "caption": ""}),
         r"figures\[0\] is missing the required key 'pdf'"),
        (lambda s: s.update(extra=float("nan")), "not JSON-serialisable"),
    ],
)
def test_validator_rejects_broken_summaries(summary, edit, message):
    with pytest.raises(AuditError, match=message):
        report.validate_summary(_broken(summary, edit))


def test_validator_allows_optional_and_unknown_keys(summary):
    s = _broken(summary, lambda s: s.update(title="My audit", notes=["demo run"], future_key={"a": 1}))
    report.validate_summary(s)
    with pytest.raises(AuditError, match=r"summary.notes\[0\] must be a string"):
        report.validate_summary(_broken(s, lambda s: s.update(notes=[1])))


def test_load_summary_errors(tmp_path):
    with pytest.raises(AuditError, match="does not exist"):
        report.load_summary(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(AuditError, match="not valid JSON"):
        report.load_summary(bad)


# --------------------------------------------------------------------------- console


def test_console_table_lists_every_systematic(summary):
    text = report.console_table(summary)
    lines = text.splitlines()
    for mname, m in summary["models"].items():
        assert any(line.startswith(f"Model {mname}:") for line in lines)
        for sname in m["systematics"]:
            assert any(line.startswith(sname + " ") for line in lines), sname
    assert any("closure of nominal toys" in line and "false-alarm rate 0.050+-0.007" in line for line in lines)
    tes_line = next(line for line in lines if line.startswith("tes ") and "pgd" in line)
    assert "0.070+-0.010" in tes_line and "0.200+-0.010" in tes_line and "larger than quoted" in tes_line
    # the strongest visible candidate is shown in parentheses when nothing is hidden
    assert any(line.startswith("jes") and "(pgd)" in line and "covered" in line for line in lines)
    # fixed width: within the first model, every row's verdict starts under the header's "verdict"
    header = next(line for line in lines if line.startswith("systematic"))
    rows = [line for line in lines if line.startswith(("tes ", "jes ", "met_"))][:3]
    starts = {line.index(v) for line in rows for v in report.VERDICTS if v in line}
    assert starts == {header.index("verdict")}


# --------------------------------------------------------------------------- HTML


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.attrs = []
        self.stack = []
        self.errors = []
        self.text = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append((tag, dict(attrs)))
        if tag not in {"meta", "img", "br", "link"}:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _figures(tmp_path, n=3):
    figdir = tmp_path / "report"
    (figdir / "figures").mkdir(parents=True)
    figures = []
    for i in range(n):
        name = f"fig_{i}"
        (figdir / "figures" / f"{name}.png").write_bytes(TINY_PNG)
        (figdir / "figures" / f"{name}.pdf").write_bytes(b"%PDF-1.4\n")
        figures.append({"name": name, "png": f"figures/{name}.png", "pdf": f"figures/{name}.pdf",
                        "caption": f"Caption <{i}> & more"})
    return figdir, figures


def test_html_is_self_contained_and_complete(tmp_path):
    figdir, figures = _figures(tmp_path)
    summary = make_valid_summary(figures)
    out = report.write_html(summary, figdir, figdir / "report.html")
    text = out.read_text(encoding="utf-8")
    assert [p.name for p in figdir.iterdir() if p.name.startswith(".")] == []  # atomic: no temp left

    parser = _Collector()
    parser.feed(text)
    parser.close()
    assert parser.errors == [] and parser.stack == []
    # no external resources
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "<link" not in text
    srcs = [a["src"] for tag, a in parser.attrs if "src" in a]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    hrefs = [a["href"] for _, a in parser.attrs if "href" in a]
    assert hrefs and all(h.startswith("#") for h in hrefs)  # only links inside the page
    assert not re.search(r"url\((?!data:)", text)
    # every figure embedded with its caption (escaped)
    figs = [a for tag, a in parser.attrs if tag == "figure"]
    assert [f["data-name"] for f in figs] == [f["name"] for f in figures]
    assert len(srcs) == len(figures)
    assert srcs[0].split(",", 1)[1] == base64.b64encode(TINY_PNG).decode()
    body = "".join(parser.text)
    for f in figures:
        assert f["caption"] in body
    assert "Caption &lt;0&gt; &amp; more" in text
    # header and tables
    assert "ci" in body and "v1" in body and "2026-01-31T12:00:00+00:00" in body
    assert parser.tags.count("h3") == len(summary["models"])
    rows = [a.get("id", "") for tag, a in parser.attrs if tag == "tr" and a.get("id")]
    expected = [f"{m}--{s}" for m, md in summary["models"].items() for s in md["systematics"]]
    assert rows == expected
    assert parser.tags.count("details") == len(expected)
    verdict_classes = [a["class"] for tag, a in parser.attrs if tag == "td" and "verdict" in a.get("class", "")]
    assert "verdict v-hidden" in verdict_classes and "verdict v-none" in verdict_classes
    assert "verdict v-covered" in verdict_classes
    # the verdict's reason, powers, the null and the failing published statistics are in the expanders
    assert "exceeds the quoted one" in body and "Random control over 20 seeds" in body
    assert "tau_pt" in body or "correlation" in body
    assert "0.006" in body and "reported, not deciding" in body
    assert "Model comparison" in body and "lambda = 20" in body


def test_html_missing_figure_is_an_error(tmp_path):
    figdir, figures = _figures(tmp_path, 1)
    (figdir / "figures" / "fig_0.png").unlink()
    with pytest.raises(AuditError, match="fig_0.*does not exist"):
        report.write_html(make_valid_summary(figures), figdir, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_html_rejects_invalid_summary(tmp_path, summary):
    s = _broken(summary, lambda s: s["models"]["nominal"].pop("auc"))
    with pytest.raises(AuditError, match="'auc'"):
        report.write_html(s, tmp_path, tmp_path / "r.html")


def test_figure_entry_makes_paths_relative(tmp_path):
    paths = {"png": str(tmp_path / "figures" / "a.png"), "pdf": str(tmp_path / "figures" / "a.pdf")}
    entry = report.figure_entry("a", paths, tmp_path, "cap")
    assert entry == {"name": "a", "caption": "cap", "png": "figures/a.png", "pdf": "figures/a.pdf"}
    with pytest.raises(AuditError, match="not inside the report folder"):
        report.figure_entry("a", paths, tmp_path / "elsewhere", "cap")
    with pytest.raises(AuditError, match="no pdf path"):
        report.figure_entry("a", {"png": paths["png"]}, tmp_path, "cap")


def test_standard_output_shift_counts_migration():
    from hsaudit.audit import standard_output_shift

    p = np.array([0.1, 0.2, 0.9, 0.95])
    w = np.ones(4)
    nominal = np.array([True, True, True, False])
    # the variant loses event 0 and gains event 3 (migration); outputs unchanged otherwise
    out = standard_output_shift(p, p, w, nominal, np.array([False, True, True, True]))
    assert out["histogram_l1_relative"] == pytest.approx(2 / 3)
    assert out["mean_shift"] == pytest.approx((0.2 + 0.9 + 0.95) / 3 - (0.1 + 0.2 + 0.9) / 3)
    # sorted pairs (0.1, 0.2), (0.2, 0.9), (0.9, 0.95): every quantile moves up
    assert out["wasserstein"] == pytest.approx((0.1 + 0.7 + 0.05) / 3)
    same = standard_output_shift(p, p, w, nominal, nominal)
    assert same == {"wasserstein": 0.0, "mean_shift": 0.0, "histogram_l1_relative": 0.0}


def test_output_shift_comparison_counts_hidden_candidates_only(tmp_path):
    attacks = {"adv": _attack(True, 0.2), "pgd": _attack(False, 0.5), "random": _attack(True, 0.05)}
    attacks["adv"]["metrics"] = {"output_shift_wasserstein": 0.015}
    attacks["pgd"]["metrics"] = {"output_shift_wasserstein": 0.03}  # visible: does not count
    attacks["random"]["metrics"] = {"output_shift_wasserstein": 0.04}  # the control: no candidate
    shift = {"up": {"wasserstein": 0.0136}, "down": {"wasserstein": 0.0126}}
    e = _entry(0.1, attacks, standard_output_shift=shift)
    assert e["output_shift_comparison"] == {"standard_wasserstein": 0.0136, "largest_hidden_wasserstein": 0.015,
                                            "attack": "adv", "hidden_exceeds_standard": True}
    below = _entry(0.1, {"adv": attacks["adv"]},
                   standard_output_shift={"up": {"wasserstein": 0.02}, "down": {"wasserstein": 0.0}})
    assert below["output_shift_comparison"]["hidden_exceeds_standard"] is False
    summary = report.make_summary(tool_version="0", config="c", version="v", models={"m": _model({"tes": e})})
    html = report.render_html(summary, tmp_path)
    assert "a hidden attack moves the output more than the standard shift" in html
    assert "(control)" in html
