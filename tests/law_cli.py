"""Run ``law run ...`` the way a user does, in a subprocess with its own DATA_PATH."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class LawResult:
    returncode: int
    output: str
    seconds: float

    def ran(self, task_family: str) -> int:
        """How many tasks of a family actually ran (luigi's 'done' messages); for workflows the
        branches only, not the workflow task that collects them (branch=-1). Matched in the
        whole output, not per line: two worker processes (and coffea's progress bar, which
        ends without a newline) can interleave their messages on one line."""
        pattern = r"\[pid \d+\] Worker Worker\([^)]*\) done\s+" + re.escape(task_family) + r"\(([^)]*)\)"
        return sum(1 for args in re.findall(pattern, self.output) if "branch=-1" not in args)


def law_env(data_path: Path) -> dict:
    env = dict(os.environ)
    env["DATA_PATH"] = str(data_path)
    env["LAW_CONFIG_FILE"] = str(REPO / "law.cfg")
    env.setdefault("LAW_HOME", str(REPO / ".law"))
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env["MPLBACKEND"] = "Agg"
    return env


def run_law(data_path: Path, *args: str, timeout: int = 900) -> LawResult:
    law = Path(sys.executable).parent / "law"
    cmd = [str(law), "run", *args]
    start = time.time()
    proc = subprocess.run(cmd, env=law_env(data_path), cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    return LawResult(proc.returncode, proc.stdout + proc.stderr, time.time() - start)


def files_below(path: Path) -> list[Path]:
    return sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).exists() else []
