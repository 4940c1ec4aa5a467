"""select_files gives identical tables with the iterative, futures and dask executors."""

import numpy as np
import pytest

from hsaudit.config import load_config
from hsaudit.selection import normalise_weights, plan_chunks, select_files

generate = pytest.importorskip("hsaudit.generate")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    config = load_config("demo")
    folder = tmp_path_factory.mktemp("exe")
    files = []
    for i, first in enumerate((0, 1200)):
        path = folder / f"ztt_{i}.root"
        generate.generate_events("ztt", 1200, 11, path, first_event=first)
        files.append(path)
    return config, config.datasets["ztt"], files


def _assert_identical(a, b):
    assert a.meta.to_json() == b.meta.to_json()
    assert set(a.columns) == set(b.columns)
    for name in a.columns:
        np.testing.assert_array_equal(a.columns[name], b.columns[name], err_msg=name)


def test_plan_chunks(setup):
    _, _, files = setup
    chunks = plan_chunks(files, 500)
    assert chunks == [(str(files[0]), 0, 500), (str(files[0]), 500, 1000), (str(files[0]), 1000, 1200),
                      (str(files[1]), 0, 500), (str(files[1]), 500, 1000), (str(files[1]), 1000, 1200)]


def test_iterative_and_dask_identical(setup):
    config, ds, files = setup
    iterative = select_files(files, ds, config, executor="iterative", chunk_size=500)
    assert iterative.n_events > 50
    assert iterative.meta.extra["n_events_processed"] == 2400
    assert len(iterative.meta.extra["chunks"]) == 6
    # a small in-process dask cluster reached through its scheduler address (worker processes
    # would spend most of the test importing coffea); select_files starts a process-based
    # LocalCluster itself when no address is given (exercised by benchmarks/selection.py)
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = select_files(files, ds, config, executor="dask", scheduler_address=cluster.scheduler_address, chunk_size=500)
    _assert_identical(iterative, dask)
    # the chunking does not change the result either (apart from provenance)
    one = select_files(files, ds, config, chunk_size=5000)
    for name in iterative.columns:
        np.testing.assert_array_equal(one.columns[name], iterative.columns[name], err_msg=name)


def test_normalise_weights(setup):
    config, ds, files = setup
    table = select_files(files[:1], ds, config, chunk_size=600)
    norm = normalise_weights(table, ds.cross_section, config.luminosity)
    scale = ds.cross_section * config.luminosity / table.meta.extra["sum_genweight"]
    np.testing.assert_allclose(norm.weights(), table.weights() * scale, rtol=1e-12)
    np.testing.assert_allclose(norm.weights("tau_id_up"), table.weights("tau_id_up") * scale, rtol=1e-12)
    # the selected fraction of xs * lumi
    frac = table.weights().sum() / table.meta.extra["sum_genweight"]
    assert norm.weights().sum() == pytest.approx(ds.cross_section * config.luminosity * frac)
    assert norm.meta.extra["normalisation"]["scale"] == pytest.approx(scale)
