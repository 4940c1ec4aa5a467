"""The toys figure and summary.json quote the same pull fit: the pull width in the figure's
legend is the summary's ``pull_width``."""

import re

import matplotlib
import numpy as np

matplotlib.use("Agg")

from hsaudit import plotting  # noqa: E402
from hsaudit.audit import figure_toys  # noqa: E402
from hsaudit.stats.toys import ToyResult, summarise  # noqa: E402


def _toys(seed, n=400, mu_true=1.0, width=1.3):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.2, 0.3, n)
    mu_hat = mu_true + 0.1 + width * sigma * rng.standard_normal(n)
    converged = rng.random(n) > 0.05
    return ToyResult(toy_index=np.arange(n), mu_hat=mu_hat, sigma_mu=sigma, converged=converged,
                     status=np.where(converged, 0, 1), nll=np.zeros(n), q0=np.zeros(n), z=np.zeros(n),
                     params=np.zeros((n, 1)), uncertainties=np.zeros((n, 1)), mu_true=mu_true, seed=seed)


def _legend_widths(fig):
    labels = fig.axes[0].get_legend_handles_labels()[1]
    return {lab.split(":")[0]: float(re.search(r"\\sigma\$=([-0-9.]+)", lab).group(1)) for lab in labels if ":" in lab}


def test_figure_pull_widths_are_the_summary_pull_widths(tmp_path, monkeypatch):
    results = {"nominal": _toys(1), "tes_up": _toys(2, width=0.8)}
    figures = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, d, name: figures.append(fig) or {})
    monkeypatch.setattr("hsaudit.report.figure_entry", lambda *a, **k: {})
    figure_toys("m", results, list(results), tmp_path)
    widths = _legend_widths(figures[0])
    for sc, r in results.items():
        s = summarise(r)
        assert widths[sc] == float(f"{s['pull_width']:.2f}")
    assert abs(widths["nominal"] - 1.3) < 0.15 and abs(widths["tes_up"] - 0.8) < 0.1
