"""Flat-table input: per-event feature tables (CSV, parquet, flat ROOT TTree) -> FeatureTable.

Analysts often already have flat ntuples, one row per selected event with its features.
A configuration with ``input.kind: flat`` reads them here instead of running the coffea
selection, and produces the same event-matched layout as that path (see
``hsaudit.tables``): one table per dataset, variants ``nominal`` and ``<shift>_up/_down``,
``weight`` and ``weight__<variation>``, ``region__<region>__<variant>`` and the event ids
``run``/``luminosityBlock``/``event``. Every row of the input files (after the optional
label selection) is one row of the table; the regions encode the per-variant selection,
so events migrate between variants exactly as in the coffea path.

Dataset files (``datasets.<name>.files``) may be absolute, relative to the folder of the
configuration file (so a config works from any working directory), contain environment
variables (``${AUDIT_SHARED_DATA}/higgsml/x.csv``) or glob patterns (``ntuples/*.parquet``).

Options of the ``input`` section (all optional except ``kind``)::

    input:
      kind: flat
      format: csv                  # csv | parquet | root; default from the file suffix
      tree: events                 # ROOT only: TTree name (default: the file's only TTree)
      id_column: EventId           # one id column: run=1, luminosityBlock=0, event=<id>
      # id_columns: [run, luminosityBlock, event]   # or three columns (the default when
      #                            # the file has them); neither: event = row number
      weight_column: Weight        # per-event weight (default: 1 per event)
      weight_variations:           # weight systematics: columns of the varied weights
        tau_id: {up: Weight_tauid_up, down: Weight_tauid_down}   # default <weight>__<s>_up/down
      label: {column: Label, signal: s}   # keep only rows whose label agrees with the
                                   # dataset's is_signal (one mixed file can feed two datasets)
      mt_column: DER_mass_transverse_met_lep  # column for regions.<r>.mt_min / mt_max
      charge_column: q_product     # sign < 0: opposite charge, > 0: same; without it every
                                   # region must use charge: any
      missing:
        value: -999.0              # marker of "not defined for this event"
        treatment: fill            # fill (default) | drop
        fill: {default: 0.0, DER_mass_MMC: 0.0}   # value written instead of the marker
        flags: {DER_mass_MMC_missing: DER_mass_MMC}  # extra 0/1 features (list them in
                                   # features:) that say where a column was missing
      shifts:                      # how each shift systematic gets its variants
        tau_es: {recipe: higgsml_tau_energy_scale, mmc: fixed}   # (b) recompute
        jet_es: {columns: "{column}__{variant}"}                 # (a) shifted columns
      declared_uncertainties:      # (c) per-feature sigma_i only, no variants
        jet_es: {PRI_jet_leading_pt: {relative: 0.05}, PRI_jet_leading_eta: {absolute: 0.01}}

and, in the ``selection`` section, per-variant cuts on (shifted) columns::

    selection:
      cuts: {PRI_tau_pt: {min: 25.0}}        # min inclusive, max exclusive

Features: ``features[i].column`` names the column a feature is read from (default: its
name). Regions: an event is in region r in variant v when it passes every cut in v, its
mT (``mt_column`` in v) is in [mt_min, mt_max) and its charge matches.

Systematics of type ``shift`` get their variants from, in this order: (a) shifted columns
``<column>__<shift>_up/_down`` (pattern configurable; a column without shifted partners is
unaffected, i.e. equal to nominal); (b) a recipe that recomputes the shifted columns from
the nominal ones (``higgsml_tau_energy_scale``: ``hsaudit.higgsml``), with scale factors
1 +- uncertainty; (c) declared per-feature uncertainties, relative or absolute sigma_i:
no variants are built, the sigma_i are stored in ``meta.extra["declared_uncertainties"]
= {syst: {feature: {"relative": x} | {"absolute": x}}}`` for the attack stage, which
builds envelopes from them (``{}`` for a dataset whose process the systematic does not
apply to). A shift systematic without an ``input.shifts`` entry uses the default column
pattern if such columns exist, else it must be declared. Weight systematics read their
varied weights from columns (see ``weight_variations``).

Missing values (e.g. HiggsML -999.0, jet features of events without jets): NN inputs must
be finite and attacks must stay physical, so the marker never reaches a feature column.
``treatment: fill`` writes a physical default (0.0 unless configured: "no object" for
momenta and masses, the centre for angles) and keeps the event in its regions; the
optional flag features carry the information "was missing" to the NN. Because a missing
entry is the same in every variant, shift envelopes have zero width there and attacks
built from variants cannot move it; declared *relative* sigma_i keep a 0.0 fill at 0.0
(prefer them for features with missing entries). ``treatment: drop`` removes an event
from every region of a variant in which one of its features is missing (its features are
still filled, so the table stays finite). A marker in a cut, mT or charge column fails
that requirement. A NaN or infinite value is never accepted: it is an AuditError naming
the file and the column (mark missing values with ``missing.value`` instead).

Weights: with ``datasets.<name>.cross_section`` the weights are normalised to
cross_section x luminosity (w * xs * lumi / sum w, w the weight column or 1); without it
the weight column is taken as is (the usual case for analysis ntuples).

Errors (missing file, missing column, NaN, bad option) raise AuditError naming the file,
the column or the config key; nothing is written here, so a failure leaves no output.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsaudit.config import AnalysisConfig, Dataset
from hsaudit.config import resolve_dataset_files as _resolve_files
from hsaudit.errors import AuditError
from hsaudit.tables import (
    ID_COLUMNS,
    NOMINAL,
    FeatureTable,
    TableMeta,
    feature_column,
    region_column,
    weight_column,
)

SUFFIX_FORMATS = {".csv": "csv", ".txt": "csv", ".gz": "csv", ".bz2": "csv", ".zip": "csv",
                  ".parquet": "parquet", ".pq": "parquet", ".root": "root"}
DEFAULT_SHIFT_PATTERN = "{column}__{variant}"
# recipe name -> (module, function, columns it needs besides the features)
RECIPES = {
    "higgsml_tau_energy_scale": (
        "hsaudit.higgsml", "tau_energy_scale_recipe",
        ("PRI_tau_pt", "PRI_tau_phi", "PRI_lep_pt", "PRI_lep_phi", "PRI_met", "PRI_met_phi"),
    ),
}


# -- options -------------------------------------------------------------------------------
@dataclass
class ShiftSource:
    systematic: str
    kind: str  # columns | recipe | declared
    pattern: str = DEFAULT_SHIFT_PATTERN
    recipe: str | None = None
    options: dict = field(default_factory=dict)


@dataclass
class FlatOptions:
    format: str | None
    tree: str | None
    id_column: str | None
    id_columns: list[str] | None
    weight_column: str | None
    weight_variations: dict[str, dict[str, str]]
    label_column: str | None
    signal_label: object
    mt_column: str | None
    charge_column: str | None
    missing_value: float | None
    missing_treatment: str
    missing_fill: dict[str, float]
    missing_flags: dict[str, str]  # flag feature -> source column
    shifts: dict[str, ShiftSource]
    declared: dict[str, dict[str, dict[str, float]]]
    cuts: dict[str, tuple[float | None, float | None]]
    feature_columns: dict[str, str]  # feature -> column (flags excluded)


def _where(config: AnalysisConfig) -> str:
    try:
        return str(Path(config.path).relative_to(Path.cwd()))
    except ValueError:
        return str(config.path)


def parse_flat_options(config: AnalysisConfig) -> FlatOptions:
    """The flat-input options of a config: the ``input`` and ``selection`` sections typed by
    the schema (hsaudit.config_schema.FlatInput: keys, types, defaults), here checked against
    the features, systematics and regions they name; errors name the file and the key."""
    where = _where(config)

    def fail(key, message):
        raise AuditError(f"{where}: {key}: {message}")

    kind = (config.input or {}).get("kind")
    if kind != "flat":
        fail("input.kind", f"the flat-table reader needs input.kind: flat, got {kind!r}")
    extra = sorted(set(config.selection or {}) - {"cuts"})
    if extra:
        fail(f"selection.{extra[0]}", "flat input knows only selection.cuts: {column: {min: x, max: y}}")
    try:
        inp = config.section("input")
        selection = config.section("selection")
    except AuditError as err:
        raise AuditError(f"{where}: {err}") from None
    weight_col = inp.weight_column

    weight_variations = {}
    weight_systs = {s.name for s in config.systematics_of_type("weight")}
    for syst, spec in inp.weight_variations.items():
        if syst not in weight_systs:
            fail(f"input.weight_variations.{syst}", f"not a weight systematic (known: {sorted(weight_systs)})")
        weight_variations[syst] = {"up": spec.up, "down": spec.down}
    for syst in sorted(weight_systs - set(weight_variations)):
        if weight_col is None:
            fail(f"input.weight_variations.{syst}",
                 "missing: without input.weight_column, give the columns of the varied weights")
        weight_variations[syst] = {d: f"{weight_col}__{syst}_{d}" for d in ("up", "down")}

    label_column, signal_label = (None, None) if inp.label is None else (inp.label.column, inp.label.signal)

    missing = inp.missing
    feature_names = set(config.feature_names)
    for key in missing.fill:
        if key != "default" and key not in feature_names:
            fail(f"input.missing.fill.{key}", f"unknown feature (known: {config.feature_names})")
    flags = missing.flags
    if flags and missing.value is None:
        fail("input.missing.flags", "needs input.missing.value (the marker the flags look for)")
    for name in flags:
        if name not in feature_names:
            fail(f"input.missing.flags.{name}", "a flag must also be listed in features: (kind: integer)")

    feature_columns = {f.name: (f.column or f.name) for f in config.features if f.name not in flags}

    # -- systematics -------------------------------------------------------------------
    shift_systs = {s.name for s in config.systematics_of_type("shift")}
    declared = {}
    for syst, per_feature in inp.declared_uncertainties.items():
        key = f"input.declared_uncertainties.{syst}"
        if syst not in config.systematics:
            fail(key, f"unknown systematic (known: {list(config.systematics)})")
        if syst not in shift_systs:
            fail(key, f"'{syst}' is a {config.systematics[syst].type} systematic; declared sigma_i are for shifts")
        if not per_feature:
            fail(key, "expected a non-empty mapping feature -> {relative: x} or {absolute: x}")
        out = {}
        for feat, sigma in per_feature.items():
            if feat not in feature_names:
                fail(f"{key}.{feat}", f"unknown feature (known: {config.feature_names})")
            out[feat] = {"relative": sigma.relative} if sigma.relative is not None else {"absolute": sigma.absolute}
        declared[syst] = out

    shifts = {}
    for syst, spec in inp.shifts.items():
        key = f"input.shifts.{syst}"
        if syst not in config.systematics:
            fail(key, f"unknown systematic (known: {list(config.systematics)})")
        if syst not in shift_systs:
            fail(key, f"'{syst}' is a {config.systematics[syst].type} systematic, not a shift")
        if spec.columns is not None:
            shifts[syst] = ShiftSource(syst, "columns", pattern=spec.columns)
        else:
            options = spec.model_dump(exclude={"columns", "recipe"}, exclude_none=True)
            shifts[syst] = ShiftSource(syst, "recipe", recipe=spec.recipe, options=options)
    for syst in config.shift_names:
        if syst not in shifts:
            # default: shifted columns if the files have them, otherwise declared-only
            shifts[syst] = ShiftSource(syst, "declared" if syst in declared else "columns")

    # -- selection and regions -------------------------------------------------------------
    cuts = {col: (c.min, c.max) for col, c in (selection.cuts or {}).items()}
    for r in config.regions.values():
        if (r.mt_min is not None or r.mt_max is not None) and inp.mt_column is None:
            fail(f"regions.{r.name}", "cuts on mT need input.mt_column (the transverse-mass column)")
        if r.charge != "any" and inp.charge_column is None:
            fail(f"regions.{r.name}.charge",
                 f"'{r.charge}' needs input.charge_column (sign of the charge product); else use charge: any")

    return FlatOptions(
        format=inp.format, tree=inp.tree, id_column=inp.id_column, id_columns=inp.id_columns,
        weight_column=weight_col, weight_variations=weight_variations, label_column=label_column,
        signal_label=signal_label, mt_column=inp.mt_column, charge_column=inp.charge_column,
        missing_value=missing.value, missing_treatment=missing.treatment,
        missing_fill=dict(missing.fill), missing_flags=dict(flags),
        shifts=shifts, declared=declared, cuts=cuts, feature_columns=feature_columns,
    )


# -- files ---------------------------------------------------------------------------------
def resolve_dataset_files(dataset: Dataset, config: AnalysisConfig) -> list[Path]:
    """Absolute paths of a dataset's files (see :func:`hsaudit.config.resolve_dataset_files`)."""
    if not dataset.files:
        raise AuditError(f"{_where(config)}: datasets.{dataset.name}.files: flat input needs files")
    return _resolve_files(dataset, config)


def file_format(path: Path, option: str | None) -> str:
    if option is not None:
        return option
    for suffix in reversed(path.suffixes):
        if suffix.lower() in SUFFIX_FORMATS:
            return SUFFIX_FORMATS[suffix.lower()]
    raise AuditError(f"cannot tell the format of {path} from its suffix: set input.format (csv, parquet or root)")


def _root_tree(path: Path, tree_name: str | None):
    import uproot

    try:
        handle = uproot.open(path)
    except Exception as err:  # uproot raises many types for broken files
        raise AuditError(f"cannot open ROOT file {path}: {err}") from None
    # flat TTrees (and, as uproot reads them the same way, RNTuples)
    trees = [k.split(";")[0] for k, cls in handle.classnames().items() if cls in ("TTree", "ROOT::RNTuple")]
    if tree_name is None:
        if len(set(trees)) != 1:
            raise AuditError(f"ROOT file {path} has TTrees {sorted(set(trees))}: set input.tree to the one to read")
        tree_name = trees[0]
    if tree_name not in trees:
        raise AuditError(f"ROOT file {path} has no TTree '{tree_name}' (it has {sorted(set(trees))})")
    return handle[tree_name]


def list_columns(path: Path, fmt: str, tree: str | None = None) -> list[str]:
    """Column names of a flat file without reading its data."""
    try:
        if fmt == "csv":
            import pandas as pd

            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(path).names)
        obj = _root_tree(path, tree)
        try:
            return [str(k) for k in obj.keys(recursive=False)]
        except TypeError:  # RNTuple.keys() takes no 'recursive'
            return [str(k) for k in obj.keys()]
    except AuditError:
        raise
    except Exception as err:
        raise AuditError(f"cannot read the columns of {fmt} file {path}: {err}") from None


def read_columns(path: Path, fmt: str, columns: list[str], tree: str | None = None):
    """The given columns of a flat file as a pandas DataFrame (in the given order)."""
    import pandas as pd

    try:
        if fmt == "csv":
            frame = pd.read_csv(path, usecols=columns)  # pandas >= 2 parses floats exactly
        elif fmt == "parquet":
            import pyarrow.parquet as pq

            frame = pq.read_table(path, columns=columns).to_pandas()
        else:
            arrays = _root_tree(path, tree).arrays(columns, library="np")
            jagged = [c for c in columns if arrays[c].dtype == object]
            if jagged:
                raise AuditError(
                    f"ROOT file {path}: branch '{jagged[0]}' is not flat (one value per event): "
                    "flat input reads one number per event and branch"
                )
            frame = pd.DataFrame({c: arrays[c] for c in columns})
    except AuditError:
        raise
    except Exception as err:
        raise AuditError(f"cannot read {fmt} file {path}: {err}") from None
    return frame[columns]


# -- reading -------------------------------------------------------------------------------
def _numeric(frame, column: str, path: Path) -> np.ndarray:
    values = frame[column].to_numpy()
    if values.dtype.kind not in "biuf":
        raise AuditError(f"{path}: column '{column}' is not numeric (dtype {values.dtype})")
    values = values.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise AuditError(
            f"{path}: column '{column}' has {int(bad.sum())} NaN/infinite values (first at data row "
            f"{int(np.argmax(bad)) + 1}); fix the file or mark undefined values with input.missing.value"
        )
    return values


def _shifted_columns(source: ShiftSource, columns: list[str], available: set[str]) -> dict[str, dict[str, str]]:
    """{column: {variant: shifted column}} for a columns-type shift (only columns that exist)."""
    out = {}
    for col in columns:
        names = {d: source.pattern.format(column=col, variant=f"{source.systematic}_{d}") for d in ("up", "down")}
        present = [n for n in names.values() if n in available]
        if present:
            out[col] = {f"{source.systematic}_{d}": n for d, n in names.items()}
    return out


def read_flat_dataset(dataset: Dataset, config: AnalysisConfig) -> FeatureTable:
    """Read one dataset's flat files into an event-matched FeatureTable (see module doc).

    Returns the table (nothing is written). Raises AuditError naming the file, column or
    config key for missing files/columns, NaN/inf values, bad options or an empty dataset.
    """
    opts = parse_flat_options(config)
    files = resolve_dataset_files(dataset, config)
    feature_cols = list(dict.fromkeys(opts.feature_columns.values()))
    flag_sources = list(dict.fromkeys(opts.missing_flags.values()))
    physics_cols = list(dict.fromkeys(
        feature_cols + flag_sources + list(opts.cuts)
        + [c for c in (opts.mt_column, opts.charge_column) if c is not None]
    ))
    applies = {s: config.systematics[s].applies_to(dataset.process) for s in opts.shifts}
    # a systematic that does not apply to this dataset's process needs none of its inputs
    recipe_cols = [c for name, s in opts.shifts.items() if s.kind == "recipe" and applies[name]
                   for c in RECIPES[s.recipe][2]]
    warned: list[str] = []

    frames, column_shifts, id_mode = [], None, None
    for path in files:
        fmt = file_format(path, opts.format)
        available = list_columns(path, fmt, opts.tree)
        avail = set(available)
        if id_mode is None:
            if opts.id_columns is not None:
                id_mode = ("three", list(opts.id_columns))
            elif opts.id_column is not None:
                id_mode = ("one", [opts.id_column])
            elif set(ID_COLUMNS) <= avail:
                id_mode = ("three", list(ID_COLUMNS))
            else:
                id_mode = ("row", [])
        if column_shifts is None:
            column_shifts = {}
            for syst, source in opts.shifts.items():
                if source.kind != "columns" or not applies[syst]:
                    continue
                found = _shifted_columns(source, physics_cols + recipe_cols, avail)
                if not found:
                    example = source.pattern.format(column=feature_cols[0], variant=f"{syst}_up")
                    raise AuditError(
                        f"{_where(config)}: systematics.{syst}: no shifted columns (e.g. '{example}') in "
                        f"{path}; give input.shifts.{syst} (a column pattern or a recipe) or "
                        f"input.declared_uncertainties.{syst}"
                    )
                column_shifts[syst] = found
        needed = list(dict.fromkeys(
            id_mode[1] + physics_cols + recipe_cols
            + ([opts.weight_column] if opts.weight_column else [])
            + ([opts.label_column] if opts.label_column else [])
            + [c for s, cw in opts.weight_variations.items() if config.systematics[s].applies_to(dataset.process)
               for c in cw.values()]
            + [n for shifted in column_shifts.values() for m in shifted.values() for n in m.values()]
        ))
        absent = [c for c in needed if c not in avail]
        if absent:
            raise AuditError(
                f"{path}: column '{absent[0]}' is missing"
                + (f" (and {len(absent) - 1} more: {absent[1:4]})" if len(absent) > 1 else "")
                + f"; dataset '{dataset.name}' needs it (features, weights, ids, cuts or shifts in {_where(config)})"
            )
        frame = read_columns(path, fmt, needed, opts.tree)
        if len(frame) == 0:
            # e.g. a CSV with only its header line: nothing to read, like a ROOT file with
            # zero entries (the dataset fails below if no file has rows)
            line = f"dataset '{dataset.name}': skipping {path}: it has no data rows (only a header)"
            warnings.warn(line, FlatInputWarning, stacklevel=2)
            warned.append(line)
            continue
        for col in needed:
            if col != opts.label_column:
                frame[col] = _numeric(frame, col, path)
        if opts.missing_value is None:
            for line in _sentinel_warnings(frame, physics_cols, path):
                warnings.warn(line, FlatInputWarning, stacklevel=2)
                warned.append(line)
        frames.append(frame)
    if not frames:
        raise AuditError(f"dataset '{dataset.name}': no data rows in any of its files "
                         f"({', '.join(str(f) for f in files)}; a CSV with only its header has none): "
                         f"give files with events in datasets.{dataset.name}.files")

    import pandas as pd

    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    n_read = len(frame)
    cutflow_pre = {"read": n_read}
    if opts.label_column is not None:
        frame = frame[_label_matches(frame[opts.label_column], opts.signal_label, dataset.is_signal, files)]
        frame = frame.reset_index(drop=True)
        cutflow_pre["label"] = len(frame)
    if len(frame) == 0:
        raise AuditError(f"dataset '{dataset.name}': no events in {[str(f) for f in files]}"
                         + (f" with {opts.label_column} matching is_signal={dataset.is_signal}" if opts.label_column else ""))

    ids = _event_ids(frame, id_mode, dataset, files)
    weights, weight_vars = _weights(frame, opts, dataset, config)

    # -- variants ----------------------------------------------------------------------
    variant_frames = {NOMINAL: frame}
    variants = [NOMINAL]
    recipes_used = {}
    for syst in config.shift_names:
        source = opts.shifts[syst]
        if source.kind == "declared":
            continue
        for direction, sign in (("up", 1.0), ("down", -1.0)):
            variant = f"{syst}_{direction}"
            variants.append(variant)
            if not applies[syst]:
                variant_frames[variant] = frame
            elif source.kind == "columns":
                shifted = frame.copy(deep=False)
                for col, names in column_shifts[syst].items():
                    shifted[col] = frame[names[variant]]
                variant_frames[variant] = shifted
            else:
                factor = 1.0 + sign * config.systematics[syst].uncertainty
                variant_frames[variant] = _run_recipe(source, frame, factor, opts, syst, variant)
                recipes_used[syst] = {"recipe": source.recipe, **source.options}

    # -- features and regions per variant ------------------------------------------------
    columns: dict[str, np.ndarray] = {}
    cutflow: dict[str, dict] = {}
    missing_counts = {}
    for variant in variants:
        vf = variant_frames[variant]
        any_missing = np.zeros(len(frame), dtype=bool)
        for feat in config.feature_names:
            if feat in opts.missing_flags:
                src = vf[opts.missing_flags[feat]].to_numpy(dtype=np.float64)
                columns[feature_column(feat, variant)] = (src == opts.missing_value).astype(np.float32)
                continue
            raw = vf[opts.feature_columns[feat]].to_numpy(dtype=np.float64)
            _check_finite(raw, feat, variant, dataset)
            if opts.missing_value is not None:
                miss = raw == opts.missing_value
                fill = opts.missing_fill.get(feat, opts.missing_fill.get("default", 0.0))
                raw = np.where(miss, fill, raw)
                any_missing |= miss
                if variant == NOMINAL:
                    missing_counts[feat] = int(miss.sum())
            columns[feature_column(feat, variant)] = raw.astype(np.float32)
        steps = dict(cutflow_pre)
        passed = np.ones(len(frame), dtype=bool)
        for col, (lo, hi) in opts.cuts.items():
            passed &= _window(vf[col].to_numpy(dtype=np.float64), lo, hi, opts.missing_value)
            label = " and ".join(t for t in ((f"{col} >= {lo}" if lo is not None else ""),
                                             (f"{col} < {hi}" if hi is not None else "")) if t)
            steps[label] = int(passed.sum())
        if opts.missing_treatment == "drop" and opts.missing_value is not None:
            passed &= ~any_missing
            steps["no missing feature"] = int(passed.sum())
        for region in config.regions.values():
            mask = passed.copy()
            if region.mt_min is not None or region.mt_max is not None:
                mask &= _window(vf[opts.mt_column].to_numpy(dtype=np.float64), region.mt_min,
                                region.mt_max, opts.missing_value)
            if region.charge != "any":
                q = vf[opts.charge_column].to_numpy(dtype=np.float64)
                valid = q != opts.missing_value if opts.missing_value is not None else np.ones_like(mask)
                mask &= valid & ((q < 0) if region.charge == "opposite" else (q > 0))
            columns[region_column(region.name, variant)] = mask
            steps[f"region {region.name}"] = int(mask.sum())
        cutflow[variant] = steps

    columns.update({c: ids[c] for c in ID_COLUMNS})
    columns["is_signal"] = np.full(len(frame), dataset.is_signal, dtype=bool)
    columns["weight"] = weights
    for name, values in weight_vars.items():
        columns[weight_column(name)] = values
    order = np.lexsort((ids["event"], ids["luminosityBlock"], ids["run"]))
    columns = {k: v[order] for k, v in columns.items()}

    declared = {syst: (dict(per) if config.systematics[syst].applies_to(dataset.process) else {})
                for syst, per in opts.declared.items()}
    meta = TableMeta(
        dataset=dataset.name, process=dataset.process, is_signal=dataset.is_signal,
        features=config.feature_names, variants=variants, weight_variations=list(weight_vars),
        regions=list(config.regions),
        extra={
            "warnings": warned,
            "input": {"kind": "flat", "files": [str(f) for f in files],
                      "formats": sorted({file_format(f, opts.format) for f in files})},
            "n_rows_read": n_read,
            "cutflow": cutflow,
            "declared_uncertainties": declared,
            "shift_sources": {s: (recipes_used.get(s) or {"kind": src.kind}) for s, src in opts.shifts.items()},
            "missing": {"value": opts.missing_value, "treatment": opts.missing_treatment,
                        "fill": opts.missing_fill, "flags": opts.missing_flags,
                        "counts_nominal": missing_counts},
        },
    )
    return FeatureTable(columns, meta)


def read_flat_datasets(config: AnalysisConfig) -> dict[str, FeatureTable]:
    """All datasets of a flat config (read everything before anything is written)."""
    return {name: read_flat_dataset(ds, config) for name, ds in config.datasets.items()}


def declared_sigmas(table: FeatureTable, systematic: str) -> tuple[dict[str, float], dict[str, bool]]:
    """(sigma, relative) per feature of a declared-only systematic, in the form
    ``hsaudit.attacks.envelope.Envelope.from_uncertainties(nominal, sigma, relative,
    feature_names=table.features)`` takes; features not listed get no entry (sigma 0)."""
    declared = table.meta.extra.get("declared_uncertainties", {})
    if systematic not in declared:
        raise AuditError(
            f"dataset '{table.meta.dataset}': no declared uncertainties for '{systematic}' "
            f"(declared: {sorted(declared)})"
        )
    sigma, relative = {}, {}
    for feature, spec in declared[systematic].items():
        (mode, value), = spec.items()
        sigma[feature] = float(value)
        relative[feature] = mode == "relative"
    return sigma, relative


# -- helpers -------------------------------------------------------------------------------
class FlatInputWarning(UserWarning):
    """Something in a flat input file is probably not what the user meant (named in the text)."""


# values used as "undefined" markers in ntuples (HiggsML -999.0, ROOT defaults -9999 ...)
SENTINEL_VALUES = (-99.0, -999.0, -9999.0, -99999.0, -999999.0)


def _sentinel_warnings(frame, columns, path) -> list[str]:
    """One line per column holding a marker-like value while input.missing is not set."""
    lines = []
    for col in columns:
        values = frame[col].to_numpy(dtype=np.float64)
        for marker in SENTINEL_VALUES:
            n = int(np.count_nonzero(values == marker))
            if n:
                lines.append(
                    f"{path}: column '{col}' has {n} value(s) equal to {marker:g}, which looks like a "
                    f"missing-value marker; it is used as a physical value. If it means 'undefined', "
                    f"set input.missing.value: {marker:g}")
    return lines


def _label_matches(labels, signal_label, is_signal: bool, files) -> np.ndarray:
    values = labels.to_numpy()
    if values.dtype.kind in "biuf":
        try:
            target = float(signal_label)
        except (TypeError, ValueError):
            raise AuditError(
                f"input.label.signal is {signal_label!r} but the label column '{labels.name}' in "
                f"{[str(f) for f in files]} is numeric"
            ) from None
        is_sig = values.astype(np.float64) == target
    else:
        is_sig = labels.astype(str).to_numpy() == str(signal_label)
    return is_sig if is_signal else ~is_sig


def _event_ids(frame, id_mode, dataset: Dataset, files) -> dict[str, np.ndarray]:
    mode, cols = id_mode
    n = len(frame)
    if mode == "row":
        ids = {"run": np.ones(n, np.uint32), "luminosityBlock": np.zeros(n, np.uint32),
               "event": np.arange(n, dtype=np.uint64)}
    else:
        raw = [frame[c].to_numpy(dtype=np.float64) for c in cols]
        for c, v in zip(cols, raw):
            if (v < 0).any() or (v != np.floor(v)).any():
                raise AuditError(f"dataset '{dataset.name}': id column '{c}' must hold non-negative integers")
        if mode == "one":
            ids = {"run": np.ones(n, np.uint32), "luminosityBlock": np.zeros(n, np.uint32),
                   "event": frame[cols[0]].to_numpy().astype(np.uint64)}
        else:
            ids = {"run": frame[cols[0]].to_numpy().astype(np.uint32),
                   "luminosityBlock": frame[cols[1]].to_numpy().astype(np.uint32),
                   "event": frame[cols[2]].to_numpy().astype(np.uint64)}
    key = np.stack([ids["run"].astype(np.uint64), ids["luminosityBlock"].astype(np.uint64), ids["event"]], axis=1)
    uniq, counts = np.unique(key, axis=0, return_counts=True)
    if (counts > 1).any():
        dup = uniq[np.argmax(counts > 1)]
        raise AuditError(
            f"dataset '{dataset.name}': event id (run, luminosityBlock, event) = {tuple(int(x) for x in dup)} "
            f"appears {int(counts.max())} times in {[str(f) for f in files]}; ids must be unique to match events across variants"
        )
    return ids


def _weights(frame, opts: FlatOptions, dataset: Dataset, config: AnalysisConfig):
    n = len(frame)
    w = frame[opts.weight_column].to_numpy(dtype=np.float64) if opts.weight_column else np.ones(n)
    norm = 1.0
    if dataset.cross_section is not None:
        total = w.sum()
        if total <= 0:
            raise AuditError(f"dataset '{dataset.name}': the weights sum to {total}: cannot normalise to cross_section")
        norm = dataset.cross_section * config.luminosity / total
    variations = {}
    for syst in config.systematics_of_type("weight"):
        for d in ("up", "down"):
            name = f"{syst.name}_{d}"
            if syst.applies_to(dataset.process):
                variations[name] = frame[opts.weight_variations[syst.name][d]].to_numpy(dtype=np.float64) * norm
            else:
                variations[name] = w * norm
    return w * norm, variations


def _run_recipe(source: ShiftSource, frame, factor: float, opts: FlatOptions, syst: str, variant: str):
    module, function, _ = RECIPES[source.recipe]
    recipe = getattr(importlib.import_module(module), function)
    try:
        shifted = recipe(frame, factor, missing_value=opts.missing_value, **source.options)
    except TypeError as err:
        raise AuditError(f"input.shifts.{syst}: bad option for recipe '{source.recipe}': {err}") from None
    return shifted


def _check_finite(values: np.ndarray, feature: str, variant: str, dataset: Dataset) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        raise AuditError(
            f"dataset '{dataset.name}': feature '{feature}' is NaN/infinite for {int(bad.sum())} events "
            f"in variant '{variant}' (first at row {int(np.argmax(bad))})"
        )


def _window(values: np.ndarray, lo, hi, missing_value) -> np.ndarray:
    mask = np.isfinite(values)
    if missing_value is not None:
        mask &= values != missing_value
    if lo is not None:
        mask &= values >= lo
    if hi is not None:
        mask &= values < hi
    return mask
