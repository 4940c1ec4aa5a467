"""Statistics core: HistFactory-style binned likelihood, batched toy fits, pyhf export.

Modules: ``model`` (the model and pyhf JSON import/export), ``fit`` (batched Newton fits
in torch float64, pyhf-identical NLL), ``toys`` (pseudo-experiments and their
summaries), ``significance`` (q0, Asimov), ``binning`` (NN-output binning),
``from_histograms`` (model from NN-output histograms).

Typical use::

    from hsaudit.stats import model_from_histograms, run_pseudo_experiments, summarise
    model = model_from_histograms(hists, signal_samples=["signal"], lumi_uncertainty=0.017)
    res = run_pseudo_experiments(model, model.expected_main(), n_toys=1000, seed=1, mu_true=1.0)
    summary = summarise(res)

The likelihood follows HistFactory (Cranmer et al., CERN-OPEN-2012-016) as implemented by
pyhf (Heinrich, Feickert, Stark, Cranmer, JOSS 6 (2021) 2823); significances follow
Cowan, Cranmer, Gross, Vitells, EPJC 71 (2011) 1554.
"""

from hsaudit.stats.binning import check_edges, histogram, optimised_edges, uniform_edges
from hsaudit.stats.fit import FitResult, fit_toys, nll
from hsaudit.stats.from_histograms import build_spec, model_from_histograms, truth_from_histograms
from hsaudit.stats.model import Model, from_pyhf_workspace, to_pyhf_workspace
from hsaudit.stats.significance import asimov_data, asimov_significance, discovery_q0
from hsaudit.stats.toys import ToyResult, generate_toys, merge, run_pseudo_experiments, summarise

__all__ = [
    "Model", "to_pyhf_workspace", "from_pyhf_workspace",
    "FitResult", "fit_toys", "nll",
    "ToyResult", "generate_toys", "run_pseudo_experiments", "summarise", "merge",
    "asimov_significance", "asimov_data", "discovery_q0",
    "uniform_edges", "optimised_edges", "histogram", "check_edges",
    "build_spec", "model_from_histograms", "truth_from_histograms",
]
