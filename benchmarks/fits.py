"""Toy-fit throughput: the batched engine vs pyhf's per-toy loop vs iminuit, same toys.

Model (the issue's 20-bin benchmark): one signal sample with the normfactor mu, one
background with a normsys, a histosys and staterror: 23 parameters. Toys are Poisson
main data plus fluctuated auxiliary data from the nominal model.

* engine: ``hsaudit.stats.fit_toys`` on all toys at once (mu_hat, sigma_mu from the
  Hessian, convergence flags), torch float64, CUDA when present.
* pyhf: ``pyhf.infer.mle.fit`` per toy, numpy backend, scipy optimiser (SLSQP), default
  settings (what users run; no uncertainties).
* iminuit: MIGRAD + HESSE per toy on a hand-written numpy NLL of the same model.

Every library runs single-threaded (OMP/BLAS threads = 1, set before the imports): their
per-toy work is tiny and multi-threading only slows it down on a shared machine.
pyhf and iminuit are timed on a subset of the toys; mu_hat is compared on that subset
(``max_abs_mu_diff``: engine vs pyhf). Results: benchmarks/results/fits_<tag>.json.

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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--toys", type=int, default=None, help="toys for the engine")
    ap.add_argument("--pyhf-toys", type=int, default=None, help="toys timed with pyhf")
    ap.add_argument("--iminuit-toys", type=int, default=None, help="toys timed with iminuit")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/fits_<tag>.json)")
    args = ap.parse_args(argv)
    n_engine = args.toys or (5000 if args.quick else 50000)
    n_pyhf = args.pyhf_toys or (20 if args.quick else 200)
    n_minuit = args.iminuit_toys or (100 if args.quick else 1000)
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

    pyhf.set_backend("numpy", "scipy")
    pm = pyhf.Workspace(model.to_pyhf_workspace()).model()
    n_pyhf = min(n_pyhf, n_engine)
    mu_pyhf = np.empty(n_pyhf)
    t0 = time.perf_counter()
    for i in range(n_pyhf):
        mu_pyhf[i] = pyhf.infer.mle.fit(pyhf_data(model, pm, main_data[i], aux[i]), pm)[pm.config.poi_index]
    t_pyhf = time.perf_counter() - t0
    rate_pyhf = n_pyhf / t_pyhf
    mu_diff = float(np.max(np.abs(mu_pyhf - res.mu_hat[:n_pyhf])))

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

    out = {
        "benchmark": "fits", "mode": "quick" if args.quick else "full", "model": "20 bins, 23 parameters",
        "machine": machine(),
        "engine": {"toys": n_engine, "seconds": t_engine, "toys_per_s": rate_engine,
                   "converged": int(res.converged.sum()), "mean_iterations": float(res.n_iter.mean())},
        "pyhf": {"toys": n_pyhf, "seconds": t_pyhf, "toys_per_s": rate_pyhf, "version": pyhf.__version__,
                 "backend": "numpy", "optimizer": "scipy (SLSQP, default tolerance)"},
        "iminuit": {"toys": n_minuit, "seconds": t_minuit, "toys_per_s": rate_minuit, "valid": int(ok_minuit.sum()),
                    "version": iminuit.__version__, "calls": "migrad + hesse, hand-written numpy NLL"},
        "speedup_vs_pyhf": rate_engine / rate_pyhf, "speedup_vs_iminuit": rate_engine / rate_minuit,
        "max_abs_mu_diff": mu_diff, "max_abs_mu_diff_iminuit": mu_diff_minuit,
    }
    tag = "cpu2" if machine()["device"] == "cpu" and os.cpu_count() == 2 else machine()["device"].replace(" ", "_")
    path = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        f"fits_{tag}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"engine {rate_engine:.0f} toys/s ({n_engine} toys, {res.converged.sum()} converged); "
          f"pyhf {rate_pyhf:.2f} toys/s ({n_pyhf} toys); iminuit {rate_minuit:.1f} toys/s ({n_minuit} toys); "
          f"max |mu_hat - mu_hat_iminuit| = {mu_diff_minuit:.2e}; results in {path}")
    print(f"speedup_vs_pyhf={out['speedup_vs_pyhf']:.1f} speedup_vs_iminuit={out['speedup_vs_iminuit']:.1f} "
          f"max_abs_mu_diff={mu_diff:.2e}")
    return out


if __name__ == "__main__":
    main()
