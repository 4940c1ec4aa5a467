"""Benchmark: the seed papers' attacks in their own settings, on a demo-like sample and on HiggsML.

Nachman & Shimmin, "AI Safety for High Energy Physics" (2019), arXiv:1910.08606, attack a
trained classifier (1) with an iterated fast gradient sign method (FGSM: signal events only,
pushed towards the background label, eps = 0.001 per iteration for 10 iterations, relative
steps for momenta and absolute steps for angles) and (2) with an adversarial network g(x) =
x + rho tanh(...) (rho = 0.02 per feature, 4 x 300 ReLU; a signal loss log(1 - f(g(x))) and a
background loss that keeps f and the observables of moved background events in place;
training stops when the Kolmogorov-Smirnov statistic of the NN output of the moved background
exceeds 0.02 or that of a validated observable, jet mass or pt, exceeds 0.04). They quote the relative degradation of
the discovery significance s / sqrt(b) at the nominal optimal cut: about 30% for FGSM and
about 25% for the adversarial network (low-level network).

The audit runs these attacks confined to each systematic's envelope, which is a different
question. Here they run in the papers' own setting: no systematic, the attack's own bounds
(FGSM: a box of 10 x eps, relative for every non-angle continuous feature, absolute for
angles, integer features fixed; the adversarial network: rho = 0.02 of the same kind), on

* ``demo``: the H -> tau tau-like toy of ``hsaudit.attacks.toy`` (six features in physical
  units with their kinds; fast, needs no input files);
* ``higgsml``: the HiggsML subset (``higgsml_sig_4999.csv`` / ``higgsml_bkg_4999.csv``, the
  19 features defined for every event, ``Weight`` as event weight), read from the folder in
  the ``HIGGSML_DATA`` environment variable (default ``../shared/data/higgsml`` next to the
  repository);
* ``demo_selection``: the real demo analysis (config/demo.yaml): its generated NanoAOD events
  through the coffea selection and the merge, the events selected in the nominal variant with
  the configured features and kinds (``demo_selection_sample``).

The classifier is trained with the library (``hsaudit.ml.training.train_classifier``) on the
nominal sample; the nominal optimal cut maximises s / sqrt(b) on the test events (cuts with
fewer than ``MIN_BKG_EVENTS`` background events are skipped, so that a lone background event
does not make a spike); the attacks (``hsaudit.attacks.make_attack``) move the test events and
the significance at that same cut is recomputed.

Uncertainties: every degradation carries the standard deviation of 1 - Z_attacked / Z_nominal
over ``N_BOOTSTRAP`` bootstrap resamples of the test events at the fixed nominal cut (the
attacked outputs of each event travel with it: the statistical uncertainty of the test sample,
not that of the training), and, separately, the spread over ``SEEDS`` training seeds (classifier
and attack both re-seeded: the training uncertainty). The cut is chosen on the same test
events, which favours the nominal significance; the degradation at the cut chosen on the
validation split (``*_validation_cut``) shows the size of that choice.

Diagnostics that explain the size of the numbers (docs/science.md, "Seed papers' settings"):

* FGSM moves the logit z of a signal event by ``dlogit_signal`` (mean), within a few per cent
  of the first-order value ``10 eps sum_i |dz/dx_i| |x_i|`` (``dlogit_first_order``; absolute
  for angles), and the degradation is the signal fraction that this moves below the cut;
  ``efficiency_scan`` gives it for cuts of several signal efficiencies;
* ``toy_scans`` (demo-like toy only) retrain the same network on the same physics in other
  representations: ``width`` adds (k - 1) times its mean to every momentum feature (the
  classifier standardises its inputs, so it learns the same function, but a relative step
  becomes k times larger in units of the feature's width), ``constituents`` splits every
  momentum into N parts with random (Dirichlet) fractions (N times as many momentum inputs),
  ``epochs`` trains for fewer epochs (under-trained networks);
* the adversarial network's ``dlogit_signal`` / ``dlogit_background`` (mean logit change of the
  events above the cut) and ``b_above_cut_ratio``: a g that lowers both alike acts like a
  higher cut, which at the optimal cut changes s / sqrt(b) only at second order.

    python benchmarks/seed_papers.py --quick   # about a minute on 2 CPU cores (3 seeds, the toy scans)
    python benchmarks/seed_papers.py           # more events, the papers' 4 x 300 generator

Ends with one line of key=value figures and writes benchmarks/results/seed_papers_<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import cpu_model  # noqa: E402
from hsaudit.attacks import Envelope, make_attack, model_probabilities  # noqa: E402
from hsaudit.attacks.base import model_logits  # noqa: E402
from hsaudit.attacks.toy import TOY_FEATURES, make_toy_events  # noqa: E402
from hsaudit.errors import AuditError  # noqa: E402
from hsaudit.ml.evaluation import weighted_auc  # noqa: E402
from hsaudit.ml.training import TEST, VALIDATION, train_classifier  # noqa: E402

PAPER_DEGRADATION = {"fgsm": 0.30, "adversarial_network": 0.25}  # Nachman & Shimmin 2019, low-level network
MIN_BKG_EVENTS = 20
EPS, ITERATIONS, RHO = 0.001, 10, 0.02
N_BOOTSTRAP = 200
SEEDS = (0, 1, 2)  # training seeds; the first one gives the headline numbers

DEMO_KINDS = {"tau_pt": "momentum", "tau_eta": "angle", "met_pt": "momentum", "m_vis": "momentum",
              "n_jets": "integer", "delta_phi": "angle"}
HIGGSML_KINDS = {
    "DER_mass_transverse_met_lep": "momentum", "DER_mass_vis": "momentum", "DER_pt_h": "momentum",
    "DER_deltar_tau_lep": "angle", "DER_pt_tot": "momentum", "DER_sum_pt": "momentum",
    "DER_pt_ratio_lep_tau": "other", "DER_met_phi_centrality": "other", "PRI_tau_pt": "momentum",
    "PRI_tau_eta": "angle", "PRI_tau_phi": "angle", "PRI_lep_pt": "momentum", "PRI_lep_eta": "angle",
    "PRI_lep_phi": "angle", "PRI_met": "momentum", "PRI_met_phi": "angle", "PRI_met_sumet": "momentum",
    "PRI_jet_num": "integer", "PRI_jet_all_pt": "momentum",
}


# ---------------------------------------------------------------------------- significance
def significance_at_cut(p, labels, weights, cut: float) -> float:
    """s / sqrt(b) of the events with NN output >= cut (weighted)."""
    p, labels, weights = np.asarray(p, np.float64), np.asarray(labels), np.asarray(weights, np.float64)
    sel = p >= cut
    s = float(weights[sel & (labels == 1)].sum())
    b = float(weights[sel & (labels == 0)].sum())
    if b <= 0:
        raise AuditError(f"no background above the cut {cut}: s / sqrt(b) is undefined")
    return s / np.sqrt(b)


def optimal_cut(p, labels, weights, min_bkg_events: int = MIN_BKG_EVENTS) -> tuple[float, float]:
    """(cut, s / sqrt(b)) maximising s / sqrt(b) over the distinct NN outputs, among cuts that
    keep at least ``min_bkg_events`` background events."""
    p, labels, weights = np.asarray(p, np.float64), np.asarray(labels), np.asarray(weights, np.float64)
    if p.shape != labels.shape or p.shape != weights.shape or p.ndim != 1 or len(p) == 0:
        raise AuditError("optimal_cut needs non-empty (N,) outputs, labels and weights of one length")
    order = np.argsort(-p, kind="stable")
    ps, ys, ws = p[order], labels[order], weights[order]
    s = np.cumsum(np.where(ys == 1, ws, 0.0))
    b = np.cumsum(np.where(ys == 0, ws, 0.0))
    nb = np.cumsum(ys == 0)
    last = np.r_[ps[1:] != ps[:-1], True]  # a cut at ps[i] keeps every event with the same output
    ok = last & (nb >= min_bkg_events) & (b > 0)
    if not ok.any():
        raise AuditError(f"fewer than {min_bkg_events} background events: no cut to optimise")
    z = np.where(ok, s / np.sqrt(np.where(b > 0, b, 1.0)), -np.inf)
    i = int(np.argmax(z))
    return float(ps[i]), float(z[i])


def relative_degradation(p_nominal, p_attacked, labels, weights, min_bkg_events: int = MIN_BKG_EVENTS) -> dict:
    """Significance at the nominal optimal cut before and after the attack, and the relative
    loss 1 - Z_attacked / Z_nominal (positive: the attack lowered the sensitivity)."""
    cut, z0 = optimal_cut(p_nominal, labels, weights, min_bkg_events)
    z1 = significance_at_cut(p_attacked, labels, weights, cut)
    return {"cut": cut, "z_nominal": z0, "z_attacked": z1, "degradation": 1.0 - z1 / z0}


def bootstrap_degradation(p_nominal, p_attacked, labels, weights, cut: float, n_boot: int = N_BOOTSTRAP,
                          seed: int = 0) -> float:
    """Standard deviation of 1 - Z_attacked / Z_nominal at the fixed ``cut`` over ``n_boot``
    bootstrap resamples of the events (nominal and attacked output of an event drawn together;
    resamples without background above the cut are skipped, and if more than a tenth are,
    an AuditError says the cut is too tight for an uncertainty)."""
    p0, p1 = np.asarray(p_nominal, np.float64), np.asarray(p_attacked, np.float64)
    y, w = np.asarray(labels), np.asarray(weights, np.float64)
    if not p0.shape == p1.shape == y.shape == w.shape or p0.ndim != 1 or len(p0) == 0 or n_boot < 2:
        raise AuditError("bootstrap_degradation needs non-empty (N,) outputs, labels and weights of one length "
                         "and n_boot >= 2")
    rng = np.random.default_rng(seed)
    n, vals = len(p0), []
    for _ in range(n_boot):
        i = rng.integers(0, n, n)
        sel0, sel1, sig, bkg = p0[i] >= cut, p1[i] >= cut, y[i] == 1, y[i] == 0
        b0, b1 = w[i][sel0 & bkg].sum(), w[i][sel1 & bkg].sum()
        s0 = w[i][sel0 & sig].sum()
        if b0 <= 0 or b1 <= 0 or s0 <= 0:
            continue
        vals.append(1.0 - (w[i][sel1 & sig].sum() / np.sqrt(b1)) / (s0 / np.sqrt(b0)))
    if len(vals) < 0.9 * n_boot:
        raise AuditError(f"only {len(vals)} of {n_boot} bootstrap resamples keep signal and background above the "
                         f"cut {cut}: the cut is too tight for an uncertainty")
    return float(np.std(vals, ddof=1))


def degradation_with_unc(p0, p1, y, w, cut: float, seed: int = 0) -> dict:
    z0, z1 = significance_at_cut(p0, y, w, cut), significance_at_cut(p1, y, w, cut)
    return {"cut": cut, "z_nominal": z0, "z_attacked": z1, "degradation": 1.0 - z1 / z0,
            "degradation_unc": bootstrap_degradation(p0, p1, y, w, cut, seed=seed)}


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def first_order_dlogit(model, x, kinds) -> np.ndarray:
    """Per event: the first-order logit change of ITERATIONS sign steps of EPS (relative for
    non-angles, absolute for angles, integers fixed), sum_i |dz/dx_i| step_i."""
    xt = torch.as_tensor(x).clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model_logits(model, xt).sum(), xt)
    g, xa = g.abs().numpy().astype(np.float64), np.abs(np.asarray(x, np.float64))
    step = np.where(np.array([k == "angle" for k in kinds]), 1.0, xa) * EPS * ITERATIONS
    step[:, np.array([k == "integer" for k in kinds])] = 0.0
    return (g * step).sum(1)


def step_in_widths(x, kinds, features, weights) -> dict:
    """Per movable feature: the attack's total bound ITERATIONS x EPS (relative: times the
    weighted mean |x|; absolute for angles) in units of the feature's weighted standard
    deviation, the size of the move in the feature's own resolution."""
    x, w = np.asarray(x, np.float64), np.asarray(weights, np.float64)
    out = {}
    for j, (f, kind) in enumerate(zip(features, kinds)):
        sd = np.sqrt(np.average((x[:, j] - np.average(x[:, j], weights=w)) ** 2, weights=w))
        if kind == "integer" or sd <= 0:
            continue
        scale = 1.0 if kind == "angle" else np.average(np.abs(x[:, j]), weights=w)
        out[f] = float(EPS * ITERATIONS * scale / sd)
    return out


# ---------------------------------------------------------------------------- samples
def demo_sample(n: int, seed: int = 0) -> dict:
    d = make_toy_events(n, seed=seed)
    return {"x": d["x"], "y": d["labels"].astype(np.float32), "w": d["weights"].astype(np.float64),
            "event_id": np.arange(n, dtype=np.int64), "features": list(TOY_FEATURES),
            "kinds": [DEMO_KINDS[f] for f in TOY_FEATURES]}


def higgsml_dir() -> Path:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "higgsml"
    return Path(os.environ.get("HIGGSML_DATA", str(default)))


def higgsml_sample(folder: Path, max_events: int | None = None) -> dict:
    files = {1: folder / "higgsml_sig_4999.csv", 0: folder / "higgsml_bkg_4999.csv"}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise AuditError(f"HiggsML files not found: {missing}; set HIGGSML_DATA to the folder that holds "
                         "higgsml_sig_4999.csv and higgsml_bkg_4999.csv")
    feats = list(HIGGSML_KINDS)
    xs, ys, ws, ids = [], [], [], []
    for label, path in files.items():
        with open(path) as fh:
            header = fh.readline().strip().split(",")
        cols = [header.index(f) for f in feats] + [header.index("Weight"), header.index("EventId")]
        arr = np.loadtxt(path, delimiter=",", skiprows=1, usecols=cols, dtype=np.float64)
        if max_events:
            arr = arr[:max_events]
        xs.append(arr[:, :len(feats)].astype(np.float32))
        ws.append(arr[:, len(feats)])
        ids.append(arr[:, len(feats) + 1].astype(np.int64))
        ys.append(np.full(len(arr), float(label), np.float32))
    return {"x": np.concatenate(xs), "y": np.concatenate(ys), "w": np.concatenate(ws), "event_id": np.concatenate(ids),
            "features": feats, "kinds": [HIGGSML_KINDS[f] for f in feats]}


def demo_selection_sample(total_events: int | None = None, config: Path | None = None) -> dict:
    """The real demo analysis (``total_events`` generated events, default the demo's own
    number, scaled in proportion): demo NanoAOD
    events (hsaudit.generate), the coffea selection and the merge, as the audit's stages run
    them (the scaling benchmark's stage functions), then the events selected in the nominal
    variant (every region, as the classifier is trained) with finite features, the configured features and their kinds, labels and weights."""
    import tempfile

    import yaml

    import scaling
    from hsaudit.attack_stage import feature_kinds
    from hsaudit.config import load_config

    config = config or Path(__file__).resolve().parents[1] / "config" / "demo.yaml"
    raw = yaml.safe_load(Path(config).read_text())
    raw = scaling.scaled_config(raw, total_events or scaling.generated_events(raw), {})
    with tempfile.TemporaryDirectory(prefix="hsaudit_seed_papers_") as tmp:
        work = Path(tmp)
        (work / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        cfg = scaling._load_cfg(work)
        scaling.stage_generate(cfg, work)
        scaling.stage_select(cfg, work)
        scaling.stage_merge(cfg, work)
        sample = scaling._sample(cfg, work)
        kinds = feature_kinds(cfg)
    x = sample.X["nominal"]
    rows = sample.selected("nominal") & np.isfinite(x).all(axis=1) & (sample.weight > 0)
    if rows.sum() < 1000:
        raise AuditError(f"only {int(rows.sum())} selected demo events: generate more events")
    return {"x": x[rows].astype(np.float32), "y": sample.y[rows].astype(np.float32),
            "w": sample.weight[rows].astype(np.float64), "event_id": sample.event_id[rows],
            "features": list(sample.features), "kinds": [kinds[f] for f in sample.features],
            "generated_events": scaling.generated_events(raw)}


def width_representation(d: dict, k: float) -> dict:
    """The same sample with (k - 1) x its mean added to every momentum feature: the same
    information (the classifier standardises its inputs), but a relative step is k times
    larger in units of the feature's width."""
    x = d["x"].copy()
    for j, kind in enumerate(d["kinds"]):
        if kind == "momentum":
            x[:, j] += np.float32((k - 1) * x[:, j].mean())
    return {**d, "x": x}


def constituent_representation(d: dict, n: int, seed: int = 0) -> dict:
    """Every momentum feature split into n parts with Dirichlet(1, ..., 1) fractions (their
    sum is the feature): the same physics in n times as many momentum inputs."""
    if n < 1:
        raise AuditError(f"constituent_representation needs n >= 1, got {n}")
    rng = np.random.default_rng(1000 + seed)
    cols, feats, kinds = [], [], []
    for j, (f, kind) in enumerate(zip(d["features"], d["kinds"])):
        if kind == "momentum" and n > 1:
            frac = rng.dirichlet(np.ones(n), size=len(d["x"]))
            cols += [d["x"][:, j] * frac[:, c] for c in range(n)]
            feats += [f"{f}_{c}" for c in range(n)]
            kinds += [kind] * n
        else:
            cols.append(d["x"][:, j])
            feats.append(f)
            kinds.append(kind)
    return {**d, "x": np.stack(cols, 1).astype(np.float32), "features": feats, "kinds": kinds}


def paper_envelope(x: np.ndarray, kinds: list[str], size: float, features) -> Envelope:
    """The attack's own bounds: +-size relative for continuous non-angle features, absolute
    for angles, integer features fixed (no systematic)."""
    sigma = np.array([0.0 if k == "integer" else size for k in kinds])
    relative = np.array([k != "angle" for k in kinds])
    integer = [f for f, k in zip(features, kinds) if k == "integer"]
    return Envelope.from_uncertainties(x, sigma, relative=relative, integer_features=integer, feature_names=features,
                                       systematic="none (attack's own bounds)")


# ---------------------------------------------------------------------------- benchmark
AN_SETTINGS_QUICK = {"hidden": [64, 64], "epochs": 8}
AN_SETTINGS_FULL = {"hidden": [300, 300, 300, 300], "epochs": 20}
AN_SETTINGS = {"rho": 1.0, "lambda_cls": 1.0, "lambda_obs": 0.1, "ks_obs_max": 1.0, "ks_nn_max": 0.02,
               "ks_check_every": 5}


def train_and_attack(d: dict, quick: bool, seed: int = 0, max_epochs: int | None = None, patience: int = 5,
                     adversarial_network: bool = True) -> dict:
    """Train the classifier (seed), choose the nominal cut on the test events (and, for
    comparison, on the validation split), run FGSM and (optionally) the adversarial network on
    the test events; degradations with bootstrap uncertainties and the diagnostics."""
    t0 = time.perf_counter()
    settings = {"hidden_layers": [64, 64], "max_epochs": max_epochs or (15 if quick else 60), "patience": patience,
                "seed": seed, "progress": False}
    tr = train_classifier(d["x"], d["y"], d["w"], d["event_id"], settings, features=d["features"])
    model = tr.model.eval()
    test, val = tr.split == TEST, tr.split == VALIDATION
    x, y, w = d["x"][test], d["y"][test], d["w"][test]
    sig, bkg = y == 1, y == 0
    p0 = model_probabilities(model, torch.as_tensor(x)).numpy()
    cut, _ = optimal_cut(p0, y, w)
    pv = model_probabilities(model, torch.as_tensor(d["x"][val])).numpy()
    cut_val, _ = optimal_cut(pv, d["y"][val], d["w"][val])
    out = {"seed": seed, "n_test": int(test.sum()), "train_seconds": time.perf_counter() - t0,
           "best_epoch": tr.best_epoch, "auc": weighted_auc(p0, y, w), "cut": cut,
           "signal_efficiency": float(w[sig & (p0 >= cut)].sum() / w[sig].sum()),
           "background_efficiency": float(w[bkg & (p0 >= cut)].sum() / w[bkg].sum()),
           "n_background_above_cut": int((bkg & (p0 >= cut)).sum()), "cut_validation": cut_val,
           "step_in_widths": step_in_widths(x[sig], d["kinds"], d["features"], w[sig])}
    # FGSM: signal only, towards background, eps x iterations, relative/absolute by kind
    env = paper_envelope(x, d["kinds"], EPS * ITERATIONS, d["features"])
    t1 = time.perf_counter()
    r = make_attack("fgsm", eps=EPS, iterations=ITERATIONS, feature_kinds=d["kinds"]).attack(
        model, x, env, "signal_as_background", labels=y, weights=w, seed=seed)
    p1 = model_probabilities(model, r.x_adv).numpy()
    above = sig & (p0 >= cut)
    out["fgsm"] = {**degradation_with_unc(p0, p1, y, w, cut, seed),
                   **_renamed(degradation_with_unc(p0, p1, y, w, cut_val, seed), "_validation_cut"),
                   "seconds": time.perf_counter() - t1,
                   "dlogit_signal": float(np.mean(_logit(p0[sig]) - _logit(p1[sig]))),
                   "dlogit_first_order": float(np.mean(first_order_dlogit(model, x[sig], d["kinds"]))),
                   "dlogit_signal_above_cut": float(np.mean(_logit(p0[above]) - _logit(p1[above])))}
    scan = []
    for eff in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9):
        c = float(np.quantile(p0[sig], 1 - eff))
        if (bkg & (p0 >= c)).sum() < MIN_BKG_EVENTS:  # as for the optimal cut: too few to count
            continue
        scan.append({"signal_efficiency": eff, "cut": c, "n_background_above_cut": int((bkg & (p0 >= c)).sum()),
                     **{k: v for k, v in degradation_with_unc(p0, p1, y, w, c, seed).items()
                        if k in ("degradation", "degradation_unc")}})
    out["fgsm"]["efficiency_scan"] = scan
    if not adversarial_network:
        return out
    # adversarial network: every event moved by one g, signal and background losses, KS stops
    env_an = paper_envelope(x, d["kinds"], RHO, d["features"])
    t2 = time.perf_counter()
    an = {**(AN_SETTINGS_QUICK if quick else AN_SETTINGS_FULL), **AN_SETTINGS}
    r2 = make_attack("adversarial_network", **an).attack(model, x, env_an, "signal_as_background", labels=y, weights=w,
                                                        seed=seed)
    p2 = model_probabilities(model, r2.x_adv).numpy()
    bkg_above = bkg & (p0 >= cut)
    out["adversarial_network"] = {
        **degradation_with_unc(p0, p2, y, w, cut, seed),
        **_renamed(degradation_with_unc(p0, p2, y, w, cut_val, seed), "_validation_cut"),
        "seconds": time.perf_counter() - t2, "settings": an, "rho": RHO, "stopped_by": r2.info.get("stopped_by"),
        "epochs_kept": r2.info.get("epochs_kept"),
        "ks_nn_background": _ks(p2[bkg], p0[bkg], w[bkg]),
        "ks_max_feature_background": max(_ks(r2.numpy()[bkg, j], x[bkg, j], w[bkg]) for j in range(x.shape[1])),
        "dlogit_signal": float(np.mean(_logit(p0[above]) - _logit(p2[above]))),
        "dlogit_background": float(np.mean(_logit(p0[bkg_above]) - _logit(p2[bkg_above]))),
        "s_above_cut_ratio": float(w[sig & (p2 >= cut)].sum() / w[above].sum()),
        "b_above_cut_ratio": float(w[bkg & (p2 >= cut)].sum() / w[bkg_above].sum()),
        # the KS limit on the background's NN output bounds the change of its CDF, not of the
        # background above a tight cut: up to ks_nn_max / (background efficiency) of it may move
        "ks_nn_max_over_background_efficiency": an["ks_nn_max"] / out["background_efficiency"]}
    return out


def _renamed(r: dict, suffix: str) -> dict:
    return {"degradation" + suffix: r["degradation"], "degradation" + suffix + "_unc": r["degradation_unc"]}


def _seed_sd(runs: list[dict], attack: str) -> float:
    return float(np.std([r[attack]["degradation"] for r in runs], ddof=1))


def run_sample(name: str, d: dict, quick: bool, seeds=SEEDS) -> dict:
    runs = [train_and_attack(d, quick, seed=s) for s in seeds]
    out = {"sample": name, "n_events": int(len(d["x"])), "generated_events": d.get("generated_events"),
           "features": d["features"], "kinds": d["kinds"],
           **{k: v for k, v in runs[0].items() if k != "seed"}, "seeds": list(seeds)}
    for attack in ("fgsm", "adversarial_network"):
        out[attack]["paper_degradation"] = PAPER_DEGRADATION[attack]
        out[attack]["degradation_seeds"] = [r[attack]["degradation"] for r in runs]
        out[attack]["degradation_seed_sd"] = _seed_sd(runs, attack)
    out["fgsm"].update(eps=EPS, iterations=ITERATIONS)
    print(f"[{name}] " + json.dumps({a: {k: v for k, v in out[a].items() if k.startswith("degradation")}
                                     for a in ("fgsm", "adversarial_network")}), flush=True)
    return out


def toy_scans(quick: bool) -> dict:
    """FGSM on the demo-like toy in other representations of the same physics (seed 0, the
    same network and cut rule): input width, number of momentum inputs, training epochs."""
    d = demo_sample(20000 if quick else 40000)
    keep = ("auc", "best_epoch", "signal_efficiency", "n_background_above_cut")

    def one(dd, **kw):
        r = train_and_attack(dd, quick, adversarial_network=False, **kw)
        return {**{k: r[k] for k in keep}, "n_features": int(dd["x"].shape[1]),
                **{k: r["fgsm"][k] for k in ("degradation", "degradation_unc", "dlogit_signal", "dlogit_first_order")}}

    scans = {"n_events": int(len(d["x"])), "width": [], "constituents": [], "epochs": []}
    for k in (1, 3, 10):
        scans["width"].append({"k": k, **one(width_representation(d, k))})
    for n in ((1, 4, 16) if quick else (1, 2, 4, 8, 16)):
        scans["constituents"].append({"n": n, **one(constituent_representation(d, n))})
    for e in ((1, 3, 15) if quick else (1, 3, 15, 60)):
        scans["epochs"].append({"max_epochs": e, **one(d, max_epochs=e, patience=1000)})
    for key in ("width", "constituents", "epochs"):
        print(f"[toy {key}] " + json.dumps([{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                                             if k in ("k", "n", "max_epochs", "degradation", "degradation_unc", "auc",
                                                      "dlogit_signal")} for row in scans[key]]), flush=True)
    return scans


def _ks(a, b, w) -> float:
    from hsaudit.attacks.checks import ks_statistic
    return float(ks_statistic(a, b, w, w))


def machine() -> dict:
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller samples and generator, a few minutes")
    ap.add_argument("--out", default=None, help="results json (default benchmarks/results/seed_papers_<tag>.json)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1 if args.quick else max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    results = {"mode": "quick" if args.quick else "full", "machine": machine(), "paper": PAPER_DEGRADATION,
               "samples": {}}
    results["samples"]["demo"] = run_sample("demo", demo_sample(6000 if args.quick else 40000), args.quick)
    folder = higgsml_dir()
    results["samples"]["higgsml"] = run_sample("higgsml", higgsml_sample(folder), args.quick)
    results["samples"]["demo_selection"] = run_sample("demo_selection", demo_selection_sample(), args.quick)
    results["toy_scans"] = toy_scans(args.quick)
    results["seconds"] = time.perf_counter() - t0
    tag = "gpu" if torch.cuda.is_available() else f"cpu{os.cpu_count()}"
    path = Path(args.out) if args.out else (Path(__file__).resolve().parent / "results"
                                            / f"seed_papers_{tag}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    s, t = results["samples"], results["toy_scans"]
    figures = []
    for sample in ("demo", "higgsml", "demo_selection"):
        for attack in ("fgsm", "adversarial_network"):
            r = s[sample][attack]
            figures += [f"{attack}_degradation_{sample}={r['degradation']:.4f}",
                        f"{attack}_degradation_{sample}_unc={r['degradation_unc']:.4f}",
                        f"{attack}_degradation_{sample}_seed_sd={r['degradation_seed_sd']:.4f}",
                        f"{attack}_degradation_{sample}_validation_cut={r['degradation_validation_cut']:.4f}"]
    scan = {f"fgsm_degradation_toy_width{r['k']}": r for r in t["width"]}
    scan.update({f"fgsm_degradation_toy_constituents{r['n']}": r for r in t["constituents"]})
    scan.update({f"fgsm_degradation_toy_epochs{r['max_epochs']}": r for r in t["epochs"]})
    for key, r in scan.items():
        figures += [f"{key}={r['degradation']:.4f}", f"{key}_unc={r['degradation_unc']:.4f}"]
    line = " ".join([
        f"fgsm_degradation_ratio_to_paper_higgsml={s['higgsml']['fgsm']['degradation'] / PAPER_DEGRADATION['fgsm']:.3f}",
        f"adversarial_network_degradation_ratio_to_paper_higgsml="
        f"{s['higgsml']['adversarial_network']['degradation'] / PAPER_DEGRADATION['adversarial_network']:.3f}",
        *figures,
        f"paper_fgsm={PAPER_DEGRADATION['fgsm']} paper_adversarial_network={PAPER_DEGRADATION['adversarial_network']}",
        f"seconds={results['seconds']:.0f}",
    ])
    print(f"results written to {path}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
