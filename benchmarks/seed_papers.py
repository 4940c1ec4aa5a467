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
  repository).

The classifier is trained with the library (``hsaudit.ml.training.train_classifier``) on the
nominal sample; the nominal optimal cut maximises s / sqrt(b) on the test events (cuts with
fewer than ``MIN_BKG_EVENTS`` background events are skipped, so that a lone background event
does not make a spike); the attacks (``hsaudit.attacks.make_attack``) move the test events and
the significance at that same cut is recomputed.

    python benchmarks/seed_papers.py --quick   # a few minutes on 2 CPU cores
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
from hsaudit.attacks.toy import TOY_FEATURES, make_toy_events  # noqa: E402
from hsaudit.errors import AuditError  # noqa: E402
from hsaudit.ml.training import TEST, train_classifier  # noqa: E402

PAPER_DEGRADATION = {"fgsm": 0.30, "adversarial_network": 0.25}  # Nachman & Shimmin 2019, low-level network
MIN_BKG_EVENTS = 20
EPS, ITERATIONS, RHO = 0.001, 10, 0.02

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


def paper_envelope(x: np.ndarray, kinds: list[str], size: float, features) -> Envelope:
    """The attack's own bounds: +-size relative for continuous non-angle features, absolute
    for angles, integer features fixed (no systematic)."""
    sigma = np.array([0.0 if k == "integer" else size for k in kinds])
    relative = np.array([k != "angle" for k in kinds])
    integer = [f for f, k in zip(features, kinds) if k == "integer"]
    return Envelope.from_uncertainties(x, sigma, relative=relative, integer_features=integer, feature_names=features,
                                       systematic="none (attack's own bounds)")


# ---------------------------------------------------------------------------- benchmark
def run_sample(name: str, d: dict, quick: bool, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    settings = {"hidden_layers": [64, 64], "max_epochs": 15 if quick else 60, "patience": 5, "seed": seed,
                "progress": False}
    tr = train_classifier(d["x"], d["y"], d["w"], d["event_id"], settings, features=d["features"])
    model = tr.model.eval()
    test = tr.split == TEST
    x, y, w = d["x"][test], d["y"][test], d["w"][test]
    t_train = time.perf_counter() - t0
    p0 = model_probabilities(model, torch.as_tensor(x)).numpy()
    out = {"sample": name, "n_events": int(len(d["x"])), "n_test": int(test.sum()), "features": d["features"],
           "kinds": d["kinds"], "train_seconds": t_train, "best_epoch": tr.best_epoch}
    # FGSM: signal only, towards background, eps x iterations, relative/absolute by kind
    env = paper_envelope(x, d["kinds"], EPS * ITERATIONS, d["features"])
    t1 = time.perf_counter()
    r = make_attack("fgsm", eps=EPS, iterations=ITERATIONS, feature_kinds=d["kinds"]).attack(
        model, x, env, "signal_as_background", labels=y, weights=w, seed=seed)
    p1 = model_probabilities(model, r.x_adv).numpy()
    out["fgsm"] = {**relative_degradation(p0, p1, y, w), "seconds": time.perf_counter() - t1,
                   "paper_degradation": PAPER_DEGRADATION["fgsm"], "eps": EPS, "iterations": ITERATIONS}
    # adversarial network: every event moved by one g, signal and background losses, KS stops
    env_an = paper_envelope(x, d["kinds"], RHO, d["features"])
    t2 = time.perf_counter()
    an = {"hidden": [64, 64] if quick else [300, 300, 300, 300], "epochs": 8 if quick else 20, "rho": 1.0,
          "lambda_cls": 1.0, "lambda_obs": 0.1, "ks_obs_max": 1.0, "ks_nn_max": 0.02, "ks_check_every": 5}
    r2 = make_attack("adversarial_network", **an).attack(model, x, env_an, "signal_as_background", labels=y, weights=w,
                                                        seed=seed)
    p2 = model_probabilities(model, r2.x_adv).numpy()
    bkg = y == 0
    out["adversarial_network"] = {**relative_degradation(p0, p2, y, w), "seconds": time.perf_counter() - t2,
                                  "paper_degradation": PAPER_DEGRADATION["adversarial_network"], "settings": an,
                                  "rho": RHO, "stopped_by": r2.info.get("stopped_by"),
                                  "epochs_kept": r2.info.get("epochs_kept"),
                                  "ks_nn_background": _ks(p2[bkg], p0[bkg], w[bkg]),
                                  "ks_max_feature_background": max(_ks(r2.numpy()[bkg, j], x[bkg, j], w[bkg])
                                                                   for j in range(x.shape[1]))}
    print(f"[{name}] " + json.dumps({k: v for k, v in out.items() if k in ("fgsm", "adversarial_network")}), flush=True)
    return out


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
    results["seconds"] = time.perf_counter() - t0
    tag = "gpu" if torch.cuda.is_available() else f"cpu{os.cpu_count()}"
    path = Path(args.out) if args.out else (Path(__file__).resolve().parent / "results"
                                            / f"seed_papers_{tag}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    s = results["samples"]
    line = " ".join([
        f"fgsm_degradation_ratio_to_paper_higgsml={s['higgsml']['fgsm']['degradation'] / PAPER_DEGRADATION['fgsm']:.3f}",
        f"adversarial_network_degradation_ratio_to_paper_higgsml="
        f"{s['higgsml']['adversarial_network']['degradation'] / PAPER_DEGRADATION['adversarial_network']:.3f}",
        f"fgsm_degradation_demo={s['demo']['fgsm']['degradation']:.4f}",
        f"fgsm_degradation_higgsml={s['higgsml']['fgsm']['degradation']:.4f}",
        f"adversarial_network_degradation_demo={s['demo']['adversarial_network']['degradation']:.4f}",
        f"adversarial_network_degradation_higgsml={s['higgsml']['adversarial_network']['degradation']:.4f}",
        f"paper_fgsm={PAPER_DEGRADATION['fgsm']} paper_adversarial_network={PAPER_DEGRADATION['adversarial_network']}",
        f"seconds={results['seconds']:.0f}",
    ])
    print(f"results written to {path}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
