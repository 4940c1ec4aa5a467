"""The attack branches' files (hsaudit.attack_files): what is saved is read back identically,
the impact measurement gets the same events, and unreadable or outdated files are refused
with a message naming what to rerun."""

import numpy as np
import pytest

from hsaudit.attack_files import AttackedOutputs, AttackedSample
from hsaudit.errors import AuditError


def _regions(n):
    return {"signal": np.arange(n) % 2 == 0, "control": np.arange(n) % 3 == 0}


def test_attacked_sample_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n = 50
    a = AttackedSample(rows=np.arange(3, 3 + n), x_adv=rng.normal(size=(n, 4)).astype(np.float32),
                       eval_weights=rng.random(n), event=np.arange(n, dtype=np.uint64) * 7, regions=_regions(n))
    a.save(tmp_path / "attacked.npz")
    b = AttackedSample.load(tmp_path / "attacked.npz")
    for key in ("rows", "x_adv", "eval_weights", "event"):
        assert np.array_equal(getattr(a, key), getattr(b, key)) and getattr(a, key).dtype == getattr(b, key).dtype
    assert b.regions.keys() == a.regions.keys()
    assert all(np.array_equal(a.regions[r], b.regions[r]) for r in a.regions)
    assert [p.name for p in tmp_path.iterdir()] == ["attacked.npz"]


def test_attacked_outputs_round_trip_and_events(tmp_path):
    n = 20
    a = AttackedOutputs(rows=np.arange(n), nominal=np.linspace(0, 1, n, dtype=np.float32),
                        attacked=np.linspace(0.1, 0.9, n, dtype=np.float32), eval_weights=np.full(n, 2.0),
                        regions=_regions(n))
    a.save(tmp_path / "out.npz")
    b = AttackedOutputs.load(tmp_path / "out.npz")
    ev = b.events()
    assert np.array_equal(ev.rows, a.rows) and np.array_equal(ev.attacked_outputs, a.attacked)
    assert np.array_equal(ev.eval_weights, a.eval_weights) and set(ev.regions_after) == {"signal", "control"}


def test_old_and_broken_files_are_refused(tmp_path):
    np.savez(tmp_path / "old.npz", rows=np.arange(3), nominal=np.zeros(3), attacked=np.zeros(3))
    with pytest.raises(AuditError, match="no region membership"):
        AttackedOutputs.load(tmp_path / "old.npz")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(AuditError, match="cannot read the attacked events"):
        AttackedSample.load(tmp_path / "bad.npz")
