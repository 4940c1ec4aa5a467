"""The fit stage of the audit: NN-output templates per channel (fit regions), sample
(dataset) and systematic, the binned likelihood built from them, and the "truths" from which
pseudo-experiments are drawn: nominal, each standard +-1 sigma variation, and each attack's
attacked templates. Every scenario is fitted with the nominal model (Combine's bias-study
recipe: generate with model A, fit with model B).

Choices (documented in docs/audit.md):
- samples of the likelihood are the datasets; signal datasets carry the POI mu;
- shift and weight systematics become shape systematics (normsys + histosys sharing one
  nuisance parameter, see hsaudit.stats.from_histograms); normalisation systematics become
  normsys; the one named ``lumi`` is the luminosity uncertainty;
- MC statistical uncertainties are Barlow-Beeston-lite ``staterror`` parameters unless
  ``fit.mc_stat_uncertainty`` is false (templates then count as exact: use it only where the
  simulation is a stand-in far smaller than the data it models, as in the demo);
- the binning is optimised per channel on its nominal background (at least
  ``fit.min_background_per_bin`` expected events and at most
  ``fit.max_relative_stat_uncertainty`` MC uncertainty per bin), so that sparse control regions
  get few (or one) bins;
- shape templates are treated before the model is built (``fit.shape_treatment``:
  symmetrised, optionally smoothed, pruned where the MC noise of the events that change bin
  cannot resolve them; hsaudit.stats.template_treatment), so that nominal toys close;
- attacked events keep their nominal weight (or the attack's measuring weights) and, unless
  their region membership after the attack is given, their channels; only their NN output
  changes;
- a dataset with no nominal yield in a channel has no template there (events migrating in
  under a shift are then not modelled in that channel).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsaudit.config import AnalysisConfig, Systematic
from hsaudit.config_schema import FitSection
from hsaudit.errors import AuditError
from hsaudit.histograms import weighted_histogram
from hsaudit.samples import EventSample
from hsaudit.tables import NOMINAL


@dataclass(frozen=True)
class FitStageSettings:
    """What the fit stage reads of the configuration, built once where it is entered
    (``from_config``): the typed ``fit`` section, the fitted channels and the systematics by
    their role in the likelihood."""

    fit: FitSection
    channels: tuple[str, ...]                 # fit.channels, default every region
    systematics: tuple[str, ...]              # every configured systematic
    weight_systematics: tuple[str, ...]       # type weight
    normalisations: tuple[Systematic, ...]    # type normalization (the one named lumi: the luminosity)

    @classmethod
    def from_config(cls, cfg: AnalysisConfig) -> "FitStageSettings":
        fit = cfg.section("fit")
        return cls(fit=fit, channels=tuple(fit.channels or cfg.regions), systematics=tuple(cfg.systematics),
                   weight_systematics=tuple(s.name for s in cfg.systematics_of_type("weight")),
                   normalisations=tuple(cfg.systematics_of_type("normalization")))

    def shape_systematics(self, sample: EventSample) -> list[str]:
        """The shape systematics of the likelihood: the configured shifts the sample has variants
        of, then the weight systematics it has weight variations of."""
        shifts = [s for s in sample.shift_names() if s in self.systematics]
        weights = [s for s in self.weight_systematics if f"{s}_up" in sample.weight_variations]
        return shifts + weights


def fit_channels(cfg: AnalysisConfig) -> list[str]:
    return list(cfg.section("fit").channels or cfg.regions)


def variant_systematics(cfg: AnalysisConfig) -> list[str]:
    """Shift and weight systematics that have +-1 sigma variants, from the configuration
    alone (declared-only per-feature uncertainties of flat tables get coherent +-sigma_i
    variants when the sample is assembled, see hsaudit.samples)."""
    return list(cfg.shift_names) + [s.name for s in cfg.systematics_of_type("weight")]


def scenarios(cfg: AnalysisConfig, shape_systs: list[str], attacks: list[tuple[str, str]]) -> list[str]:
    """Truths of the pseudo-experiments: nominal, +-1 sigma of each shape systematic, attacks."""
    out = ["nominal"]
    for s in shape_systs:
        out += [f"{s}_up", f"{s}_down"]
    out += [f"attack/{syst}/{attack}" for syst, attack in attacks]
    return out


def binning(outputs: np.ndarray, sample: EventSample, fit: FitSection, channel: str) -> np.ndarray:
    """NN-output bin edges of ``channel`` by the typed ``fit`` section (binning, n_bins and the
    optimised binning's limits)."""
    from hsaudit.stats.binning import optimised_edges, uniform_edges

    n_bins = fit.n_bins
    if fit.binning == "uniform":
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
            min_bkg_yield=float(fit.min_background_per_bin),
            max_rel_stat_unc=float(fit.max_relative_stat_uncertainty),
        )
    except AuditError:
        # too little background MC for even one bin meeting the requirements: a single
        # counting bin, whose large MC uncertainty the staterror parameter carries
        return uniform_edges(1)


def _bin_index(scores, edges) -> np.ndarray:
    """Bin of each score as np.histogram assigns it (after clipping into the edges; the last
    bin includes its right edge); -1 for NaN (np.histogram drops those)."""
    scores = np.asarray(scores, dtype=np.float64)
    idx = np.searchsorted(edges, np.clip(scores, edges[0], edges[-1]), side="right") - 1
    idx = np.minimum(idx, len(edges) - 2)
    return np.where(np.isfinite(scores), idx, -1)


def template_index(outputs: dict[str, np.ndarray], sample: EventSample, settings: FitStageSettings,
                   edges: dict[str, np.ndarray]) -> dict:
    """Per (channel, dataset) of ``settings.channels``: the rows and bins of the nominal template and, per shape
    systematic and direction, the rows, bins and the weight array they take (the nominal
    weight for shift variants, the weight variation otherwise). Templates for any event
    weights (a bootstrap replica) then cost a few bincounts (:func:`templates_from_index`)."""
    systs = settings.shape_systematics(sample)
    index: dict = {"edges": {ch: np.asarray(e, dtype=np.float64) for ch, e in edges.items()}, "channels": {}}
    for ch in settings.channels:
        e = index["edges"][ch]
        per_ds = {}
        for d, name in enumerate(sample.datasets):
            in_ds = sample.dataset == d
            rows = np.flatnonzero(in_ds & sample.region[(ch, NOMINAL)])
            bins = _bin_index(outputs[NOMINAL][rows], e)
            entry = {"rows": rows[bins >= 0], "bins": bins[bins >= 0], "shapes": {}}
            for s in systs:
                entry["shapes"][s] = {}
                for direction in ("up", "down"):
                    variant = f"{s}_{direction}"
                    if variant in sample.variants:
                        rv = np.flatnonzero(in_ds & sample.region[(ch, variant)])
                        bv = _bin_index(outputs[variant][rv], e)
                        entry["shapes"][s][direction] = (rv[bv >= 0], bv[bv >= 0], None)
                    else:
                        entry["shapes"][s][direction] = (entry["rows"], entry["bins"], variant)
            per_ds[name] = entry
        index["channels"][ch] = per_ds
    return index


def _shape_noise(nb, up, down, wu, wd) -> np.ndarray:
    """Covariance (nb, nb) of the estimator up - down over the MC events: sum_i a_i a_i^T with
    a_i = w_up,i e_(bin under up) - w_down,i e_(bin under down) (an event in the same bin with
    the same weight in both contributes nothing)."""
    rows_u, bins_u = up
    rows_d, bins_d = down
    C = np.zeros(nb * nb)
    np.add.at(C, bins_u * (nb + 1), wu ** 2)
    np.add.at(C, bins_d * (nb + 1), wd ** 2)
    # cross terms of the events selected under both directions
    common, iu, jd = np.intersect1d(rows_u, rows_d, assume_unique=True, return_indices=True)
    if len(common):
        cross = -wu[iu] * wd[jd]
        np.add.at(C, bins_u[iu] * nb + bins_d[jd], cross)
        np.add.at(C, bins_d[jd] * nb + bins_u[iu], cross)
    return C.reshape(nb, nb)


def templates_from_index(index: dict, sample: EventSample, event_scale: np.ndarray | None = None) -> dict:
    """{channel: {dataset: {"nominal", "sumw2", "shapes": {syst: {"up", "down"}},
    "shape_noise": {syst: (nb, nb)}}}} with every event weight times ``event_scale`` (N,)
    (default 1); "shape_noise" is the MC-noise covariance of up - down (see
    hsaudit.stats.template_treatment)."""
    scale = None if event_scale is None else np.asarray(event_scale, dtype=np.float64)
    hists: dict = {}
    for ch, per_ds in index["channels"].items():
        nb = len(index["edges"][ch]) - 1
        hists[ch] = {}

        def weights(rows, source):
            w = sample.weight[rows] if source is None else sample.weight_variations[source][rows]
            return w if scale is None else w * scale[rows]

        for name, entry in per_ds.items():
            w = weights(entry["rows"], None)
            nominal = np.bincount(entry["bins"], weights=w, minlength=nb)
            if nominal.sum() <= 0:
                # a dataset the nominal model predicts nothing of in this channel (events may
                # still migrate in under a shift): it cannot carry a template there
                continue
            sumw2 = np.bincount(entry["bins"], weights=w ** 2, minlength=nb)
            shapes, noise = {}, {}
            for s, dirs in entry["shapes"].items():
                (ru, bu, su), (rd, bd, sd) = dirs["up"], dirs["down"]
                wu, wd = weights(ru, su), weights(rd, sd)
                shapes[s] = {"up": np.bincount(bu, weights=wu, minlength=nb),
                             "down": np.bincount(bd, weights=wd, minlength=nb)}
                noise[s] = _shape_noise(nb, (ru, bu), (rd, bd), wu, wd)
            hists[ch][name] = {"nominal": nominal, "sumw2": sumw2, "shapes": shapes, "shape_noise": noise}
        if not hists[ch]:
            raise AuditError(f"fit channel '{ch}' has no events in the nominal variant: remove it from fit.channels")
    return hists


def template_histograms(outputs: dict[str, np.ndarray], sample: EventSample, settings: FitStageSettings,
                        edges: dict[str, np.ndarray]) -> dict:
    """{channel: {dataset: {"nominal", "sumw2", "shapes": {syst: {"up", "down"}}, "shape_noise"}}}"""
    return templates_from_index(template_index(outputs, sample, settings, edges), sample)


def norm_systematics(normalisations, sample: EventSample) -> tuple[dict, float | None]:
    """({name: normsys entry}, luminosity uncertainty or None) of the normalisation systematics."""
    norm, lumi = {}, None
    for s in normalisations:
        if s.name == "lumi":
            lumi = s.uncertainty
            continue
        datasets = [n for n, p in zip(sample.datasets, sample.processes) if s.applies_to(p) or s.applies_to(n)]
        if datasets:
            norm[s.name] = {"samples": datasets, "lo": 1.0 - s.uncertainty, "hi": 1.0 + s.uncertainty}
    return norm, lumi


def signal_samples(sample: EventSample) -> list[str]:
    return [n for d, n in enumerate(sample.datasets) if (sample.y[sample.dataset == d] == 1).any()]


def build_likelihood(outputs: dict[str, np.ndarray], sample: EventSample, cfg: AnalysisConfig, *,
                     edges: dict[str, np.ndarray] | None = None, index: dict | None = None,
                     event_scale: np.ndarray | None = None, pruning: dict | None = None) -> dict:
    """Model spec, binning, templates and the truths of the standard scenarios.

    The shape templates are treated (symmetrised, smoothed, pruned: ``fit.shape_treatment``,
    see hsaudit.stats.template_treatment) before the model is built; the truths of the
    +-1 sigma scenarios are the untreated templates (the variation as simulated), so that
    their toys test whether the treated model absorbs it. ``edges`` fixes the binning,
    ``index`` (from :func:`template_index`) skips recomputing the events' bins, and
    ``event_scale`` (N,) multiplies every event weight (a bootstrap replica of the MC);
    ``pruning`` imposes pruning decisions (template_treatment.pruning_decisions)."""
    from hsaudit.stats.from_histograms import build_spec, truth_from_histograms
    from hsaudit.stats.model import Model
    from hsaudit.stats.template_treatment import treat_templates, treatment_settings

    settings = FitStageSettings.from_config(cfg)
    fit = settings.fit
    treatment = treatment_settings(shape_treatment_setting(fit))
    if index is not None:
        edges = index["edges"]
    if edges is None:
        edges = {ch: binning(outputs[NOMINAL], sample, fit, ch) for ch in settings.channels}
    if index is None:
        index = template_index(outputs, sample, settings, edges)
    hists = templates_from_index(index, sample, event_scale)
    treated, record = treat_templates(hists, treatment, pruning)
    norm, lumi = norm_systematics(settings.normalisations, sample)
    signals = signal_samples(sample)
    bounds = fit.mu_bounds
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and bounds[0] < 1.0 < bounds[1]):
        raise AuditError(f"fit.mu_bounds must be [low, high] around 1, got {bounds!r}")
    mc_stat = fit.mc_stat_uncertainty
    # bias studies need room below zero: a bound at mu = 0 would itself bias the toys
    spec = build_spec(treated, signal_samples=signals, norm_systs=norm, lumi_uncertainty=lumi,
                      edges=edges, negative_yields="clip", poi_bounds=tuple(float(b) for b in bounds),
                      staterror=mc_stat)
    model = Model(spec)
    mu = float(fit.mu_true)
    # truths are kept per channel: a concatenated vector would depend on the channel order
    truths = {"nominal": model.channel_data(truth_from_histograms(model, hists, signal_samples=signals, mu=mu))}
    for s in settings.shape_systematics(sample):
        for direction in ("up", "down"):
            truths[f"{s}_{direction}"] = model.channel_data(truth_from_histograms(
                model, hists, signal_samples=signals, mu=mu, variation=s, direction=direction))
    return {"spec": spec, "edges": edges, "signal_samples": signals, "truths": truths,
            "channels": list(hists), "mu_true": mu, "shape_treatment": record,
            "datasets": list(sample.datasets)}


def shape_treatment_setting(fit: FitSection):
    """``fit.shape_treatment`` of the typed section as hsaudit.stats.template_treatment reads it:
    true / false, or the mapping with every default of the schema filled in."""
    st = fit.shape_treatment
    return st if isinstance(st, bool) else st.model_dump()


def _hist(values, weights, edges):
    """Weighted histogram of NN outputs: values outside the edges clipped into the first / last
    bin, NaN left out, sums as np.histogram adds them (hsaudit.histograms)."""
    return weighted_histogram(values, weights, edges, outside="clip", nonfinite="drop", sums="cumulative",
                              what="attacked templates")


def row_table(outputs_nominal: np.ndarray, sample: EventSample, cfg: AnalysisConfig) -> dict:
    """Per-event information needed to turn attacked NN outputs into templates cheaply."""
    return {
        "weight": sample.weight,
        "is_signal": sample.y.astype(bool),
        "channels": np.stack([sample.region[(ch, NOMINAL)] for ch in fit_channels(cfg)]),
        "output": outputs_nominal.astype(np.float64),
        "dataset": sample.dataset.astype(np.int64),
    }


def attacked_deltas(likelihood: dict, rows_info: dict, attacked_rows: np.ndarray,
                    attacked_outputs: np.ndarray, regions_after: dict[str, np.ndarray] | None = None,
                    weights: np.ndarray | None = None, *, per_dataset: bool = False) -> dict:
    """Change of the expected yields per channel ({channel: (nb,)}, signal scaled by mu_true)
    or, with ``per_dataset``, per channel and dataset index ({channel: {dataset: (nb,)}},
    unscaled: the change of that sample's template) when the attacked events' NN outputs
    replace their nominal ones. ``regions_after`` ({channel: membership of the attacked rows
    after the attack}) lets them migrate between channels (default: nominal channels kept);
    ``weights`` (len(rows),) are the weights the attack is measured with (an attack judged
    on half of the events counts those twice; default: the events' weights)."""
    rows = np.asarray(attacked_rows)
    attacked_outputs = np.asarray(attacked_outputs, dtype=np.float64)
    if attacked_outputs.shape != rows.shape:
        raise AuditError(f"attacked outputs have shape {attacked_outputs.shape}, the attacked rows {rows.shape}")
    w = rows_info["weight"][rows] if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != rows.shape:
        raise AuditError(f"attack weights have shape {w.shape}, the attacked rows {rows.shape}")
    if not per_dataset:
        w = w * np.where(rows_info["is_signal"][rows], likelihood["mu_true"], 1.0)
    before = rows_info["output"][rows]
    ds = rows_info["dataset"][rows] if per_dataset else None
    out = {}
    for c, ch in enumerate(likelihood["channels"]):
        m = rows_info["channels"][c][rows]
        if regions_after is not None and ch not in regions_after:
            raise AuditError(f"the attacked events have no region membership for fit channel '{ch}'")
        ma = m if regions_after is None else np.asarray(regions_after[ch], dtype=bool)
        edges = np.asarray(likelihood["edges"][ch], dtype=float)
        if not per_dataset:
            out[ch] = _hist(attacked_outputs[ma], w[ma], edges)[0] - _hist(before[m], w[m], edges)[0]
            continue
        out[ch] = {}
        for d in np.unique(ds[m | ma]):
            md, mad = m & (ds == d), ma & (ds == d)
            out[ch][int(d)] = _hist(attacked_outputs[mad], w[mad], edges)[0] - _hist(before[md], w[md], edges)[0]
    return out


def attacked_truth(likelihood: dict, rows_info: dict, attacked_rows: np.ndarray,
                   attacked_outputs: np.ndarray, regions_after: dict[str, np.ndarray] | None = None,
                   weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Expected yields per channel when the attacked events' NN outputs replace their nominal
    ones and, with ``regions_after`` ({channel: membership of the attacked rows after the
    attack}), the attacked events migrate between channels (default: they keep their
    nominal channels); ``weights`` as for :func:`attacked_deltas`."""
    deltas = attacked_deltas(likelihood, rows_info, attacked_rows, attacked_outputs, regions_after, weights)
    truth = {}
    for ch in likelihood["channels"]:
        nominal = np.asarray(likelihood["truths"]["nominal"][ch], dtype=float)
        if len(nominal) != len(deltas[ch]):
            raise AuditError(f"attacked templates do not match the likelihood's binning in channel '{ch}'")
        # negative-weight events can push a bin below zero: a Poisson mean stays >= 0
        truth[ch] = np.clip(nominal + deltas[ch], 0.0, None)
    return truth


def load_attack_outputs(path) -> dict:
    """The attacked rows, their NN outputs, region membership after the attack and measuring
    weights from a ValidateAttack outputs file, as keyword arguments of :func:`attacked_truth`."""
    from hsaudit.attack_files import AttackedOutputs

    a = AttackedOutputs.load(path)
    return {"attacked_rows": a.rows, "attacked_outputs": a.attacked, "regions_after": a.regions,
            "weights": a.eval_weights}


def scenario_truth(likelihood: dict, scenario: str, rows_info: dict | None = None,
                   attack: dict | None = None) -> dict[str, np.ndarray]:
    """Expected yields per channel of one scenario: a standard one from the likelihood's
    truths, an ``attack/<systematic>/<attack>`` one from the attack's outputs (``attack``,
    see :func:`load_attack_outputs`) and the likelihood's row table (``rows_info``)."""
    if scenario.startswith("attack/"):
        if rows_info is None or attack is None:
            raise AuditError(f"scenario '{scenario}' needs the attack's outputs and the likelihood's row table")
        return attacked_truth(likelihood, rows_info, **attack)
    if scenario not in likelihood["truths"]:
        raise AuditError(f"scenario '{scenario}' has no truth in the likelihood "
                         f"(known: {sorted(likelihood['truths'])})")
    return likelihood["truths"][scenario]


def pseudo_experiment_stage(likelihood_path, outputs: dict, *, n_toys: int, first_toy: int, seed: int,
                            rows_path=None, attack_paths: dict | None = None, max_iterations: int = 500,
                            significance=("nominal",)) -> dict:
    """The PseudoExperiments stage of one model (and toy chunk): load the likelihood once,
    build the model once, draw the toys of every scenario in ``outputs`` ({scenario: result
    path}) and fit them all in as few batched engine calls as memory allows, then write one
    toy-result file per scenario.

    ``attack_paths`` ({scenario: ValidateAttack outputs file}) and ``rows_path`` (the
    likelihood's row table) are needed for attack scenarios. Every scenario shares ``seed``
    (common random numbers make the differences between scenarios, the biases compared in
    the audit, less noisy). Returns {"scenarios", "fits", "seconds"}: what was fitted."""
    import json
    import time
    from pathlib import Path

    from hsaudit.stats.model import Model
    from hsaudit.stats.toys import run_scenarios

    start = time.perf_counter()
    lk = json.loads(Path(likelihood_path).read_text())
    attack_paths = attack_paths or {}
    rows_info = None
    if any(s.startswith("attack/") for s in outputs):
        if rows_path is None:
            raise AuditError("attack scenarios need the likelihood's row table (rows_path)")
        with np.load(rows_path) as f:
            rows_info = {k: f[k] for k in f.files}
    model = Model(lk["spec"])
    truths = {}
    for s in outputs:
        attack = None
        if s.startswith("attack/"):
            if s not in attack_paths:
                raise AuditError(f"scenario '{s}' has no attack outputs file")
            attack = load_attack_outputs(attack_paths[s])
        truths[s] = model.concat_channels(scenario_truth(lk, s, rows_info, attack), f"truth of scenario {s}")
    sig = [s for s in outputs if s in set(significance)]
    # q0 (a second fit per toy) only where the report uses it: the nominal significance
    results = run_scenarios(model, truths, n_toys, seed, mu_true=lk["mu_true"], first_toy=first_toy,
                            significance=sig, max_iter=int(max_iterations))
    for s, path in outputs.items():
        results[s].save(path)
    return {"scenarios": len(outputs), "fits": int(n_toys) * (len(outputs) + len(sig)),
            "seconds": time.perf_counter() - start}
