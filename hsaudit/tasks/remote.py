"""One remote-workflow mix-in for every workflow task: ``--workflow local|htcondor|slurm``.

``BatchWorkflow`` combines law's LocalWorkflow (the default), HTCondorWorkflow and
SlurmWorkflow (law: Rieger et al., "Design and execution of make-like, distributed analyses
based on Spotify's pipelining package luigi", arXiv:1706.00955). It adds

- resource parameters per batch system (GPUs, CPUs, memory, runtime; HTCondor requirements,
  job flavour, accounting group, universe; Slurm partition, account, gres). Every default is
  empty, so nothing site-specific is hard-coded. Resources are not significant (outputs do
  not depend on them) and are never passed on by ``req()``: an upstream task never inherits
  ``--htcondor-gpus`` from the task that requires it. The workflow type and the destination
  (pool, scheduler, partition, account, accounting group) do pass upstream, so the whole chain
  runs where it is sent; ``--<Task>-workflow local`` on the command line overrides that per task.
- a job bootstrap (hsaudit/tasks/remote_bootstrap.sh, rendered at submission) that sources the
  checkout's setup.sh on a shared file system, or unpacks a shipped tarball of the repository
  (``--bundle-repo``) for pools without a shared software area;
- job logs kept in ``$DATA_PATH/<Task>/<config>/<version>/_batch/<system>/<hash>/logs``; when
  a job fails its log path and the last lines of the log are printed, and appended to the
  error that law raises once ``--retries`` are used up.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import law
import luigi
import luigi.cmdline_parser
from law.job.base import JobInputFile
from law.parameter import NO_FLOAT, NO_STR

from hsaudit.errors import AuditError
from hsaudit.files import atomic_path

law.contrib.load("htcondor", "slurm")

from law.contrib.htcondor.workflow import HTCondorWorkflowProxy  # noqa: E402
from law.contrib.slurm.workflow import SlurmWorkflowProxy  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP_FILE = Path(__file__).resolve().parent / "remote_bootstrap.sh"
LOG_TAIL_LINES = 25

# resource parameters: never significant, never passed upstream by req(), not given to branches
HTCONDOR_RESOURCE_PARAMS = (
    "htcondor_gpus", "htcondor_cpus", "htcondor_memory", "htcondor_runtime",
    "htcondor_requirements", "htcondor_flavour", "htcondor_extra",
)
SLURM_RESOURCE_PARAMS = ("slurm_gpus", "slurm_cpus", "slurm_memory", "slurm_runtime", "slurm_gres")
RESOURCE_PARAMS = HTCONDOR_RESOURCE_PARAMS + SLURM_RESOURCE_PARAMS + ("walltime", "job_workers")
# where jobs go: passed upstream together with --workflow, overridable per task on the command line
DESTINATION_PARAMS = ("workflow", "htcondor_pool", "htcondor_scheduler", "htcondor_accounting_group",
                      "htcondor_universe", "slurm_partition", "slurm_account", "bundle_repo")


_EPILOGUE = re.compile(r"^-- (hook law_hook_job_(failed|finished)|stageout)\b")
_EXIT_CODE = re.compile(r"^job exit code\s*:\s*(\d+)")
_ERROR_LINE = re.compile(r"^(\w+\.)*\w*(Error|Exception)\b.*:|^error: ")


def log_tail(path, n_lines: int = LOG_TAIL_LINES) -> str:
    """What went wrong in a job, from its merged log: the last attempt only (law's job script
    appends a ``---`` line per attempt), without law's epilogue (hooks, stage-out, directory
    listings), last ``n_lines`` lines, with the last error lines (``XyzError: ...``,
    ``error: ...``) put in front when they lie further up, and the job's exit code at the end."""
    if not path:
        return "(no log file recorded for this job)"
    path = Path(path)
    if not path.is_file():
        return f"(log file {path} does not exist (yet): the job may not have started, or its " \
               "log was not transferred back)"
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 256 * 1024))
        lines = f.read().decode(errors="replace").splitlines()
    if "---" in lines:
        lines = lines[len(lines) - lines[::-1].index("---"):]
    cut = next((i for i, line in enumerate(lines) if _EPILOGUE.match(line)), len(lines))
    body, epilogue = lines[:cut], lines[cut:]
    while body and not body[-1].strip():
        body.pop()
    tail = body[-n_lines:]
    errors = [line for line in body[:-n_lines] if _ERROR_LINE.match(line)][-3:]
    if errors:
        tail = errors + ["..."] + tail
    tail += [line for line in epilogue if line.startswith("job exit code")][-1:]
    return "\n".join(tail) if tail else "(the log is empty)"


class _LogTailProxy:
    """Proxy mix-in: print the log tail of every failed job, and append the tails of the
    finally failed jobs to the exception law raises, so the reason reaches the user."""

    def _print_status_errors(self, failed_jobs):
        super()._print_status_errors(failed_jobs)
        for job_num, data in list(failed_jobs.items())[: self.show_errors]:
            log = data.get("extra", {}).get("log")
            print(f"    log of job {job_num} (branches {data['branches']}): {log}")
            print("    last lines:\n" + "\n".join("      | " + line for line in log_tail(log).splitlines()))

    def failed_job_report(self) -> str:
        parts = []
        for job_num, data in sorted(self.job_data.jobs.items()):
            if data.get("status") != self.job_manager.FAILED:
                continue
            log = data.get("extra", {}).get("log")
            tail = log_tail(log)
            reason = [str(data["error"])] if data.get("error") else []
            codes = [int(m.group(1)) for line in tail.splitlines() if (m := _EXIT_CODE.match(line))]
            if codes and codes[-1] in self.job_error_messages:
                reason.append(f"job script exit code {codes[-1]}: {self.job_error_messages[codes[-1]]}")
            parts.append(f"job {job_num} (branches {data['branches']}, {self.workflow_type} id "
                         f"{data.get('job_id')}) failed{': ' + '; '.join(reason) if reason else ''}\n"
                         f"  log: {log}\n  last lines of the log:\n"
                         + "\n".join("    | " + line for line in tail.splitlines()))
        return "\n".join(parts)

    def poll(self):
        try:
            return super().poll()
        except Exception as e:
            report = self.failed_job_report()
            if not report:
                raise
            raise RuntimeError(f"{e}\n{report}") from e


class AuditHTCondorProxy(_LogTailProxy, HTCondorWorkflowProxy):
    pass


class AuditSlurmProxy(_LogTailProxy, SlurmWorkflowProxy):
    pass


class _HTCondorWorkflow(law.htcondor.HTCondorWorkflow):
    workflow_proxy_cls = AuditHTCondorProxy
    exclude_index = True


class _SlurmWorkflow(law.slurm.SlurmWorkflow):
    workflow_proxy_cls = AuditSlurmProxy
    exclude_index = True


def _positive_int(task, name: str) -> int:
    value = getattr(task, name)
    if value < 0:
        raise AuditError(f"--{name.replace('_', '-')} must be >= 0 (got {value}); 0 leaves it to the site default")
    return int(value)


def _memory_mb(task, name: str):
    value = law.parameter.get_param(getattr(task, name))
    if value is None:
        return None
    if value <= 0:
        raise AuditError(f"--{name.replace('_', '-')} must be positive (got {value} MB)")
    return int(math.ceil(value))


def _runtime_seconds(task, name: str):
    value = law.parameter.get_param(getattr(task, name))
    if value is None:
        return None
    if value <= 0:
        raise AuditError(f"--{name.replace('_', '-')} must be positive (got {value} h)")
    return int(math.ceil(value * 3600))


def make_repo_bundle(target_dir, base: Path = REPO) -> str:
    """Tarball of the checkout's tracked and untracked-but-not-ignored files (what ``git status``
    knows), written to ``target_dir``; shipped with each job for pools without shared disk."""
    try:
        out = subprocess.run(["git", "-C", str(base), "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise AuditError(f"--bundle-repo needs the checkout {base} to be a git repository "
                         f"(git ls-files failed: {e})") from e
    files = sorted({f for f in out.decode().split("\0") if f and (base / f).is_file()})
    target_dir = Path(target_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / "audit_repo.tar.gz"
    with atomic_path(final) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for f in files:
            tar.add(base / f, arcname=f, recursive=False)
    return str(final)


class BatchWorkflow(law.LocalWorkflow, _HTCondorWorkflow, _SlurmWorkflow):
    """``--workflow local`` (default), ``htcondor`` or ``slurm`` for any workflow task."""

    # --- HTCondor resources ------------------------------------------------------------------
    htcondor_gpus = luigi.IntParameter(default=0, significant=False, description="GPUs per "
                                       "HTCondor job (request_gpus); default: 0 (none requested)")
    htcondor_cpus = luigi.IntParameter(default=0, significant=False, description="CPU cores per "
                                       "HTCondor job (request_cpus); default: 0 (site default)")
    htcondor_memory = law.BytesParameter(default=NO_FLOAT, unit="MB", significant=False,
                                         description="memory per HTCondor job (request_memory); "
                                         "default unit MB; default: empty (site default)")
    htcondor_runtime = law.DurationParameter(default=NO_FLOAT, unit="h", significant=False,
                                             description="maximum runtime per HTCondor job "
                                             "(allowed_job_duration); default unit hours; default: empty")
    htcondor_requirements = luigi.Parameter(default="", significant=False, description="HTCondor "
                                            "requirements expression; default: empty")
    htcondor_flavour = luigi.Parameter(default="", significant=False, description="HTCondor job "
                                       "flavour (+JobFlavour, e.g. workday at CERN); default: empty")
    htcondor_extra = luigi.Parameter(default="", significant=False, description="further submit "
                                     "file lines, ';'-separated, e.g. '+MaxRuntime = 7200'; default: empty")
    # --- HTCondor destination ----------------------------------------------------------------
    htcondor_accounting_group = luigi.Parameter(default="", significant=False, description=
                                                "HTCondor accounting_group; default: empty")
    htcondor_universe = luigi.Parameter(default="", significant=False, description="HTCondor "
                                        "universe; default: empty (vanilla)")
    # --- Slurm resources ---------------------------------------------------------------------
    slurm_gpus = luigi.IntParameter(default=0, significant=False, description="GPUs per Slurm job "
                                    "(--gres=gpu:N); default: 0 (none requested)")
    slurm_cpus = luigi.IntParameter(default=0, significant=False, description="CPU cores per Slurm "
                                    "job (--cpus-per-task); default: 0 (site default)")
    slurm_memory = law.BytesParameter(default=NO_FLOAT, unit="MB", significant=False,
                                      description="memory per Slurm job (--mem); default unit MB; "
                                      "default: empty (site default)")
    slurm_runtime = law.DurationParameter(default=NO_FLOAT, unit="h", significant=False,
                                          description="time limit per Slurm job (--time); default "
                                          "unit hours; default: empty (partition default)")
    slurm_gres = luigi.Parameter(default="", significant=False, description="generic resources "
                                 "(--gres), e.g. gpu:a100:2; default: empty")
    # --- Slurm destination (slurm_partition comes with law) ----------------------------------
    slurm_account = luigi.Parameter(default="", significant=False, description="Slurm account "
                                    "(--account); default: empty")
    # --- software ----------------------------------------------------------------------------
    bundle_repo = luigi.BoolParameter(default=False, significant=False, description="ship a "
                                      "tarball of this checkout with each job and run setup.sh "
                                      "from it (pools without shared software disk); default: False")

    exclude_params_req = set(RESOURCE_PARAMS)
    exclude_params_branch = set(RESOURCE_PARAMS) | set(DESTINATION_PARAMS) - {"workflow"}
    # --GenerateEvents-workflow local (etc.) on the command line wins over what req() passes on
    prefer_params_cli = set(DESTINATION_PARAMS)

    exclude_index = True

    # --- shared pieces -------------------------------------------------------------------------
    def batch_directory(self, system: str) -> law.LocalDirectoryTarget:
        """Submission data, job files and logs of this workflow on ``system``; keyed by the
        config content so that a changed config never reuses stale job ids."""
        from hsaudit.tasks.base import short_hash

        return law.LocalDirectoryTarget(self.local_path("_batch", system, short_hash(self.cfg.raw)))

    def _job_file_factory_kwargs(self, system: str) -> dict:
        # job files (and the rendered bootstrap) must sit on the shared file system for Slurm;
        # respect an explicit job_file_dir in the law config
        cfg = law.config.Config.instance()
        option = cfg.find_option("job", f"{system}_job_file_dir", "job_file_dir")
        configured = cfg.get_expanded("job", option, None)
        if configured and os.path.realpath(configured) != os.path.realpath(tempfile.gettempdir()):
            return {}
        return {"dir": self.batch_directory(system).child("job_files", type="d").abspath,
                "mkdtemp": True, "cleanup": False}

    def _bootstrap_file(self):
        return JobInputFile(str(BOOTSTRAP_FILE), copy=True, render_local=True)

    def _render_variables(self, system: str) -> dict:
        from hsaudit.tasks.base import data_path

        variables = {"audit_base": str(REPO), "audit_data_path": data_path(),
                     "audit_venv": os.environ.get("AUDIT_VENV", ""), "audit_bundle": ""}
        if self.bundle_repo:
            variables["audit_bundle"] = os.path.basename(self._repo_bundle(system))
        return variables

    def _repo_bundle(self, system: str) -> str:
        cached = getattr(self, "_bundle_path", None)
        if cached is None:
            cached = make_repo_bundle(self.batch_directory(system).child("bundle", type="d").abspath)
            self._bundle_path = cached
        return cached

    def _common_job_config(self, config, system: str):
        # one merged log (stdout + stderr of the whole job) per job, kept in the log directory
        config.custom_log_file = config.custom_log_file or "stdall.txt"
        config.render_variables.update(self._render_variables(system))
        if self.bundle_repo:
            config.input_files["audit_bundle"] = JobInputFile(self._repo_bundle(system), copy=False)
        return config

    # --- HTCondor ------------------------------------------------------------------------------
    def htcondor_output_directory(self):
        return self.batch_directory("htcondor")

    def htcondor_log_directory(self):
        return self.batch_directory("htcondor").child("logs", type="d")

    def htcondor_bootstrap_file(self):
        return self._bootstrap_file()

    def htcondor_create_job_file_factory(self, **kwargs):
        return super().htcondor_create_job_file_factory(
            **{**self._job_file_factory_kwargs("htcondor"), **kwargs})

    def htcondor_submit_lines(self) -> list[tuple[str, str]]:
        """The resource and destination lines this task adds to the HTCondor submit file."""
        lines = []
        if (gpus := _positive_int(self, "htcondor_gpus")) > 0:
            lines.append(("request_gpus", str(gpus)))
        if (cpus := _positive_int(self, "htcondor_cpus")) > 0:
            lines.append(("request_cpus", str(cpus)))
        if (memory := _memory_mb(self, "htcondor_memory")) is not None:
            lines.append(("request_memory", str(memory)))
        if (runtime := _runtime_seconds(self, "htcondor_runtime")) is not None:
            lines.append(("allowed_job_duration", str(runtime)))
        if self.htcondor_requirements:
            lines.append(("requirements", self.htcondor_requirements))
        if self.htcondor_flavour:
            lines.append(("+JobFlavour", f'"{self.htcondor_flavour}"'))
        if self.htcondor_accounting_group:
            lines.append(("accounting_group", self.htcondor_accounting_group))
        for item in filter(None, (s.strip() for s in self.htcondor_extra.split(";"))):
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise AuditError(f"--htcondor-extra: '{item}' is not a 'key = value' submit line")
            lines.append((key.strip(), value.strip()))
        return lines

    def htcondor_job_config(self, config, job_num, branches):
        config = self._common_job_config(config, "htcondor")
        if self.htcondor_universe:
            config.universe = self.htcondor_universe
        config.custom_content.extend(self.htcondor_submit_lines())
        return config

    # --- Slurm ---------------------------------------------------------------------------------
    def slurm_output_directory(self):
        return self.batch_directory("slurm")

    def slurm_log_directory(self):
        return self.batch_directory("slurm").child("logs", type="d")

    def slurm_bootstrap_file(self):
        return self._bootstrap_file()

    def slurm_create_job_file_factory(self, **kwargs):
        return super().slurm_create_job_file_factory(
            **{**self._job_file_factory_kwargs("slurm"), **kwargs})

    def slurm_sbatch_lines(self) -> list[tuple[str, str]]:
        """The resource and destination ``#SBATCH`` options this task adds to the job file."""
        lines = []
        gpus = _positive_int(self, "slurm_gpus")
        if gpus and self.slurm_gres:
            raise AuditError("give either --slurm-gpus N (becomes --gres=gpu:N) or --slurm-gres, not both")
        gres = self.slurm_gres or (f"gpu:{gpus}" if gpus else "")
        if gres:
            lines.append(("gres", gres))
        if (cpus := _positive_int(self, "slurm_cpus")) > 0:
            lines.append(("cpus-per-task", str(cpus)))
        if (memory := _memory_mb(self, "slurm_memory")) is not None:
            lines.append(("mem", f"{memory}M"))
        if (runtime := _runtime_seconds(self, "slurm_runtime")) is not None:
            lines.append(("time", str(int(math.ceil(runtime / 60)))))
        if self.slurm_account:
            lines.append(("account", self.slurm_account))
        return lines

    def slurm_job_config(self, config, job_num, branches):
        config = self._common_job_config(config, "slurm")
        # retries append to the same log file, so every attempt stays readable
        config.custom_content.append(("open-mode", "append"))
        config.custom_content.extend(self.slurm_sbatch_lines())
        return config


def write_job_files(task: BatchWorkflow, branches=None) -> list[str]:
    """Write the submit files that ``task`` (a workflow created with ``workflow="htcondor"`` or
    ``"slurm"``) would submit, without submitting anything and without a scheduler: one grouped
    file for HTCondor (one per job when grouping is off in the law config), one per job for
    Slurm, one branch per job. Returns their paths; useful to inspect jobs before a real run."""
    from law.job.dashboard import NoJobDashboard

    wf = task.as_workflow()
    system = wf.effective_workflow
    if system not in ("htcondor", "slurm"):
        raise AuditError(f"write_job_files needs a task created with workflow='htcondor' or "
                         f"'slurm', got workflow='{system}'")
    proxy = wf.workflow_proxy
    proxy.dashboard = NoJobDashboard()
    proxy.job_file_factory = proxy.create_job_file_factory()
    branches = sorted(wf.branch_map) if branches is None else list(branches)
    jobs = {i + 1: [b] for i, b in enumerate(branches)}
    # law reads global command-line arguments while building the job command: give it an
    # empty command line when called from python
    parser = luigi.cmdline_parser.CmdlineParser
    ctx = (contextlib.nullcontext() if parser.get_instance() is not None
           else parser.global_instance([wf.get_task_family()]))
    with ctx:
        if system == "htcondor" and proxy.job_manager.job_grouping_submit:
            return [proxy.create_job_file(jobs)["job"]]
        return [proxy.create_job_file(num, b)["job"] for num, b in jobs.items()]
