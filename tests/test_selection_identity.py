"""The selection that shares untouched objects between variants gives bit-identical outputs to
a straightforward per-variant recomputation (tests/selection_reference.py): every feature
table column, weight, weight variation, region mask and cutflow entry, on generated demo
events of several processes, configurations and chunkings."""

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from hsaudit.config import load_config
from hsaudit.selection import select_chunk
from hsaudit.selection.features import FEATURES
from hsaudit.selection.objects import Collection, _sorted_by_pt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import selection_reference as reference  # noqa: E402

generate = pytest.importorskip("hsaudit.generate")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = {"ztt": 3000, "ggH_htt": 1500, "zmm": 1500, "wjets": 2000}


def _config(tmp_path_factory, name, edit=None):
    raw = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    raw["features"] = list(dict.fromkeys(raw["features"] + list(FEATURES)))
    if edit:
        edit(raw)
    path = tmp_path_factory.mktemp("cfg") / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path)


def _plain(raw):
    """No b-veto, no extra-muon veto, no preselection thresholds, one-sided regions."""
    raw["selection"]["b_veto"] = False
    raw["selection"].pop("extra_muon_veto")
    raw["selection"].pop("preselection")
    raw["regions"]["anything"] = {"charge": "any"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    out = {}
    folder = tmp_path_factory.mktemp("gen")
    for i, (process, n) in enumerate(SAMPLES.items()):
        out[process] = folder / f"{process}.root"
        generate.generate_events(process, n, 100 + i, out[process])
    return out


def _bits(a: np.ndarray) -> np.ndarray:
    """The raw bytes of an array (NaN payloads and signed zeros compared too)."""
    return np.ascontiguousarray(a).view(np.uint8)


def _assert_identical(table, payload, where):
    cols, ref = table.columns, payload["columns"]
    assert sorted(cols) == sorted(ref), where
    for name in ref:
        a, b = np.asarray(cols[name]), np.asarray(ref[name])
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {name} {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        assert np.array_equal(_bits(a), _bits(b)), f"{where}: column {name} differs"
    extra = table.meta.extra
    for key, value in payload["extra"].items():
        assert extra[key] == value, f"{where}: extra {key} differs"
    # the cutflow compared as exact floats, step by step
    for variant, steps in payload["extra"]["cutflow"].items():
        assert list(extra["cutflow"][variant]) == list(steps), f"{where}: cutflow steps of {variant}"
        for step, value in steps.items():
            assert float(extra["cutflow"][variant][step]).hex() == float(value).hex(), f"{where}: {variant} {step}"


@pytest.mark.parametrize("variant", ["demo", "plain"])
def test_selection_matches_per_variant_recomputation(tmp_path_factory, files, variant):
    config = _config(tmp_path_factory, variant, _plain if variant == "plain" else None)
    for process, path in files.items():
        ds = config.datasets[process]
        n = SAMPLES[process]
        # one chunk, and a chunking that starts inside the file
        for a, b in ((0, n), (n // 3, n)):
            table = select_chunk(path, a, b, ds, config)
            assert table.n_events > 0
            _assert_identical(table, reference.reference_payload(path, a, b, ds, config), f"{variant}/{process}[{a}:{b}]")


def test_pt_ordering_matches_a_full_sort():
    """Objects out of pt order within an event are sorted as a stable lexsort would."""
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 5, 300)
    n = int(counts.sum())
    pt = rng.exponential(30.0, n).astype(np.float32)
    pt[rng.random(n) < 0.05] = pt[0]  # ties keep their order
    coll = Collection(counts, {"pt": pt, "tag": np.arange(n)})
    got = _sorted_by_pt(coll)
    want = reference._sorted_by_pt(Collection(counts, {"pt": pt.copy(), "tag": np.arange(n)}))
    for name in ("pt", "tag"):
        assert np.array_equal(got[name], want[name])
    assert not np.array_equal(got["tag"], np.arange(n))  # the input was out of order
    ordered = reference._sorted_by_pt(coll)
    assert _sorted_by_pt(ordered) is ordered  # already ordered: nothing copied
