"""The fit stage of the audit: NN-output templates per channel (fit regions), sample
(dataset) and systematic, the binned likelihood built from them, and the "truths" from which
pseudo-experiments are drawn: nominal, each standard +-1 sigma variation, and each attack's
attacked templates. Every scenario is fitted with the nominal model (Combine's bias-study
recipe: generate with model A, fit with model B).

Choices (documented in docs/audit.md):
- samples of the likelihood are the datasets; signal datasets carry the POI mu;
- shift and weight systematics become shape systematics (normsys + histosys sharing one
  nuisance parameter, see analysis.stats.from_histograms); normalisation systematics become
  normsys; the one named ``lumi`` is the luminosity uncertainty;
- MC statistical uncertainties are Barlow-Beeston-lite ``staterror`` parameters unless
  ``fit.mc_stat_uncertainty`` is false (templates then count as exact: use it only where the
  simulation is a stand-in far smaller than the data it models, as in the demo);
- the binning is optimised per channel on its nominal background (at least
  ``fit.min_background_per_bin`` expected events and at most
  ``fit.max_relative_stat_uncertainty`` MC uncertainty per bin), so that sparse control regions
  get few (or one) bins;
- attacked events keep their nominal region membership and weight; only their NN output
  changes;
- a dataset with no nominal yield in a channel has no template there (events migrating in
  under a shift are then not modelled in that channel).
"""

from __future__ import annotations

import numpy as np

from analysis.config import AnalysisConfig
from analysis.errors import AuditError
from analysis.samples import EventSample
from analysis.tables import NOMINAL


def fit_channels(cfg: AnalysisConfig) -> list[str]:
    return list(cfg.fit.get("channels") or cfg.regions)


def variant_systematics(cfg: AnalysisConfig) -> list[str]:
    """Shift and weight systematics that have +-1 sigma variants, from the configuration
    alone (declared-only per-feature uncertainties of flat tables get coherent +-sigma_i
    variants when the sample is assembled, see analysis.samples)."""
    return list(cfg.shift_names) + [s.name for s in cfg.systematics_of_type("weight")]


def shape_systematics(cfg: AnalysisConfig, sample: EventSample) -> list[str]:
    shifts = [s for s in sample.shift_names() if s in cfg.systematics]
    weights = [s.name for s in cfg.systematics_of_type("weight")
               if f"{s.name}_up" in sample.weight_variations]
    return shifts + weights


def scenarios(cfg: AnalysisConfig, shape_systs: list[str], attacks: list[tuple[str, str]]) -> list[str]:
    """Truths of the pseudo-experiments: nominal, +-1 sigma of each shape systematic, attacks."""
    out = ["nominal"]
    for s in shape_systs:
        out += [f"{s}_up", f"{s}_down"]
    out += [f"attack/{syst}/{attack}" for syst, attack in attacks]
    return out


def binning(outputs: np.ndarray, sample: EventSample, cfg: AnalysisConfig, channel: str) -> np.ndarray:
    from analysis.stats.binning import optimised_edges, uniform_edges

    n_bins = int(cfg.fit.get("n_bins", 10))
    if cfg.fit.get("binning", "optimised") == "uniform":
        return uniform_edges(n_bins)
    region = sample.region[(channel, NOMINAL)]
    sig, bkg = region & (sample.y == 1), region & (sample.y == 0)
    if not bkg.any():
        raise AuditError(f"fit channel '{channel}' has no background events: remove it from fit.channels")
    if not sig.any():
        sig = bkg
    try:
        return optimised_edges(
            outputs[sig], sample.weight[sig], outputs[bkg], sample.weight[bkg], n_bins_target=n_bins,
            min_bkg_yield=float(cfg.fit.get("min_background_per_bin", 1.0)),
            max_rel_stat_unc=float(cfg.fit.get("max_relative_stat_uncertainty", 0.3)),
        )
    except AuditError:
        # too little background MC for even one bin meeting the requirements: a single
        # counting bin, whose large MC uncertainty the staterror parameter carries
        return uniform_edges(1)


def _hist(scores, weights, edges):
    scores = np.clip(scores, edges[0], edges[-1])
    counts, _ = np.histogram(scores, edges, weights=weights)
    sumw2, _ = np.histogram(scores, edges, weights=weights ** 2)
    return counts, sumw2


def template_histograms(outputs: dict[str, np.ndarray], sample: EventSample, cfg: AnalysisConfig,
                        edges: dict[str, np.ndarray]) -> dict:
    """{channel: {dataset: {"nominal", "sumw2", "shapes": {syst: {"up", "down"}}}}}"""
    systs = shape_systematics(cfg, sample)
    hists: dict = {}
    for ch in fit_channels(cfg):
        hists[ch] = {}
        for d, name in enumerate(sample.datasets):
            in_ds = sample.dataset == d
            m = in_ds & sample.region[(ch, NOMINAL)]
            nominal, sumw2 = _hist(outputs[NOMINAL][m], sample.weight[m], edges[ch])
            shapes = {}
            for s in systs:
                shapes[s] = {}
                for direction in ("up", "down"):
                    variant = f"{s}_{direction}"
                    if variant in sample.variants:
                        mv = in_ds & sample.region[(ch, variant)]
                        shapes[s][direction] = _hist(outputs[variant][mv], sample.weight[mv], edges[ch])[0]
                    else:
                        shapes[s][direction] = _hist(outputs[NOMINAL][m], sample.weight_variations[variant][m],
                                                     edges[ch])[0]
            if nominal.sum() <= 0:
                # a dataset the nominal model predicts nothing of in this channel (events may
                # still migrate in under a shift): it cannot carry a template there
                continue
            hists[ch][name] = {"nominal": nominal, "sumw2": sumw2, "shapes": shapes}
        if not hists[ch]:
            raise AuditError(f"fit channel '{ch}' has no events in the nominal variant: remove it from fit.channels")
    return hists


def norm_systematics(cfg: AnalysisConfig, sample: EventSample) -> tuple[dict, float | None]:
    norm, lumi = {}, None
    for s in cfg.systematics_of_type("normalization"):
        if s.name == "lumi":
            lumi = s.uncertainty
            continue
        datasets = [n for n, p in zip(sample.datasets, sample.processes) if s.applies_to(p) or s.applies_to(n)]
        if datasets:
            norm[s.name] = {"samples": datasets, "lo": 1.0 - s.uncertainty, "hi": 1.0 + s.uncertainty}
    return norm, lumi


def signal_samples(sample: EventSample) -> list[str]:
    return [n for d, n in enumerate(sample.datasets) if (sample.y[sample.dataset == d] == 1).any()]


def build_likelihood(outputs: dict[str, np.ndarray], sample: EventSample, cfg: AnalysisConfig) -> dict:
    """Model spec, binning, templates and the truths of the standard scenarios."""
    from analysis.stats.from_histograms import build_spec, truth_from_histograms
    from analysis.stats.model import Model

    edges = {ch: binning(outputs[NOMINAL], sample, cfg, ch) for ch in fit_channels(cfg)}
    hists = template_histograms(outputs, sample, cfg, edges)
    norm, lumi = norm_systematics(cfg, sample)
    signals = signal_samples(sample)
    bounds = cfg.fit.get("mu_bounds", [-5.0, 10.0])
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and bounds[0] < 1.0 < bounds[1]):
        raise AuditError(f"fit.mu_bounds must be [low, high] around 1, got {bounds!r}")
    mc_stat = cfg.fit.get("mc_stat_uncertainty", True)
    if not isinstance(mc_stat, bool):
        raise AuditError(f"fit.mc_stat_uncertainty must be true or false, got {mc_stat!r}")
    # bias studies need room below zero: a bound at mu = 0 would itself bias the toys
    spec = build_spec(hists, signal_samples=signals, norm_systs=norm, lumi_uncertainty=lumi,
                      edges=edges, negative_yields="clip", poi_bounds=tuple(float(b) for b in bounds),
                      staterror=mc_stat)
    model = Model(spec)
    mu = float(cfg.fit.get("mu_true", 1.0))
    # truths are kept per channel: a concatenated vector would depend on the channel order
    truths = {"nominal": model.channel_data(truth_from_histograms(model, hists, signal_samples=signals, mu=mu))}
    for s in shape_systematics(cfg, sample):
        for direction in ("up", "down"):
            truths[f"{s}_{direction}"] = model.channel_data(truth_from_histograms(
                model, hists, signal_samples=signals, mu=mu, variation=s, direction=direction))
    return {"spec": spec, "edges": edges, "signal_samples": signals, "truths": truths,
            "channels": list(hists), "mu_true": mu}


def row_table(outputs_nominal: np.ndarray, sample: EventSample, cfg: AnalysisConfig) -> dict:
    """Per-event information needed to turn attacked NN outputs into templates cheaply."""
    return {
        "weight": sample.weight,
        "is_signal": sample.y.astype(bool),
        "channels": np.stack([sample.region[(ch, NOMINAL)] for ch in fit_channels(cfg)]),
        "output": outputs_nominal.astype(np.float64),
    }


def attacked_truth(likelihood: dict, rows_info: dict, attacked_rows: np.ndarray,
                   attacked_outputs: np.ndarray, regions_after: dict[str, np.ndarray] | None = None
                   ) -> dict[str, np.ndarray]:
    """Expected yields per channel when the attacked events' NN outputs replace their nominal
    ones and, with ``regions_after`` ({channel: membership of the attacked rows after the
    attack}), the attacked events migrate between channels (default: they keep their
    nominal channels)."""
    mu = likelihood["mu_true"]
    w = rows_info["weight"][attacked_rows] * np.where(rows_info["is_signal"][attacked_rows], mu, 1.0)
    before = rows_info["output"][attacked_rows]
    truth = {}
    for c, ch in enumerate(likelihood["channels"]):
        m = rows_info["channels"][c][attacked_rows]
        if regions_after is not None and ch not in regions_after:
            raise AuditError(f"the attacked events have no region membership for fit channel '{ch}'")
        ma = m if regions_after is None else np.asarray(regions_after[ch], dtype=bool)
        edges = np.asarray(likelihood["edges"][ch], dtype=float)
        delta = _hist(attacked_outputs[ma], w[ma], edges)[0] - _hist(before[m], w[m], edges)[0]
        nominal = np.asarray(likelihood["truths"]["nominal"][ch], dtype=float)
        if len(nominal) != len(delta):
            raise AuditError(f"attacked templates do not match the likelihood's binning in channel '{ch}'")
        # negative-weight events can push a bin below zero: a Poisson mean stays >= 0
        truth[ch] = np.clip(nominal + delta, 0.0, None)
    return truth
