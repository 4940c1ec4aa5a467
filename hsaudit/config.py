"""Analysis configuration: load a YAML file and validate the whole of it at once.

A configuration is selected by name (``demo``, ``ci``, ``higgsml``: files shipped in
``config/``) or by a path to a user's own YAML file. ``load_config`` checks every key against
the schema (``hsaudit.config_schema``: unknown keys, types, ranges, references between
sections) and the stages' own statistical checks (``hsaudit.stage_settings``) before any task
runs; the first problem ends in one line naming the file and the key path, e.g.::

    config/my.yaml: attacks.pgd.stpes: unknown setting; known: steps, step_fraction, ...
    config/my.yaml: models.penalised.penalty: unknown systematic 'tes' (known: ['tau_es', 'jet_es'])

The returned ``AnalysisConfig`` holds the typed configuration (``cfg.settings``, an
``AnalysisSettings`` with every default filled in) and, for the stages that read them, the
objects of datasets, systematics, regions and features and the raw mappings of the other
sections (their hashes name output folders). ``cfg.section("fit")`` and
``cfg.attack_settings("pgd")`` give a stage the typed form of one section. The keys are
documented in docs/configuration.md, generated from the schema.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from hsaudit.config_schema import (
    ATTACK_SETTINGS,
    FEATURE_KINDS,
    SYSTEMATIC_TYPES,
    AnalysisSettings,
    AttackSettingsBase,
    ConfigError,
    explain,
    validate_settings,
)
from hsaudit.errors import AuditError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"

SHIFT_OBJECTS = ("tau", "jet", "muon", "met_unclustered")
INPUT_KINDS = ("nanoaod", "flat")
__all__ = ["AnalysisConfig", "Dataset", "FeatureSpec", "Region", "Systematic", "CONFIG_DIR", "FEATURE_KINDS",
           "SYSTEMATIC_TYPES", "load_config", "resolve_config_path", "resolve_dataset_files"]


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
    # the typed configuration as loaded (every default filled in)
    settings: AnalysisSettings | None = field(repr=False, default=None)

    # -- typed sections ----------------------------------------------------------------
    def section(self, name: str) -> BaseModel:
        """The typed form of section ``name`` (``training``, ``audit``, ``checks``, ``fit``,
        ``selection``, ``input``) as this object holds it now (a copy made with
        ``dataclasses.replace(cfg, audit={...})`` gets its own); AuditError naming the key
        path if it is invalid."""
        field_info = AnalysisSettings.model_fields.get(name)
        if field_info is None or name in ("name", "seed", "luminosity", "signal_region"):
            raise AuditError(f"unknown configuration section '{name}'")
        raw = getattr(self, name)
        cached = self._typed.get(name)
        if cached is not None and cached[0] is raw and cached[1] == raw:
            return cached[2]
        try:
            typed = getattr(AnalysisSettings.model_validate({**self._skeleton(), name: raw}), name)
        except ValidationError as err:
            raise AuditError(str(explain(err))) from None
        self._typed[name] = (raw, json.loads(json.dumps(raw, default=str)), typed)
        return typed

    def attack_settings(self, name: str) -> AttackSettingsBase:
        """The typed settings of the configured attack ``name`` (type, objective, every
        setting with its default)."""
        if name not in self.attacks:
            raise AuditError(f"unknown attack '{name}' (configured: {list(self.attacks)})")
        spec = self.attacks[name]
        cls = ATTACK_SETTINGS.get(spec.get("type")) if isinstance(spec, dict) else None
        if cls is None:
            raise AuditError(f"attacks.{name}.type: unknown attack type {spec!r}; known: {', '.join(ATTACK_SETTINGS)}")
        try:
            return cls.model_validate(spec)
        except ValidationError as err:
            raise AuditError(f"attacks.{name}.{explain(err, cls)}") from None

    def model_settings(self, name: str):
        """The typed settings of the configured model variant ``name``."""
        from hsaudit.config_schema import ModelSettings

        if name not in self.models:
            raise AuditError(f"unknown model '{name}' (configured: {list(self.models)})")
        try:
            return ModelSettings.model_validate(self.models[name])
        except ValidationError as err:
            raise AuditError(f"models.{name}.{explain(err, ModelSettings)}") from None

    @property
    def _typed(self) -> dict:
        cache = self.__dict__.get("_typed_cache")
        if cache is None:
            cache = self.__dict__["_typed_cache"] = {}
        return cache

    @staticmethod
    def _skeleton() -> dict:
        """The smallest valid file, into which one section is put to validate it alone."""
        return {"name": "x", "seed": 0, "luminosity": 1.0,
                "datasets": {"d": {"is_signal": True, "files": ["f"]}}, "regions": {"r": {}},
                "features": ["f"], "models": {"m": {}}}

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
        # libyaml's safe loader when available: the same documents, ten times faster
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        one_line = " ".join(str(err).split())
        raise AuditError(f"{_show(path)}: not valid YAML: {one_line}") from None
    if not isinstance(raw, dict):
        raise AuditError(f"{_show(path)}: the top level must be a mapping of keys")
    where = _show(path)
    try:
        settings = validate_settings(raw)
    except ConfigError as err:
        raise AuditError(f"{where}: {err}") from None
    cfg = _build(path, raw, settings)
    # what the stages check beyond the schema, now: nothing runs on a broken file
    from hsaudit.stage_settings import validate_stage_settings

    _prefixed(where, lambda: validate_stage_settings(cfg))
    return cfg


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _build(path: Path, raw: dict, settings: AnalysisSettings) -> AnalysisConfig:
    """The AnalysisConfig of a validated file: typed objects for the sections every stage
    reads, the raw mappings of the others (their typed form is ``cfg.settings``)."""
    where = _show(path)
    inp = raw.get("input", {"kind": "nanoaod"})
    if settings.input.kind == "nanoaod" and "branches" in inp:
        from hsaudit.selection.objects import branch_candidates

        _prefixed(where, lambda: branch_candidates(inp))
    datasets = {}
    for name, d in settings.datasets.items():
        datasets[name] = Dataset(
            name=name, process=d.process or name, is_signal=d.is_signal, cross_section=d.cross_section,
            files=[os.path.expandvars(os.path.expanduser(f)) for f in d.files],
            generate=None if d.generate is None else dict(raw["datasets"][name]["generate"]),
            raw_files=[str(f) for f in d.files],
        )
    systematics = {
        name: Systematic(name=name, type=s.type, uncertainty=float(s.uncertainty), object=s.object,
                         processes=s.processes, pt_slope=float(s.pt_slope), description=s.description)
        for name, s in settings.systematics.items()
    }
    regions = {name: Region(name=name, charge=r.charge, mt_min=r.mt_min, mt_max=r.mt_max)
               for name, r in settings.regions.items()}
    features = [FeatureSpec(name=f.name, kind=f.kind, column=f.column) for f in settings.features]
    models = dict(raw["models"])
    for spec in models.values():
        if "torchscript" in spec:
            p = Path(os.path.expandvars(os.path.expanduser(str(spec["torchscript"]))))
            if not p.is_absolute():
                p = (path.parent / p).resolve()
            spec["torchscript"] = str(p)
    for name, m in settings.models.items():
        if m.torchscript is not None:
            settings.models[name] = m.model_copy(update={"torchscript": models[name]["torchscript"]})
    return AnalysisConfig(
        name=settings.name, path=path, seed=settings.seed, luminosity=float(settings.luminosity), input=inp,
        datasets=datasets, selection=raw.get("selection", {}), regions=regions,
        signal_region=settings.signal_region or next(iter(regions)), features=features,
        systematics=systematics, models=models, training=raw.get("training", {}),
        attacks=dict(raw.get("attacks") or {}), audit=raw.get("audit", {}), checks=raw.get("checks", {}),
        fit=raw.get("fit", {}), raw=raw, settings=settings,
    )


def _prefixed(where: str, check):
    """Run a check of another module; its AuditError gets the file's name in front."""
    try:
        return check()
    except AuditError as err:
        raise AuditError(f"{where}: {err}") from None
