"""Entry points of the selection: one chunk, a list of files with a coffea executor, merging.

* :func:`plan_chunks` splits files into ``(path, entry_start, entry_stop)`` chunks (checks
  each file first: readable ROOT file, ``Events`` tree, the branches the selection needs);
* :func:`select_chunk` runs :class:`SelectionProcessor` on one chunk (what one SelectEvents
  branch does) and returns its :class:`~hsaudit.tables.FeatureTable`;
* :func:`select_files` runs the processor over all chunks of a list of files with coffea's
  ``processor.Runner`` and an ``IterativeExecutor`` (default), ``FuturesExecutor`` (process
  pool) or ``DaskExecutor`` (a dask.distributed ``LocalCluster`` started and shut down here,
  or an existing scheduler at ``scheduler_address``). Chunks are fixed by :func:`plan_chunks`
  and the merged table is sorted by event id, so every executor gives the identical table;
* :func:`normalise_weights` turns genWeights into ``cross_section * luminosity /
  sum_genweight`` weights after the chunk tables of a dataset are merged.

Every problem with the input (missing/corrupt file, no ``Events`` tree, missing branch,
empty selection) is an AuditError with a message naming the file and what is wrong.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from hsaudit.config import AnalysisConfig, Dataset
from hsaudit.errors import AuditError
from hsaudit.selection.objects import branches_read, missing_branches_error, required_branches, resolve_branches
from hsaudit.selection.processor import SelectionProcessor, selection_settings
from hsaudit.selection.shifts import build_variants
from hsaudit.tables import FeatureTable, TableMeta, weight_column

TREE_NAME = "Events"
EXECUTORS = ("iterative", "futures", "dask")

# coffea's NanoAOD schema complains about cross-reference indices that small or old test files
# lack; they are not used by the selection
_QUIET = ("Missing cross-reference", "Found duplicate branch", "already exists but its values will be replaced")


def _quiet_warnings():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    for text in _QUIET:
        warnings.filterwarnings("ignore", message=f".*{text}.*")
    return ctx


def _corrupt(path, err: BaseException, what: str = "") -> AuditError:
    detail = str(err).splitlines()[0] if str(err) else ""
    return AuditError(
        f"{path} is corrupt or truncated: {what or 'it is not a readable ROOT file'} "
        f"({type(err).__name__}{': ' + detail[:200] if detail else ''}); replace or re-download the file"
    )


def _open_checked(path: str, input_section: dict | None = None, selection: dict | None = None):
    """(uproot file, Events tree) of ``path``; AuditError if it is not a readable NanoAOD file
    with the branches the selection needs (all missing branches in one message, each with the
    ``input.branches`` key that fixes it). The caller closes the file."""
    import uproot

    if not Path(path).exists():
        raise AuditError(f"input file {path} does not exist")
    if Path(path).is_dir():
        raise AuditError(f"input file {path} is a directory, not a ROOT file")
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises several types for non-ROOT / truncated files
        raise _corrupt(path, err) from None
    try:
        if TREE_NAME not in f:
            found = sorted({k.split(";")[0] for k in f.keys()})
            raise AuditError(f"{path} has no '{TREE_NAME}' tree (found: {found})")
        try:
            tree = f[TREE_NAME]
            keys = set(tree.keys())
        except Exception as err:
            raise _corrupt(path, err, f"cannot read the '{TREE_NAME}' tree") from None
        if int(tree.num_entries) > 0:
            _, missing = resolve_branches(keys, input_section, selection)
            if missing:
                raise missing_branches_error(path, missing)
    except BaseException:
        f.close()
        raise
    return f, tree


def check_readable(path: str, input_section: dict | None = None, selection: dict | None = None) -> None:
    """Read every branch the selection needs from ``path``: AuditError 'corrupt or truncated'
    naming the file and the branch if a basket cannot be read or decompressed."""
    f, tree = _open_checked(path, input_section, selection)
    with f:
        keys = set(tree.keys())
        names = [b for group in required_branches(input_section, selection) for b in group if b in keys]
        for name in names:
            try:
                tree[name].array(library="np")
            except Exception as err:  # noqa: BLE001 - any read failure means a broken file
                raise _corrupt(path, err, f"reading branch '{name}' failed") from None


def inspect_file(path: str | os.PathLike, config: AnalysisConfig | None = None) -> int:
    """Number of events in ``path``; AuditError if it is not a readable NanoAOD file with the
    branches the selection needs."""
    f, tree = _open_checked(str(path), *_mapping(config))
    with f:
        return int(tree.num_entries)


def _mapping(config: AnalysisConfig | None):
    if config is None:
        return None, None
    return config.input, selection_settings(config)


def _plan(files, chunk_size: int, config: AnalysisConfig | None) -> tuple[list[tuple[str, int, int]], dict]:
    """(chunks as in :func:`plan_chunks`, {path: the branches the selection reads from it}),
    from one opening of each file: a real NanoAOD file has thousands of branches, and
    describing its tree costs about a second per opening."""
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise AuditError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    files = [str(f) for f in files]
    if not files:
        raise AuditError("no input files given to the selection")
    chunks, branches = [], {}
    settings = _mapping(config)
    for path in files:
        f, tree = _open_checked(path, *settings)
        with f:
            n = int(tree.num_entries)
            branches[path] = branches_read(tree.keys(), *settings)
        for start in range(0, n, int(chunk_size)):
            chunks.append((path, start, min(start + int(chunk_size), n)))
    return chunks, branches


def plan_chunks(files, chunk_size: int, config: AnalysisConfig | None = None) -> list[tuple[str, int, int]]:
    """``[(path, entry_start, entry_stop), ...]`` covering every event of every file once
    (a file with zero entries has no chunk)."""
    return _plan(files, chunk_size, config)[0]


def _empty_meta(dataset: Dataset, config: AnalysisConfig, extra: dict) -> TableMeta:
    return TableMeta(
        dataset=dataset.name,
        process=dataset.process,
        is_signal=bool(dataset.is_signal),
        features=list(config.feature_names),
        variants=[v.name for v in build_variants(config)],
        weight_variations=list(config.weight_variation_names),
        regions=list(config.regions),
        extra=extra,
    )


def _table_from_payload(payload: dict, dataset: Dataset, config: AnalysisConfig) -> FeatureTable:
    extra = dict(payload["extra"])
    extra["chunks"] = [[payload.get("filename"), payload.get("entry_start")]]
    return FeatureTable(payload["columns"], _empty_meta(dataset, config, extra))


def _unwrap_audit_error(err: BaseException) -> AuditError | None:
    """coffea wraps exceptions from workers ('Failed processing file ... The error was:
    AuditError(...)'); find the AuditError in the chain or its message."""
    seen = err
    while seen is not None:
        if isinstance(seen, AuditError):
            return seen
        seen = seen.__cause__ or seen.__context__
    text = str(err)
    marker = "AuditError("
    if marker in text:
        inner = text.split(marker, 1)[1].rsplit(")", 1)[0].strip("'\"")
        return AuditError(inner)
    return None


def _only(branches) -> dict:
    """NanoEvents options that build the event structure from ``branches`` only: a real
    NanoAOD file has thousands of branches, and describing all of them costs more than reading
    the few the selection needs (benchmarks/selection.py, real files)."""
    return {"filter_name": list(branches)}


def select_chunk(
    path: str | os.PathLike, entry_start: int, entry_stop: int, dataset: Dataset, config: AnalysisConfig,
) -> FeatureTable:
    """The feature table of events ``[entry_start, entry_stop)`` of ``path`` (raw genWeight
    weights; may have zero rows: an empty chunk is not an error, an empty dataset is)."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path = str(path)
    proc = SelectionProcessor(dataset, config)
    settings = _mapping(config)
    f, tree = _open_checked(path, *settings)  # the open file (and its cached tree) is reused below
    n = int(tree.num_entries)
    if not (0 <= entry_start <= entry_stop <= n):
        f.close()
        raise AuditError(f"chunk [{entry_start}, {entry_stop}) is outside the {n} events of {path}")
    if entry_start == entry_stop:
        f.close()
        return empty_table(dataset, config, path)
    ctx = _quiet_warnings()
    try:
        branches = branches_read(tree.keys(), *settings)
        events = NanoEventsFactory.from_root(
            f, treepath=TREE_NAME, mode="virtual", schemaclass=NanoAODSchema,
            entry_start=entry_start, entry_stop=entry_stop,
            preload=branches, iteritems_options=_only(branches),
            metadata={"dataset": dataset.name, "filename": path, "entrystart": entry_start, "entrystop": entry_stop},
        ).events()
        out = proc.process(events)
    except AuditError:
        raise
    except Exception as err:
        raise AuditError(f"cannot process {path} [{entry_start}, {entry_stop}): {type(err).__name__}: {err}") from err
    finally:
        ctx.__exit__(None, None, None)
        f.close()
    return _table_from_payload(out["chunks"][0], dataset, config)


def _make_executor(executor: str, workers: int, scheduler_address: str | None):
    from coffea import processor

    if executor == "iterative":
        return processor.IterativeExecutor(status=False, retries=0), None
    if executor == "futures":
        return processor.FuturesExecutor(status=False, workers=int(workers), retries=0), None
    if executor == "dask":
        from distributed import Client, LocalCluster

        if scheduler_address:
            client = Client(scheduler_address)
            closers = [client.close]
        else:
            cluster = LocalCluster(
                n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None,
            )
            client = Client(cluster)
            closers = [client.close, cluster.close]
        return processor.DaskExecutor(client=client, status=False, retries=0), closers
    raise AuditError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")


class InputFileWarning(UserWarning):
    """A file of a dataset contributes nothing (zero entries, or no selected event)."""


def empty_table(dataset: Dataset, config: AnalysisConfig, path: str | None = None) -> FeatureTable:
    """A zero-row table of a dataset (what a file with zero entries contributes)."""
    meta = _empty_meta(dataset, config, {
        "sum_genweight": 0.0, "n_events_processed": 0, "cutflow": {},
        "has_gen_weight": False, "chunks": [],
        "files": [] if path is None else [{"file": str(path), "n_events": 0, "n_rows": 0, "n_selected": 0}],
    })
    return FeatureTable.empty(meta)


def _file_summaries(chunks, tables: list[FeatureTable], files: list[str]) -> list[dict]:
    out = {str(p): {"file": str(p), "n_events": 0, "n_rows": 0, "n_selected": 0} for p in files}
    for (path, a, b), t in zip(chunks, tables):
        s = out[str(path)]
        s["n_events"] += int(b - a)
        s["n_rows"] += t.n_events
        s["n_selected"] += int(t.in_any_region().sum())
    return list(out.values())


def file_warnings(dataset_name: str, files: list[dict]) -> list[str]:
    """One line per file that contributes nothing to its dataset."""
    lines = []
    for s in files:
        if s["n_events"] == 0:
            lines.append(f"dataset '{dataset_name}': skipping {s['file']}: it has zero entries")
        elif s["n_selected"] == 0:
            lines.append(f"dataset '{dataset_name}': none of the {s['n_events']} events of {s['file']} "
                         "passes the selection in any region; it contributes nothing")
    return lines


def select_files(
    files, dataset: Dataset, config: AnalysisConfig, executor: str = "iterative", workers: int = 2,
    scheduler_address: str | None = None, chunk_size: int | None = None, require: bool = True,
) -> FeatureTable:
    """The merged feature table of all events of ``files`` (raw genWeight weights; call
    :func:`normalise_weights` next). Files with zero entries or without a selected event are
    skipped with an :class:`InputFileWarning` naming them (listed in ``meta.extra["files"]``
    and ``meta.extra["warnings"]``); with ``require`` (default) an AuditError is raised when
    all files together have no event passing the preselection."""
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema
    from coffea.processor.executor import WorkItem

    if executor not in EXECUTORS:
        raise AuditError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    if not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise AuditError(f"workers must be a positive integer, got {workers!r}")
    if chunk_size is None:
        chunk_size = config.section("input").chunk_size
    files = [str(f) for f in files]
    chunks, branches = _plan(files, chunk_size, config)
    tables = []
    if chunks:
        # the branches the selection reads, read in one bulk request per chunk (coffea's preload)
        preload = {p: frozenset(branches[p]) for p in dict.fromkeys(p for p, _, _ in chunks)}
        items = [WorkItem(dataset.name, p, TREE_NAME, a, b, "", preload=preload[p]) for p, a, b in chunks]
        proc = SelectionProcessor(dataset, config)
        exe, closers = _make_executor(executor, workers, scheduler_address)
        ctx = _quiet_warnings()
        try:
            runner = processor.Runner(executor=exe, schema=NanoAODSchema, chunksize=int(chunk_size))
            read = sorted(set().union(*preload.values()))
            out = runner(items, proc, treename=TREE_NAME, iteritems_options=_only(read))
        except Exception as err:
            audit = _unwrap_audit_error(err)
            if audit is not None:
                raise audit from None
            # find the file that cannot be read (a truncated or corrupt basket) and name it
            for path in dict.fromkeys(p for p, _, _ in chunks):
                check_readable(path, *_mapping(config))
            raise AuditError(f"the selection failed on dataset '{dataset.name}': {type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}") from err
        finally:
            ctx.__exit__(None, None, None)
            for close in closers or []:
                close()
        order = {c[:2]: i for i, c in enumerate(chunks)}
        payloads = sorted(out["chunks"], key=lambda p: order[(p["filename"], p["entry_start"])])
        tables = [_table_from_payload(p, dataset, config) for p in payloads]
    summaries = _file_summaries(chunks, tables, files)
    if tables:
        table = FeatureTable.concat(tables)
        table.meta.extra["chunks"] = [c for t in tables for c in t.meta.extra["chunks"]]
    else:
        table = empty_table(dataset, config)
    table.meta.extra["files"] = summaries
    lines = file_warnings(dataset.name, summaries)
    table.meta.extra["warnings"] = lines
    for line in lines:
        warnings.warn(line, InputFileWarning, stacklevel=2)
    if require:
        require_events(table)
    return table


def require_events(table: FeatureTable) -> None:
    """AuditError when no event passed the preselection (the caller writes no output)."""
    if table.n_events == 0:
        n = table.meta.extra.get("n_events_processed", "?")
        files = [s["file"] for s in table.meta.extra.get("files", [])]
        where = f" (files: {', '.join(files)})" if files else ""
        raise AuditError(
            f"empty selection: none of the {n} events of dataset '{table.meta.dataset}'{where} has a "
            "muon + tau pair passing the preselection in any variant; check the input files and the "
            "config's selection section"
        )


def normalise_weights(table: FeatureTable, cross_section: float, luminosity: float) -> FeatureTable:
    """Scale ``weight`` and every ``weight__*`` column by ``cross_section * luminosity /
    sum_genweight`` (``sum_genweight`` from ``meta.extra``: all processed events before cuts).

    For collision data (no genWeight) pass the weights through unchanged with
    ``cross_section=None``.
    """
    require_events(table)
    if cross_section is None:
        return table
    if not np.isfinite(cross_section) or cross_section <= 0:
        raise AuditError(f"cross section must be a positive number, got {cross_section!r}")
    if not np.isfinite(luminosity) or luminosity <= 0:
        raise AuditError(f"luminosity must be a positive number, got {luminosity!r}")
    sumw = table.meta.extra.get("sum_genweight")
    if sumw is None or not np.isfinite(sumw) or sumw <= 0:
        raise AuditError(
            f"dataset '{table.meta.dataset}': sum_genweight is {sumw!r}, cannot normalise weights "
            "(is this table from select_chunk/select_files?)"
        )
    scale = float(cross_section) * float(luminosity) / float(sumw)
    cols = dict(table.columns)
    for name in [weight_column()] + [weight_column(v) for v in table.meta.weight_variations]:
        cols[name] = cols[name].astype(np.float64) * scale
    extra = {**table.meta.extra, "normalisation": {"cross_section": cross_section, "luminosity": luminosity, "scale": scale}}
    return FeatureTable(cols, TableMeta(**{**table.meta.__dict__, "extra": extra}))
