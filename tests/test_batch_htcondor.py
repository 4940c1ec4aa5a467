"""HTCondor jobs of the BatchWorkflow mix-in (hsaudit/tasks/remote.py), checked without a running condor:
law writes the submit files, HTCondor's own Python bindings (v1 API, ``htcondor.Submit``) turn
them into job ClassAds offline, and the ads must carry the requested resources and point at
files that exist. Also: resource parameters never propagate to upstream tasks."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

htcondor = pytest.importorskip("htcondor", reason="HTCondor Python bindings (htcondor<25) not installed")
if not hasattr(htcondor, "Submit"):  # pragma: no cover - the v1 API is gone in htcondor>=25
    pytest.skip("htcondor bindings without the v1 Submit API (need htcondor<25)", allow_module_level=True)


@pytest.fixture
def data_path(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("DATA_PATH", str(path))
    return path


def _job_ads(submit_file: str) -> list:
    """Job ClassAds of a submit file, built offline. Relative paths (the executable) resolve
    against the submit file's directory, where law runs condor_submit."""
    cwd = os.getcwd()
    os.chdir(os.path.dirname(submit_file))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no condor_config on this machine: expected
            return list(htcondor.Submit(Path(submit_file).read_text()).jobs())
    finally:
        os.chdir(cwd)


def _generate(**kwargs):
    from hsaudit.tasks.data import GenerateEvents

    return GenerateEvents(version="vcondor", config="ci", workflow="htcondor", **kwargs)


def test_htcondor_submit_file_carries_resources_and_existing_files(data_path):
    from hsaudit.tasks.remote import write_job_files

    task = _generate(htcondor_gpus=2, htcondor_cpus=3, htcondor_memory="3GB",
                     htcondor_runtime="90min", htcondor_requirements='(OpSysAndVer =?= "AlmaLinux9")',
                     htcondor_flavour="workday", htcondor_accounting_group="group_u_audit",
                     htcondor_extra="+MaxRuntime = 5400")
    (submit_file,) = write_job_files(task)
    ads = _job_ads(submit_file)
    n_branches = len(task.branch_map)
    assert len(ads) == n_branches == 9  # ci config: 9 generated files, one job each

    args = set()
    for ad in ads:
        assert ad["RequestGPUs"] == 2
        assert ad["RequestCpus"] == 3
        assert ad["RequestMemory"] == 3072  # MiB
        assert ad["AllowedJobDuration"] == 5400  # seconds
        assert ad["JobFlavour"] == "workday"
        assert ad["MaxRuntime"] == 5400
        assert ad["AcctGroup"] == "group_u_audit"
        assert 'OpSysAndVer is "AlmaLinux9"' in str(ad["Requirements"])
        assert "TARGET.GPUs >= RequestGPUs" in str(ad["Requirements"])
        # the executable (law's wrapper) and every input file exist on disk
        cmd = Path(ad["Cmd"])
        assert cmd.is_file() and os.access(cmd, os.X_OK), cmd
        inputs = ad["TransferInput"].split(",")
        assert inputs and all(Path(p).is_file() for p in inputs), inputs
        assert any(Path(p).name.startswith("remote_bootstrap") for p in inputs)
        assert any(Path(p).name.startswith("law_job") for p in inputs)
        # the merged job log comes back into the kept log directory
        remote, local = ad["TransferOutputRemaps"].split(" = ")
        assert Path(local).parent.name == "logs" and str(data_path) in local
        assert Path(ad["Iwd"]).is_dir()
        args.add(ad["Args"])
    assert len(args) == n_branches  # one distinct job per branch

    # the rendered bootstrap points at this checkout and this DATA_PATH, nothing left unrendered
    bootstrap = next(Path(p) for p in ads[0]["TransferInput"].split(",")
                     if Path(p).name.startswith("remote_bootstrap"))
    text = bootstrap.read_text()
    assert not re.search(r"\{\{\w+\}\}", text)
    assert f'local base="{REPO}"' in text
    assert f'export DATA_PATH="{data_path}"' in text


def test_htcondor_defaults_request_nothing_site_specific(data_path):
    from hsaudit.tasks.remote import write_job_files

    (submit_file,) = write_job_files(_generate(), branches=[0])
    text = Path(submit_file).read_text()
    for line in ("request_gpus", "request_cpus", "request_memory", "allowed_job_duration",
                 "accounting_group", "+JobFlavour", "requirements"):
        assert line not in text
    (ad,) = _job_ads(submit_file)
    assert "RequestGPUs" not in ad
    assert ad["JobUniverse"] == 5  # vanilla


def test_htcondor_universe_and_bundle(data_path):
    from hsaudit.tasks.remote import write_job_files

    (submit_file,) = write_job_files(
        _generate(htcondor_universe="docker", htcondor_extra="docker_image = python:3.11",
                  bundle_repo=True), branches=[0])
    text = Path(submit_file).read_text()
    assert "universe = docker" in text
    (ad,) = _job_ads(submit_file)
    assert ad["WantDocker"] is True and ad["DockerImage"] == "python:3.11"
    bundle = next(Path(p) for p in ad["TransferInput"].split(",") if p.endswith("audit_repo.tar.gz"))
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
    assert {"setup.sh", "hsaudit/tasks/remote.py", "hsaudit/tasks/remote_bootstrap.sh", "pyproject.toml"} <= names
    assert not any(n.startswith((".venv/", "data/", ".git/")) for n in names)


def test_htcondor_bundle_bootstrap_runs_setup_from_the_unpacked_checkout(data_path, tmp_path):
    """The bootstrap as a job would source it: unpack the shipped checkout and source its setup.sh."""
    from hsaudit.tasks.remote import write_job_files

    (submit_file,) = write_job_files(_generate(bundle_repo=True), branches=[0])
    (ad,) = _job_ads(submit_file)
    inputs = [Path(p) for p in ad["TransferInput"].split(",")]
    job_home = tmp_path / "job_home"
    job_home.mkdir()
    for p in inputs:  # what law_job.sh does with transferred inputs
        (job_home / p.name).symlink_to(p)
    bootstrap = next(p.name for p in inputs if p.name.startswith("remote_bootstrap"))
    env = {k: v for k, v in os.environ.items() if k not in ("AUDIT_BASE", "LAW_HOME", "VIRTUAL_ENV")}
    env["LAW_JOB_HOME"] = str(job_home)
    script = f'source ./{bootstrap} "" || exit 7; echo "BASE=$AUDIT_BASE"; echo "DATA=$DATA_PATH"; ' \
             'python -c "import hsaudit.tasks.remote, sys; print(\'MOD=\' + hsaudit.tasks.remote.__file__)"'
    proc = subprocess.run(["bash", "-c", script], cwd=job_home, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unpacked = job_home / "audit_repo"
    assert f"BASE={unpacked}" in proc.stdout
    assert f"DATA={data_path}" in proc.stdout
    assert f"MOD={unpacked}/hsaudit/tasks/remote.py" in proc.stdout


def test_htcondor_resources_do_not_propagate_upstream(data_path):
    from hsaudit.tasks.data import GenerateEvents, MergeFeatures, SelectEvents
    from hsaudit.tasks.training import EvaluateModel, TrainModel

    ev = EvaluateModel(version="v1", config="ci", workflow="htcondor", htcondor_gpus=2,
                       htcondor_memory="8GB", htcondor_runtime=3, htcondor_requirements="HasGPU",
                       htcondor_flavour="tomorrow", htcondor_pool="pool.example.org")
    train = TrainModel.req(ev)
    assert train.htcondor_gpus == 0
    assert law_no_value(train.htcondor_memory) and law_no_value(train.htcondor_runtime)
    assert train.htcondor_requirements == "" and train.htcondor_flavour == ""
    # where jobs go does pass on: the chain runs where it was sent
    assert train.workflow == "htcondor" and train.htcondor_pool == "pool.example.org"
    # resources are not significant: same task, same outputs
    assert ev.task_id == EvaluateModel(version="v1", config="ci", workflow="htcondor").task_id

    merge = MergeFeatures(version="v1", config="ci", workflow="slurm", slurm_gpus=1,
                          slurm_memory="4GB", slurm_cpus=4, slurm_gres="", slurm_runtime=2,
                          slurm_partition="gpu")
    sel = SelectEvents.req(merge)
    assert (sel.slurm_gpus, sel.slurm_cpus, sel.slurm_gres) == (0, 0, "")
    assert law_no_value(sel.slurm_memory) and law_no_value(sel.slurm_runtime)
    assert sel.slurm_partition == "gpu"
    gen = GenerateEvents.req(SelectEvents(version="v1", config="ci", workflow="slurm", slurm_gres="gpu:a100:1"))
    assert gen.slurm_gres == ""
    # branch tasks (what runs inside a job) carry no resource parameters either
    branch = SelectEvents(version="v1", config="ci", workflow="htcondor", htcondor_gpus=3).req_branch(0)
    assert branch.htcondor_gpus == 0


def law_no_value(value) -> bool:
    from law.parameter import is_no_param

    return is_no_param(value)


@pytest.fixture
def fresh_law_parser():
    """law caches what it parsed from the command line; each simulated command line starts clean."""
    import law.parser

    names = ("_root_task_cls", "_root_task", "_full_parser", "_root_task_parser",
             "_global_cmdline_args", "_global_cmdline_values")

    def reset():
        for name in names:
            setattr(law.parser, name, None)

    reset()
    yield reset
    reset()


def test_htcondor_command_line_can_keep_an_upstream_task_local(data_path, fresh_law_parser):
    import luigi.cmdline_parser

    from hsaudit.tasks.data import SelectEvents

    args = ["MergeFeatures", "--version", "v1", "--config", "ci", "--workflow", "htcondor",
            "--htcondor-gpus", "1", "--SelectEvents-workflow", "local"]
    with luigi.cmdline_parser.CmdlineParser.global_instance(args) as parser:
        merge = parser.get_task_obj()
        assert merge.workflow == "htcondor" and merge.htcondor_gpus == 1
        sel = SelectEvents.req(merge)
        assert sel.workflow == "local" and sel.htcondor_gpus == 0
    # without the override the workflow type passes on
    fresh_law_parser()
    with luigi.cmdline_parser.CmdlineParser.global_instance(args[:-2]) as parser:
        assert SelectEvents.req(parser.get_task_obj()).workflow == "htcondor"


@pytest.mark.parametrize("kwargs, match", [
    (dict(htcondor_gpus=-1), "--htcondor-gpus must be >= 0"),
    (dict(htcondor_memory="-5"), "--htcondor-memory must be positive"),
    (dict(htcondor_extra="not a submit line"), "is not a 'key = value' submit line"),
])
def test_htcondor_bad_resources_raise_audit_error(data_path, kwargs, match):
    from hsaudit.errors import AuditError
    from hsaudit.tasks.remote import write_job_files

    with pytest.raises(AuditError, match=match):
        write_job_files(_generate(**kwargs), branches=[0])


def test_write_job_files_needs_a_batch_workflow(data_path):
    from hsaudit.errors import AuditError
    from hsaudit.tasks.data import GenerateEvents
    from hsaudit.tasks.remote import write_job_files

    with pytest.raises(AuditError, match="workflow='htcondor' or 'slurm'"):
        write_job_files(GenerateEvents(version="v1", config="ci"))
