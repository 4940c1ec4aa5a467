"""Benchmark: the toy-calibrated data-visibility test on a synthetic analysis.

A ci-sized synthetic analysis (hsaudit.visibility.synthetic: 3 regions, 12 features with the
energies scaled by a +-3% systematic and the visible mass, a MET-like quantity, a transverse
mass and a momentum sum recomputed, a fixed logistic score as the NN output of the control
regions). Measured:

* the false-alarm rate of the global min-p test on independent null toys (>= 500), next to the
  anchor, Bonferroni (p < alpha / n_looks, conservative) and the naive "any look p < alpha";
* the power of the standard +-1 sigma shift (global test), next to Bonferroni's power;
* the random control: hsaudit.attacks' RandomAttack (uniform per event and feature inside the
  +-1 sigma envelope box, Envelope.from_variants), re-selected, over >= 20 seeds: the fraction
  of seeds that are hidden (global power <= power_max);
* the cost of calibrate() (toys per second), and in full mode at a demo's size (50k events,
  21 features: 210 pairs per region), with and without pair looks.

    python benchmarks/calibration.py --quick     # < 1 minute
    python benchmarks/calibration.py             # more toys and seeds, plus the demo-size timing

Ends with one line of key=value figures (ratios first) and writes
benchmarks/results/calibration_<machine tag>.json.
"""

from __future__ import annotations

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)
import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hsaudit.visibility import VisibilitySettings, build_looks, calibrate  # noqa: E402
from hsaudit.visibility.synthetic import make_synthetic  # noqa: E402


def machine() -> dict:
    try:
        import torch
        tv, cuda = torch.__version__, (torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    except Exception as exc:  # pragma: no cover - reported in the output
        tv, cuda = f"unavailable: {exc}", None
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": tv, "python": platform.python_version(), "cuda": cuda,
            "device": "cpu", "load_average": os.getloadavg()[0]}


def selected_rows(a):
    """Rows selected in the nominal or a +-1 sigma variant (a shift may bring events in)."""
    keep = np.zeros(len(a.weights), dtype=bool)
    for k in (-1.0, 0.0, 1.0):
        for m in a.regions(a.features(k)).values():
            keep |= m
    return keep


def subset(a, keep):
    b = copy.copy(a)
    b.base = {k: v[keep] for k, v in a.base.items()}
    b.weights = a.weights[keep]
    return b


def variant(a, k):
    x = a.features(k).astype(np.float32)   # float32 like the analysis' feature tables
    return x, a.regions(x), a.nn_score(x).astype(np.float32)


def random_control(a, looks, cal, seeds):
    import torch

    from hsaudit.attacks.envelope import Envelope
    from hsaudit.attacks.registry import get_attack_class

    torch.set_num_threads(1)
    x, _, _ = variant(a, 0.0)
    up, _, _ = variant(a, 1.0)
    dn, _, _ = variant(a, -1.0)
    env = Envelope.from_variants(x, up, dn, integer_features=["n_jets"], feature_names=a.feature_names,
                                 systematic="scale")
    attack = get_attack_class("random")()
    model = torch.nn.Linear(x.shape[1], 1)          # the random control never looks at the model
    keys = np.arange(x.shape[0], dtype=np.int64)
    out = []
    for seed in seeds:
        xs = attack.attack(model, x, env, seed=int(seed), event_keys=keys).numpy()
        r = cal.power(looks.shift(xs, a.regions(xs), a.nn_score(xs)))
        out.append({"seed": int(seed), "power": r.power, "hidden": r.hidden, "most_visible": r.most_visible["id"]})
    return out


def timing_at_demo_size(n_events: int, n_features: int, n_toys: int, looks_kinds) -> dict:
    a = make_synthetic(int(n_events / 0.72), seed=7, n_features=n_features)
    a = subset(a, selected_rows(a))
    x, reg, nn = variant(a, 0.0)
    s = VisibilitySettings(n_toys=n_toys, n_test_toys=n_toys, looks=looks_kinds)
    t0 = time.perf_counter()
    looks = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions), s, nn_output=nn)
    t1 = time.perf_counter()
    cal = calibrate(looks, x, a.weights, reg, s, seed=1, nn_output=nn)
    t2 = time.perf_counter()
    xs, rs, ns = variant(a, 1.0)
    sh = looks.shift(xs, rs, ns)
    t3 = time.perf_counter()
    cal.power(sh)
    t4 = time.perf_counter()
    return {"n_events": int(len(x)), "n_features": n_features, "looks": list(looks_kinds), "n_looks": len(looks),
            "n_bins_total": int(looks.n_bins_total), "n_toys": n_toys, "n_test_toys": n_toys,
            "build_looks_s": t1 - t0, "calibrate_s": t2 - t1, "shift_s": t3 - t2, "power_s": t4 - t3,
            "toys_per_second": 2 * n_toys / (t2 - t1), "seconds_detail": cal.seconds}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="ci size, 500 + 500 toys, 20 random-control seeds")
    ap.add_argument("--out", default=None, help="result JSON (default benchmarks/results/calibration_<tag>.json)")
    args = ap.parse_args(argv)
    n_gen, n_toys, n_seeds = (30000, 500, 20) if args.quick else (40000, 1000, 50)

    a = make_synthetic(n_gen, seed=3, n_features=12)
    a = subset(a, selected_rows(a))
    x, reg, nn = variant(a, 0.0)
    s = VisibilitySettings(n_toys=n_toys, n_test_toys=n_toys)
    t0 = time.perf_counter()
    looks = build_looks(x, a.weights, reg, a.feature_names, list(a.control_regions), s, nn_output=nn)
    t1 = time.perf_counter()
    cal = calibrate(looks, x, a.weights, reg, s, seed=0, nn_output=nn)
    t2 = time.perf_counter()
    summary = cal.summary()

    n_looks = len(looks)
    bonf = s.alpha / n_looks
    bonf_fa = float(np.mean(cal.min_p_test < bonf))
    naive_fa = float(np.mean(cal.min_p_test < s.alpha))
    cal_bonf = copy.copy(cal)
    cal_bonf.p_threshold = bonf

    standard = {}
    for name, k in (("up", 1.0), ("down", -1.0)):
        xs, rs, ns = variant(a, k)
        sh = looks.shift(xs, rs, ns)
        r = cal.power(sh)
        standard[name] = {"power": r.power, "power_unc": r.power_unc, "hidden": r.hidden,
                          "most_visible": r.most_visible, "bonferroni_power": cal_bonf.power(sh).power}
    curve = []
    for k in (0.0, 0.1, 0.25, 0.5, 1.0):
        xs, rs, ns = variant(a, k)
        r = cal.power(looks.shift(xs, rs, ns))
        curve.append({"k_sigma": k, "power": r.power, "power_unc": r.power_unc,
                      "most_visible": r.most_visible["id"], "most_visible_asymptotic_power": r.most_visible["power"],
                      "most_visible_toy_power": r.most_visible["toy_power"]})
    t3 = time.perf_counter()
    control = random_control(a, looks, cal, range(n_seeds))
    t4 = time.perf_counter()
    hidden_rate = float(np.mean([c["hidden"] for c in control]))

    result = {
        "mode": "quick" if args.quick else "full", "machine": machine(),
        "sample": {"n_events": int(len(x)), "n_features": len(a.feature_names), "regions": looks.regions,
                   "control_regions": list(a.control_regions), "scale": a.scale,
                   "expected_events": {r: float(a.weights[m].sum()) for r, m in reg.items()}},
        "calibration": summary,
        "anchor": {"bonferroni_threshold": bonf, "bonferroni_false_alarm_rate": bonf_fa,
                   "naive_any_look_false_alarm_rate": naive_fa, "pstar_over_bonferroni": cal.p_threshold / bonf},
        "standard_shift": standard,
        "power_curve": curve,
        "random_control": {"n_seeds": n_seeds, "hidden_rate": hidden_rate,
                           "mean_power": float(np.mean([c["power"] for c in control])),
                           "max_power": float(np.max([c["power"] for c in control])), "seeds": control},
        "seconds": {"build_looks": t1 - t0, "calibrate": t2 - t1, "standard_shifts": t3 - t2,
                    "random_control": t4 - t3, "toys_per_second": 2 * n_toys / (t2 - t1)},
    }
    if not args.quick:
        result["demo_size_timing"] = [
            timing_at_demo_size(50000, 21, 1000, ("feature", "pair", "nn_output")),
            timing_at_demo_size(50000, 21, 1000, ("feature", "nn_output")),
        ]
    tag = "cpu2" if os.cpu_count() == 2 else f"cpu{os.cpu_count()}"
    path = Path(args.out) if args.out else Path(__file__).resolve().parent / "results" / (
        f"calibration_{tag}{'_quick' if args.quick else ''}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, default=float))
    print(f"{len(x)} events, {n_looks} looks ({summary['looks_by_kind']}), {looks.n_bins_total} bins; "
          f"p* = {cal.p_threshold:.3g} (Bonferroni {bonf:.3g}); calibrate() {t2 - t1:.1f} s for "
          f"{2 * n_toys} toys = {2 * n_toys / (t2 - t1):.0f} toys/s; random control {t4 - t3:.1f} s "
          f"for {n_seeds} seeds; results in benchmarks/results/{path.name}")
    print("power curve (k sigma: global power; most visible look asymptotic / toy power): " + "; ".join(
        f"{c['k_sigma']}: {c['power']:.3f} ({c['most_visible_asymptotic_power']:.3f} / {c['most_visible_toy_power']:.3f})"
        for c in curve))
    for t in result.get("demo_size_timing", []):
        print(f"demo size: {t['n_events']} events, {t['n_features']} features, looks {t['looks']}: "
              f"{t['n_looks']} looks, {t['n_bins_total']} bins, calibrate() {t['calibrate_s']:.1f} s for "
              f"{2 * t['n_toys']} toys, build_looks {t['build_looks_s']:.1f} s, shift {t['shift_s']:.2f} s, "
              f"power {t['power_s']:.2f} s")
    print(f"pstar_over_bonferroni={cal.p_threshold / bonf:.3f} "
          f"power_ratio_vs_bonferroni={standard['up']['power'] / max(standard['up']['bonferroni_power'], 1e-9):.3f} "
          f"bonferroni_false_alarm_rate={bonf_fa:.4f} naive_false_alarm_rate={naive_fa:.4f} "
          f"false_alarm_rate={cal.false_alarm_rate:.4f} false_alarm_unc={cal.false_alarm_unc:.4f} "
          f"random_control_hidden_rate={hidden_rate:.3f} standard_shift_power={standard['up']['power']:.4f} "
          f"standard_shift_power_down={standard['down']['power']:.4f} toys_per_second={2 * n_toys / (t2 - t1):.1f}")
    return result


if __name__ == "__main__":
    main()
