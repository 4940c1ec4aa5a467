"""Audit figures: each function renders small synthetic inputs to PNG + PDF; styles do not leak."""

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from hsaudit import plotting as P
from hsaudit.errors import AuditError

DPI = 40  # small renders keep the tests fast


def _rng():
    return np.random.default_rng(7)


def _feature_inputs(n=400):
    rng = _rng()
    x = rng.normal(50, 10, n)
    w = rng.uniform(0.5, 1.5, n)
    return dict(nominal=x, attacked=x * 1.004, up=x * 1.03, down=x * 0.97, bins=12, nominal_weights=w,
                attacked_weights=w, up_weights=w, down_weights=w, feature="tau_pt", label=r"$p_T^\tau$",
                unit="GeV", region="SR", systematic="TES", attack="pgd")


def _nn_inputs():
    rng = _rng()
    b1, b2, s = rng.beta(2, 5, 600), rng.beta(2, 3, 300), rng.beta(5, 2, 200)
    w1 = np.full(b1.size, 0.5)
    return dict(
        nominal={"ztt": (b1, w1), "ttbar": {"values": b2}, "signal": s},
        variations={"TES": {"up": {"ztt": (np.clip(b1 * 1.05, 0, 1), w1)}, "down": {"ztt": (b1 * 0.95, w1)}},
                    "norm": {"up": {"ttbar": (b2, np.full(b2.size, 1.1))}, "down": {}}},
        bins=10, signal="signal", attacked={"ztt": (np.clip(b1 * 1.02, 0, 1), w1)}, region="SR", signal_scale=5,
    )


def _builders():
    rng = _rng()
    c = np.corrcoef(rng.normal(size=(4, 100)))
    t = np.linspace(0, 1, 21)
    before = 1 + 1.5 * np.sin(np.pi * t)
    return {
        "feature_comparison": lambda **kw: P.feature_comparison(**_feature_inputs(), **kw),
        "nn_output_with_bands": lambda **kw: P.nn_output_with_bands(**_nn_inputs(), **kw),
        "correlation_change": lambda **kw: P.correlation_change(c, c + 0.003 * (1 - np.eye(4)), list("abcd"),
                                                                threshold=0.006, **kw),
        "significance_curves": lambda **kw: P.significance_curves(t, before, {"fgsm": 0.7 * before, "pgd": 0.8 * before},
                                                                  **kw),
        "toy_distributions": lambda **kw: P.toy_distributions(
            {"nominal": rng.normal(0, 1, 100), "TES up": rng.normal(0.5, 1, 100)},
            {"nominal": rng.normal(1, 0.2, 100), "TES up": rng.normal(1.1, 0.2, 100)}, **kw),
        "lambda_scan": lambda **kw: P.lambda_scan([0, 1, 20], [0.88, 0.86, 0.82], [6.7, 6.1, 5.2], [0.2, None, 0.03],
                                                  [0.07, 0.04, 0.02], **kw),
        "impact_summary": lambda **kw: P.impact_summary(
            ["TES", "JES", "MET"], [0.07, 0.05, 0.01], [0.2, None, 0.005],
            ["larger than quoted", "inconclusive", "covered"],
            attacks=["pgd", None, "fgsm"], standard_unc=[0.01, 0.02, 0.005], hidden_unc=[0.03, None, 0.002], **kw),
    }


@pytest.mark.parametrize("name", list(_builders()))
def test_every_figure_writes_png_and_pdf(name, tmp_path):
    fig = _builders()[name]()
    assert isinstance(fig, Figure)
    paths = P.save_figure(fig, tmp_path / "figs", name, dpi=DPI)
    png, pdf = open(paths["png"], "rb").read(), open(paths["pdf"], "rb").read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [f"{name}.pdf", f"{name}.png"]  # no temp files
    assert fig.axes == []  # closed/cleared


def _rc_snapshot():
    return {k: str(v) for k, v in matplotlib.rcParams.items()}


def test_experiment_styles_do_not_leak_rc_params(tmp_path):
    before = _rc_snapshot()
    for style in ("CMS", "ATLAS", None):
        fig = _builders()["feature_comparison"](style=style)
        texts = " ".join(t.get_text() for t in fig.axes[0].texts)
        if style is not None:
            assert style in texts and "Simulation" in texts  # the experiment label is drawn
        else:
            assert "CMS" not in texts and "ATLAS" not in texts  # neutral: no experiment logo
        assert _rc_snapshot() == before
    P.save_figure(fig, tmp_path, "last", dpi=DPI)
    assert _rc_snapshot() == before
    with pytest.raises(AuditError, match="unknown plot style 'LHCb'"):
        _builders()["impact_summary"](style="LHCb")
    assert _rc_snapshot() == before


def test_style_context_applies_inside_only():
    before = _rc_snapshot()
    cms = P.mplhep.style.CMS
    with P.plot_style("CMS"):
        assert matplotlib.rcParams["font.sans-serif"][:1] == list(cms["font.sans-serif"])[:1]
        assert _rc_snapshot() != before
    with P.plot_style(None):
        assert matplotlib.rcParams["xtick.direction"] == "in" and matplotlib.rcParams["legend.frameon"] is False
    assert _rc_snapshot() == before


def test_feature_comparison_band_and_ratio_content():
    fig = _builders()["feature_comparison"]()
    ax, rax = fig.axes[0], fig.axes[1]
    assert rax.get_ylabel() == "Att. / nom." and rax.get_xlabel() == r"$p_T^\tau$ [GeV]"
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["TES $\\pm1\\sigma$ band", "MC stat. unc.", "Nominal", "Attacked (pgd)"]
    # the ratio panel is centred on 1 and the attacked/nominal points are close to 1 for a 0.4% shift
    lo, hi = rax.get_ylim()
    assert lo < 1 < hi


def test_save_figure_rejects_bad_names_and_objects(tmp_path):
    fig = _builders()["impact_summary"]()
    for bad in ("../x", "a/b", "", ".hidden"):
        with pytest.raises(AuditError, match="plain file stem"):
            P.save_figure(fig, tmp_path, bad)
    with pytest.raises(AuditError, match="needs a matplotlib Figure"):
        P.save_figure("not a figure", tmp_path, "x")


def test_input_mistakes_raise_audit_error():
    kw = _feature_inputs()
    with pytest.raises(AuditError, match="attacked contains 1 non-finite"):
        P.feature_comparison(**{**kw, "attacked": np.r_[kw["attacked"][:-1], np.nan]})
    with pytest.raises(AuditError, match="up_weights has 3 entries but its values have 400"):
        P.feature_comparison(**{**kw, "up_weights": [1, 2, 3]})
    with pytest.raises(AuditError, match="nominal is empty"):
        P.feature_comparison(**{**kw, "nominal": [], "nominal_weights": None})
    with pytest.raises(AuditError, match="strictly increasing"):
        P.feature_comparison(**{**kw, "bins": [1, 0, 2]})
    nn = _nn_inputs()
    with pytest.raises(AuditError, match=r"signal process\(es\) \['higgs'\] not in nominal"):
        P.nn_output_with_bands(**{**nn, "signal": "higgs"})
    with pytest.raises(AuditError, match="exactly 'up' and 'down'"):
        P.nn_output_with_bands(**{**nn, "variations": {"TES": {"up": {}}}})
    with pytest.raises(AuditError, match=r"unknown process\(es\) \['wjets'\]"):
        P.nn_output_with_bands(**{**nn, "attacked": {"wjets": [0.1]}})
    c = np.eye(3)
    with pytest.raises(AuditError, match=r"corr_attacked has shape \(2, 2\) but names has 3"):
        P.correlation_change(c, np.eye(2), ["a", "b", "c"])
    with pytest.raises(AuditError, match="corr_nominal contains non-finite"):
        P.correlation_change(np.full((3, 3), np.nan), c, ["a", "b", "c"])
    with pytest.raises(AuditError, match=r"rel_sig_after\['pgd'\] has 2 points but thresholds has 3"):
        P.significance_curves([0, 0.5, 1], [1, 2, 1], {"pgd": [1, 2]})
    with pytest.raises(AuditError, match="mu_hat must have the same scenarios as pulls"):
        P.toy_distributions({"nominal": [0, 1, 2]}, {"up": [1, 1, 1]})
    with pytest.raises(AuditError, match=r"pulls\['nominal'\] contains 1 non-finite"):
        P.toy_distributions({"nominal": [0, np.inf, 2]}, {"nominal": [1, 1, 1]})
    with pytest.raises(AuditError, match="auc has 2 entries but lambdas has 3"):
        P.lambda_scan([0, 1, 2], [0.8, 0.8], [1, 1, 1], [0.1, 0.1, 0.1], [0.1, 0.1, 0.1])
    with pytest.raises(AuditError, match="verdicts has 1 entries but systematics has 2"):
        P.impact_summary(["a", "b"], [0.1, 0.1], [0.2, None], ["covered"])


def test_helpers():
    c = np.array([[1.0, 0.5], [0.5, 1.0]])
    c2 = np.array([[1.0, 0.6], [0.6, 1.0]])
    assert P.relative_frobenius_change(c, c2) == pytest.approx(np.sqrt(2 * 0.01) / np.sqrt(2 + 2 * 0.25))


def test_quadrature_band():
    lo, hi = P.quadrature_band([10.0, 10.0], [[13.0, 9.0], [6.0, 10.0], [14.0, 10.0]])
    assert lo == pytest.approx([6.0, 9.0]) and hi == pytest.approx([10 + 5.0, 10.0])
    lo, hi = P.quadrature_band([1.0], [])
    assert lo == [1.0] and hi == [1.0]


def test_impact_summary_flags_only_hidden_larger_rows():
    fig = _builders()["impact_summary"]()
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("!") == 1  # only TES: hidden 0.2 > standard 0.07
    assert "no hidden attack found" in texts
    assert "pgd (larger than quoted)" in texts and "fgsm (covered)" in texts
    # first systematic on top
    assert [(t.get_text(), t.get_position()[1]) for t in ax.get_yticklabels()] == [("TES", 2), ("JES", 1), ("MET", 0)]
