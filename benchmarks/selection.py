"""Benchmark: the coffea selection with all systematic variants vs a plain uproot read.

Generates demo NanoAOD events (hsaudit.generate), then, in a fresh process per sample size:

* anchor: a plain ``uproot`` read of exactly the branches the selection uses, chunk by chunk;
* ours: ``select_chunk`` over the same chunks (NanoEvents, object selection, nominal + every
  shift up/down re-evaluated, features, regions, weight variations, cutflow);

both in the same process one after the other, so that load on a shared machine hits both
alike. ``slowdown_vs_uproot_read`` = time(ours) / time(read). Peak memory (``ru_maxrss`` of
the child process) is recorded at two sample sizes with the same chunk size: with chunked
processing it must not grow with the number of events.

    python benchmarks/selection.py --quick     # < 1 minute
    python benchmarks/selection.py             # 1,000,000 events

Ends with one line of key=value figures (ratios first); results go to
benchmarks/results/selection_<machine tag>.json.
"""

from __future__ import annotations

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def child(path: str, n_events: int, chunk_size: int) -> dict:
    """Runs in a fresh process: time the uproot read and the selection of the first n_events."""
    import warnings

    import uproot

    from hsaudit.config import load_config
    from hsaudit.selection import select_chunk
    from hsaudit.selection.objects import required_branches

    warnings.simplefilter("ignore")
    config = load_config("demo")
    ds = config.datasets["ztt"]
    chunks = [(a, min(a + chunk_size, n_events)) for a in range(0, n_events, chunk_size)]
    with uproot.open(path) as f:
        keys = set(f["Events"].keys())
    branches = [b for group in required_branches() for b in group if b in keys]
    select_chunk(path, 0, min(1000, n_events), ds, config)  # warm-up: imports, caches

    t0 = time.perf_counter()
    n_read = 0
    with uproot.open(path) as f:
        tree = f["Events"]
        for a, b in chunks:
            arrays = tree.arrays(branches, entry_start=a, entry_stop=b)
            n_read += len(arrays)
    t_read = time.perf_counter() - t0
    rss_after_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # like a SelectEvents workflow: each chunk's table is handed on (written) and dropped, so
    # peak memory measures the processing, not an in-memory pile of outputs
    t0 = time.perf_counter()
    n_rows = 0
    for a, b in chunks:
        table = select_chunk(path, a, b, ds, config)
        n_rows += table.n_events
    t_select = time.perf_counter() - t0
    return {
        "n_events": n_events,
        "chunk_size": chunk_size,
        "n_chunks": len(chunks),
        "n_branches": len(branches),
        "n_variants": len(table.variants),
        "n_rows": n_rows,
        "t_uproot_read_s": t_read,
        "t_select_s": t_select,
        "events_per_s_select": n_events / t_select,
        "events_per_s_read": n_read / t_read,
        "slowdown_vs_uproot_read": t_select / t_read,
        "peak_rss_mb_after_read": rss_after_read,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def machine() -> dict:
    import numpy

    cpu = cpu_model()
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "device": "cpu"}
    for mod in ("torch", "coffea", "uproot", "awkward"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed: leave it out
            pass
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def run_child(path, n, chunk):
    cmd = [sys.executable, __file__, "--child", str(path), "--n", str(n), "--chunk", str(chunk)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, < 1 minute")
    ap.add_argument("--events", type=int, default=None, help="events in the large sample")
    ap.add_argument("--chunk", type=int, default=None, help="events per chunk")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.chunk)))
        return

    from hsaudit.generate import generate_events

    n_large = args.events or (40_000 if args.quick else 1_000_000)
    chunk = args.chunk or (10_000 if args.quick else 100_000)
    n_small = max(chunk, n_large // 4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ztt.root"
        t0 = time.perf_counter()
        generate_events("ztt", n_large, 20261123, path)
        t_gen = time.perf_counter() - t0
        small = run_child(path, n_small, chunk)
        large = run_child(path, n_large, chunk)

    result = {
        "benchmark": "selection",
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "generation_s": t_gen,
        "small": small,
        "large": large,
        "peak_rss_ratio_large_vs_small": large["peak_rss_mb"] / small["peak_rss_mb"],
    }
    tag = f"cpu{os.cpu_count()}" + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"selection_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out}", file=sys.stderr)
    print(
        f"slowdown_vs_uproot_read={large['slowdown_vs_uproot_read']:.2f} "
        f"peak_rss_ratio_large_vs_small={result['peak_rss_ratio_large_vs_small']:.2f} "
        f"events_per_s={large['events_per_s_select']:.0f} "
        f"uproot_read_events_per_s={large['events_per_s_read']:.0f} "
        f"variants={large['n_variants']} n_events_large={n_large} n_events_small={n_small} "
        f"peak_rss_mb_small={small['peak_rss_mb']:.0f} peak_rss_mb_large={large['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
