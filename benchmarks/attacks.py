"""Benchmark: PGD in the envelope vs torchattacks' PGD and vs the model's bare forward+backward
time (the limit), and CONSERVAttack time per attacked event.

Same model (the demo's 2 x 200 ReLU MLP with its standardisation layer, 22 features), same
events, same number of steps and the same step (0.1 of the box width) for both PGDs.
torchattacks (3.5.1) works on images in [0, 1] with one global eps and a multi-class logit
model, so it gets a wrapper: u in [0, 1]^F -> x = lower + u (upper - lower) -> logit z ->
class logits (-z/2, z/2); eps = 1 and clamping to [0, 1] then are exactly the envelope box,
and untargeted cross entropy with label 0 pushes z up like our ``shift_output`` objective.
The limit is ``steps`` times one forward + backward to the input (no parameter gradients)
on all events at once.

    python benchmarks/attacks.py --quick     # < 1 minute, CPU (and GPU when available)
    python benchmarks/attacks.py             # bigger sizes

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

from analysis.attacks import Envelope, make_attack  # noqa: E402
from analysis.attacks.base import frozen, model_logits  # noqa: E402
from analysis.ml.models import build_model, standardisation_from_data  # noqa: E402

try:
    import torchattacks  # noqa: E402

    TORCHATTACKS = torchattacks.__version__
except Exception as exc:  # pragma: no cover - reported in the output
    torchattacks = None
    TORCHATTACKS = f"unavailable: {exc}"

N_FEATURES = 22


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
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[k] = min(best[k], time.perf_counter() - t0)
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


def bench_device(device: torch.device, n: int, steps: int, n_cons: int, repeats: int, seed: int = 0) -> dict:
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

    atk = make_attack("pgd", steps=steps, step_fraction=0.1, random_start=False, batch_size=max(n, 1))

    def ours():
        return atk.attack(model, xd, env, "shift_output", seed=seed)

    fns = {"limit": limit, "ours": ours}
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
        with torch.no_grad():
            x_ta = lower + u_adv * (upper - lower)
            gain_ta = float((model_logits(model, x_ta) - model_logits(model, xd)).mean())
            gain_ours = float((model_logits(model, r.x_adv) - model_logits(model, xd)).mean())
        out.update(torchattacks_s=t_ta, torchattacks_event_steps_per_s=n * steps / t_ta,
                   pgd_speedup_vs_torchattacks=t_ta / t_ours, mean_logit_gain_ours=gain_ours,
                   mean_logit_gain_torchattacks=gain_ta)

    # CONSERVAttack on a sample of n_cons events (public defaults), every event attacked
    xc = x[:n_cons]
    envc = env.subset(torch.arange(n_cons))
    cons = make_attack("conservattack")
    t0 = time.perf_counter()
    rc = cons.attack(model, xc.to(device), envc, "shift_output", seed=seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t_cons = time.perf_counter() - t0
    out.update(conservattack_events=n_cons, conservattack_s=t_cons,
               conservattack_us_per_event=1e6 * t_cons / max(rc.info["n_attacked"], 1),
               conservattack_constraints_met=rc.info["constraints_met"],
               conservattack_accepted_moves=rc.info["accepted_moves"])
    return out


def machine() -> dict:
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(), "torchattacks": TORCHATTACKS,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    ap.add_argument("--out", default=None, help="results json (default benchmarks/results/attacks_<tag>.json)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: 1 in --quick mode, for stable numbers on a shared machine; "
                         "torch's default otherwise)")
    args = ap.parse_args(argv)
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    if args.quick:
        n, steps, n_cons, repeats = 10000, 10, 5000, 5
    else:
        n, steps, n_cons, repeats = 100000, 40, 50000, 5
    info = machine()
    results = {"mode": "quick" if args.quick else "full", "machine": info, "runs": []}
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for dev in devices:
        scale = 10 if dev.type == "cuda" else 1
        res = bench_device(dev, n * scale, steps, n_cons * scale, repeats)
        results["runs"].append(res)
        print(json.dumps(res, indent=1), flush=True)
    tag = "gpu" if torch.cuda.is_available() else "cpu"
    path = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / f"attacks_{tag}{'_quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    cpu = results["runs"][0]
    line = (f"pgd_speedup_vs_torchattacks={cpu.get('pgd_speedup_vs_torchattacks', float('nan')):.3f} "
            f"pgd_fraction_of_limit={cpu['pgd_fraction_of_limit']:.3f} "
            f"conservattack_us_per_event={cpu['conservattack_us_per_event']:.1f} "
            f"pgd_event_steps_per_s={cpu['pgd_event_steps_per_s']:.4g} "
            f"torchattacks_event_steps_per_s={cpu.get('torchattacks_event_steps_per_s', float('nan')):.4g} "
            f"limit_event_steps_per_s={cpu['limit_event_steps_per_s']:.4g} device=cpu")
    if len(results["runs"]) > 1:
        g = results["runs"][1]
        line += (f" gpu_pgd_speedup_vs_torchattacks={g.get('pgd_speedup_vs_torchattacks', float('nan')):.3f}"
                 f" gpu_pgd_fraction_of_limit={g['pgd_fraction_of_limit']:.3f}"
                 f" gpu_conservattack_us_per_event={g['conservattack_us_per_event']:.2f}")
    print(f"results written to {path}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
