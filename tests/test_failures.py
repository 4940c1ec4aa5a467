"""Bad inputs and faults end in one line that names the file or key and what to fix: file
system problems, command-line and configuration mistakes, weights that one event dominates,
concurrent runs and leftovers of killed runs."""

import errno
import json
import logging
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml

from hsaudit.config import load_config
from hsaudit.errors import AuditError
from hsaudit.files import remove_stale_temporaries, temporary_name
from hsaudit.tables import FeatureTable, TableMeta, weight_sanity, weight_sanity_limits


# -- configuration ---------------------------------------------------------------------------
def _ci_with(tmp_path, edit, name="c.yaml"):
    from pathlib import Path

    raw = yaml.safe_load((Path(__file__).resolve().parent.parent / "config" / "ci.yaml").read_text())
    edit(raw)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("edit, match", [
    (lambda r: r["fit"].update(n_bins="ten"), r"fit\.n_bins: expected an integer, got 'ten'"),
    (lambda r: r["fit"].update(n_bins=0), r"fit\.n_bins: must be > 0, got 0"),
    (lambda r: r["fit"].update(n_toys=True), r"fit\.n_toys: expected an integer, got True"),
    (lambda r: r["fit"].update(binning="log"), r"fit\.binning: unknown value 'log' \(known: 'uniform' or 'optimised'\)"),
    (lambda r: r["fit"].update(mu_bounds=[3, 1]), r"fit\.mu_bounds: expected \[low, high\]"),
    (lambda r: r["audit"].update(n_sigma=0), r"audit\.n_sigma: must be > 0.0, got 0"),
    (lambda r: r["audit"].update(n_sigma=-1.0), r"audit\.n_sigma: must be > 0.0, got -1.0"),
    (lambda r: r.update(luminosity=0), r"luminosity: must be > 0.0, got 0"),
    (lambda r: r.update(luminosity=-5.0), r"luminosity: must be > 0.0, got -5.0"),
    (lambda r: r.update(luminosity=float("nan")), r"luminosity: must be a finite number"),
    (lambda r: r.update(luminosity=True), r"luminosity: expected a number, got True"),
    (lambda r: r.update(regions={}), r"regions: needs at least 1 entry, got \{\}"),
    (lambda r: r["input"].update(branches={"mett": "MET"}), r"input\.branches\.mett: unknown key"),
    (lambda r: r["input"].update(weight_sanity={"action": "ignore"}), r"input\.weight_sanity\.action"),
    (lambda r: r["input"].update(weight_sanity={"max_weight_share": 2}), r"input\.weight_sanity\.max_weight_share"),
])
def test_config_mistakes_refused_at_load(tmp_path, edit, match):
    path = _ci_with(tmp_path, edit)
    with pytest.raises(AuditError, match=match) as err:
        load_config(path)
    assert "\n" not in str(err.value) and "c.yaml" in str(err.value)


def test_config_path_is_a_directory_or_not_utf8(tmp_path):
    with pytest.raises(AuditError, match="is a directory; give a YAML file"):
        load_config(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"name: x\n\xff\xfe\x00 luminosity: 1\n")
    with pytest.raises(AuditError, match=r"bad\.yaml: not a UTF-8 text file"):
        load_config(bad)


def test_one_region_is_enough(tmp_path):
    def edit(raw):
        raw["regions"] = {"signal": raw["regions"]["signal"]}
        raw["fit"]["channels"] = ["signal"]

    cfg = load_config(_ci_with(tmp_path, edit))
    assert list(cfg.regions) == ["signal"] and cfg.control_regions == []


# -- weight sanity ---------------------------------------------------------------------------
def _table(weights, name="ztt"):
    n = len(weights)
    meta = TableMeta(dataset=name, process=name, is_signal=False, features=["x"], variants=["nominal"],
                     regions=["signal"])
    cols = {"run": np.ones(n, np.uint32), "luminosityBlock": np.zeros(n, np.uint32),
            "event": np.arange(n, dtype=np.uint64) + 100, "is_signal": np.zeros(n, bool),
            "weight": np.asarray(weights, np.float64), "x__nominal": np.zeros(n, np.float32),
            "region__signal__nominal": np.ones(n, bool)}
    return FeatureTable(cols, meta)


def test_weight_sanity_uniform_weights_pass():
    report = weight_sanity(_table(np.full(500, 0.3)))
    assert report["problems"] == []
    assert report["effective_sample_size"] == pytest.approx(500.0)
    assert report["effective_fraction"] == pytest.approx(1.0)
    assert report["max_weight_share"] == pytest.approx(1 / 500)
    # NLO-like samples with 25 % negative weights are fine with the defaults
    w = np.where(np.arange(1000) % 4 == 0, -1.0, 1.0)
    assert weight_sanity(_table(w))["problems"] == []


def test_weight_sanity_two_huge_weights_name_dataset_and_events():
    """The issue's case: two events at 5.2e6 among ~1500 of weight ~1 carry half the yield."""
    w = np.ones(1500)
    w[[700, 1200]] = 749.0  # together as much as the other 1498 events: half of the yield
    report = weight_sanity(_table(w))
    assert report["max_weight_share"] == pytest.approx(0.25, rel=1e-3)
    assert report["effective_sample_size"] < 10
    assert len(report["problems"]) == 2
    text = "; ".join(report["problems"])
    assert "dataset 'ztt'" in text and "1:0:800" in text and "1:0:1300" in text
    assert "input.weight_sanity.max_weight_share" in text
    assert "input.weight_sanity.min_effective_fraction" in text
    ids = {(e["event"]) for e in report["largest_weight_events"][:2]}
    assert ids == {800, 1300}
    json.dumps(report)  # goes into cutflow.json as it is


def test_weight_sanity_limits_and_small_or_negative_datasets():
    w = np.ones(10)
    w[0] = 100.0
    assert weight_sanity(_table(w))["problems"] == []  # 10 < min_events: not judged
    assert weight_sanity(_table(w), {"min_events": 5})["problems"]
    negative = weight_sanity(_table(-np.ones(30)))
    assert negative.get("fatal") and "sum to -30 (not positive)" in negative["problems"][0]
    assert weight_sanity(_table(np.zeros(0)))["n_selected"] == 0
    assert weight_sanity_limits({"action": "warn"})["action"] == "warn"
    with pytest.raises(AuditError, match="input.weight_sanity.min_events"):
        weight_sanity_limits({"min_events": 0})


# -- the model probe -------------------------------------------------------------------------
def test_probe_uses_selected_events_with_finite_nominal_features():
    from hsaudit.classifier_stage import probe_events
    from hsaudit.samples import assemble

    n = 40
    meta = TableMeta(dataset="d", process="d", is_signal=True, features=["a", "b"],
                     variants=["nominal", "s_up", "s_down"], regions=["signal"])
    a = np.arange(n, dtype=np.float32)
    nominal_sel = a >= 10  # the first 10 rows are selected only in the shifted variant
    cols = {"run": np.ones(n, np.uint32), "luminosityBlock": np.zeros(n, np.uint32),
            "event": np.arange(n, dtype=np.uint64), "is_signal": np.ones(n, bool), "weight": np.ones(n)}
    for v in meta.variants:
        cols[f"a__{v}"] = np.where(nominal_sel | (v != "nominal"), a, np.nan).astype(np.float32)
        cols[f"b__{v}"] = -a
        cols[f"region__signal__{v}"] = nominal_sel if v == "nominal" else np.ones(n, bool)
    sample = assemble([FeatureTable(cols, meta)])
    assert np.isnan(sample.X["nominal"][:5]).any()  # what the old probe (first rows) fed the model
    probe = probe_events(sample, ["b", "a"], n=25)
    assert probe.shape == (25, 2) and np.isfinite(probe).all()
    np.testing.assert_array_equal(probe[:, 1], a[10:35])  # selected rows, in the model's order
    with pytest.raises(AuditError, match="not in the feature tables"):
        probe_events(sample, ["c"])


# -- files, folders and concurrent runs ------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from hsaudit.files import host_hash

    dead = _dead_pid()
    stale_dir = tmp_path / f".tmp-{dead}-h{host_hash()}-report"
    stale_dir.mkdir()
    (stale_dir / "big.bin").write_bytes(b"x" * 1000)
    stale_file = tmp_path / f".tmp-{dead}-h{host_hash()}-features.parquet"
    stale_file.write_bytes(b"half")
    alive = tmp_path / f".tmp-{os.getppid()}-h{host_hash()}-other"  # a running process: kept
    alive.mkdir()
    remote = tmp_path / f".tmp-{dead}-h00000000-remote"  # another machine's writer: kept
    remote.mkdir()
    legacy_new = tmp_path / f".tmp-{dead}-old-style"  # no host, recent: kept
    legacy_new.mkdir()
    legacy_old = tmp_path / f".tmp-{dead}-older-style"
    legacy_old.mkdir()
    os.utime(legacy_old, (0, 0))
    output = tmp_path / "summary.json"
    output.write_text("{}")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale_dir.name, stale_file.name, legacy_old.name])
    assert alive.exists() and remote.exists() and legacy_new.exists() and output.exists()
    assert temporary_name("x").startswith(f".tmp-{os.getpid()}-h{host_hash()}-")


def test_atomic_path_removes_leftovers_and_translates_os_errors(tmp_path, monkeypatch):
    import law

    from hsaudit.files import host_hash
    from hsaudit.tasks.base import atomic_path

    target = law.LocalFileTarget(str(tmp_path / "out" / "table.parquet"))
    (tmp_path / "out").mkdir()
    leftover = tmp_path / "out" / f".tmp-{_dead_pid()}-h{host_hash()}-table.parquet.parquet"
    leftover.write_bytes(b"killed half way")
    with atomic_path(target, suffix=".parquet") as tmp:
        open(tmp, "w").write("done")
    assert not leftover.exists() and open(target.path).read() == "done"

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(AuditError, match=r"cannot write output .*table2\.json: the disk is full.*DATA_PATH") as err:
        with atomic_path(law.LocalFileTarget(str(tmp_path / "out" / "table2.json"))) as tmp:
            open(tmp, "w").write("x")
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "out").glob(".tmp-*"))


def test_concurrent_runs_of_one_folder_output_keep_a_complete_one(tmp_path):
    """Two runs finishing the same folder output: no 'Directory not empty', one complete output."""
    from hsaudit.tasks.base import atomic_directory

    final = tmp_path / "AttackAudit" / "report"
    barrier = threading.Barrier(2)
    errors = []

    def run(tag):
        try:
            with atomic_directory(final) as tmp:
                (tmp / "summary.json").write_text(json.dumps({"n": 1}))
                (tmp / "report.html").write_text("<html/>")
                barrier.wait(timeout=10)  # both have written, both now move into place
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(p.name for p in final.iterdir()) == ["report.html", "summary.json"]
    assert [p.name for p in final.parent.iterdir()] == ["report"]  # no temporaries left
    # a failing run leaves nothing
    other = tmp_path / "other"
    with pytest.raises(RuntimeError):
        with atomic_directory(other) as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("killed")
    assert not other.exists() and list(tmp_path.glob(".tmp-*")) == []


def test_data_path_problems(tmp_path, monkeypatch):
    from hsaudit.tasks import base

    monkeypatch.setattr(base, "_CHECKED_DATA_PATHS", set())
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(AuditError, match=r"DATA_PATH=.*afile is a file, not a folder"):
        base.check_data_path(str(afile))
    with pytest.raises(AuditError, match=r"afile is a file, not a folder"):
        base.check_data_path(str(afile / "sub"))
    fresh = tmp_path / "new" / "deeper"
    assert base.check_data_path(str(fresh)) == str(fresh)
    assert not (tmp_path / "new").exists()  # the check leaves nothing behind
    full_dir = tmp_path / "full"
    full_dir.mkdir()

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(AuditError, match=r"DATA_PATH=.*full: the disk is full"):
        base.check_data_path(str(full_dir))
    assert list(full_dir.iterdir()) == []


def test_error_filter_shortens_user_errors_to_one_line():
    from luigi.parameter import MissingParameterException

    from hsaudit.tasks.errors import CleanAuditErrors, user_message

    assert "--version is missing" in user_message(MissingParameterException(
        "MergeFeatures[args=(), kwargs={}]: requires the 'version' parameter to be set"))
    assert "the disk is full" in user_message(OSError(errno.ENOSPC, "No space left on device", "/x"))
    assert "not writable" in user_message(OSError(errno.EACCES, "Permission denied", "/x"))
    assert user_message(ValueError("a bug")) is None
    import luigi

    try:
        luigi.IntParameter().parse("ten")  # what --branch ten does
    except ValueError as err:
        assert "a command-line value has the wrong type" in user_message(err)
    try:
        raise OSError(errno.EROFS, "Read-only file system", "/data/out")
    except OSError:
        record = logging.LogRecord("luigi-interface", logging.ERROR, __file__, 1,
                                   "[pid 1] Worker failed    MergeFeatures(branch=0)\nTraceback ...", (),
                                   sys.exc_info())
    CleanAuditErrors().filter(record)
    assert record.exc_info is None
    assert record.getMessage().splitlines()[-1].startswith("error: on a read-only file system (/data/out)")


# -- through law (slow: a few seconds each) ---------------------------------------------------
@pytest.mark.slow
def test_command_line_mistakes_are_one_line_and_leave_nothing(tmp_path):
    from law_cli import files_below, run_law

    data = tmp_path / "data"
    afile = tmp_path / "afile"
    afile.write_text("x")
    for args, data_path, expected in (
        (("MergeFeatures", "--config", "ci"), data, "error: --version is missing"),
        (("MergeFeatures", "--config", "ci", "--version", "t", "--branch", "99"), data,
         "error: --branch 99: MergeFeatures of config 'ci' has branches 0..5"),
        (("MergeFeatures", "--config", "ci", "--version", "t"), afile, "is a file, not a folder"),
    ):
        res = run_law(data_path, *args, timeout=300)
        assert res.returncode != 0, res.output[-2000:]
        assert expected in res.output, res.output[-2000:]
        assert "Traceback" not in res.output
    assert files_below(data) == [] and afile.read_text() == "x"
