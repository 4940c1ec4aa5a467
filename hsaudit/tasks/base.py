"""Base classes shared by every task: version + config parameters, output paths, workflows.

Outputs live at ``$DATA_PATH/<Task>/<config>/<version>/<parts>/...``. Parts derived from a
hash of the config sections a task depends on are added by each task, so that changing one
section reruns exactly the tasks (and branches) that depend on it, and nothing else.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from pathlib import Path

import law
import luigi

from hsaudit.config import CONFIG_DIR, AnalysisConfig, load_config, resolve_config_path
from hsaudit.errors import AuditError
from hsaudit import files
from hsaudit.files import remove_stale_temporaries, temporary_name
from hsaudit.jsonio import json_default
from hsaudit.tasks.remote import BatchWorkflow

_CONFIG_CACHE: dict[tuple[str, float], AnalysisConfig] = {}


def data_path() -> str:
    path = os.environ.get("DATA_PATH")
    if not path:
        path = str(Path(__file__).resolve().parents[2] / "data")
    return os.path.expandvars(os.path.expanduser(path))


def short_hash(payload) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def check_data_path(path: str | None = None) -> str:
    """``DATA_PATH`` as a writable folder with some free space (checked once per process and
    path): AuditError with one line saying what is wrong otherwise."""
    path = path or data_path()
    if path in _CHECKED_DATA_PATHS:
        return path
    where = f"DATA_PATH={path}"
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise AuditError(f"{where} is a file, not a folder: set DATA_PATH to a folder for the outputs")
    if not p.exists():
        parent = next((a for a in p.parents if a.exists()), None)
        if parent is not None and not parent.is_dir():
            raise AuditError(f"{where}: {parent} is a file, not a folder: set DATA_PATH to a folder for the outputs")
    # create what is missing, write a probe, and remove both again: a failing run leaves nothing
    created = [a for a in [p, *p.parents] if not a.exists()]
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=temporary_name("write-check"), dir=p)
        try:
            os.write(fd, b"\0" * 4096)
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as err:
        raise AuditError(f"{where}: {_os_reason(err)}: set DATA_PATH to a writable folder with free space") from None
    finally:
        for folder in created:  # deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
    _CHECKED_DATA_PATHS.add(path)
    return path


def _os_reason(err: OSError) -> str:
    names = {errno.EACCES: "not writable (permission denied)", errno.EPERM: "not writable (not permitted)",
             errno.EROFS: "on a read-only file system", errno.ENOSPC: "the disk is full",
             errno.EDQUOT: "the disk quota is exceeded", errno.ENOTDIR: "a part of the path is a file, not a folder",
             errno.EEXIST: "exists and is not a folder"}
    reason = names.get(err.errno, err.strerror or str(err))
    return f"{reason} ({err.filename})" if err.filename else reason


_CHECKED_DATA_PATHS: set[str] = set()


@contextlib.contextmanager
def atomic_path(target: law.LocalFileTarget, suffix: str = ""):
    """Yield a temporary path next to the target; move it into place only on success, so a
    killed or failing task never leaves a half-written output. Leftover temporaries of dead
    processes next to it are removed first. A folder output that another run of the same task
    completed meanwhile is kept (outputs are deterministic) instead of failing on
    'Directory not empty'."""
    final = Path(target.path)
    _make_parent(final)
    remove_stale_temporaries(final.parent)
    try:
        with files.atomic_path(final, suffix) as tmp:
            yield str(tmp)
    except OSError as err:
        raise AuditError(f"cannot write output {final}: {_os_reason(err)}; check DATA_PATH={data_path()}") from None


def _make_parent(final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise AuditError(f"cannot create output folder {final.parent}: {_os_reason(err)}; "
                         f"check DATA_PATH={data_path()}") from None


@contextlib.contextmanager
def atomic_directory(target):
    """Yield a fresh temporary folder next to ``target`` (a path or a law target); on success it
    becomes ``target``, or, if a concurrent run of the same task completed ``target`` first,
    that complete output is kept and the temporary removed. On failure (or kill) nothing is
    left at ``target``; leftovers of killed runs are removed by the next run."""
    final = Path(getattr(target, "path", target))
    _make_parent(final)
    remove_stale_temporaries(final.parent)
    try:
        with files.atomic_directory(final, existing="keep") as tmp:
            yield tmp
    except OSError as err:
        raise AuditError(f"cannot write output {final}: {_os_reason(err)}; check DATA_PATH={data_path()}") from None


def write_json_atomic(target: law.LocalFileTarget, payload) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, sort_keys=True, default=json_default))


class AuditTask(law.Task):
    """Every task: an output version and the analysis configuration."""

    version = luigi.Parameter(description="output version: part of every output path; change it "
                                          "to start a fresh set of outputs")
    config = luigi.Parameter(default="demo", description="analysis configuration: a name from "
                             "config/ (demo, ci, higgsml) or a path to your own YAML file; default: demo")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        check_data_path()

    @property
    def cfg(self) -> AnalysisConfig:
        path = resolve_config_path(self.config)
        key = (str(path), path.stat().st_mtime)
        if key not in _CONFIG_CACHE:
            _CONFIG_CACHE[key] = load_config(path)
        return _CONFIG_CACHE[key]

    @property
    def config_tag(self) -> str:
        """Shipped configs by name; a user's file by its stem plus a hash of its location."""
        path = resolve_config_path(self.config)
        shipped = CONFIG_DIR
        if path.parent == shipped:
            return path.stem
        return f"{path.stem}-{short_hash(str(path))[:6]}"

    def store_parts(self) -> tuple[str, ...]:
        return (self.task_family, self.config_tag, self.version)

    def local_path(self, *parts) -> str:
        return os.path.join(data_path(), *self.store_parts(), *[str(p) for p in parts])

    def local_target(self, *parts) -> law.LocalFileTarget:
        return law.LocalFileTarget(self.local_path(*parts))

    def section_hash(self, *sections: str) -> str:
        return self.cfg.section_hash(*sections)


class AuditWorkflow(AuditTask, BatchWorkflow):
    """A workflow over branches. Runs locally by default (law.LocalWorkflow); the batch
    systems plug in here so that every workflow task can be sent to them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_branch():
            branches = self.get_branch_map()
            if self.branch not in branches:
                keys = sorted(branches)
                known = f"{keys[0]}..{keys[-1]}" if keys else "none"
                raise AuditError(f"--branch {self.branch}: {self.task_family} of config '{self.config}' "
                                 f"has branches {known} (or -1 for all)")
