"""From ROOT files to event-matched feature tables: GenerateEvents -> SelectEvents -> MergeFeatures."""

from __future__ import annotations

import json
from pathlib import Path

import law
import luigi

from hsaudit.errors import AuditError
from hsaudit.seeds import derive_seed
from hsaudit.tasks.base import AuditTask, AuditWorkflow, atomic_path, short_hash, write_json_atomic

# config sections that change what the selection produces
SELECTION_SECTIONS = ("input", "selection", "regions", "features", "systematics")


class GenerateEvents(AuditWorkflow):
    """Demo NanoAOD-format events; one branch per output file."""

    def create_branch_map(self):
        branches = []
        for ds_index, (name, ds) in enumerate(self.cfg.datasets.items()):
            if ds.generate is None:
                continue
            generate = self.cfg.settings.datasets[name].generate
            n_total, n_files = generate.n_events, generate.n_files
            first = 0
            for i in range(n_files):
                n = n_total // n_files + (1 if i < n_total % n_files else 0)
                # one run number per dataset keeps (run, lumi, event) unique across the demo samples
                branches.append(dict(dataset=name, process=ds.process, index=i, n_events=n,
                                     first_event=first, run=ds_index + 1))
                first += n
        if not branches:
            raise AuditError(f"config '{self.config}' has no dataset with 'generate': nothing to generate")
        return dict(enumerate(branches))

    def output(self):
        b = self.branch_data
        spec_hash = short_hash([self.cfg.seed, self.cfg.datasets[b["dataset"]].generate, b["process"]])
        return self.local_target(b["dataset"], spec_hash, f"events_{b['index']}.root")

    def run(self):
        from hsaudit.generate import generate_events

        b = self.branch_data
        out = self.output()
        with atomic_path(out, suffix=".root") as tmp:
            generate_events(
                process=b["process"], n_events=b["n_events"],
                seed=derive_seed(self.cfg.seed, "generate", b["dataset"], b["index"]),
                path=tmp, first_event=b["first_event"], run=b["run"],
            )


class SelectEvents(AuditWorkflow):
    """The coffea selection with every object-level shift in one pass; one branch per input
    file, which coffea splits into chunks and runs with the chosen executor."""

    executor = luigi.ChoiceParameter(
        default="iterative", choices=("iterative", "futures", "dask"), significant=False,
        description="coffea executor inside a branch: iterative (default), futures or dask")
    # not "workers": luigi owns --workers (parallel tasks)
    executor_workers = luigi.IntParameter(default=2, significant=False,
                                          description="worker processes for the futures/dask executors")
    scheduler_address = luigi.Parameter(
        default="", significant=False,
        description="dask scheduler address (tcp://host:port); empty: a LocalCluster is started")

    def create_branch_map(self):
        cfg = self.cfg
        if cfg.section("input").kind != "nanoaod":
            raise AuditError(f"config '{self.config}' reads flat tables (input.kind: flat): run "
                             "MergeFeatures directly, there is no coffea selection to run")
        branches = []
        gen_index = 0
        for name, ds in cfg.datasets.items():
            if ds.generate is not None:
                for i in range(cfg.settings.datasets[name].generate.n_files):
                    branches.append(dict(dataset=name, index=i, file=None, generate_branch=gen_index))
                    gen_index += 1
            else:
                from hsaudit.config import resolve_dataset_files

                # relative to the config's folder, globs and environment variables expanded
                for i, f in enumerate(resolve_dataset_files(ds, cfg)):
                    branches.append(dict(dataset=name, index=i, file=str(f), generate_branch=None))
        return dict(enumerate(branches))

    def workflow_requires(self):
        reqs = super().workflow_requires()
        if any(ds.generate is not None for ds in self.cfg.datasets.values()):
            reqs["events"] = GenerateEvents.req(self)
        return reqs

    def requires(self):
        b = self.branch_data
        if b["generate_branch"] is None:
            return None
        return GenerateEvents.req(self, branch=b["generate_branch"])

    def input_file(self) -> str:
        b = self.branch_data
        if b["file"] is not None:
            if not Path(b["file"]).exists():
                raise AuditError(f"input file {b['file']} of dataset '{b['dataset']}' does not exist "
                                 f"(config {self.config}, datasets.{b['dataset']}.files)")
            return b["file"]
        return self.input().path

    def output(self):
        b = self.branch_data
        # the normalisation (cross section, luminosity) enters only in MergeFeatures
        ds = self.cfg.datasets[b["dataset"]]
        parts = [self.section_hash(*SELECTION_SECTIONS),
                 short_hash([ds.process, ds.is_signal, ds.generate, b["file"], self.cfg.seed])]
        return self.local_target(b["dataset"], "-".join(parts), f"features_{b['index']}.parquet")

    def run(self):
        from hsaudit.selection.run import select_files

        b = self.branch_data
        cfg = self.cfg
        # one file of a dataset may select nothing (or have zero entries): warned about here,
        # the dataset fails in MergeFeatures only if all of its files together select nothing
        table = select_files(
            [self.input_file()], cfg.datasets[b["dataset"]], cfg, executor=self.executor,
            workers=self.executor_workers, scheduler_address=self.scheduler_address or None,
            chunk_size=cfg.section("input").chunk_size, require=False,
        )
        for line in table.meta.extra.get("warnings", []):
            warn(line)
        with atomic_path(self.output(), suffix=".parquet") as tmp:
            table.write(tmp)


class MergeFeatures(AuditWorkflow):
    """Per dataset: the event-matched feature table (normalised weights) and its cutflow."""

    def create_branch_map(self):
        return dict(enumerate(self.cfg.datasets))

    @property
    def is_flat(self) -> bool:
        return self.cfg.section("input").kind == "flat"

    def workflow_requires(self):
        reqs = super().workflow_requires()
        if not self.is_flat:
            reqs["selected"] = SelectEvents.req(self)
        return reqs

    def _select_branches(self) -> list[int]:
        dataset = self.branch_data
        sel = SelectEvents.req(self, branch=-1)
        return [i for i, b in sel.get_branch_map().items() if b["dataset"] == dataset]

    def requires(self):
        if self.is_flat:
            return None
        return [SelectEvents.req(self, branch=i) for i in self._select_branches()]

    def output(self):
        dataset = self.branch_data
        h = short_hash([self.section_hash(*SELECTION_SECTIONS, "luminosity", "seed"),
                        self.cfg.raw["datasets"][dataset]])
        return {
            "table": self.local_target(dataset, h, "features.parquet"),
            "cutflow": self.local_target(dataset, h, "cutflow.json"),
        }

    def run(self):
        from hsaudit.tables import FeatureTable, weight_sanity

        cfg = self.cfg
        ds = cfg.datasets[self.branch_data]
        if self.is_flat:
            from hsaudit.flat_tables import read_flat_dataset

            table = read_flat_dataset(ds, cfg)
            for line in table.meta.extra.get("warnings", []):
                warn(line)
        else:
            from hsaudit.selection.run import file_warnings, normalise_weights

            chunks = [FeatureTable.read(inp.path) for inp in self.input()]
            table = FeatureTable.concat(chunks)
            selected = table.in_any_region().any()
            if not selected:
                files = [s["file"] for s in table.meta.extra.get("files", [])]
                message = (f"dataset '{ds.name}': no event of its {len(files)} file(s) passes the selection "
                           f"in any region ({', '.join(files)}); check the selection cuts and "
                           f"datasets.{ds.name}.files of config '{self.config}'")
                if ds.is_signal:
                    raise AuditError(message)
                # a background with no selected event contributes nothing, like a file that
                # selects nothing; a signal without events leaves nothing to audit
                warn(message + ": it contributes nothing to the background")
            else:
                for line in file_warnings(ds.name, table.meta.extra.get("files", [])):
                    warn(line)
            if table.n_events:
                table = normalise_weights(table, ds.cross_section, cfg.luminosity)
        if self.is_flat and not table.in_any_region().any():
            raise AuditError(f"dataset '{ds.name}': no event passes the selection in any region; "
                             f"check the selection cuts and the input files of config '{self.config}'")
        sanity = weight_sanity(table, cfg.input.get("weight_sanity"))
        if sanity["problems"]:
            stop = sanity.get("fatal") or sanity["limits"]["action"] == "stop"
            text = "; ".join(sanity["problems"])
            if stop:
                hint = "" if sanity.get("fatal") else " (or set input.weight_sanity.action: warn)"
                raise AuditError(text + hint)
            warn(text)
        outputs = self.output()
        summary = {
            "dataset": ds.name, "process": ds.process, "is_signal": ds.is_signal,
            "n_rows": table.n_events,
            "n_selected": {r: int(table.in_region(r).sum()) for r in table.regions},
            "yield": {r: float(table.weights()[table.in_region(r)].sum()) for r in table.regions},
            "cutflow": table.meta.extra.get("cutflow", {}),
            "files": table.meta.extra.get("files", []),
            "weight_sanity": sanity,
        }
        with atomic_path(outputs["table"], suffix=".parquet") as tmp:
            table.write(tmp)
        write_json_atomic(outputs["cutflow"], summary)
        self.publish_message(json.dumps({"dataset": ds.name, "rows": table.n_events,
                                         "selected": summary["n_selected"]}))


def warn(line: str) -> None:
    """A warning line on the terminal (stderr), through the luigi logger when it is set up."""
    import logging

    logging.getLogger("luigi-interface").warning(line)
