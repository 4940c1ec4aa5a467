"""The data chain through law, as a user runs it: GenerateEvents -> SelectEvents -> MergeFeatures."""

import json

import numpy as np
import pytest

from hsaudit.config import load_config
from hsaudit.tables import FeatureTable
from law_cli import files_below, run_law


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    # its own DATA_PATH: the counts of tasks that ran must not depend on which integration
    # test module ran first in the shared one
    data = tmp_path_factory.mktemp("law_data_chain")
    first = run_law(data, "MergeFeatures", "--config", "ci", "--version", "t", "--workers", "2")
    assert first.returncode == 0, first.output[-3000:]
    return data, first


def test_merge_features_end_to_end(merged):
    data, first = merged
    cfg = load_config("ci")
    n_files = sum(ds.generate["n_files"] for ds in cfg.datasets.values())  # one branch per file
    assert first.ran("GenerateEvents") == n_files == 9
    assert first.ran("SelectEvents") == n_files
    assert first.ran("MergeFeatures") == len(cfg.datasets) == 6
    tables = sorted((data / "MergeFeatures" / "ci" / "t").rglob("features.parquet"))
    assert len(tables) == 6
    for path in tables:
        t = FeatureTable.read(path)
        assert t.n_events > 0 and t.in_any_region().any()
        # signal events reach the signal region (a small background sample may not, e.g. the
        # 2000 Z->mumu events after the anti-muon tau ID and the extra-muon veto)
        if t.meta.is_signal:
            assert t.in_region("signal").any()
        x = t.features_of("nominal")[t.in_any_region()]
        assert np.isfinite(x).all()
        summary = json.loads((path.parent / "cutflow.json").read_text())
        assert summary["n_selected"]["signal"] == int(t.in_region("signal").sum())
        # weights normalised to cross section x luminosity: positive total yield
        assert sum(summary["yield"].values()) > 0


def test_second_run_is_a_quick_no_op(merged):
    data, _ = merged
    before = {p: p.stat().st_mtime for p in files_below(data / "MergeFeatures")}
    again = run_law(data, "MergeFeatures", "--config", "ci", "--version", "t")
    assert again.returncode == 0, again.output[-2000:]
    assert again.ran("SelectEvents") == 0 and again.ran("MergeFeatures") == 0
    assert again.seconds < 30
    assert {p: p.stat().st_mtime for p in files_below(data / "MergeFeatures")} == before


def test_print_status_shows_the_tree(merged):
    data, _ = merged
    status = run_law(data, "MergeFeatures", "--config", "ci", "--version", "t", "--print-status", "2")
    assert status.returncode == 0
    for family in ("MergeFeatures", "SelectEvents", "GenerateEvents"):
        assert family in status.output
    assert "existent" in status.output


def test_unknown_config_is_one_clear_line(tmp_path):
    res = run_law(tmp_path, "MergeFeatures", "--config", "no_such_config", "--version", "t")
    assert res.returncode != 0
    assert "error: unknown config 'no_such_config'" in res.output
    assert "Traceback" not in res.output
    assert files_below(tmp_path) == []


def test_corrupt_input_file_fails_cleanly(tmp_path, write_config):
    bad = tmp_path / "corrupt.root"
    bad.write_bytes(b"this is not a ROOT file" * 100)

    def edit(raw):
        raw["datasets"]["ztt"].pop("generate")
        raw["datasets"]["ztt"]["files"] = [str(bad)]

    cfg = write_config("ci", edit)
    data = tmp_path / "data"
    res = run_law(data, "MergeFeatures", "--config", str(cfg), "--version", "t", "--branch", "2")
    assert res.returncode != 0
    assert "corrupt.root" in res.output
    assert "Traceback" not in res.output
    assert not list(data.rglob("*.parquet"))
