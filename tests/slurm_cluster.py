"""A real single-node Slurm cluster on this machine, for the batch workflow tests.

``ensure_slurm()`` installs Slurm and munge from the Debian packages when missing (root only);
``SlurmCluster`` writes a minimal slurm.conf for this host (all cores, most of the memory, two
fake GPUs backed by /dev/null and /dev/zero so that ``--gres=gpu:N`` is accepted), starts munged,
slurmctld and slurmd in the foreground as child processes, waits until the node is idle, and
stops exactly those processes again. Accounting is off, so law has to query ``squeue
--states=all`` (``LAW__job__slurm_cmd_squeue``) instead of sacct.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "munged")
# GPUs of the fake gres; each is "backed" by a device file that exists everywhere
FAKE_GPU_FILES = ("/dev/null", "/dev/zero")


def _missing_commands() -> list[str]:
    paths = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    return [c for c in COMMANDS if shutil.which(c, path=paths) is None]


def ensure_slurm() -> str | None:
    """Install Slurm + munge with apt-get when missing. Returns None when ready, else the reason."""
    if not _missing_commands():
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and installing it needs root (apt-get install slurmctld slurmd slurm-client munge)"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and apt-get is not available to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (["apt-get", "update", "-qq"],
             ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES])
    for cmd in steps:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            return f"installing Slurm failed ({' '.join(cmd)}): {proc.stderr.strip()[-500:]}"
    missing = _missing_commands()
    return f"Slurm commands still missing after installation: {missing}" if missing else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(cmd: str) -> str:
    return shutil.which(cmd, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


class SlurmCluster:
    """Single-node cluster under ``workdir``; ``env`` holds what clients need (SLURM_CONF)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.workdir / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {"SLURM_CONF": str(self.conf)}

    # --- configuration ------------------------------------------------------------------------
    def write_config(self) -> None:
        w = self.workdir
        for sub in ("state", "spool", "log", "munge"):
            (w / sub).mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        mem_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        real_mem = max(256, int(mem_mb * 0.8))
        def_mem = max(128, min(1024, real_mem // (2 * cpus)))
        gpus = len(FAKE_GPU_FILES)
        self.conf.write_text(f"""# single-node test cluster, written by tests/slurm_cluster.py
ClusterName=auditci
SlurmctldHost={self.host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU={def_mem}
GresTypes=gpu
ReturnToService=2
MinJobAge=900
KillWait=5
InactiveLimit=0
SlurmctldTimeout=60
SlurmdTimeout=60
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool
SlurmctldPidFile={w}/slurmctld.pid
SlurmdPidFile={w}/slurmd.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd.log
NodeName={self.host} CPUs={cpus} RealMemory={real_mem} Gres=gpu:{gpus} State=UNKNOWN
PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP
""")
        (self.workdir / "gres.conf").write_text("".join(
            f"NodeName={self.host} Name=gpu File={f}\n" for f in FAKE_GPU_FILES))

    # --- daemons ------------------------------------------------------------------------------
    def _munge_running(self) -> bool:
        return subprocess.run([_which("munge") or "munge", "-n"], capture_output=True).returncode == 0 \
            and subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0

    def _start(self, name: str, cmd: list[str]) -> None:
        log = open(self.workdir / "log" / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **self.env}, start_new_session=True)

    def start(self, timeout: float = 60.0) -> None:
        self.write_config()
        if not self._munge_running():
            w = self.workdir / "munge"
            key = Path("/etc/munge/munge.key")
            if not key.exists():
                subprocess.run([_which("mungekey") or "mungekey", "--create", "--keyfile", str(key)],
                               check=True, capture_output=True)
            self._start("munged", [_which("munged"), "--foreground", "--force",
                                   f"--socket={w}/munge.socket", f"--pid-file={w}/munged.pid",
                                   f"--log-file={w}/munged.log", f"--seed-file={w}/munged.seed"])
            self.env["MUNGE_SOCKET"] = f"{w}/munge.socket"
            # slurm's munge plugin finds a non-default socket through AuthInfo
            with open(self.conf, "a") as f:
                f.write(f"AuthInfo=socket={w}/munge.socket\n")
            self._wait(lambda: (Path(w) / "munge.socket").exists(), 15, "munged did not start")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait(lambda: self._run("sinfo", "-h").returncode == 0, timeout, "slurmctld did not answer")
        self._start("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf)])
        self._wait(self._node_idle, timeout, "the node did not become idle")

    def _node_idle(self) -> bool:
        out = self._run("sinfo", "-h", "-N", "-o", "%T").stdout.strip()
        return out.startswith("idle")

    def _wait(self, check, timeout: float, what: str) -> None:
        end = time.time() + timeout
        while time.time() < end:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{what}: {name} exited with {proc.returncode}\n{self.logs()}")
            if check():
                return
            time.sleep(0.5)
        raise RuntimeError(f"{what} within {timeout:.0f} s\n{self.logs()}")

    def _run(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([_which(cmd[0]) or cmd[0], *cmd[1:]], capture_output=True, text=True,
                              env={**os.environ, **self.env})

    def logs(self, n: int = 20) -> str:
        parts = []
        for f in sorted((self.workdir / "log").glob("*")) + sorted((self.workdir / "munge").glob("*.log")):
            lines = f.read_text(errors="replace").splitlines()[-n:]
            parts.append(f"--- {f}\n" + "\n".join(lines))
        return "\n".join(parts)

    def stop(self) -> None:
        # our own daemons only, by their process ids, slurmd first
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
