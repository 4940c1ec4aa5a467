"""Toy-fit throughput: the batched engine vs pyhf's per-toy loop vs iminuit, same toys; and
the PseudoExperiments stage vs its bare engine.

Model (the issue's 20-bin benchmark): one signal sample with the normfactor mu, one
background with a normsys, a histosys and staterror: 23 parameters. Toys are Poisson
main data plus fluctuated auxiliary data from the nominal model.

* engine: ``hsaudit.stats.fit_toys`` on all toys at once (mu_hat, sigma_mu from the
  Hessian, convergence flags), torch float64, CUDA when present.
* pyhf, speed: ``pyhf.infer.mle.fit`` per toy, numpy backend, scipy optimiser (SLSQP),
  default settings (what users run; no uncertainties): ``speedup_vs_pyhf``.
* pyhf, accuracy: the same fits with pyhf's pytorch backend (exact autodiff gradients,
  float64) and SLSQP at ``tol=1e-12``. pyhf's default stopping rule (SLSQP's ftol 1e-6 on
  the NLL, numerical gradients) leaves mu_hat ~1e-4 from its own minimum; at this tolerance
  pyhf started from a displaced point agrees with itself to ``pyhf_self_diff`` (< 1e-6),
  and ``max_abs_mu_diff`` (engine vs this pyhf) measures the engine.
* iminuit: MIGRAD + HESSE per toy on a hand-written numpy NLL of the same model (iminuit's
  default EDM goal, so ``max_abs_mu_diff_iminuit`` is iminuit's stopping rule).
* stage: what the PseudoExperiments task's run() does (hsaudit.fit_stage.
  pseudo_experiment_stage: load the likelihood file, build the model, draw and fit every
  scenario's toys, write one result file per scenario), timed from start to end, against
  the bare engine fitting the same toys in one call: ``stage_efficiency`` = stage fits/s /
  engine fits/s. Scenarios: nominal (with its mu = 0 fits for q0) plus shifted truths, as
  many as the ci (quick) or demo (full) audit has; ``--likelihood`` takes a real
  likelihood.json (its standard scenarios) instead.

Every library runs single-threaded (OMP/BLAS threads = 1, set before the imports): their
per-toy work is tiny and multi-threading only slows it down on a shared machine.
pyhf and iminuit are timed on a subset of the toys. Results: benchmarks/results/fits_<tag>.json.

    python benchmarks/fits.py --quick     # ~1 minute
    python benchmarks/fits.py             # more toys
"""

from __future__ import annotations

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hsaudit.stats import Model, fit_toys, generate_toys  # noqa: E402
from hsaudit.stats.fit import default_device  # noqa: E402
from hsaudit.stats.model import code4_coefficients, pyhf_data  # noqa: E402


def benchmark_spec(n_bins: int = 20) -> dict:
    x = (np.arange(n_bins) + 0.5) / n_bins
    sig = 40 * np.exp(-0.5 * ((x - 0.85) / 0.12) ** 2) + 1.0
    bkg = 600 * np.exp(-3.5 * x) + 5
    up, dn = bkg * (1 + 0.08 * (x - 0.5)), bkg * (1 - 0.06 * (x - 0.5))
    return {"poi": "mu", "parameters": {"mu": {"bounds": [-5.0, 10.0]}}, "channels": {"SR": {"samples": {
        "signal": {"nominal": sig.tolist(), "normfactors": ["mu"]},
        "background": {"nominal": bkg.tolist(), "normsys": {"bkg_norm": {"lo": 0.9, "hi": 1.1}},
                       "histosys": {"bkg_shape": {"up": up.tolist(), "down": dn.tolist()}},
                       "staterror": (0.05 * bkg).tolist()}}}}}


class HandWrittenNLL:
    """The benchmark model's NLL in plain numpy (pyhf conventions, constants dropped)."""

    errordef = 0.5

    def __init__(self, spec: dict, main: np.ndarray, aux: np.ndarray):
        s = spec["channels"]["SR"]["samples"]
        self.sig = np.array(s["signal"]["nominal"])
        b = s["background"]
        self.bkg = np.array(b["nominal"])
        ns = b["normsys"]["bkg_norm"]
        self.lo, self.hi = ns["lo"], ns["hi"]
        self.coef = code4_coefficients(np.array(self.lo), np.array(self.hi))
        hs = b["histosys"]["bkg_shape"]
        self.dup = np.array(hs["up"]) - self.bkg
        self.ddn = self.bkg - np.array(hs["down"])
        self.S, self.A = 0.5 * (self.dup + self.ddn), 0.0625 * (self.dup - self.ddn)
        self.sigma_g = np.array(b["staterror"]) / self.bkg
        self.n, self.aux = main, aux

    def __call__(self, p):
        mu, a_n, a_s, g = p[0], p[1], p[2], p[3:]
        if a_n >= 1:
            fn = self.hi**a_n
        elif a_n <= -1:
            fn = self.lo ** (-a_n)
        else:
            fn = 1 + sum(c * a_n ** (i + 1) for i, c in enumerate(self.coef))
        if a_s > 1:
            dl = a_s * self.dup
        elif a_s < -1:
            dl = a_s * self.ddn
        else:
            a2 = a_s * a_s
            dl = a_s * self.S + a2 * (15 + a2 * (-10 + 3 * a2)) * self.A
        lam = mu * self.sig + (self.bkg + dl) * fn * g
        if np.any(lam <= 0):
            return 1e30
        z = np.r_[a_n - self.aux[0], a_s - self.aux[1], (g - self.aux[2:]) / self.sigma_g]
        return float(np.sum(lam - self.n * np.log(lam)) + 0.5 * z @ z)


def machine() -> dict:
    cpu = cpu_model()
    dev = default_device()
    return {"cpu": cpu, "cores": os.cpu_count(), "device": dev if dev == "cpu" else torch.cuda.get_device_name(0),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def stage_likelihood(model, n_scenarios: int) -> dict:
    """A likelihood file's content for the benchmark model: nominal truth plus shifted truths
    (background tilted by a few per cent), as the audit's scenarios are."""
    nominal = model.expected_main()
    x = np.linspace(-1.0, 1.0, model.n_bins)
    truths = {"nominal": model.channel_data(nominal)}
    for k in range(1, n_scenarios):
        tilt = 0.04 * np.sin(1.3 * k) * x + 0.01 * np.cos(0.7 * k)
        truths[f"shift{k}"] = model.channel_data(nominal * (1.0 + tilt))
    return {"spec": model.spec, "mu_true": 1.0,
            "truths": {s: {ch: v.tolist() for ch, v in t.items()} for s, t in truths.items()}}


def measure_stage(likelihood_path: Path, n_toys: int, seed: int, workdir: Path) -> dict:
    """The PseudoExperiments stage of one model vs the bare engine on the same toys."""
    from hsaudit.fit_stage import pseudo_experiment_stage

    lk = json.loads(likelihood_path.read_text())
    scenarios = list(lk["truths"])
    outputs = {s: workdir / f"{s}.npz" for s in scenarios}
    t0 = time.perf_counter()
    done = pseudo_experiment_stage(likelihood_path, outputs, n_toys=n_toys, first_toy=0, seed=seed,
                                   max_iterations=500)
    t_stage = time.perf_counter() - t0
    # the bare engine: the same toys (drawn outside the clock), fitted in one call, plus the
    # nominal scenario's mu = 0 fits as the stage does them
    model = Model(lk["spec"])
    toys = [generate_toys(model, model.concat_channels(lk["truths"][s]), n_toys, seed) for s in scenarios]
    main = np.concatenate([t[0] for t in toys])
    aux = np.concatenate([t[1] for t in toys])
    fit_toys(model, main[:50], aux[:50], max_iter=500)  # warm-up
    t0 = time.perf_counter()
    res = fit_toys(model, main, aux, max_iter=500)
    fit_toys(model, toys[0][0], toys[0][1], fixed={model.poi: 0.0}, max_iter=500)
    t_engine = time.perf_counter() - t0
    from hsaudit.stats import ToyResult

    same = all(np.array_equal(ToyResult.load(outputs[s]).mu_hat, res.mu_hat[k * n_toys:(k + 1) * n_toys])
               for k, s in enumerate(scenarios))
    fits = done["fits"]
    return {"scenarios": len(scenarios), "toys_per_scenario": n_toys, "fits": fits,
            "stage_seconds": t_stage, "stage_fits_per_s": fits / t_stage,
            "engine_seconds": t_engine, "engine_fits_per_s": fits / t_engine,
            "stage_efficiency": t_engine / t_stage, "stage_equals_engine": bool(same),
            "median_iterations": float(np.median(res.n_iter)), "mean_iterations": float(res.n_iter.mean()),
            "model": f"{model.n_bins} bins, {model.n_pars} parameters"}


def pyhf_fits(pyhf, model, main, aux, *, tolerance=None, init=None) -> np.ndarray:
    """mu_hat per toy from pyhf.infer.mle.fit with the current backend."""
    pm = pyhf.Workspace(model.to_pyhf_workspace()).model()
    kwargs = {} if init is None else {"init_pars": init(pm)}
    if tolerance is not None:
        kwargs["tolerance"] = tolerance
    return np.array([float(pyhf.infer.mle.fit(pyhf_data(model, pm, main[i], aux[i]), pm, **kwargs)[pm.config.poi_index])
                     for i in range(len(main))])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--toys", type=int, default=None, help="toys for the engine")
    ap.add_argument("--pyhf-toys", type=int, default=None, help="toys timed with pyhf (default settings)")
    ap.add_argument("--pyhf-tight-toys", type=int, default=None, help="toys compared with pyhf at tight tolerance")
    ap.add_argument("--iminuit-toys", type=int, default=None, help="toys timed with iminuit")
    ap.add_argument("--scenarios", type=int, default=None, help="scenarios of the stage measurement")
    ap.add_argument("--stage-toys", type=int, default=None, help="toys per scenario of the stage measurement")
    ap.add_argument("--likelihood", default=None, help="a likelihood.json (BuildLikelihood output) for the stage")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/fits_<tag>.json)")
    args = ap.parse_args(argv)
    n_engine = args.toys or (5000 if args.quick else 50000)
    n_pyhf = args.pyhf_toys or (10 if args.quick else 200)
    n_tight = args.pyhf_tight_toys or (6 if args.quick else 50)
    n_minuit = args.iminuit_toys or (50 if args.quick else 1000)
    # the ci audit (quick) and the demo audit (full): scenarios x toys per model
    n_scen = args.scenarios or (23 if args.quick else 90)
    n_stage_toys = args.stage_toys or (200 if args.quick else 1000)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")

    import iminuit
    import pyhf

    spec = benchmark_spec()
    model = Model(spec)
    main_data, aux = generate_toys(model, model.expected_main(), n_engine, seed=args.seed)

    fit_toys(model, main_data[:50], aux[:50])  # warm-up (caches, allocator)
    t0 = time.perf_counter()
    res = fit_toys(model, main_data, aux)
    t_engine = time.perf_counter() - t0
    rate_engine = n_engine / t_engine

    # pyhf as users run it: speed (and its default stopping rule's distance from the minimum)
    pyhf.set_backend("numpy", "scipy")
    n_pyhf = min(n_pyhf, n_engine)
    t0 = time.perf_counter()
    mu_pyhf = pyhf_fits(pyhf, model, main_data[:n_pyhf], aux[:n_pyhf])
    t_pyhf = time.perf_counter() - t0
    rate_pyhf = n_pyhf / t_pyhf
    mu_diff_default = float(np.max(np.abs(mu_pyhf - res.mu_hat[:n_pyhf])))

    # pyhf at a tolerance where it agrees with itself: exact gradients, SLSQP tol 1e-12, and
    # the same fits started from a displaced point
    pyhf.set_backend("pytorch", "scipy", precision="64b")
    n_tight = min(n_tight, n_engine)
    t0 = time.perf_counter()
    mu_tight = pyhf_fits(pyhf, model, main_data[:n_tight], aux[:n_tight], tolerance=1e-12)
    t_tight = time.perf_counter() - t0

    def displaced(pm):
        init = list(pm.config.suggested_init())
        init[pm.config.poi_index] = 0.3
        return init

    mu_tight2 = pyhf_fits(pyhf, model, main_data[:n_tight], aux[:n_tight], tolerance=1e-12, init=displaced)
    pyhf.set_backend("numpy", "scipy")
    self_diff = float(np.max(np.abs(mu_tight - mu_tight2)))
    mu_diff = float(np.max(np.abs(mu_tight - res.mu_hat[:n_tight])))

    n_minuit = min(n_minuit, n_engine)
    mu_minuit = np.empty(n_minuit)
    ok_minuit = np.zeros(n_minuit, dtype=bool)
    x0 = model.init.copy()
    limits = [tuple(b) for b in model.bounds]
    t0 = time.perf_counter()
    for i in range(n_minuit):
        f = HandWrittenNLL(spec, main_data[i], aux[i])
        m = iminuit.Minuit(f, x0)
        m.errordef = iminuit.Minuit.LIKELIHOOD
        m.limits = limits
        m.migrad()
        m.hesse()
        mu_minuit[i] = m.values[0]
        ok_minuit[i] = m.valid
    t_minuit = time.perf_counter() - t0
    rate_minuit = n_minuit / t_minuit
    mu_diff_minuit = float(np.max(np.abs(mu_minuit[ok_minuit] - res.mu_hat[:n_minuit][ok_minuit])))

    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.likelihood:
            lk_path = Path(args.likelihood)
        else:
            lk_path = tmp / "likelihood.json"
            lk_path.write_text(json.dumps(stage_likelihood(model, n_scen)))
        stage = measure_stage(lk_path, n_stage_toys, args.seed, tmp)
        stage["likelihood"] = "benchmark model" if not args.likelihood else str(args.likelihood)

    out = {
        "benchmark": "fits", "mode": "quick" if args.quick else "full", "model": "20 bins, 23 parameters",
        "machine": machine(),
        "engine": {"toys": n_engine, "seconds": t_engine, "toys_per_s": rate_engine,
                   "converged": int(res.converged.sum()), "mean_iterations": float(res.n_iter.mean()),
                   "median_iterations": float(np.median(res.n_iter))},
        "pyhf": {"toys": n_pyhf, "seconds": t_pyhf, "toys_per_s": rate_pyhf, "version": pyhf.__version__,
                 "backend": "numpy", "optimizer": "scipy (SLSQP, default tolerance)",
                 "max_abs_mu_diff_default_settings": mu_diff_default},
        "pyhf_tight": {"toys": n_tight, "seconds": t_tight, "backend": "pytorch (float64, autodiff gradients)",
                       "optimizer": "scipy (SLSQP, tol=1e-12)", "self_diff_displaced_start": self_diff},
        "iminuit": {"toys": n_minuit, "seconds": t_minuit, "toys_per_s": rate_minuit, "valid": int(ok_minuit.sum()),
                    "version": iminuit.__version__, "calls": "migrad + hesse, hand-written numpy NLL"},
        "stage": stage,
        "speedup_vs_pyhf": rate_engine / rate_pyhf, "speedup_vs_iminuit": rate_engine / rate_minuit,
        "max_abs_mu_diff": mu_diff, "pyhf_self_diff": self_diff, "max_abs_mu_diff_iminuit": mu_diff_minuit,
        "stage_efficiency": stage["stage_efficiency"],
    }
    tag = "cpu2" if machine()["device"] == "cpu" and os.cpu_count() == 2 else machine()["device"].replace(" ", "_")
    path = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        f"fits_{tag}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"engine {rate_engine:.0f} toys/s ({n_engine} toys, {res.converged.sum()} converged); "
          f"pyhf {rate_pyhf:.2f} toys/s ({n_pyhf} toys, default settings: max |mu diff| {mu_diff_default:.1e}); "
          f"pyhf tight self-agreement {self_diff:.1e} ({n_tight} toys); iminuit {rate_minuit:.1f} toys/s "
          f"({n_minuit} toys, max |mu diff| {mu_diff_minuit:.1e}); stage {stage['stage_fits_per_s']:.0f} fits/s vs "
          f"engine {stage['engine_fits_per_s']:.0f} fits/s ({stage['scenarios']} scenarios x "
          f"{stage['toys_per_scenario']} toys); results in {path}")
    print(f"speedup_vs_pyhf={out['speedup_vs_pyhf']:.1f} speedup_vs_iminuit={out['speedup_vs_iminuit']:.1f} "
          f"max_abs_mu_diff={mu_diff:.2e} stage_efficiency={out['stage_efficiency']:.3f} "
          f"pyhf_self_diff={self_diff:.2e}")
    return out


if __name__ == "__main__":
    main()
