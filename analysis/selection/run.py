"""Entry points of the selection: one chunk, a list of files with a coffea executor, merging.

* :func:`plan_chunks` splits files into ``(path, entry_start, entry_stop)`` chunks (checks
  each file first: readable ROOT file, ``Events`` tree, the branches the selection needs);
* :func:`select_chunk` runs :class:`SelectionProcessor` on one chunk (what one SelectEvents
  branch does) and returns its :class:`~analysis.tables.FeatureTable`;
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

from analysis.config import AnalysisConfig, Dataset
from analysis.errors import AuditError
from analysis.selection.objects import required_branches
from analysis.selection.processor import SelectionProcessor
from analysis.selection.shifts import build_variants
from analysis.tables import FeatureTable, TableMeta, weight_column

TREE_NAME = "Events"
DEFAULT_CHUNK_SIZE = 100_000
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


def _open_checked(path: str):
    """(uproot file, Events tree) of ``path``; AuditError if it is not a readable NanoAOD file
    with the branches the selection needs. The caller closes the file."""
    import uproot

    if not Path(path).exists():
        raise AuditError(f"input file {path} does not exist")
    try:
        f = uproot.open(path)
    except Exception as err:  # uproot raises several types for non-ROOT / truncated files
        raise AuditError(f"{path} is not a readable ROOT file ({type(err).__name__}: {err})") from None
    try:
        if TREE_NAME not in f:
            found = sorted({k.split(";")[0] for k in f.keys()})
            raise AuditError(f"{path} has no '{TREE_NAME}' tree (found: {found})")
        try:
            tree = f[TREE_NAME]
            keys = set(tree.keys())
        except Exception as err:
            raise AuditError(f"{path}: cannot read the '{TREE_NAME}' tree ({type(err).__name__}: {err})") from None
        for group in required_branches():
            if not any(b in keys for b in group):
                hint = ""
                if group[0] == "MET_pt" and "PFMET_pt" in keys:
                    hint = " (this file names it PFMET_pt, as NanoAOD v15 does; the selection reads MET_pt)"
                alt = f" (or {' / '.join(group[1:])})" if len(group) > 1 else ""
                raise AuditError(
                    f"branch '{group[0]}'{alt} is missing in file {path}{hint}; the mu + tau_h selection needs it"
                )
    except BaseException:
        f.close()
        raise
    return f, tree


def inspect_file(path: str | os.PathLike) -> int:
    """Number of events in ``path``; AuditError if it is not a readable NanoAOD file with the
    branches the selection needs."""
    f, tree = _open_checked(str(path))
    with f:
        return int(tree.num_entries)


def plan_chunks(files, chunk_size: int) -> list[tuple[str, int, int]]:
    """``[(path, entry_start, entry_stop), ...]`` covering every event of every file once."""
    if not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0:
        raise AuditError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    files = [str(f) for f in files]
    if not files:
        raise AuditError("no input files given to the selection")
    out = []
    for path in files:
        n = inspect_file(path)
        for start in range(0, n, int(chunk_size)):
            out.append((path, start, min(start + int(chunk_size), n)))
    return out


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


def select_chunk(
    path: str | os.PathLike, entry_start: int, entry_stop: int, dataset: Dataset, config: AnalysisConfig,
) -> FeatureTable:
    """The feature table of events ``[entry_start, entry_stop)`` of ``path`` (raw genWeight
    weights; may have zero rows: an empty chunk is not an error, an empty dataset is)."""
    from coffea.nanoevents import NanoAODSchema, NanoEventsFactory

    path = str(path)
    proc = SelectionProcessor(dataset, config)
    f, tree = _open_checked(path)  # the open file (and its cached tree) is reused below
    n = int(tree.num_entries)
    if not (0 <= entry_start <= entry_stop <= n):
        f.close()
        raise AuditError(f"chunk [{entry_start}, {entry_stop}) is outside the {n} events of {path}")
    ctx = _quiet_warnings()
    try:
        events = NanoEventsFactory.from_root(
            f, treepath=TREE_NAME, mode="virtual", schemaclass=NanoAODSchema,
            entry_start=entry_start, entry_stop=entry_stop,
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


def select_files(
    files, dataset: Dataset, config: AnalysisConfig, executor: str = "iterative", workers: int = 2,
    scheduler_address: str | None = None, chunk_size: int | None = None,
) -> FeatureTable:
    """The merged feature table of all events of ``files`` (raw genWeight weights; call
    :func:`normalise_weights` next). AuditError if no event passes the preselection."""
    from coffea import processor
    from coffea.nanoevents import NanoAODSchema
    from coffea.processor.executor import WorkItem

    if executor not in EXECUTORS:
        raise AuditError(f"unknown executor '{executor}' (known: {', '.join(EXECUTORS)})")
    if not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise AuditError(f"workers must be a positive integer, got {workers!r}")
    if chunk_size is None:
        chunk_size = int(config.input.get("chunk_size", DEFAULT_CHUNK_SIZE))
    chunks = plan_chunks(files, chunk_size)
    items = [WorkItem(dataset.name, p, TREE_NAME, a, b, "") for p, a, b in chunks]
    proc = SelectionProcessor(dataset, config)
    exe, closers = _make_executor(executor, workers, scheduler_address)
    ctx = _quiet_warnings()
    try:
        runner = processor.Runner(executor=exe, schema=NanoAODSchema, chunksize=int(chunk_size))
        out = runner(items, proc, treename=TREE_NAME)
    except Exception as err:
        audit = _unwrap_audit_error(err)
        if audit is not None:
            raise audit from None
        raise AuditError(f"the selection failed on dataset '{dataset.name}': {type(err).__name__}: {err}") from err
    finally:
        ctx.__exit__(None, None, None)
        for close in closers or []:
            close()
    order = {c[:2]: i for i, c in enumerate(chunks)}
    payloads = sorted(out["chunks"], key=lambda p: order[(p["filename"], p["entry_start"])])
    tables = [_table_from_payload(p, dataset, config) for p in payloads]
    table = FeatureTable.concat(tables)
    table.meta.extra["chunks"] = [c for t in tables for c in t.meta.extra["chunks"]]
    require_events(table)
    return table


def require_events(table: FeatureTable) -> None:
    """AuditError when no event passed the preselection (the caller writes no output)."""
    if table.n_events == 0:
        n = table.meta.extra.get("n_events_processed", "?")
        raise AuditError(
            f"empty selection: none of the {n} events of dataset '{table.meta.dataset}' has a muon + "
            "tau pair passing the preselection in any variant; check the input files and the "
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
