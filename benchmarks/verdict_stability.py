"""Benchmark: are the audit's verdicts stable under a change of every seed?

The top-level ``seed:`` of a configuration drives the demo's event generation, the attacks,
the visibility test's calibration toys, the bootstrap replicas, the random-control null and
the pseudo-experiments (the network's own ``training.seed`` is kept, so that the question is
about the audit, not about a different network). A verdict is a measurement with three
outcomes (docs/audit.md): moving between "inconclusive" and a decided outcome from one seed
to the next is what statistics does near a boundary; a move between "larger than quoted"
and "covered" would mean the inconclusive band is too narrow for the uncertainties.

For each of N seeds the script writes the configuration with that seed, runs
``law run AttackAudit`` on it (its own version, so nothing is shared between seeds), reads
summary.json and tabulates every (model, systematic) verdict per seed, then counts

* flips: a (model, systematic) that is "larger than quoted" for one seed and "covered" for
  another (must be 0);
* moves: one that is inconclusive for some seeds and decided for others (allowed).

    python benchmarks/verdict_stability.py --config demo_stability --seeds 5
    python benchmarks/verdict_stability.py --quick          # the ci config, 2 seeds (minutes)
    python benchmarks/verdict_stability.py --config demo_stability --seeds 5 --collect-only

Needs ``source setup.sh`` first (law on PATH, DATA_PATH set); ``--nice`` runs law niced.
Writes benchmarks/results/verdict_stability_<config>.json after every seed (a cut-short run
keeps the seeds done) and ends with one line of key=value figures.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402

LARGER, COVERED, INCONCLUSIVE = "larger than quoted", "covered", "inconclusive"


def seeded_config(config: str, seed: int, workdir: Path) -> Path:
    """The configuration with its top-level seed replaced, written to ``workdir``."""
    from hsaudit.config import resolve_config_path

    src = resolve_config_path(config)
    raw = yaml.safe_load(src.read_text())
    raw["seed"] = int(seed)
    # one folder per seed, the same file name: the law version separates the runs
    out = workdir / f"seed{seed}" / src.name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# {src.name} with seed: {seed} (benchmarks/verdict_stability.py)\n" + yaml.safe_dump(raw, sort_keys=False))
    return out


def find_summary(version: str) -> Path | None:
    data = os.environ.get("DATA_PATH")
    if not data:
        return None
    hits = sorted(glob.glob(os.path.join(data, "AttackAudit", "*", version, "*", "summary.json")),
                  key=os.path.getmtime)
    return Path(hits[-1]) if hits else None


def run_audit(config_path: Path, version: str, workers: int, nice: int, log: Path) -> float:
    """``law run AttackAudit`` on one seeded configuration; returns the wall time (s)."""
    cmd = ["law", "run", "AttackAudit", "--config", str(config_path), "--version", version,
           "--workers", str(workers)]
    if nice:
        cmd = ["nice", "-n", str(nice)] + cmd
    t0 = time.time()
    with open(log, "w") as fh:
        rc = subprocess.call(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    if rc != 0:
        print(f"law run failed for {version} (exit {rc}); see {log}", flush=True)
    return time.time() - t0


def verdicts_of(summary: dict) -> dict:
    """{"model/systematic": {verdict, quoted, hidden, responsible, t, closure}} of one summary."""
    out = {}
    for mname, m in summary["models"].items():
        for sname, s in m["systematics"].items():
            out[f"{mname}/{sname}"] = {
                "verdict": s["verdict"],
                "quoted": s["standard_impact_mu"], "quoted_unc": s["standard_impact_mu_unc"],
                "hidden": s["largest_hidden_impact_mu"], "hidden_unc": s["largest_hidden_impact_mu_unc"],
                "responsible": s["responsible_attack"], "significance": s.get("verdict_significance"),
                "null_q95": s["null"]["quantile_95"], "closure_passed": s["closure_passed"],
            }
    return out


def stability(per_seed: dict) -> dict:
    """Flips (larger <-> covered) and moves (to or from inconclusive) per (model, systematic)."""
    keys = sorted({k for v in per_seed.values() for k in v})
    table, flips, moves = {}, [], []
    for k in keys:
        seq = {s: v[k]["verdict"] for s, v in per_seed.items() if k in v}
        kinds = set(seq.values())
        table[k] = seq
        if LARGER in kinds and COVERED in kinds:
            flips.append(k)
        if INCONCLUSIVE in kinds and len(kinds) > 1:
            moves.append(k)
    return {"verdicts": table, "flips_larger_covered": flips, "moves_inconclusive": moves}


def machine() -> dict:
    import numpy
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "numpy": numpy.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}


def print_table(result: dict) -> None:
    seeds = result["seeds_done"]
    short = {LARGER: "LARGER", COVERED: "covered", INCONCLUSIVE: "inconcl."}
    w = max([len(k) for k in result["verdicts"]] + [10])
    print(f"{'model/systematic':<{w}}  " + "  ".join(f"{s:>10}" for s in seeds))
    for k, seq in result["verdicts"].items():
        print(f"{k:<{w}}  " + "  ".join(f"{short.get(seq.get(s), '-'):>10}" for s in seeds))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="demo_stability", help="config name in config/ or a path")
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (seed k = the config's seed + k)")
    ap.add_argument("--seed-list", type=int, nargs="*", help="explicit seeds instead of --seeds")
    ap.add_argument("--version-prefix", default="stability", help="law version prefix (one version per seed)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--nice", type=int, default=10, help="niceness of the law runs (0: not niced)")
    ap.add_argument("--collect-only", action="store_true", help="only read the summaries of runs already done")
    ap.add_argument("--quick", action="store_true", help="the ci config with 2 seeds")
    ap.add_argument("--out", help="result file (default benchmarks/results/verdict_stability_<config>.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.config, args.seeds = "ci", 2
    if not args.collect_only and not os.environ.get("LAW_CONFIG_FILE"):
        raise SystemExit("source setup.sh first (law and DATA_PATH are needed)")
    from hsaudit.config import resolve_config_path

    base = yaml.safe_load(resolve_config_path(args.config).read_text())
    seeds = args.seed_list or [int(base["seed"]) + k for k in range(args.seeds)]
    name = Path(resolve_config_path(args.config)).stem
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"verdict_stability_{name}.json"
    workdir = Path(os.environ.get("DATA_PATH", "/tmp")) / "verdict_stability" / name
    per_seed, times, failed = {}, {}, []
    t_all = time.time()
    for seed in seeds:
        version = f"{args.version_prefix}_{name}_seed{seed}"
        if not args.collect_only and find_summary(version) is None:
            cfg_path = seeded_config(args.config, seed, workdir)
            times[str(seed)] = run_audit(cfg_path, version, args.workers, args.nice, workdir / f"seed{seed}.log")
        path = find_summary(version)
        if path is None:
            print(f"seed {seed}: no summary (not run yet, or its run failed)", flush=True)
            failed.append(seed)
            continue
        per_seed[str(seed)] = verdicts_of(json.loads(path.read_text()))
        result = {"config": name, "seeds": seeds, "seeds_done": list(per_seed), "seeds_failed": failed,
                  "wall_s": times, "machine": machine(), **stability(per_seed), "per_seed": per_seed}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1))
        print(f"seed {seed}: {sum(v['verdict'] == LARGER for v in per_seed[str(seed)].values())} larger, "
              f"{sum(v['verdict'] == COVERED for v in per_seed[str(seed)].values())} covered"
              + (f" ({times[str(seed)] / 60:.1f} min)" if str(seed) in times else ""), flush=True)
    if not per_seed:
        raise SystemExit("no seed has a summary")
    result = {"config": name, "seeds": seeds, "seeds_done": list(per_seed), "seeds_failed": failed,
              "wall_s": times, "machine": machine(), **stability(per_seed), "per_seed": per_seed}
    out.write_text(json.dumps(result, indent=1))
    print_table(result)
    n_dec = sum(v["verdict"] != INCONCLUSIVE for s in per_seed.values() for v in s.values())
    n_all = sum(len(s) for s in per_seed.values())
    print(f"flips_larger_covered={len(result['flips_larger_covered'])} "
          f"moves_inconclusive={len(result['moves_inconclusive'])} decided_fraction={n_dec / max(n_all, 1):.2f} "
          f"seeds={len(per_seed)} seeds_failed={len(failed)} verdicts_per_seed={n_all // len(per_seed)} "
          f"minutes={(time.time() - t_all) / 60:.1f} config={name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
