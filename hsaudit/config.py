"""Analysis configuration: load a YAML file and validate it into typed objects.

A configuration is selected by name (``demo``, ``ci``, ``higgsml``: files shipped in
``config/``) or by a path to a user's own YAML file. Every validation error names the file,
the key and what is wrong, e.g.::

    config/my.yaml: models.penalised.penalty: unknown systematic 'tes' (known: tau_es, jet_es)

The schema is documented key by key in docs/configuration.md. Stage-specific settings
(model, attack, fit options) are kept as plain dicts here and validated again by the stage
that uses them, which knows their meaning.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hsaudit.errors import AuditError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

SYSTEMATIC_TYPES = ("shift", "weight", "normalization")
SHIFT_OBJECTS = ("tau", "jet", "muon", "met_unclustered")
INPUT_KINDS = ("nanoaod", "flat")
FEATURE_KINDS = ("momentum", "angle", "integer", "other")


@dataclass
class Dataset:
    name: str
    process: str
    is_signal: bool
    cross_section: float | None = None  # pb; None for flat tables that carry their own weights
    files: list[str] = field(default_factory=list)
    generate: dict | None = None  # {"n_events": int, "n_files": int}
    raw_files: list[str] = field(default_factory=list)  # as written in the configuration


@dataclass
class Systematic:
    name: str
    type: str  # shift | weight | normalization
    uncertainty: float
    object: str | None = None
    processes: list[str] | None = None  # None: all processes
    pt_slope: float = 0.0
    description: str = ""

    def applies_to(self, process: str) -> bool:
        return self.processes is None or process in self.processes


@dataclass
class Region:
    name: str
    charge: str  # opposite | same | any
    mt_min: float | None = None
    mt_max: float | None = None


@dataclass
class FeatureSpec:
    name: str
    kind: str = "other"  # momentum | angle | integer | other
    # flat-table inputs: the column it is read from (default: the name)
    column: str | None = None


@dataclass
class AnalysisConfig:
    name: str
    path: Path
    seed: int
    luminosity: float
    input: dict
    datasets: dict[str, Dataset]
    selection: dict
    regions: dict[str, Region]
    signal_region: str
    features: list[FeatureSpec]
    systematics: dict[str, Systematic]
    models: dict[str, dict]
    training: dict
    attacks: dict[str, dict]
    audit: dict
    checks: dict
    fit: dict
    raw: dict = field(repr=False, default_factory=dict)

    # -- convenience ---------------------------------------------------------------
    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def systematics_of_type(self, kind: str) -> list[Systematic]:
        return [s for s in self.systematics.values() if s.type == kind]

    @property
    def shift_names(self) -> list[str]:
        return [s.name for s in self.systematics_of_type("shift")]

    @property
    def weight_variation_names(self) -> list[str]:
        out = []
        for s in self.systematics_of_type("weight"):
            out += [f"{s.name}_up", f"{s.name}_down"]
        return out

    @property
    def control_regions(self) -> list[str]:
        return [r for r in self.regions if r != self.signal_region]

    def section_hash(self, *keys: str) -> str:
        """Short stable hash of some config sections: part of output paths, so that a change
        in a section reruns exactly the tasks that depend on it."""
        payload = json.dumps({k: self.raw.get(k) for k in keys}, sort_keys=True, default=str)
        return hashlib.sha1(payload.encode()).hexdigest()[:10]


# -- input files -----------------------------------------------------------------------
def resolve_dataset_files(dataset: Dataset, config: AnalysisConfig) -> list[Path]:
    """Absolute paths of a dataset's files, for every input kind: relative paths against the
    configuration file's folder (so a config works from any working directory), ``~`` and
    environment variables expanded, glob patterns expanded (sorted). AuditError naming the
    dataset and the path for an unset variable, a pattern without match or a missing file."""
    import glob
    import re

    base = Path(config.path).resolve().parent
    where = _show(Path(config.path))
    out: list[Path] = []
    for text in dataset.raw_files or dataset.files:
        # ${VAR:-default}: the variable if set, else the default (as in the shell)
        text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: os.environ.get(m.group(1)) or m.group(2), text)
        text = os.path.expanduser(os.path.expandvars(text))
        unset = re.findall(r"\$\{?(\w+)\}?", text)
        if unset:
            raise AuditError(
                f"{where}: datasets.{dataset.name}.files: environment variable "
                f"{unset[0]} is not set (used in '{text}')"
            )
        path = Path(text)
        if not path.is_absolute():
            path = base / path
        if glob.has_magic(str(path)):
            matches = sorted(Path(p) for p in glob.glob(str(path)))
            if not matches:
                raise AuditError(f"{where}: datasets.{dataset.name}.files: no file matches {path}")
            out += [m.resolve() for m in matches]
            continue
        if not path.is_file():
            raise AuditError(
                f"dataset '{dataset.name}': input file {path.resolve()} does not exist "
                f"(listed in {where} as '{text}'; relative paths are relative to the config's folder)"
            )
        out.append(path.resolve())
    return out


# -- loading ---------------------------------------------------------------------------
def resolve_config_path(name_or_path: str | os.PathLike) -> Path:
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.suffix in (".yaml", ".yml") or os.sep in text or candidate.is_dir():
        if not candidate.exists():
            raise AuditError(f"config file {candidate} does not exist")
        if candidate.is_dir():
            raise AuditError(f"--config {text}: {candidate} is a directory; give a YAML file "
                             "(e.g. config/ci.yaml) or a shipped config name")
        return candidate.resolve()
    shipped = CONFIG_DIR / f"{text}.yaml"
    if shipped.exists():
        return shipped
    known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    raise AuditError(f"unknown config '{text}': give a path to a YAML file or one of {known}")


def load_config(name_or_path: str | os.PathLike = "demo") -> AnalysisConfig:
    path = resolve_config_path(name_or_path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise AuditError(f"{_show(path)}: not a UTF-8 text file (byte {err.start} cannot be decoded): "
                         "give a YAML configuration file") from None
    except OSError as err:
        raise AuditError(f"{_show(path)}: cannot read the configuration file ({err.strerror or err})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        one_line = " ".join(str(err).split())
        raise AuditError(f"{_show(path)}: not valid YAML: {one_line}") from None
    if not isinstance(raw, dict):
        raise AuditError(f"{_show(path)}: the top level must be a mapping of keys")
    cfg = _Validator(path, raw).build()
    # the statistical settings of later stages, checked now: nothing runs on a broken file
    from hsaudit.stage_settings import validate_stage_settings

    try:
        validate_stage_settings(cfg)
    except AuditError as err:
        raise AuditError(f"{_show(path)}: {err}") from None
    return cfg


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


class _Validator:
    """Turns the raw mapping into an AnalysisConfig, with errors that name file and key."""

    TOP_KEYS = {
        "name", "seed", "luminosity", "input", "datasets", "selection", "regions",
        "signal_region", "features", "systematics", "models", "training", "attacks",
        "audit", "checks", "fit",
    }

    def __init__(self, path: Path, raw: dict):
        self.path = path
        self.raw = raw

    def fail(self, key: str, message: str):
        raise AuditError(f"{_show(self.path)}: {key}: {message}")

    def get(self, mapping: dict, key: str, where: str, kind, default: Any = ...):
        if key not in mapping:
            if default is ...:
                self.fail(f"{where}.{key}" if where else key, "missing")
            return default
        value = mapping[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:  # yes/no/true are not numbers
            value = None
        if kind is float and isinstance(value, float) and not math.isfinite(value):
            self.fail(f"{where}.{key}" if where else key, f"must be a finite number, got {value!r}")
        if not isinstance(value, kind):
            value = mapping[key]
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            self.fail(f"{where}.{key}" if where else key, f"expected {names}, got {value!r}")
        return value

    def build(self) -> AnalysisConfig:
        raw = self.raw
        unknown = set(raw) - self.TOP_KEYS
        if unknown:
            self.fail(sorted(unknown)[0], f"unknown key (known keys: {sorted(self.TOP_KEYS)})")
        name = self.get(raw, "name", "", str)
        seed = self.get(raw, "seed", "", int)
        lumi = self.get(raw, "luminosity", "", float)
        if lumi <= 0:
            self.fail("luminosity", f"must be positive, got {lumi}")
        inp = self.get(raw, "input", "", dict, {"kind": "nanoaod"})
        kind = inp.get("kind", "nanoaod")
        if kind not in INPUT_KINDS:
            self.fail("input.kind", f"unknown input kind '{kind}' (known: {list(INPUT_KINDS)})")
        if "chunk_size" in inp and (not self._is_int(inp["chunk_size"]) or inp["chunk_size"] <= 0):
            self.fail("input.chunk_size", "must be a positive integer")
        if "branches" in inp:
            if kind != "nanoaod":
                self.fail("input.branches", "maps NanoAOD branch names: only for input.kind: nanoaod")
            from hsaudit.selection.objects import branch_candidates

            self._wrap(lambda: branch_candidates(inp))
        from hsaudit.tables import weight_sanity_limits

        self._wrap(lambda: weight_sanity_limits(inp.get("weight_sanity")))

        datasets = self._datasets(kind)
        systematics = self._systematics(datasets, kind)
        regions = self._regions()
        if not regions:
            self.fail("regions", "need at least one region (the signal region)")
        signal_region = self.get(raw, "signal_region", "", str, next(iter(regions)))
        if signal_region not in regions:
            self.fail("signal_region", f"unknown region '{signal_region}' (known: {list(regions)})")
        features = self._features()
        models = self._models(systematics)
        attacks = self._named_sections("attacks")
        audit = self.get(raw, "audit", "", dict, {})
        for s in audit.get("systematics", []) or []:
            if s not in systematics:
                self.fail("audit.systematics", f"unknown systematic '{s}' (known: {list(systematics)})")
        for a in audit.get("attacks", []) or []:
            if a not in attacks:
                self.fail("audit.attacks", f"unknown attack '{a}' (known: {list(attacks)})")
        n_sigma = audit.get("n_sigma", 1.0)
        if not self._is_number(n_sigma) or n_sigma <= 0:
            # an envelope of zero width lets no attack move anything: every systematic would
            # be reported "covered" without any test
            self.fail("audit.n_sigma", f"must be a positive number (the envelope size in units of "
                                       f"the systematic), got {n_sigma!r}")
        if "max_events" in audit and (not self._is_int(audit["max_events"]) or audit["max_events"] <= 0):
            self.fail("audit.max_events", f"must be a positive integer, got {audit['max_events']!r}")
        fit = self.get(raw, "fit", "", dict, {})
        self._fit(fit, regions)

        return AnalysisConfig(
            name=name, path=self.path, seed=seed, luminosity=lumi, input=inp,
            datasets=datasets, selection=self.get(raw, "selection", "", dict, {}),
            regions=regions, signal_region=signal_region, features=features,
            systematics=systematics, models=models,
            training=self.get(raw, "training", "", dict, {}), attacks=attacks, audit=audit,
            checks=self.get(raw, "checks", "", dict, {}), fit=fit, raw=raw,
        )

    @staticmethod
    def _is_int(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    @staticmethod
    def _is_number(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def _wrap(self, check):
        """Run a check of another module; its AuditError gets this file's name in front."""
        try:
            return check()
        except AuditError as err:
            raise AuditError(f"{_show(self.path)}: {err}") from None

    def _fit(self, fit: dict, regions: dict) -> None:
        """Types of the fit settings, checked at load (the fit stage checks their meaning)."""
        channels = fit.get("channels", []) or []
        if not isinstance(channels, list):
            self.fail("fit.channels", f"expected a list of regions, got {channels!r}")
        for ch in channels:
            if ch not in regions:
                self.fail("fit.channels", f"unknown region '{ch}' (known: {list(regions)})")
        for key in ("n_bins", "n_toys", "toys_per_chunk", "max_iterations"):
            if key in fit and (not self._is_int(fit[key]) or fit[key] <= 0):
                self.fail(f"fit.{key}", f"must be a positive integer, got {fit[key]!r}")
        for key in ("min_background_per_bin", "max_relative_stat_uncertainty", "mu_true"):
            if key in fit and not self._is_number(fit[key]):
                self.fail(f"fit.{key}", f"must be a number, got {fit[key]!r}")
        for key in ("min_background_per_bin", "max_relative_stat_uncertainty"):
            if key in fit and fit[key] < 0:
                self.fail(f"fit.{key}", f"must not be negative, got {fit[key]!r}")
        if "binning" in fit and fit["binning"] not in ("uniform", "optimised"):
            self.fail("fit.binning", f"must be uniform or optimised, got {fit['binning']!r}")
        if "mc_stat_uncertainty" in fit and not isinstance(fit["mc_stat_uncertainty"], bool):
            self.fail("fit.mc_stat_uncertainty", f"must be true or false, got {fit['mc_stat_uncertainty']!r}")
        if "mu_bounds" in fit:
            b = fit["mu_bounds"]
            if not (isinstance(b, list) and len(b) == 2 and all(self._is_number(x) for x in b) and b[0] < b[1]):
                self.fail("fit.mu_bounds", f"expected [low, high] with low < high, got {b!r}")

    def _datasets(self, input_kind: str) -> dict[str, Dataset]:
        section = self.get(self.raw, "datasets", "", dict)
        if not section:
            self.fail("datasets", "no datasets configured")
        out = {}
        for name, spec in section.items():
            where = f"datasets.{name}"
            if not isinstance(spec, dict):
                self.fail(where, "expected a mapping")
            files = self.get(spec, "files", where, (list, str), [])
            files = [files] if isinstance(files, str) else list(files)
            generate = self.get(spec, "generate", where, dict, None)
            if not files and generate is None:
                self.fail(where, "give either 'files' (your ROOT/CSV/parquet files) or 'generate' (demo events)")
            if generate is not None:
                n = generate.get("n_events")
                if not isinstance(n, int) or n <= 0:
                    self.fail(f"{where}.generate.n_events", f"must be a positive integer, got {n!r}")
                nf = generate.get("n_files", 1)
                if not isinstance(nf, int) or nf <= 0 or nf > n:
                    self.fail(f"{where}.generate.n_files", f"must be a positive integer <= n_events, got {nf!r}")
            xs = self.get(spec, "cross_section", where, float, None)
            if xs is not None and xs <= 0:
                self.fail(f"{where}.cross_section", f"must be positive, got {xs}")
            if input_kind == "nanoaod" and xs is None:
                self.fail(f"{where}.cross_section", "missing (needed to normalise NanoAOD events)")
            out[name] = Dataset(
                name=name, process=self.get(spec, "process", where, str, name),
                is_signal=self.get(spec, "is_signal", where, bool), cross_section=xs,
                files=[os.path.expandvars(os.path.expanduser(f)) for f in files], generate=generate,
                raw_files=[str(f) for f in files],
            )
        if not any(d.is_signal for d in out.values()):
            self.fail("datasets", "no dataset has is_signal: true")
        if all(d.is_signal for d in out.values()):
            self.fail("datasets", "every dataset is signal: configure at least one background")
        return out

    def _systematics(self, datasets: dict[str, Dataset], input_kind: str = "nanoaod") -> dict[str, Systematic]:
        section = self.get(self.raw, "systematics", "", dict, {})
        processes = {d.process for d in datasets.values()} | set(datasets)
        out = {}
        for name, spec in section.items():
            where = f"systematics.{name}"
            if not isinstance(spec, dict):
                self.fail(where, "expected a mapping")
            kind = self.get(spec, "type", where, str)
            if kind not in SYSTEMATIC_TYPES:
                self.fail(f"{where}.type", f"unknown type '{kind}' (known: {list(SYSTEMATIC_TYPES)})")
            unc = self.get(spec, "uncertainty", where, float)
            if unc < 0:
                self.fail(f"{where}.uncertainty", f"negative uncertainty {unc}")
            if unc == 0:
                self.fail(f"{where}.uncertainty", "zero uncertainty: remove the systematic instead")
            obj = self.get(spec, "object", where, str, None)
            # flat tables bring their shifted columns (or a recipe, or sigma_i): no object needed
            if kind == "shift" and obj is None and input_kind == "nanoaod":
                self.fail(f"{where}.object", "missing: a shift systematic moves an object")
            procs = self.get(spec, "processes", where, list, None)
            for p in procs or []:
                if p not in processes:
                    self.fail(f"{where}.processes", f"unknown process '{p}' (known: {sorted(processes)})")
            out[name] = Systematic(
                name=name, type=kind, uncertainty=unc, object=obj, processes=procs,
                pt_slope=self.get(spec, "pt_slope", where, float, 0.0),
                description=self.get(spec, "description", where, str, ""),
            )
        return out

    def _regions(self) -> dict[str, Region]:
        section = self.get(self.raw, "regions", "", dict)
        out = {}
        for name, spec in section.items():
            where = f"regions.{name}"
            spec = spec or {}
            charge = spec.get("charge", "any")
            if charge not in ("opposite", "same", "any"):
                self.fail(f"{where}.charge", f"must be opposite, same or any, got {charge!r}")
            out[name] = Region(
                name=name, charge=charge,
                mt_min=self.get(spec, "mt_min", where, float, None),
                mt_max=self.get(spec, "mt_max", where, float, None),
            )
        return out

    def _features(self) -> list[FeatureSpec]:
        section = self.get(self.raw, "features", "", list)
        if not section:
            self.fail("features", "no features configured")
        out = []
        for i, item in enumerate(section):
            if isinstance(item, str):
                out.append(FeatureSpec(name=item))
                continue
            if not isinstance(item, dict) or "name" not in item:
                self.fail(f"features[{i}]", "expected a name or a mapping with 'name'")
            kind = item.get("kind", "other")
            if kind not in FEATURE_KINDS:
                self.fail(f"features[{i}].kind", f"unknown kind '{kind}' (known: {list(FEATURE_KINDS)})")
            out.append(FeatureSpec(name=item["name"], kind=kind, column=item.get("column")))
        names = [f.name for f in out]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            self.fail("features", f"duplicate features {dupes}")
        return out

    def _named_sections(self, key: str) -> dict[str, dict]:
        section = self.get(self.raw, key, "", dict, {})
        for name, spec in section.items():
            if not isinstance(spec, dict):
                self.fail(f"{key}.{name}", "expected a mapping")
        return dict(section)

    def _models(self, systematics: dict[str, Systematic]) -> dict[str, dict]:
        models = self._named_sections("models")
        if not models:
            self.fail("models", "no model configured")
        for name, spec in models.items():
            for syst, lam in (spec.get("penalty") or {}).items():
                if syst not in systematics:
                    self.fail(f"models.{name}.penalty", f"unknown systematic '{syst}' (known: {list(systematics)})")
                if systematics[syst].type == "normalization":
                    self.fail(f"models.{name}.penalty", f"'{syst}' is a normalisation: it cannot shape the NN output")
                if not isinstance(lam, (int, float)) or lam < 0:
                    self.fail(f"models.{name}.penalty.{syst}", f"lambda must be a non-negative number, got {lam!r}")
            if "torchscript" in spec:
                p = Path(os.path.expandvars(os.path.expanduser(str(spec["torchscript"]))))
                if not p.is_absolute():
                    p = (self.path.parent / p).resolve()
                spec["torchscript"] = str(p)
        return models
