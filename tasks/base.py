"""Base classes shared by every task: version + config parameters, output paths, workflows.

Outputs live at ``$DATA_PATH/<Task>/<config>/<version>/<parts>/...``. Parts derived from a
hash of the config sections a task depends on are added by each task, so that changing one
section reruns exactly the tasks (and branches) that depend on it, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import law
import luigi

from analysis.config import AnalysisConfig, load_config, resolve_config_path
from tasks.remote import BatchWorkflow

_CONFIG_CACHE: dict[tuple[str, float], AnalysisConfig] = {}


def data_path() -> str:
    path = os.environ.get("DATA_PATH")
    if not path:
        path = str(Path(__file__).resolve().parent.parent / "data")
    return os.path.expandvars(os.path.expanduser(path))


def short_hash(payload) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


@contextlib.contextmanager
def atomic_path(target: law.LocalFileTarget, suffix: str = ""):
    """Yield a temporary path next to the target; move it into place only on success, so a
    killed or failing task never leaves a half-written output."""
    final = Path(target.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{os.getpid()}-{final.name}{suffix}")
    try:
        yield str(tmp)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            if tmp.is_dir():
                import shutil

                shutil.rmtree(tmp)
            else:
                tmp.unlink()


def write_json_atomic(target: law.LocalFileTarget, payload) -> None:
    with atomic_path(target) as tmp:
        Path(tmp).write_text(json.dumps(payload, indent=2, sort_keys=True, default=_json_default))


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


class AuditTask(law.Task):
    """Every task: an output version and the analysis configuration."""

    version = luigi.Parameter(description="output version: part of every output path; change it "
                                          "to start a fresh set of outputs")
    config = luigi.Parameter(default="demo", description="analysis configuration: a name from "
                             "config/ (demo, ci, higgsml) or a path to your own YAML file; default: demo")

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
        shipped = Path(__file__).resolve().parent.parent / "config"
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
