"""Benchmark: how each stage of the audit scales with the number of generated events.

The audit pipeline (generate demo NanoAOD events -> coffea selection -> merge features ->
train -> evaluate -> likelihood -> visibility calibration -> attacks -> attack validation ->
random control -> impacts -> pseudo-experiments -> report) runs on generated samples of
1x, 2x, 4x a base size (and 8x, 16x in full mode). Every stage calls the same library
functions as its law task's run() (hsaudit.tasks), reads its inputs from the files the
previous stage wrote, and runs in its own child process (forked from a parent that has
imported the libraries, so the interpreter start-up is not timed; ``--spawn`` starts a fresh
interpreter instead). Per stage and size the child records its wall time, CPU time and peak
resident memory (getrusage of itself).

The cost of each stage is fitted as a power law cost = a * N^p in the number of generated
events N (least squares on log-log), and extrapolated from the demo's event count
(config/demo.yaml) to 10x and 100x of it, where the stage with the largest predicted wall
time is named the dominant one. The extrapolation uses the benchmark's (ci-sized) per-stage
settings, printed and stored with the result: they fix how many fits, attacks and toys the
stages run, so the figures say how each stage grows with the events, not how long the demo's
settings take.

    python benchmarks/scaling.py --quick     # ci settings, reduced ensembles, 1x/2x/4x of 20k events
    python benchmarks/scaling.py             # ci settings as configured, 1x ... 32x of 20k events

Ends with one line of key=value figures and writes benchmarks/results/scaling_<tag>.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_model  # noqa: E402  (benchmarks/machine.py)

WARMUP_EVENTS = 10_000
STAGES = ("generate", "select", "merge", "train", "evaluate", "likelihood", "calibrate", "attack",
          "validate", "random_control", "seed_spread", "impacts", "toys", "report")

# settings that keep the quick mode short but run every stage's code path (applied to the
# base config before the event counts are scaled)
QUICK_OVERRIDES = {
    "models": ["nominal"],
    "audit.systematics": ["tau_es"],
    "audit.attacks": ["random", "pgd", "nuisance_pgd", "conservattack", "nuisance_field"],
    "audit.null_seeds": 2,
    "audit.attack_seeds": 1,
    "training.max_epochs": 4,
    "training.patience": 100,     # fixed epoch count: the cost per size is not early stopping's noise
    "checks.n_toys": 200,
    "fit.n_toys": 20,
    "fit.toys_per_chunk": 20,
    "fit.n_replicas": 2,
}
FULL_OVERRIDES = {
    "training.patience": 100,
}


# -- configuration ---------------------------------------------------------------------------
def _set(raw: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    d = raw
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    d[keys[-1]] = value


def generated_events(raw: dict) -> int:
    return int(sum(ds["generate"]["n_events"] for ds in raw["datasets"].values() if ds.get("generate")))


def scaled_config(raw: dict, total_events: int, overrides: dict) -> dict:
    """A copy of ``raw`` with the settings overrides applied and every generated dataset's
    event count scaled so that they add up to about ``total_events`` (the datasets keep their
    proportions and file counts)."""
    from hsaudit.errors import AuditError

    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        if key == "models":
            raw["models"] = {m: raw["models"][m] for m in value}
        else:
            _set(raw, key, value)
    base = generated_events(raw)
    if base == 0:
        raise AuditError("the base config generates no events: the scaling benchmark needs a demo-style config")
    scale = total_events / base
    for ds in raw["datasets"].values():
        gen = ds.get("generate")
        if gen:
            gen["n_events"] = max(int(gen.get("n_files", 1)), int(round(gen["n_events"] * scale)))
    if "audit.attack_seeds" in overrides:
        from hsaudit import null_stage

        if not hasattr(null_stage, "attack_seeds"):   # a library without the seed-spread stage
            raw["audit"].pop("attack_seeds", None)
    raw["name"] = f"{raw.get('name', 'cfg')}_scaling"
    return raw


def settings_description(raw: dict) -> dict:
    """The per-stage settings that fix how much work a stage does besides the events."""
    a = raw.get("audit", {})
    return {
        "models": {m: raw["models"][m].get("hidden") for m in raw["models"]},
        "training_epochs": raw.get("training", {}).get("max_epochs"),
        "systematics_attacked": a.get("systematics"), "attacks": a.get("attacks"),
        "null_seeds": a.get("null_seeds"), "attack_seeds": a.get("attack_seeds"), "calibration_toys": raw.get("checks", {}).get("n_toys"),
        "fit_toys_per_scenario": raw.get("fit", {}).get("n_toys"), "bootstrap_replicas": raw.get("fit", {}).get("n_replicas"),
    }


# -- the stages (each mirrors its law task's run(), hsaudit/tasks) ----------------------------
def _load_cfg(work: Path):
    from hsaudit.config import load_config

    return load_config(work / "config.yaml")


def _sample(cfg, work: Path):
    from hsaudit.samples import assemble
    from hsaudit.tables import FeatureTable

    return assemble([FeatureTable.read(work / "merged" / f"{d}.parquet") for d in cfg.datasets], cfg.feature_names)


def _model(work: Path, name: str, sample, device: str = "cpu"):
    from hsaudit.ml.modelio import load_model

    return load_model(work / "models" / name, device=device, available_features=sample.features)[0]


def _plain(obj):
    """numpy values and paths as JSON values (what the tasks' JSON writers do)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _json_ready(obj):
    return json.loads(json.dumps(obj, default=_plain))


def _accepts(func, name: str) -> bool:
    """Whether ``func`` takes a parameter ``name`` (the stage functions' signatures moved
    from "a network" to "its saved NN outputs"; the benchmark follows either)."""
    import inspect

    return name in inspect.signature(func).parameters


def _nn_outputs(work: Path, name: str, sample) -> dict:
    """{variant: NN outputs} of a model: the evaluate stage's saved table when the library
    has one (hsaudit.nn_outputs), else predicted here as the tasks did."""
    path = work / "evaluation" / f"{name}_nn_outputs.npz"
    if path.exists():
        from hsaudit.nn_outputs import NNOutputs

        return NNOutputs.load(path, sample).as_dict()
    from hsaudit.ml.evaluation import outputs_per_variant

    return outputs_per_variant(_model(work, name, sample), {v: sample.X[v] for v in sample.variants}, invalid="nan")


def _json_dump(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, default=_plain))


def _attack_branches(cfg):
    from hsaudit.attack_stage import attacked_systematics, configured_attacks

    return [(m, s, a) for m in cfg.models for s in attacked_systematics(cfg) for a in configured_attacks(cfg)]


def stage_generate(cfg, work: Path) -> None:
    from hsaudit.generate import generate_events
    from hsaudit.seeds import derive_seed

    for ds_index, (name, ds) in enumerate(cfg.datasets.items()):
        n_total, n_files = ds.generate["n_events"], ds.generate.get("n_files", 1)
        first = 0
        for i in range(n_files):
            n = n_total // n_files + (1 if i < n_total % n_files else 0)
            generate_events(process=ds.process, n_events=n, seed=derive_seed(cfg.seed, "generate", name, i),
                            path=work / "events" / f"{name}_{i}.root", first_event=first, run=ds_index + 1)
            first += n


def stage_select(cfg, work: Path) -> None:
    from hsaudit.selection.run import select_files

    (work / "selected").mkdir(exist_ok=True)
    for name, ds in cfg.datasets.items():
        for i in range(ds.generate.get("n_files", 1)):
            table = select_files([str(work / "events" / f"{name}_{i}.root")], ds, cfg, executor="iterative",
                                 chunk_size=cfg.input.get("chunk_size"), require=False)
            table.write(work / "selected" / f"{name}_{i}.parquet")


def stage_merge(cfg, work: Path) -> None:
    from hsaudit.selection.run import normalise_weights
    from hsaudit.tables import FeatureTable, weight_sanity

    (work / "merged").mkdir(exist_ok=True)
    for name, ds in cfg.datasets.items():
        table = FeatureTable.concat([FeatureTable.read(work / "selected" / f"{name}_{i}.parquet")
                                     for i in range(ds.generate.get("n_files", 1))])
        table = normalise_weights(table, ds.cross_section, cfg.luminosity)
        weight_sanity(table, cfg.input.get("weight_sanity"))
        table.write(work / "merged" / f"{name}.parquet")


def stage_train(cfg, work: Path) -> None:
    from hsaudit.classifier_stage import train
    from hsaudit.ml.modelio import save_model

    sample = _sample(cfg, work)
    for name in cfg.models:
        result = train(sample, cfg, name)
        save_model(result.model, work / "models" / name, result.spec, sample.features, extra=result.summary())


def stage_evaluate(cfg, work: Path) -> None:
    from hsaudit.classifier_stage import evaluate

    sample = _sample(cfg, work)
    for name in cfg.models:
        model = _model(work, name, sample)
        if _accepts(evaluate, "outputs"):
            from hsaudit.nn_outputs import NNOutputs

            outputs = NNOutputs.compute(model, sample)
            result = evaluate(outputs.as_dict(), sample, cfg, name)
            outputs.save(work / "evaluation" / f"{name}_nn_outputs.npz")
        else:
            result = evaluate(model, sample, cfg, name)
        _json_dump(work / "evaluation" / f"{name}.json", result)


def stage_likelihood(cfg, work: Path) -> None:
    from hsaudit.fit_stage import build_likelihood, row_table
    from hsaudit.stats.model import Model

    sample = _sample(cfg, work)
    for name in cfg.models:
        outputs = _nn_outputs(work, name, sample)
        lk = build_likelihood(outputs, sample, cfg)
        m = Model(lk["spec"])
        workspace = m.to_pyhf_workspace(observed=m.concat_channels(lk["truths"]["nominal"]))
        out = work / "likelihood" / name
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "rows.npz", **row_table(outputs["nominal"], sample, cfg))
        _json_dump(out / "workspace.json", _json_ready(workspace))
        _json_dump(out / "likelihood.json", _json_ready(lk))


def stage_calibrate(cfg, work: Path) -> None:
    from hsaudit.calibration_stage import calibrate_model

    sample = _sample(cfg, work)
    for name in cfg.models:
        first = _nn_outputs(work, name, sample) if _accepts(calibrate_model, "outputs") else _model(work, name, sample)
        calibration, summary = calibrate_model(first, sample, cfg, name)
        out = work / "calibration"
        out.mkdir(exist_ok=True)
        calibration.save(out / f"{name}.npz")
        _json_dump(out / f"{name}.json", summary)


def _calibration(work: Path, name: str):
    from hsaudit.visibility import Calibration

    return Calibration.load(work / "calibration" / f"{name}.npz")


def stage_attack(cfg, work: Path) -> None:
    import torch

    from hsaudit.attack_stage import region_arrays, run_attack

    sample = _sample(cfg, work)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for m, s, a in _attack_branches(cfg):
        model = _model(work, m, sample, device)
        calibration = _calibration(work, m) if cfg.attacks[a].get("keep_hidden", False) else None
        outcome = run_attack(model, sample, cfg, m, s, a, calibration)
        out = work / "attacks" / m / s / a
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "attacked.npz", rows=outcome.rows, x_adv=outcome.x_adv,
                            eval_weights=outcome.eval_weights, event=sample.event_id["event"][outcome.rows],
                            **region_arrays(outcome.regions))
        _json_dump(out / "attack.json", {"model": m, "systematic": s, "attack": a, "device": device,
                                         "info": outcome.info, "metrics": outcome.metrics})


def stage_validate(cfg, work: Path) -> None:
    from hsaudit.attack_stage import region_arrays, regions_from_arrays, validate_attack

    sample = _sample(cfg, work)
    for m, s, a in _attack_branches(cfg):
        model, calibration = _model(work, m, sample), _calibration(work, m)
        out = work / "attacks" / m / s / a
        with np.load(out / "attacked.npz") as f:
            rows, x_adv, regions, eval_w = f["rows"], f["x_adv"], regions_from_arrays(f), f["eval_weights"]
        extra = {"nn_nominal": _nn_outputs(work, m, sample)["nominal"]} if _accepts(validate_attack, "nn_nominal") else {}
        result = validate_attack(model, sample, rows, x_adv, cfg, s, calibration, regions, eval_w, **extra)
        np.savez_compressed(out / "nn_outputs.npz", rows=rows, nominal=result["outputs_nominal"],
                            attacked=result["outputs_attacked"], eval_weights=eval_w, **region_arrays(regions))
        _json_dump(out / "checks.json", {"model": m, "systematic": s, "attack": a, "hidden": result["hidden"],
                                         "power": result["power"], "power_unc": result["power_unc"],
                                         "visibility": result["visibility"], "published": result["published"]})


def stage_random_control(cfg, work: Path) -> None:
    from hsaudit.attack_stage import attacked_systematics
    from hsaudit.null_stage import random_control

    sample = _sample(cfg, work)
    for m in cfg.models:
        for s in attacked_systematics(cfg):
            extra = (_nn_outputs(work, m, sample),) if _accepts(random_control, "outputs") else ()
            result = random_control(_model(work, m, sample), sample, cfg, m, s, _calibration(work, m), *extra)
            _json_dump(work / "control" / m / f"{s}.json", {"model": m, "systematic": s, **result})


def _spread_branches(cfg) -> list:
    from hsaudit import null_stage

    if not hasattr(null_stage, "seed_spread_attacks"):
        return []
    from hsaudit.attack_stage import attacked_systematics

    return [(m, s, a) for m in cfg.models for s in attacked_systematics(cfg) for a in null_stage.seed_spread_attacks(cfg)]


def stage_seed_spread(cfg, work: Path) -> None:
    """AttackSeedSpread: each stochastic attack rerun with audit.attack_seeds other seeds (a
    stage of the audit only where the library has it)."""
    branches = _spread_branches(cfg)
    if not branches:
        return
    from hsaudit.attack_stage import regions_from_arrays
    from hsaudit.null_stage import attack_seed_spread

    sample = _sample(cfg, work)
    for m, s, a in branches:
        with np.load(work / "attacks" / m / s / a / "nn_outputs.npz") as f:
            reported = (f["rows"], f["attacked"], regions_from_arrays(f), f["eval_weights"])
        calibration = _calibration(work, m) if cfg.attacks[a].get("keep_hidden", False) else None
        extra = {"outputs": _nn_outputs(work, m, sample)} if _accepts(attack_seed_spread, "outputs") else {}
        result = attack_seed_spread(_model(work, m, sample), sample, cfg, m, s, a, calibration=calibration,
                                    reported=reported, **extra)
        _json_dump(work / "spread" / m / s / f"{a}.json", {"model": m, "systematic": s, "attack": a, **result})


def stage_impacts(cfg, work: Path) -> None:
    from hsaudit.attack_stage import regions_from_arrays
    from hsaudit.seeds import derive_seed
    from hsaudit.stats.impacts import AttackedEvents, impacts_with_uncertainty

    sample = _sample(cfg, work)
    for name in cfg.models:
        outputs = _nn_outputs(work, name, sample)
        events = {}
        for m, s, a in _attack_branches(cfg):
            if m != name:
                continue
            with np.load(work / "attacks" / m / s / a / "nn_outputs.npz") as f:
                events[f"{s}/{a}"] = AttackedEvents(rows=f["rows"], attacked_outputs=f["attacked"],
                                                    regions_after=regions_from_arrays(f),
                                                    eval_weights=f["eval_weights"])
        table = impacts_with_uncertainty(outputs, sample, cfg, events, n_replicas=int(cfg.fit.get("n_replicas", 50)),
                                         seed=derive_seed(cfg.seed, "bootstrap", name))
        result = table.to_dict()
        diff = {k: table.difference_unc(k, k.split("/")[0]) for k in events if k.split("/")[0] in table.standard}
        result["difference_unc"] = {k: (v if np.isfinite(v) else None) for k, v in diff.items()}
        _json_dump(work / "impacts" / f"{name}.json", _json_ready(result))


def stage_toys(cfg, work: Path) -> None:
    from hsaudit import fit_stage

    if hasattr(fit_stage, "pseudo_experiment_stage"):
        return _toys_batched(cfg, work)
    return _toys_per_scenario(cfg, work)


def _toy_scenarios(cfg) -> list[str]:
    from hsaudit.attack_stage import attacked_systematics, configured_attacks
    from hsaudit.fit_stage import scenarios, variant_systematics

    return scenarios(cfg, variant_systematics(cfg), [(s, a) for s in attacked_systematics(cfg)
                                                     for a in configured_attacks(cfg)])


def _toys_batched(cfg, work: Path) -> None:
    """PseudoExperiments as the task runs it: per model and toy chunk, every scenario at once."""
    from hsaudit.fit_stage import pseudo_experiment_stage
    from hsaudit.seeds import derive_seed

    n_toys = int(cfg.fit.get("n_toys", 1000))
    per_chunk = int(cfg.fit.get("toys_per_chunk", n_toys))
    for name in cfg.models:
        lk_dir = work / "likelihood" / name
        for first in range(0, n_toys, per_chunk):
            outputs = {}
            for sc in _toy_scenarios(cfg):
                out = work / "toys" / name / sc.replace("/", "__")
                out.mkdir(parents=True, exist_ok=True)
                outputs[sc] = str(out / f"toys_{first}.npz")
            attack_paths = {sc: str(work / "attacks" / name / sc.split("/")[1] / sc.split("/")[2] / "nn_outputs.npz")
                            for sc in outputs if sc.startswith("attack/")}
            pseudo_experiment_stage(str(lk_dir / "likelihood.json"), outputs, n_toys=min(per_chunk, n_toys - first),
                                    first_toy=first, seed=derive_seed(cfg.seed, "toys", name),
                                    rows_path=str(lk_dir / "rows.npz"), attack_paths=attack_paths,
                                    max_iterations=int(cfg.fit.get("max_iterations", 500)))


def _toys_per_scenario(cfg, work: Path) -> None:
    from hsaudit.attack_stage import attacked_systematics, configured_attacks, regions_from_arrays
    from hsaudit.fit_stage import attacked_truth, scenarios, variant_systematics
    from hsaudit.seeds import derive_seed
    from hsaudit.stats.model import Model
    from hsaudit.stats.toys import run_pseudo_experiments

    n_toys = int(cfg.fit.get("n_toys", 1000))
    per_chunk = int(cfg.fit.get("toys_per_chunk", n_toys))
    attacks = [(s, a) for s in attacked_systematics(cfg) for a in configured_attacks(cfg)]
    max_iter = int(cfg.fit.get("max_iterations", 500))
    for name in cfg.models:
        lk_dir = work / "likelihood" / name
        lk = json.loads((lk_dir / "likelihood.json").read_text())
        with np.load(lk_dir / "rows.npz") as f:
            rows_info = {k: f[k] for k in f.files}
        model = Model(lk["spec"])
        seed = derive_seed(cfg.seed, "toys", name)
        for sc in scenarios(cfg, variant_systematics(cfg), attacks):
            if sc.startswith("attack/"):
                _, s, a = sc.split("/")
                with np.load(work / "attacks" / name / s / a / "nn_outputs.npz") as f:
                    truth = attacked_truth(lk, rows_info, f["rows"], f["attacked"], regions_from_arrays(f),
                                           f["eval_weights"])
            else:
                truth = lk["truths"][sc]
            truth = model.concat_channels(truth, f"truth of scenario {sc}")
            for first in range(0, n_toys, per_chunk):
                result = run_pseudo_experiments(model, truth, min(per_chunk, n_toys - first), seed,
                                                mu_true=lk["mu_true"], first_toy=first, max_iter=max_iter,
                                                significance=sc == "nominal")
                out = work / "toys" / name / sc.replace("/", "__")
                out.mkdir(parents=True, exist_ok=True)
                result.save(out / f"toys_{first}.npz")


def stage_report(cfg, work: Path) -> None:
    from hsaudit import __version__
    from hsaudit.attack_stage import attacked_systematics, configured_attacks
    from hsaudit.audit_stage import AttackFiles, ModelInputs, assemble, fit_warnings, input_summary
    from hsaudit.report import make_summary, write_html, write_summary
    from hsaudit.stats.toys import ToyResult, merge

    sample = _sample(cfg, work)
    systematics, attacks = attacked_systematics(cfg), configured_attacks(cfg)
    models = {}
    for name in cfg.models:
        def load(*parts):
            return json.loads(work.joinpath(*parts).read_text())

        toys = {}
        for d in sorted((work / "toys" / name).iterdir()):
            chunks = [ToyResult.load(p) for p in sorted(d.glob("toys_*.npz"), key=lambda p: int(p.stem[5:]))]
            toys[d.name.replace("__", "/")] = merge(chunks)
        files = {}
        for m, s, a in _attack_branches(cfg):
            if m == name:
                d = work / "attacks" / m / s / a
                files[(s, a)] = AttackFiles(result=load(d / "attack.json"), validation=load(d / "checks.json"),
                                            events_path=str(d / "attacked.npz"), outputs_path=str(d / "nn_outputs.npz"))
        fields = ModelInputs.__dataclass_fields__
        first = ({"nn_outputs": _nn_outputs(work, name, sample)} if "nn_outputs" in fields
                 else {"network": _model(work, name, sample)})
        if "seed_spread" in fields and (work / "spread").exists():
            first["seed_spread"] = {(s, a): load("spread", name, s, f"{a}.json")
                                    for m, s, a in _spread_branches(cfg) if m == name}
        models[name] = ModelInputs(
            **first, evaluation=load("evaluation", f"{name}.json"),
            likelihood=load("likelihood", name, "likelihood.json"), workspace=load("likelihood", name, "workspace.json"),
            toys=toys, calibration=load("calibration", f"{name}.json"), impacts=load("impacts", f"{name}.json"),
            attacks=files, random_control={s: load("control", name, f"{s}.json") for s in systematics})
    report = work / "report"
    report.mkdir(exist_ok=True)
    entries, figures = assemble(cfg, sample, models, systematics, attacks, report, None)
    summary = make_summary(tool_version=__version__, config=cfg.name, version="scaling", models=entries,
                           figures=figures, config_path=str(cfg.path), inputs=input_summary({}),
                           notes=fit_warnings(entries))
    write_summary(summary, report / "summary.json")
    write_html(summary, report, report / "report.html")


# one thread per stage: a stage's CPU time is then its cost, whatever else runs on the machine
THREADS = 1

STAGE_FUNCTIONS = {name: globals()[f"stage_{name}"] for name in STAGES}

# the libraries a stage needs, imported by the parent before it forks the stage's process
PRELOAD = ("torch", "awkward", "uproot", "coffea.processor", "coffea.nanoevents", "matplotlib.pyplot",
           "hsaudit.config", "hsaudit.generate", "hsaudit.selection.run", "hsaudit.samples", "hsaudit.tables",
           "hsaudit.classifier_stage", "hsaudit.ml.modelio", "hsaudit.ml.evaluation", "hsaudit.fit_stage",
           "hsaudit.stats.model", "hsaudit.stats.toys", "hsaudit.stats.impacts", "hsaudit.calibration_stage",
           "hsaudit.attack_stage", "hsaudit.null_stage", "hsaudit.audit_stage", "hsaudit.report", "hsaudit.audit",
           "hsaudit.visibility")


def preload() -> None:
    import importlib

    import matplotlib

    matplotlib.use("Agg")
    for name in PRELOAD:
        importlib.import_module(name)


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def run_stage_here(stage: str, work: Path) -> dict:
    """Run one stage in this process and measure it (called in the stage's child process)."""
    import torch

    torch.set_num_threads(THREADS)
    rss_before = _maxrss_mib()
    cfg = _load_cfg(work)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    STAGE_FUNCTIONS[stage](cfg, work)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    peak = _maxrss_mib()
    return {"wall_s": wall, "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
            "peak_rss_mib": peak, "rss_at_start_mib": rss_before, "stage_rss_mib": max(0.0, peak - rss_before)}


def _child(stage: str, work: str, out: str) -> None:
    try:
        result = run_stage_here(stage, Path(work))
    except BaseException as exc:   # reported by the parent
        import traceback

        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(out).write_text(json.dumps(result))


def run_stage(stage: str, work: Path, spawn: bool = False) -> dict:
    """One stage in a fresh child process: forked (libraries already imported) or spawned."""
    out = work / f"_{stage}.result.json"
    t0 = time.perf_counter()
    if spawn:
        subprocess.run([sys.executable, __file__, "--stage", stage, "--work", str(work), "--result", str(out)],
                       check=False)
    else:
        proc = multiprocessing.get_context("fork").Process(target=_child, args=(stage, str(work), str(out)))
        proc.start()
        proc.join()
    if not out.exists():
        raise RuntimeError(f"stage {stage} left no result (the child process died)")
    result = json.loads(out.read_text())
    result["process_s"] = time.perf_counter() - t0
    return result


# -- fitting and extrapolation ----------------------------------------------------------------
def fit_power_law(n_events, costs) -> dict:
    """Least-squares fit of log(cost) = log(a) + p log(N): {"exponent": p, "prefactor": a, "r2"}.
    Costs <= 0 are clamped to a microsecond (a stage too fast to time)."""
    x = np.log(np.asarray(n_events, dtype=np.float64))
    y = np.log(np.maximum(np.asarray(costs, dtype=np.float64), 1e-6))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a power-law fit needs at least two different event counts")
    p, log_a = np.polyfit(x, y, 1)
    resid = y - (log_a + p * x)
    ss = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid ** 2).sum()) / ss if ss > 0 else 1.0
    return {"exponent": float(p), "prefactor": float(math.exp(log_a)), "r2": r2}


def fit_affine(n_events, costs) -> dict:
    """Least-squares cost = fixed + per_event * N (a cross-check of the power law: at small
    sizes a fixed overhead makes every stage look sublinear, and the power law then
    under-predicts large sizes)."""
    per_event, fixed = np.polyfit(np.asarray(n_events, dtype=np.float64), np.asarray(costs, dtype=np.float64), 1)
    return {"fixed_s": float(fixed), "per_event_s": float(per_event)}


def extrapolate(fits: dict, n_events: float) -> dict:
    """{stage: predicted cost at n_events} from each stage's power law."""
    return {s: f["prefactor"] * n_events ** f["exponent"] for s, f in fits.items()}


def dominant(predicted: dict) -> str:
    return max(predicted, key=predicted.get)


def summarise(sizes: list[int], timings: dict, demo_events: int, cost: str = "cpu_s") -> dict:
    """Fits, extrapolations and the headline figures from per-stage per-size measurements:
    ``timings[stage]`` is a list (one per size, same order as ``sizes``) of dicts with
    ``wall_s``, ``cpu_s`` and ``peak_rss_mib`` (and optionally ``stage_rss_mib``). ``cost``
    names the measurement that the headline exponent and the extrapolation use."""
    fits = {key: {s: fit_power_law(sizes, [m[key] for m in ms]) for s, ms in timings.items()
                  if all(key in m for m in ms)}
            for key in ("wall_s", "cpu_s")}
    memory = {s: fit_power_law(sizes, [m.get("stage_rss_mib", m["peak_rss_mib"]) for m in ms])
              for s, ms in timings.items()}
    main = fits[cost]
    at = {f"{k}x_demo": extrapolate(main, k * demo_events) for k in (1, 10, 100)}
    affine = {s: fit_affine(sizes, [m[cost] for m in ms]) for s, ms in timings.items()}
    at_affine = {f"{k}x_demo": {s: max(0.0, f["fixed_s"] + f["per_event_s"] * k * demo_events)
                                for s, f in affine.items()} for k in (1, 10, 100)}
    largest = max(main, key=lambda s: main[s]["exponent"])
    # the exponent between the two largest sizes: a stage whose fixed overhead hides its
    # growth at small sizes shows it here
    local = {s: math.log(max(ms[-1][cost], 1e-6) / max(ms[-2][cost], 1e-6)) / math.log(sizes[-1] / sizes[-2])
             for s, ms in timings.items() if len(sizes) >= 2 and sizes[-1] != sizes[-2]}
    return {
        "cost": cost, "fits": main, "fits_wall": fits["wall_s"], "fits_cpu": fits["cpu_s"], "fits_memory": memory,
        "exponent_last_doubling": local,
        "predicted_cost_s": at,
        "dominant_stage": {k: dominant(v) for k, v in at.items()},
        "dominant_share": {k: v[dominant(v)] / sum(v.values()) for k, v in at.items()},
        "fits_affine": affine, "predicted_cost_affine_s": at_affine,
        "dominant_stage_affine": {k: dominant(v) for k, v in at_affine.items()},
        "largest_exponent": main[largest]["exponent"], "largest_exponent_stage": largest,
        "largest_memory_exponent": max(f["exponent"] for f in memory.values()),
    }


def result_line(summary: dict) -> str:
    d = summary["dominant_stage"]
    failed = ",".join(summary.get("failed_stages", [])) or "none"
    return (f"largest_exponent={summary['largest_exponent']:.3f} dominant_stage={d['10x_demo']} "
            f"largest_exponent_stage={summary['largest_exponent_stage']} dominant_stage_100x={d['100x_demo']} "
            f"dominant_share_10x={summary['dominant_share']['10x_demo']:.2f} "
            f"dominant_stage_10x_affine={summary['dominant_stage_affine']['10x_demo']} "
            f"largest_memory_exponent={summary['largest_memory_exponent']:.3f} failed_stages={failed}")


def code_version() -> str:
    """The commit the benchmark ran on (and whether the checkout had changes)."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+local changes" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return os.environ.get("SCALING_CODE_VERSION", "unknown")


def machine() -> dict:
    import scipy
    import torch

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "numpy": np.__version__, "scipy": scipy.__version__,
            "torch": torch.__version__, "python": platform.python_version(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "device": "cuda" if torch.cuda.is_available() else "cpu", "load_average_1min": os.getloadavg()[0]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced ensembles, 1x/2x/4x of 20k events")
    parser.add_argument("--config", default=str(ROOT / "config" / "ci.yaml"), help="base config (default ci)")
    parser.add_argument("--demo-config", default=str(ROOT / "config" / "demo.yaml"),
                        help="the config whose event count is extrapolated to (default demo)")
    parser.add_argument("--base-events", type=int, help="generated events at 1x (default 20000)")
    parser.add_argument("--factors", type=float, nargs="+", help="multiples of the base size")
    parser.add_argument("--cost", choices=("cpu_s", "wall_s"), default="cpu_s",
                        help="what the exponents and the extrapolation use: the stage's CPU time (default; "
                             "one thread, so other work on the machine does not inflate it) or its wall time")
    parser.add_argument("--no-warmup", dest="warmup", action="store_false",
                        help=f"skip the unrecorded first pass at {WARMUP_EVENTS} events")
    parser.add_argument("--spawn", action="store_true", help="a fresh interpreter per stage instead of a fork")
    parser.add_argument("--tag", default=None, help="result file tag (default cpu<cores>[_quick])")
    parser.add_argument("--keep", action="store_true", help="keep the work folders")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.stage:   # a spawned stage process
        import matplotlib

        matplotlib.use("Agg")
        _child(args.stage, args.work, args.result)
        return 0

    import yaml

    raw = yaml.safe_load(Path(args.config).read_text())
    demo_events = generated_events(yaml.safe_load(Path(args.demo_config).read_text()))
    base = args.base_events or 20_000
    factors = args.factors or ([1, 2, 4] if args.quick else [1, 2, 4, 8, 16, 32])
    overrides = QUICK_OVERRIDES if args.quick else FULL_OVERRIDES
    if not args.spawn:
        preload()
    sizes, timings = [], {s: [] for s in STAGES}
    settings = None
    t_start = time.perf_counter()
    top = Path(tempfile.mkdtemp(prefix="hsaudit_scaling_"))
    # a first pass at a small size, not recorded: the first run of a stage pays one-off costs
    # (files entering the page cache, compiled-code caches being written) that would
    # inflate the smallest size and bias every exponent low
    runs = ([("warm-up", WARMUP_EVENTS)] if args.warmup else []) + [("measured", int(round(base * f))) for f in factors]
    for kind, n_wanted in runs:
        cfg_raw = scaled_config(raw, n_wanted, overrides)
        n = generated_events(cfg_raw)
        work = top / f"{kind}_n{n}"
        work.mkdir()
        (work / "config.yaml").write_text(yaml.safe_dump(cfg_raw, sort_keys=False))
        print(f"[scaling] {n} generated events ({kind})", flush=True)
        if kind == "measured":
            settings = settings or settings_description(cfg_raw)
            sizes.append(n)
        for stage in STAGES:
            m = run_stage(stage, work, spawn=args.spawn)
            if kind == "measured":
                timings[stage].append(m)
            if "error" in m:
                # recorded and left out of the fits: the other stages are still measured
                print(f"  {stage:15s} FAILED: {m['error']}\n{m.get('traceback', '')}", flush=True)
                continue
            print(f"  {stage:15s} wall {m['wall_s']:8.2f} s  cpu {m['cpu_s']:8.2f} s  "
                  f"peak rss {m['peak_rss_mib']:7.0f} MiB (+{m['stage_rss_mib']:.0f})", flush=True)
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    failed = sorted(s for s, ms in timings.items() if any("error" in m for m in ms))
    summary = summarise(sizes, {s: ms for s, ms in timings.items() if s not in failed}, demo_events, args.cost)
    summary["failed_stages"] = failed
    print(f"\nexponents of cost vs generated events (cost: {summary['cost']}), extrapolated from "
          f"{demo_events} demo events")
    print("  stage           wall   cpu    last-doubling  memory  cost@10x demo  cost@100x demo")
    for s in summary["fits"]:
        print(f"  {s:15s} {summary['fits_wall'][s]['exponent']:5.2f} {summary['fits_cpu'][s]['exponent']:5.2f} "
              f"{summary['exponent_last_doubling'][s]:10.2f} {summary['fits_memory'][s]['exponent']:9.2f} "
              f"{summary['predicted_cost_s']['10x_demo'][s]:12.0f} s {summary['predicted_cost_s']['100x_demo'][s]:13.0f} s")
    print(f"settings: {json.dumps(settings)}")
    tag = args.tag or f"cpu{os.cpu_count()}{'_quick' if args.quick else ''}"
    record = {
        "benchmark": "scaling", "mode": "quick" if args.quick else "full", "machine": machine(),
        "base_config": Path(args.config).name, "settings": settings, "overrides": overrides,
        "demo_events": demo_events, "generated_events": sizes, "stages": list(STAGES),
        "execution": "spawn" if args.spawn else "fork", "warmup_events": WARMUP_EVENTS if args.warmup else 0,
        "code": code_version(), "threads_per_stage": THREADS,
        "measurements": timings, **summary, "total_s": time.perf_counter() - t_start,
    }
    out = ROOT / "benchmarks" / "results" / f"scaling_{tag}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(top)], check=False)
    print(f"wrote {out.relative_to(ROOT)}")
    print(result_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
