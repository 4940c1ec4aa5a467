"""Benchmark: the coffea selection with all systematic variants vs a plain uproot read.

Generates demo NanoAOD events (hsaudit.generate), then, in a fresh process:

* anchor: a plain ``uproot`` read (``TTree.arrays``) of exactly the branches the selection
  uses (every branch of ``required_branches`` the file has, and ``genWeight``), chunk by
  chunk; the file is opened once and its array cache is off, so every repetition reads;
* ours: ``select_chunk`` over the same chunks, as one SelectEvents branch does per chunk
  (opening the file, NanoEvents, object selection, nominal + every shift up/down, features,
  regions, weight variations, cutflow).

The two alternate, repetition by repetition, in the same process, and the medians are
compared, so that load on a shared machine hits both alike. ``fraction_of_read_rate`` =
events/s of ours / events/s of the read (1.0: the selection costs no more than reading its
inputs); ``fraction_of_read_rate_per_chunk_open`` compares with a read that, like ours,
opens the file once per chunk. Peak memory (``ru_maxrss``) is recorded for a quarter of the events with the same
chunk size in a second process: with chunked processing it must not grow with the events.

A third figure compares coffea's tools with flat numpy arrays on one variant's cutflow and
weight variations of a real chunk (``PackedSelection`` + ``Weights`` vs boolean masks and
products, the same numbers): the selection uses ``Weights`` for the weight variations and
flat masks for the per-variant cutflow and regions (see hsaudit/selection/processor.py).

A fourth compares, for the real NanoAOD files in ../shared/data/nano that have taus,
``select_files`` (one SelectEvents branch) with a plain open-and-read of the same branches:
few events and thousands of branches, so it measures the fixed cost per file.

    python benchmarks/selection.py --quick     # 200,000 events, < 1 minute
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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def anchor_branches(keys, config) -> list[str]:
    from hsaudit.selection.objects import required_branches

    groups = required_branches(config.input, config.selection)
    return [b for group in groups for b in group if b in keys] + (["genWeight"] if "genWeight" in keys else [])


def child(path: str, n_events: int, chunk_size: int, repeats: int) -> dict:
    """Runs in a fresh process: alternate the uproot read and the selection of n_events."""
    import warnings

    import uproot

    from hsaudit.config import load_config
    from hsaudit.selection import select_chunk

    warnings.simplefilter("ignore")
    config = load_config("demo")
    ds = config.datasets["ztt"]
    chunks = [(a, min(a + chunk_size, n_events)) for a in range(0, n_events, chunk_size)]
    with uproot.open(path) as f:
        branches = anchor_branches(set(f["Events"].keys()), config)
    select_chunk(path, 0, min(1000, n_events), ds, config)  # warm-up: imports, caches

    def read() -> float:
        t0 = time.perf_counter()
        with uproot.open(path, array_cache=None) as f:
            tree = f["Events"]
            n = sum(len(tree.arrays(branches, entry_start=a, entry_stop=b)) for a, b in chunks)
        assert n == n_events
        return time.perf_counter() - t0

    def select() -> tuple[float, int, int]:
        # like a SelectEvents workflow: each chunk's table is handed on (written) and dropped,
        # so peak memory measures the processing, not an in-memory pile of outputs
        t0 = time.perf_counter()
        n_rows = 0
        for a, b in chunks:
            table = select_chunk(path, a, b, ds, config)
            n_rows += table.n_events
        return time.perf_counter() - t0, n_rows, len(table.variants)

    def read_per_chunk() -> float:
        # what a plain-uproot job per chunk pays: open the file and its tree, read the chunk
        t0 = time.perf_counter()
        for a, b in chunks:
            with uproot.open(path, array_cache=None) as f:
                f["Events"].arrays(branches, entry_start=a, entry_stop=b)
        return time.perf_counter() - t0

    t_read, t_read_chunk, t_select = [], [], []
    for _ in range(repeats):
        t_read.append(read())
        t, n_rows, n_variants = select()
        t_select.append(t)
        t_read_chunk.append(read_per_chunk())
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    med_read, med_select = statistics.median(t_read), statistics.median(t_select)
    return {
        "n_events": n_events,
        "chunk_size": chunk_size,
        "n_chunks": len(chunks),
        "n_branches_anchor": len(branches),
        "n_variants": n_variants,
        "n_rows": n_rows,
        "repeats": repeats,
        "t_uproot_read_s": t_read,
        "t_select_s": t_select,
        "median_t_uproot_read_s": med_read,
        "median_t_select_s": med_select,
        "events_per_s_select": n_events / med_select,
        "events_per_s_read": n_events / med_read,
        "fraction_of_read_rate": med_read / med_select,
        "t_uproot_read_per_chunk_open_s": t_read_chunk,
        "fraction_of_read_rate_per_chunk_open": statistics.median(t_read_chunk) / med_select,
        "peak_rss_mb": rss_mb,
        "cutflow_tools": cutflow_tools(path, min(chunk_size, n_events), config) if repeats > 1 else None,
        "real_files": real_files(config) if repeats > 1 else None,
    }


def cutflow_tools(path, n_events: int, config, repeats: int = 200) -> dict:
    """ms per variant: cutflow + region masks and weight variations of one chunk's rows,
    with coffea's PackedSelection and Weights vs flat numpy (identical numbers checked)."""
    import numpy as np
    from coffea.analysis_tools import PackedSelection, Weights

    from hsaudit.selection import select_chunk
    from hsaudit.tables import feature_column

    table = select_chunk(path, 0, n_events, config.datasets["ztt"], config)
    c = table.columns
    w = c["weight"]
    with np.errstate(invalid="ignore"):
        mt = c[feature_column("mt_mu", "nominal")].astype(np.float64)
        steps = {"preselection": ~np.isnan(mt), "muon_pt": c[feature_column("mu_pt", "nominal")] > 25.0,
                 "tau_pt": c[feature_column("tau_pt", "nominal")] > 25.0, "b_veto": w > 0}
        regions = {"signal": mt < 50.0, "low": mt < 40.0, "high": mt > 70.0}
    rel = np.full(len(w), 0.03)

    def flat():
        sel = np.ones(len(w), dtype=bool)
        flow = []
        for m in steps.values():
            sel = sel & m
            flow.append(w[sel].sum())
        masks = {r: sel & m for r, m in regions.items()}
        flow += [w[m].sum() for m in masks.values()]
        return flow, [w * (1.0 + rel), w * (1.0 - rel)]

    def coffea_tools():
        weights = Weights(len(w))
        weights.add("genWeight", w)
        weights.add("syst", np.ones(len(w)), weightUp=1.0 + rel, weightDown=1.0 - rel)
        selection = PackedSelection(dtype="uint64")
        for name, m in {**steps, **{f"region:{r}": m for r, m in regions.items()}}.items():
            selection.add(name, m)
        flow = list(selection.cutflow(*steps, weights=weights).result().wgtevcutflow[1:])
        flow += [np.sum(weights.weight()[selection.all(*steps, f"region:{r}")]) for r in regions]
        return flow, [weights.weight("systUp"), weights.weight("systDown")]

    a, b = flat(), coffea_tools()
    identical = [float(x).hex() for x in a[0]] == [float(x).hex() for x in b[0]] and all(
        np.array_equal(x, y) for x, y in zip(a[1], b[1]))
    out = {"n_rows": int(len(w)), "identical": bool(identical)}
    for name, fn in (("flat_ms", flat), ("coffea_ms", coffea_tools)):
        t0 = time.process_time()
        for _ in range(repeats):
            fn()
        out[name] = (time.process_time() - t0) / repeats * 1e3
    out["coffea_vs_flat"] = out["coffea_ms"] / out["flat_ms"]
    return out


def real_files(config, repeats: int = 3) -> list[dict]:
    """The selection of each real NanoAOD file in ../shared/data/nano that has a tau collection
    (select_files, as one SelectEvents branch runs it) against a plain uproot read of the same
    branches with its own opening of the file. These files have few events and thousands of
    branches, so the figure measures the fixed cost per file: opening the tree and describing
    its branches."""
    import uproot

    from hsaudit.selection.run import select_files

    folder = REPO.parent / "shared" / "data" / "nano"
    out = []
    for name in ("nano_tt_v15.root", "nano_dy.root"):
        path = folder / name
        if not path.exists():
            continue
        with uproot.open(path) as f:
            keys = set(f["Events"].keys())
            n_events = int(f["Events"].num_entries)
        branches = anchor_branches(keys, config)
        ds = config.datasets["ztt"]
        select_files([path], ds, config, require=False)  # warm-up

        def read():
            t0 = time.perf_counter()
            with uproot.open(path, array_cache=None) as f:
                f["Events"].arrays(branches)
            return time.perf_counter() - t0

        def select():
            t0 = time.perf_counter()
            select_files([path], ds, config, require=False)
            return time.perf_counter() - t0

        t_read, t_select = [], []
        for _ in range(repeats):
            t_read.append(read())
            t_select.append(select())
        out.append({"file": name, "n_events": n_events, "n_branches_in_file": len(keys),
                    "n_branches_read": len(branches), "t_uproot_open_and_read_s": t_read, "t_select_files_s": t_select,
                    "fraction_of_read_rate": statistics.median(t_read) / statistics.median(t_select)})
    return out


def machine() -> dict:
    import numpy

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
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


def run_child(path, n, chunk, repeats):
    cmd = [sys.executable, __file__, "--child", str(path), "--n", str(n), "--chunk", str(chunk),
           "--repeats", str(repeats)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="200,000 events, < 1 minute")
    ap.add_argument("--events", type=int, default=None, help="events in the large sample")
    ap.add_argument("--chunk", type=int, default=None, help="events per chunk")
    ap.add_argument("--repeats", type=int, default=None, help="alternating repetitions (medians)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.n, args.chunk, args.repeats)))
        return

    from hsaudit.generate import generate_events

    n_large = args.events or (200_000 if args.quick else 1_000_000)
    chunk = args.chunk or (50_000 if args.quick else 100_000)
    repeats = args.repeats or (5 if args.quick else 5)
    n_small = max(chunk, n_large // 4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ztt.root"
        t0 = time.perf_counter()
        generate_events("ztt", n_large, 20261123, path)
        t_gen = time.perf_counter() - t0
        large = run_child(path, n_large, chunk, repeats)
        small = run_child(path, n_small, chunk, 2)  # the same steps as the large run

    result = {
        "benchmark": "selection",
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "generation_s": t_gen,
        "large": large,
        "small": small,
        "peak_rss_ratio_large_vs_small": large["peak_rss_mb"] / small["peak_rss_mb"],
    }
    tag = f"cpu{os.cpu_count()}" + ("_quick" if args.quick else "")
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"selection_{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"results written to {out}", file=sys.stderr)
    tools = large["cutflow_tools"]
    print(
        f"fraction_of_read_rate={large['fraction_of_read_rate']:.3f} "
        f"fraction_of_read_rate_per_chunk_open={large['fraction_of_read_rate_per_chunk_open']:.3f} "
        f"peak_rss_ratio_large_vs_small={result['peak_rss_ratio_large_vs_small']:.2f} "
        f"coffea_cutflow_weights_vs_flat={tools['coffea_vs_flat']:.1f} "
        f"events_per_s={large['events_per_s_select']:.0f} "
        f"uproot_read_events_per_s={large['events_per_s_read']:.0f} "
        + "".join(f"real_{r['file'].split('.')[0]}_fraction={r['fraction_of_read_rate']:.3f} "
                  for r in large["real_files"] or [])
        + f"variants={large['n_variants']} n_events={n_large} chunk={chunk} repeats={repeats} "
        f"peak_rss_mb_small={small['peak_rss_mb']:.0f} peak_rss_mb_large={large['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
