"""Benchmark: PGD in the envelope vs torchattacks' PGD and vs the model's bare forward+backward
time (the limit); CONSERVAttack against the published figures of Bechtle et al. (2026).

PGD: same model (the demo's 2 x 200 ReLU MLP with its standardisation layer, 22 features),
same events, same number of steps and the same step (0.1 of the box width) for both PGDs.
torchattacks (3.5.1) works on images in [0, 1] with one global eps and a multi-class logit
model, so it gets a wrapper: u in [0, 1]^F -> x = lower + u (upper - lower) -> logit z ->
class logits (-z/2, z/2); eps = 1 and clamping to [0, 1] then are exactly the envelope box,
and untargeted cross entropy with label 0 pushes z up like our ``shift_output`` objective.
The limit is ``steps`` times one forward + backward to the input (no parameter gradients)
on all events at once. On the CPU with one torch thread the times are the calling thread's
CPU time (``time.thread_time``: other processes on a shared machine do not count), the
minimum over interleaved rounds.

CONSERVAttack: the paper's donut toy (2 features; 50k signal from a 2-d Gaussian of width
0.5 at the origin, 50k background on a ring of radius 1.8 with Gaussian radial width 0.5; a
32-16-1 ReLU MLP trained here, seeded); the correctly classified background test events
are attacked (background_as_signal), and the HiggsML subset (19 always-defined features,
``--higgsml-dir``, full mode). Scored by an independent scorer written here (70 bins over
the clean range, base-2 Jensen-Shannon distance per feature; relative Frobenius change of
the Pearson correlation matrix), not by the attack's own bookkeeping. Both constraint
modes: ``published`` (total JS distance <= 0.005 against the clean histogram, no cumulative
correlation limit: the published code's effective constraints) and ``global`` (max JSD <
0.06, relative correlation change < 0.006: the paper's stated limits). Published figures
(same scorer): donut N=2000 fooling 0.321 at 36.3 ms/event, N=5000 0.357 at 22.4 ms/event,
HiggsML N=1138 0.446 at 130 ms/event.

    python benchmarks/attacks.py --quick     # < 1 minute, CPU (and GPU when available)
    python benchmarks/attacks.py             # bigger sizes, both donut sizes and HiggsML

Ends with one line of key=value figures (ratios first) and writes
benchmarks/results/attacks_<machine tag>.json.
"""

from __future__ import annotations

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsaudit.attacks import Envelope, make_attack  # noqa: E402
from hsaudit.attacks.base import frozen, model_logits  # noqa: E402
from hsaudit.ml.models import build_model, standardisation_from_data  # noqa: E402

try:
    import torchattacks  # noqa: E402

    TORCHATTACKS = torchattacks.__version__
except Exception as exc:  # pragma: no cover - reported in the output
    torchattacks = None
    TORCHATTACKS = f"unavailable: {exc}"

N_FEATURES = 22
PUBLISHED = {  # Bechtle et al. 2026, scored by the same 70-bin scorer
    "donut_2000": {"fooling": 0.321, "ms_per_event": 36.3, "max_jsd": 0.0093, "rel_corr": 0.164},
    "donut_5000": {"fooling": 0.357, "ms_per_event": 22.4, "max_jsd": 0.0050, "rel_corr": 0.097},
    "higgsml_1138": {"fooling": 0.446, "ms_per_event": 130.0, "max_jsd": 0.0079, "rel_corr": 0.217},
}
HIGGSML_FEATURES = [
    "DER_mass_transverse_met_lep", "DER_mass_vis", "DER_pt_h", "DER_deltar_tau_lep", "DER_pt_tot", "DER_sum_pt",
    "DER_pt_ratio_lep_tau", "DER_met_phi_centrality", "PRI_tau_pt", "PRI_tau_eta", "PRI_tau_phi", "PRI_lep_pt",
    "PRI_lep_eta", "PRI_lep_phi", "PRI_met", "PRI_met_phi", "PRI_met_sumet", "PRI_jet_num", "PRI_jet_all_pt",
]
CLOCK = time.perf_counter


def make_problem(n: int, seed: int, device: torch.device):
    """Correlated physical-looking features, a 3% relative envelope on 12 of 22 features, the
    demo model (2 x 200) briefly trained so that the gradients are meaningful."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(N_FEATURES, N_FEATURES)) / np.sqrt(N_FEATURES)
    z = rng.standard_normal((n, N_FEATURES)) @ a.T
    y = (rng.random(n) < 0.5).astype(np.float32)
    x = (50 + 15 * z + 5 * y[:, None] * np.sign(a[:, :1].T)).astype(np.float32)
    sigma = np.where(np.arange(N_FEATURES) < 12, 0.03, 0.0)
    env = Envelope.from_uncertainties(x, sigma, relative=True, n_sigma=1.0)
    mean, std = standardisation_from_data(x)
    model = build_model({"hidden_layers": [200, 200]}, N_FEATURES, mean, std, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x[:2000]), torch.as_tensor(y[:2000])
    for _ in range(15):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(model.logits(xt), yt).backward()
        opt.step()
    return model.eval().to(device), torch.as_tensor(x), env


def timed_interleaved(fns: dict, repeats: int, device: torch.device) -> dict:
    """Minimum wall time of each function over ``repeats`` rounds, the functions interleaved
    within a round (so that load from other processes hits all of them alike)."""
    for fn in fns.values():
        fn()  # warm-up
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = CLOCK()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[k] = min(best[k], CLOCK() - t0)
    return best


class BoxToUnitCube(torch.nn.Module):
    """torchattacks' view of our problem: u in [0, 1]^F inside the envelope box, two-class logits."""

    def __init__(self, model, lower, upper):
        super().__init__()
        self.model = model
        self.register_buffer("lower", lower)
        self.register_buffer("width", upper - lower)

    def forward(self, u):
        z = model_logits(self.model, self.lower + u * self.width)
        return torch.stack([-0.5 * z, 0.5 * z], dim=1)


def bench_device(device: torch.device, n: int, steps: int, repeats: int, seed: int = 0) -> dict:
    t_setup = time.perf_counter()
    model, x, env = make_problem(n, seed, device)
    print(f"[{device}] setup {time.perf_counter() - t_setup:.1f} s", flush=True)
    xd = x.to(device)
    lower, upper = env.lower.to(device), env.upper.to(device)
    out = {"device": str(device), "n_events": n, "steps": steps, "n_features": N_FEATURES}

    # the limit: forward + backward to the input, steps times
    def limit():
        with frozen(model):
            for _ in range(steps):
                xe = xd.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(model_logits(model, xe).sum(), xe)
        return g

    # the same algorithm as torchattacks' PGD (final iterate), and our default (best iterate,
    # one more forward pass)
    atk = make_attack("pgd", steps=steps, step_fraction=0.1, random_start=False, batch_size=max(n, 1), keep_best=False)
    atk_best = make_attack("pgd", steps=steps, step_fraction=0.1, random_start=False, batch_size=max(n, 1))

    def ours():
        return atk.attack(model, xd, env, "shift_output", seed=seed)

    def ours_best():
        return atk_best.attack(model, xd, env, "shift_output", seed=seed)

    fns = {"limit": limit, "ours": ours, "ours_keep_best": ours_best}
    if torchattacks is not None:
        wrapped = BoxToUnitCube(model, lower, upper).to(device).eval()
        ta = torchattacks.PGD(wrapped, eps=1.0, alpha=0.1, steps=steps, random_start=False)
        u0 = torch.where(upper > lower, (xd - lower) / (upper - lower).clamp_min(1e-30), torch.full_like(xd, 0.5))
        labels = torch.zeros(n, dtype=torch.long, device=device)

        def theirs():
            return ta(u0, labels)

        fns["torchattacks"] = theirs
    t = timed_interleaved(fns, repeats, device)
    t_limit, t_ours = t["limit"], t["ours"]
    r = ours()
    assert bool(env.contains(r.x_adv.cpu()).all())
    out.update(limit_s=t_limit, pgd_s=t_ours, pgd_event_steps_per_s=n * steps / t_ours,
               limit_event_steps_per_s=n * steps / t_limit, pgd_fraction_of_limit=t_limit / t_ours)
    if torchattacks is not None:
        t_ta = t["torchattacks"]
        u_adv = theirs()
        r_best = ours_best()
        with torch.no_grad():
            x_ta = lower + u_adv * (upper - lower)
            gain_ta = float((model_logits(model, x_ta) - model_logits(model, xd)).mean())
            gain_ours = float((model_logits(model, r.x_adv) - model_logits(model, xd)).mean())
            gain_best = float((model_logits(model, r_best.x_adv) - model_logits(model, xd)).mean())
        out.update(torchattacks_s=t_ta, torchattacks_event_steps_per_s=n * steps / t_ta,
                   pgd_speedup_vs_torchattacks=t_ta / t_ours, mean_logit_gain_ours=gain_ours,
                   pgd_keep_best_s=t["ours_keep_best"], pgd_keep_best_speedup_vs_torchattacks=t_ta / t["ours_keep_best"],
                   mean_logit_gain_ours_keep_best=gain_best,
                   mean_logit_gain_torchattacks=gain_ta,
                   pgd_mean_gain_rel_diff=abs(gain_ours - gain_ta) / max(abs(gain_ta), 1e-12))

    return out


# ---------------------------------------------------------------------------- CONSERVAttack
def js_distance_base2(a: np.ndarray, b: np.ndarray, bins: int, lo: float, hi: float) -> float:
    """Independent scorer: base-2 Jensen-Shannon distance of two samples' histograms."""
    edges = np.linspace(lo, hi, bins + 1)
    p = np.histogram(np.clip(a, lo, hi), edges)[0].astype(np.float64)
    q = np.histogram(np.clip(b, lo, hi), edges)[0].astype(np.float64)
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)
    kl = lambda u: float(np.sum(u[u > 0] * np.log2(u[u > 0] / m[u > 0])))  # noqa: E731
    return float(np.sqrt(max(0.5 * (kl(p) + kl(q)), 0.0)))


def score(x_clean: np.ndarray, x_adv: np.ndarray, bins: int = 70) -> dict:
    jsd = [js_distance_base2(x_adv[:, j], x_clean[:, j], bins, float(x_clean[:, j].min()), float(x_clean[:, j].max()))
           for j in range(x_clean.shape[1])]
    c0 = np.nan_to_num(np.corrcoef(x_clean, rowvar=False))
    c1 = np.nan_to_num(np.corrcoef(x_adv, rowvar=False))
    return {"max_jsd": max(jsd), "rel_corr": float(np.linalg.norm(c1 - c0) / np.linalg.norm(c0))}


class DonutMLP(torch.nn.Module):
    """The paper's 32-16-1 ReLU network (logits method for the attacks)."""

    def __init__(self, n_in: int = 2, hidden=(32, 16)):
        super().__init__()
        layers, w = [], n_in
        for h in hidden:
            layers += [torch.nn.Linear(w, h), torch.nn.ReLU()]
            w = h
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(w, 1))
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))

    def logits(self, x):
        return self.net((x - self.mean) / self.std)[:, 0]

    def forward(self, x):
        return torch.sigmoid(self.logits(x))


def train_mlp(x: np.ndarray, y: np.ndarray, hidden, epochs: int, seed: int) -> DonutMLP:
    torch.manual_seed(seed)
    m = DonutMLP(x.shape[1], hidden)
    m.mean.copy_(torch.as_tensor(x.mean(0)))
    m.std.copy_(torch.as_tensor(np.where(x.std(0) > 0, x.std(0), 1.0)))
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 512):
            b = perm[i:i + 512]
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(m.logits(xt[b]), yt[b]).backward()
            opt.step()
    return m.eval()


def donut(n: int, seed: int):
    rng = np.random.default_rng(seed)
    sig = rng.normal(0.0, 0.5, (n, 2))
    r = 1.8 + 0.5 * rng.standard_normal(n)
    phi = rng.uniform(0, 2 * np.pi, n)
    bkg = np.stack([r * np.cos(phi), r * np.sin(phi)], 1)
    return np.concatenate([sig, bkg]).astype(np.float32), np.r_[np.ones(n), np.zeros(n)].astype(np.float32)


def attack_problem(model, x_test, y_test, n_attack: int):
    """The first n_attack correctly classified background test events, with an envelope
    that does not bind (the attack clips to the clean range itself)."""
    with torch.no_grad():
        z = model.logits(torch.as_tensor(x_test)).numpy()
    idx = np.nonzero((y_test == 0) & (z < 0))[0][:n_attack]
    xa = x_test[idx]
    width = 10.0 * (xa.max(0) - xa.min(0) + 1.0)
    return xa, Envelope.from_uncertainties(xa, width)


def run_conservattack(model, xa, env, mode: str, **settings) -> dict:
    atk = make_attack("conservattack", constraint_mode=mode, **settings)
    t0, c0 = time.perf_counter(), time.process_time()
    r = atk.attack(model, xa, env, "background_as_signal", labels=np.zeros(len(xa)), seed=0)
    dt, dc = time.perf_counter() - t0, time.process_time() - c0
    x_adv = r.numpy()
    with torch.no_grad():
        fooled = float((model.logits(r.x_adv) >= 0).float().mean())
    sc = score(xa, x_adv)
    return {"mode": mode, "n_events": len(xa), "fooling": fooled, **sc, "ms_per_event": 1e3 * dt / len(xa),
            # CPU time of this process: what the attack costs without other processes' load
            "cpu_ms_per_event": 1e3 * dc / len(xa), "seconds": dt,
            "own_max_jsd_100_bins": r.info["max_jsd"], "own_rel_corr": r.info["correlation_rel_change"],
            "constraints_met": r.info["constraints_met"], "accepted_moves": r.info["accepted_moves"],
            "rounds": r.info["rounds"],
            "mean_move_per_sd": float((np.abs(x_adv - xa).mean(0) / np.where(xa.std(0) > 0, xa.std(0), 1)).mean())}


def with_ratios(res: dict, key: str) -> dict:
    pub = PUBLISHED[key]
    return {**res, "published": pub, "fooling_ratio_to_published": res["fooling"] / pub["fooling"],
            "time_ratio_to_published": res["ms_per_event"] / pub["ms_per_event"],
            "cpu_time_ratio_to_published": res["cpu_ms_per_event"] / pub["ms_per_event"]}


def bench_conservattack(sizes, modes, higgsml_dir, do_higgsml: bool) -> dict:
    out = {}
    t0 = time.perf_counter()
    x, y = donut(50000, 0)
    model = train_mlp(x, y, (32, 16), 5, 0)
    xt, yt = donut(20000, 1)
    print(f"[conservattack] donut model trained in {time.perf_counter() - t0:.1f} s", flush=True)
    for n in sizes:
        xa, env = attack_problem(model, xt, yt, n)
        for mode in modes:
            res = with_ratios(run_conservattack(model, xa, env, mode), f"donut_{n}")
            out[f"donut_{n}_{mode}"] = res
            print(f"[conservattack] donut N={n} {mode}: " + json.dumps({k: v for k, v in res.items() if k != "published"}),
                  flush=True)
    if do_higgsml:
        paths = {c: Path(higgsml_dir) / f"higgsml_{c}_4999.csv" for c in ("sig", "bkg")}
        if not all(p.exists() for p in paths.values()):
            print(f"[conservattack] HiggsML CSVs not found in {higgsml_dir}: HiggsML part skipped", flush=True)
            out["higgsml"] = f"skipped: no data in {higgsml_dir}"
        else:
            xs, ys = [], []
            for c, p in paths.items():
                with open(p) as fh:
                    header = fh.readline().strip().split(",")
                cols = [header.index(f) for f in HIGGSML_FEATURES]
                arr = np.loadtxt(p, delimiter=",", skiprows=1, usecols=cols, dtype=np.float64)
                xs.append(arr.astype(np.float32))
                ys.append(np.full(len(arr), 1.0 if c == "sig" else 0.0, np.float32))
            xh, yh = np.concatenate(xs), np.concatenate(ys)
            perm = np.random.default_rng(0).permutation(len(xh))
            xh, yh = xh[perm], yh[perm]
            half = len(xh) // 2
            mh = train_mlp(xh[:half], yh[:half], (64, 32), 30, 0)
            xa, env = attack_problem(mh, xh[half:], yh[half:], 1138)
            for mode in modes:
                res = with_ratios(run_conservattack(mh, xa, env, mode), "higgsml_1138")
                out[f"higgsml_{len(xa)}_{mode}"] = res
                print(f"[conservattack] HiggsML N={len(xa)} {mode}: "
                      + json.dumps({k: v for k, v in res.items() if k != "published"}), flush=True)
    return out


def machine() -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "torchattacks": TORCHATTACKS,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    ap.add_argument("--higgsml-dir", default=os.environ.get("HIGGSML_DIR", os.environ.get("HIGGSML_DATA") or str(Path(__file__).resolve().parents[2] / "shared" / "data" / "higgsml")),
                    help="directory with higgsml_sig_4999.csv / higgsml_bkg_4999.csv (full mode)")
    ap.add_argument("--skip-pgd", action="store_true", help="only the CONSERVAttack part")
    ap.add_argument("--out", default=None, help="results json (default benchmarks/results/attacks_<tag>.json)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 in --quick mode, for stable numbers on a shared machine; "
                         "torch's default otherwise)")
    args = ap.parse_args(argv)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    if args.quick:
        n, steps, repeats = 10000, 10, 7
    else:
        n, steps, repeats = 100000, 40, 5
    global CLOCK
    if torch.get_num_threads() == 1:
        CLOCK = time.thread_time  # one torch thread: the work is this thread's CPU time
    info = machine()
    results = {"mode": "quick" if args.quick else "full", "machine": info, "runs": []}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in ([] if args.skip_pgd else devices):
        scale = 10 if dev.type == "cuda" else 1
        res = bench_device(dev, n * scale, steps, repeats)
        results["runs"].append(res)
        print(json.dumps(res, indent=1), flush=True)
    if args.quick:
        cons = bench_conservattack([2000], ["published", "global"], args.higgsml_dir, False)
    else:
        cons = bench_conservattack([2000, 5000], ["published", "global"], args.higgsml_dir, True)
    results["conservattack"] = cons
    results["clock"] = "thread_time" if CLOCK is time.thread_time else "perf_counter"
    tag = "gpu" if torch.cuda.is_available() else "cpu"
    suffix = ("_quick" if args.quick else "") + ("_conservattack" if args.skip_pgd else "")
    path = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"attacks_{tag}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    cpu = results["runs"][0] if results["runs"] else {"pgd_fraction_of_limit": float("nan"),
                                                       "pgd_event_steps_per_s": float("nan"),
                                                       "limit_event_steps_per_s": float("nan")}
    pub, glob = cons["donut_2000_published"], cons["donut_2000_global"]
    higgs = cons.get("higgsml_1138_published")
    line = (f"pgd_speedup_vs_torchattacks={cpu.get('pgd_speedup_vs_torchattacks', float('nan')):.3f} "
            f"pgd_fraction_of_limit={cpu['pgd_fraction_of_limit']:.3f} "
            f"conservattack_us_per_event={1e3 * pub['ms_per_event']:.1f} "
            f"conservattack_fooling={pub['fooling']:.4f} conservattack_max_jsd={pub['max_jsd']:.4f} "
            f"conservattack_rel_corr={pub['rel_corr']:.4f} "
            f"conservattack_fooling_ratio_to_published={pub['fooling_ratio_to_published']:.3f} "
            f"conservattack_time_ratio_to_published={pub['time_ratio_to_published']:.3f} "
            f"conservattack_cpu_us_per_event={1e3 * pub['cpu_ms_per_event']:.1f} "
            f"conservattack_global_fooling={glob['fooling']:.4f} conservattack_global_max_jsd={glob['max_jsd']:.4f} "
            f"conservattack_global_rel_corr={glob['rel_corr']:.4f} "
            f"pgd_mean_gain_rel_diff={cpu.get('pgd_mean_gain_rel_diff', float('nan')):.2e} "
            f"pgd_keep_best_speedup_vs_torchattacks={cpu.get('pgd_keep_best_speedup_vs_torchattacks', float('nan')):.3f} "
            f"pgd_event_steps_per_s={cpu['pgd_event_steps_per_s']:.4g} "
            f"torchattacks_event_steps_per_s={cpu.get('torchattacks_event_steps_per_s', float('nan')):.4g} "
            f"limit_event_steps_per_s={cpu['limit_event_steps_per_s']:.4g} device=cpu")
    if isinstance(higgs, dict):
        line += (f" higgsml_conservattack_ms_per_event={higgs['ms_per_event']:.2f}"
                 f" higgsml_conservattack_cpu_ms_per_event={higgs['cpu_ms_per_event']:.2f}"
                 f" higgsml_conservattack_fooling={higgs['fooling']:.4f}")
    if len(results["runs"]) > 1:
        g = results["runs"][1]
        line += (f" gpu_pgd_speedup_vs_torchattacks={g.get('pgd_speedup_vs_torchattacks', float('nan')):.3f}"
                 f" gpu_pgd_fraction_of_limit={g['pgd_fraction_of_limit']:.3f}")
    print(f"results written to {path}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
