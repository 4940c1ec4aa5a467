"""Slurm jobs of the BatchWorkflow mix-in (hsaudit/tasks/remote.py) on a real single-node Slurm cluster
(tests/slurm_cluster.py: Debian's slurmctld + slurmd + munge, a fake GPU gres):

- a GenerateEvents workflow sent to Slurm with a GPU request gives the same arrays as a local run;
- a job cancelled mid-task (scancel) is resubmitted by law's retries and the outputs still equal
  an uninterrupted run's; a local worker killed mid-task leaves no partial output either;
- a failing job's log path and log tail reach the user, after law's --retries.

The cluster tests skip with a reason when Slurm cannot be installed (not root, no apt-get);
with CI=true as root they must run, so an installation failure fails them instead.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from slurm_cluster import SlurmCluster, ensure_slurm  # noqa: E402

LAW = str(Path(sys.executable).parent / "law")
TASK = "hsaudit.tasks.data.GenerateEvents"
POLL = ["--poll-interval", "2s"]


# --- helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    """The ci config cut to two datasets of 2 small files each: 4 GenerateEvents branches."""
    raw = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    keep = ("ggH_htt", "ztt")
    raw["datasets"] = {name: raw["datasets"][name] for name in keep}
    for ds in raw["datasets"].values():
        ds["generate"] = {"n_events": 300, "n_files": 2}
    for name, syst in list(raw["systematics"].items()):
        if "processes" in syst:
            syst["processes"] = [p for p in syst["processes"] if p in keep]
            if not syst["processes"]:
                del raw["systematics"][name]
    path = tmp_path_factory.mktemp("cfg") / "batch_small.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def law_env(data_path: Path, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update({
        "DATA_PATH": str(data_path),
        "LAW_CONFIG_FILE": str(REPO / "law.cfg"),
        "LAW_HOME": str(data_path.parent / "law_home"),
        "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        # accounting is off on the test cluster: finished jobs are only visible to squeue
        "LAW__job__slurm_cmd_squeue": "squeue --states=all",
    })
    env.update(extra or {})
    return env


def run_law(data_path: Path, *args: str, extra_env=None, timeout=240) -> subprocess.CompletedProcess:
    return subprocess.run([LAW, "run", TASK, *args], env=law_env(data_path, extra_env), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def outputs(data_path: Path) -> dict[str, Path]:
    """Final event files by path relative to DATA_PATH (temporary files excluded)."""
    root = data_path / "GenerateEvents"
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("events_*.root"))
            if not p.name.startswith(".tmp-")}


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    import uproot

    with uproot.open(path) as f:
        tree = f["Events"]
        return {k: np.asarray(v) for k, v in tree.arrays(library="np").items()}


def assert_same_arrays(a: Path, b: Path) -> None:
    xa, xb = read_arrays(a), read_arrays(b)
    assert xa.keys() == xb.keys(), (a, b)
    for key in xa:
        va, vb = xa[key], xb[key]
        if va.dtype == object:  # jagged branches come back as arrays of arrays
            assert len(va) == len(vb) and all(np.array_equal(x, y) for x, y in zip(va, vb)), key
        else:
            assert va.dtype == vb.dtype and np.array_equal(va, vb), key


def assert_outputs_equal(reference: Path, data_path: Path, n_expected: int) -> None:
    ref, got = outputs(reference), outputs(data_path)
    assert len(ref) == n_expected and sorted(got) == sorted(ref)
    for rel in ref:
        assert_same_arrays(ref[rel], got[rel])


@pytest.fixture(scope="module")
def local_reference(small_config, tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("local") / "data"
    proc = run_law(data, "--config", str(small_config), "--version", "v1", "--workers", "1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(outputs(data)) == 4
    return data


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    in_ci = os.environ.get("CI", "").lower() == "true"
    reason = ensure_slurm()
    if reason:
        if in_ci and os.geteuid() == 0:
            pytest.fail(f"CI must run the Slurm tests, but: {reason}")
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception as e:  # a cluster that does not come up is a failure, not a skip
        cluster.stop()
        pytest.fail(f"could not start the single-node Slurm cluster: {e}")
    yield cluster
    cluster.stop()


# --- job files (no cluster needed) -----------------------------------------------------------
def test_slurm_job_file_carries_resources(tmp_path, monkeypatch, small_config):
    from hsaudit.tasks.data import GenerateEvents
    from hsaudit.tasks.remote import write_job_files

    monkeypatch.setenv("DATA_PATH", str(tmp_path / "data"))
    task = GenerateEvents(version="v1", config=str(small_config), workflow="slurm", slurm_gpus=2,
                          slurm_cpus=4, slurm_memory="6GB", slurm_runtime="90min",
                          slurm_account="audit", slurm_partition="gpu")
    files = write_job_files(task)
    assert len(files) == 4  # one job per branch
    text = Path(files[0]).read_text()
    for line in ("#SBATCH --gres=gpu:2", "#SBATCH --cpus-per-task=4", "#SBATCH --mem=6144M",
                 "#SBATCH --time=90", "#SBATCH --account=audit", "#SBATCH --partition=gpu",
                 "#SBATCH --open-mode=append"):
        assert line in text, text
    # executable and bootstrap exist on the (shared) disk, the bootstrap is rendered
    exe = text.strip().splitlines()[-1].split()[0]
    assert Path(exe).is_file() and os.access(exe, os.X_OK)
    job_dir = Path(files[0]).parent
    (bootstrap,) = job_dir.glob("remote_bootstrap*_0To1.sh")
    assert f'local base="{REPO}"' in bootstrap.read_text()

    free_gres = GenerateEvents(version="v1", config=str(small_config), workflow="slurm",
                               slurm_gres="gpu:a100:1")
    assert "#SBATCH --gres=gpu:a100:1" in Path(write_job_files(free_gres, branches=[0])[0]).read_text()
    plain = Path(write_job_files(GenerateEvents(version="v1", config=str(small_config),
                                                workflow="slurm"), branches=[0])[0]).read_text()
    for option in ("--gres", "--mem", "--time", "--account", "--cpus-per-task", "--partition"):
        assert option not in plain


def test_slurm_gpus_and_gres_together_raise(tmp_path, monkeypatch, small_config):
    from hsaudit.errors import AuditError
    from hsaudit.tasks.data import GenerateEvents
    from hsaudit.tasks.remote import write_job_files

    monkeypatch.setenv("DATA_PATH", str(tmp_path / "data"))
    task = GenerateEvents(version="v1", config=str(small_config), workflow="slurm", slurm_gpus=1,
                          slurm_gres="gpu:1")
    with pytest.raises(AuditError, match="either --slurm-gpus N"):
        write_job_files(task, branches=[0])


def test_job_log_tail_shows_the_last_attempt_and_its_error(tmp_path):
    from hsaudit.tasks.remote import log_tail

    log = tmp_path / "stdall_0To1.txt"
    first = ["---", "attempt one", "OldError: from the first attempt", "job exit code : 60"]
    second = (["---", "-- run task branch 0", "Traceback (most recent call last):",
               "ValueError: the real reason"] + [f"noise {i}" for i in range(40)]
              + ["task exit code: 30", "", "-- hook law_hook_job_failed 60 30 ---", "listing",
                 "-- cleanup ---", "ls -a", "job exit code : 60"])
    log.write_text("\n".join(first + second) + "\n")
    tail = log_tail(log, n_lines=10).splitlines()
    assert tail[0] == "ValueError: the real reason" and tail[1] == "..."  # error pulled up
    assert tail[-2] == "task exit code: 30" and tail[-1] == "job exit code : 60"
    assert not any("OldError" in line or "listing" in line or "ls -a" in line for line in tail)
    assert "does not exist" in log_tail(tmp_path / "missing.txt")
    assert "no log file" in log_tail(None)


# --- local worker killed mid-task ----------------------------------------------------------
def test_killed_local_worker_leaves_no_partial_output(tmp_path, small_config, local_reference):
    data = tmp_path / "data"
    args = [LAW, "run", TASK, "--config", str(small_config), "--version", "v1", "--workers", "1"]
    proc = subprocess.Popen(args, env=law_env(data), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not outputs(data) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert outputs(data), "no output appeared before the kill"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group
        proc.wait()
    done_before = outputs(data)
    assert 1 <= len(done_before) < 4, "the kill came too late to interrupt the run"
    # whatever is in place under its final name is complete
    ref = outputs(local_reference)
    for rel, path in done_before.items():
        assert_same_arrays(ref[rel], path)
    rerun = run_law(data, "--config", str(small_config), "--version", "v1", "--workers", "1")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_outputs_equal(local_reference, data, 4)


# --- the real cluster --------------------------------------------------------------------------
def test_slurm_workflow_with_gpu_request_matches_local_run(tmp_path, slurm_cluster, small_config,
                                                           local_reference):
    data = tmp_path / "data"
    proc = run_law(data, "--config", str(small_config), "--version", "v1", "--workflow", "slurm",
                   "--slurm-gpus", "1", "--tasks-per-job", "2", *POLL, extra_env=slurm_cluster.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:] + slurm_cluster.logs()
    assert re.search(r"all: 2, .*finished: 2", out), out[-3000:]
    assert_outputs_equal(local_reference, data, 4)
    # the job logs are kept, and the jobs really got their GPU from the fake gres
    logs = sorted(data.rglob("_batch/slurm/*/logs/stdall_*.txt"))
    assert len(logs) == 2
    job_files = sorted(data.rglob("_batch/slurm/*/job_files/*/slurm_job_*.sh"))
    assert job_files and all("#SBATCH --gres=gpu:1" in f.read_text() for f in job_files)


def test_slurm_job_cancelled_mid_task_is_resubmitted(tmp_path, slurm_cluster, small_config,
                                                     local_reference):
    data = tmp_path / "data"
    env = law_env(data, slurm_cluster.env)
    args = [LAW, "run", TASK, "--config", str(small_config), "--version", "v1", "--workflow",
            "slurm", "--tasks-per-job", "2", "--retries", "2", *POLL]
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    cancelled = None
    try:
        deadline = time.time() + 120
        while cancelled is None and time.time() < deadline and proc.poll() is None:
            # a job whose log shows a task branch executing: cancel it right there
            for log in data.rglob("_batch/slurm/*/logs/stdall_*.txt"):
                if "execute attempt 1" in log.read_text(errors="replace"):
                    squeue = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i %j"], env=env,
                                            capture_output=True, text=True).stdout.split("\n")
                    postfix = log.stem.replace("stdall", "")
                    ids = [line.split()[0] for line in squeue if line.strip().endswith(postfix)]
                    if ids:
                        subprocess.run(["scancel", ids[0]], env=env, check=True)
                        cancelled = (ids[0], log)
                        break
            time.sleep(0.1)
        out, _ = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert cancelled is not None, "no running job to cancel was found"
    assert proc.returncode == 0, out[-4000:]
    # law saw the cancelled job fail and resubmitted it
    assert re.search(r"retry: 1 \(\+1\)", out), out[-3000:]
    assert "CANCELLED" in out or "failed job" in out
    assert_outputs_equal(local_reference, data, 4)
    # both attempts are in the kept (appended) log
    assert cancelled[1].read_text(errors="replace").count("execute attempt 1") >= 2


def test_slurm_failed_job_log_tail_reaches_the_user(tmp_path, slurm_cluster, small_config):
    from hsaudit.tasks.base import short_hash

    data = tmp_path / "data"
    # a plain file where the ztt output directory must go: the job's branch fails with a clear error
    tag = f"{small_config.stem}-{short_hash(str(small_config))[:6]}"
    blocker = data / "GenerateEvents" / tag / "v1" / "ztt"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    proc = run_law(data, "--config", str(small_config), "--version", "v1", "--workflow", "slurm",
                   "--tasks-per-job", "2", "--retries", "1", *POLL, extra_env=slurm_cluster.env)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    # the log location and the error from inside the job reach the user
    logs = re.findall(r"log: (\S+stdall_\d+To\d+\.txt)", out)
    assert logs and all(Path(p).is_file() for p in logs), out[-4000:]
    assert "last lines of the log" in out
    assert "job script exit code 60: task execution failed" in out
    assert re.search(r"\| .*(NotADirectoryError|FileExistsError|Not a directory|File exists|is a file, not a folder|"
                     r"exists and is not a folder)", out), out[-4000:]
    # --retries 1: the failing job ran twice, both attempts in its log
    failing_log = Path(logs[0]).read_text(errors="replace")
    assert failing_log.count("execute attempt 1") == 2
    # the ggH job was unaffected
    assert len([p for p in outputs(data) if p.startswith(tag)]) == 2
