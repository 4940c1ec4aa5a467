"""Training throughput of ``hsaudit.ml.training.train_classifier`` vs a minimal plain-torch loop.

Same model (build_model spec and seed), same data, same batch size, same optimiser (Adam);
the plain loop is what one writes by hand: tensors on the device, a random permutation
per epoch, index a batch, forward, weighted BCE, backward, step. Throughput is training
events per second of one epoch (median over epochs after the first, repeats interleaved so
that load changes on a shared machine hit both alike). Ratio = ours / plain, so > 1 means
our loop is faster. Our loop's per-epoch validation pass is timed separately and reported
as a second ratio (whole epoch including validation).

Also reported: the cost of the systematics-aware penalty (one shift systematic with up and
down, lambda > 0) relative to our loop without it.

    python benchmarks/training.py --quick      # < 1 minute, CPU (+ CUDA when available)
    python benchmarks/training.py              # larger data and more epochs
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
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hsaudit.ml.models import build_model, standardisation_from_data  # noqa: E402
from hsaudit.ml.training import TRAIN, split_by_event_id, train_classifier  # noqa: E402

SPEC = {"architecture": "mlp"}  # 2 x 200 ReLU (Wunsch et al.)


def make_data(n: int, n_features: int, seed: int = 0):
    """Two correlated Gaussian classes in physical-looking units; feature 0 gets a +-3 % shift."""
    rng = np.random.default_rng(seed)
    y = (rng.uniform(size=n) < 0.5).astype(np.float64)
    A = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    X = rng.normal(size=(n, n_features)) @ A + y[:, None] * 0.6
    X = (X * 20 + 50).astype(np.float32)
    w = rng.uniform(0.5, 1.5, n)
    ids = np.arange(n, dtype=np.int64)
    up, down = X.copy(), X.copy()
    up[:, 0] *= 1.03
    down[:, 0] *= 0.97
    return X, y, w, ids, {"shift": {"up": up, "down": down}}


def ours(X, y, w, ids, epochs, batch, device, systematics=None, lam=0.0):
    settings = {
        **SPEC, "batch_size": batch, "max_epochs": epochs, "patience": epochs + 1, "seed": 0,
        "device": device, "progress": False, "split_fractions": (0.8, 0.2, 0.0),
        "lambdas": {"shift": lam} if lam else {}, "penalty_warmup_epochs": 0,
    }
    r = train_classifier(X, y, w, ids, settings, systematics)
    tr = [h["train_seconds"] for h in r.history[1:]]
    whole = [h["train_seconds"] + h["val_seconds"] for h in r.history[1:]]
    n_train = int((r.split == TRAIN).sum())
    return n_train / statistics.median(tr), n_train / statistics.median(whole)


def plain(X, y, w, ids, epochs, batch, device):
    """A minimal hand-written loop on the same training events and model."""
    dev = torch.device(device)
    tr = split_by_event_id(ids, (0.8, 0.2, 0.0), "audit-split") == TRAIN
    Xt = torch.from_numpy(X[tr]).to(dev)
    yt = torch.from_numpy(y[tr].astype(np.float32)).to(dev)
    fac = np.where(y[tr] == 1, 0.5 * tr.sum() / w[tr][y[tr] == 1].sum(), 0.5 * tr.sum() / w[tr][y[tr] == 0].sum())
    wt = torch.from_numpy((w[tr] * fac).astype(np.float32)).to(dev)
    mean, std = standardisation_from_data(X[tr], w[tr])
    torch.manual_seed(0)
    model = build_model(SPEC, X.shape[1], mean, std).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = Xt.shape[0]
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev)
        for i in range(0, n, batch):
            idx = perm[i : i + batch]
            loss = F.binary_cross_entropy(model(Xt[idx]), yt[idx], weight=wt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times[1:])


def machine(device: str) -> dict:
    cpu = cpu_model()
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def bench_device(device, X, y, w, ids, syst, epochs, batch, repeats):
    o, o_whole, p, o_pen = [], [], [], []
    for _ in range(repeats):  # interleaved, so that load changes hit both loops alike
        a, b = ours(X, y, w, ids, epochs, batch, device)
        o.append(a)
        o_whole.append(b)
        p.append(plain(X, y, w, ids, epochs, batch, device))
        o_pen.append(ours(X, y, w, ids, epochs, batch, device, syst, lam=20.0)[0])
    med = statistics.median
    return {
        "speedup_vs_plain_torch": med(o) / med(p),
        "speedup_incl_validation": med(o_whole) / med(p),
        "penalty_throughput_ratio": med(o_pen) / med(o),
        "ours_events_per_s": med(o),
        "ours_incl_validation_events_per_s": med(o_whole),
        "plain_events_per_s": med(p),
        "ours_penalty_events_per_s": med(o_pen),
        "raw": {"ours": o, "ours_incl_validation": o_whole, "plain": p, "ours_penalty": o_pen},
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, finishes within a minute")
    ap.add_argument("--events", type=int, default=None)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: stable figures on a shared machine; 0 = torch's choice)")
    ap.add_argument("--no-cuda", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.events or (12_000 if args.quick else 200_000)
    epochs = args.epochs or (4 if args.quick else 6)
    repeats = args.repeats or 3

    X, y, w, ids, syst = make_data(n, args.features)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    results = {}
    for dev in devices:
        results[dev] = bench_device(dev, X, y, w, ids, syst, epochs, args.batch, repeats)

    tag = ("cuda-" + torch.cuda.get_device_name(0).split()[-1].lower()) if "cuda" in results else f"cpu{os.cpu_count()}"
    name = "training" if args.quick else "training_full"
    out = args.out or REPO / "benchmarks" / "results" / f"{name}_{tag}.json"
    record = {
        "benchmark": "training loop throughput, ours vs minimal plain torch",
        "mode": "quick" if args.quick else "full",
        "settings": {"events": n, "features": args.features, "epochs": epochs, "batch": args.batch,
                     "repeats": repeats, "model": SPEC, "train_fraction": 0.8},
        "machine": machine(devices[-1]),
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))

    cpu = results["cpu"]
    figures = {
        "speedup_vs_plain_torch": cpu["speedup_vs_plain_torch"],
        "speedup_incl_validation": cpu["speedup_incl_validation"],
        "penalty_throughput_ratio": cpu["penalty_throughput_ratio"],
        "cpu_ours_events_per_s": cpu["ours_events_per_s"],
        "cpu_plain_events_per_s": cpu["plain_events_per_s"],
    }
    if "cuda" in results:
        c = results["cuda"]
        figures.update({
            "cuda_speedup_vs_plain_torch": c["speedup_vs_plain_torch"],
            "cuda_speedup_incl_validation": c["speedup_incl_validation"],
            "cuda_penalty_throughput_ratio": c["penalty_throughput_ratio"],
            "cuda_ours_events_per_s": c["ours_events_per_s"],
            "cuda_plain_events_per_s": c["plain_events_per_s"],
        })
    print(f"results written to {out}", file=sys.stderr)
    print(" ".join(f"{k}={v:.4g}" for k, v in figures.items()))


if __name__ == "__main__":
    main()
