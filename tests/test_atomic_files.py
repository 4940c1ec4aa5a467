"""Atomic outputs: a finished write appears under its name in one rename; a failed one leaves
neither the output nor a temporary behind."""

import os

import pytest

from hsaudit.files import atomic_directory, atomic_path, write_atomically


def _entries(folder):
    return sorted(p.name for p in folder.iterdir())


def test_atomic_path_moves_a_finished_file_into_place(tmp_path):
    final = tmp_path / "sub" / "table.parquet"
    with atomic_path(final, suffix=".parquet") as tmp:
        assert tmp.parent == final.parent and tmp.name.endswith(".parquet") and tmp.name.startswith(".tmp-")
        tmp.write_text("data")
        assert not final.exists()
    assert final.read_text() == "data" and _entries(final.parent) == ["table.parquet"]


def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    final = tmp_path / "out.npz"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert final.read_text() == "old" and _entries(tmp_path) == ["out.npz"]


def test_atomic_path_with_nothing_written_is_an_error_and_leaves_no_output(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "x.json"):
            pass
    assert _entries(tmp_path) == []


def test_atomic_path_accepts_a_folder(tmp_path):
    final = tmp_path / "report"
    with atomic_path(final) as tmp:
        tmp.mkdir()
        (tmp / "a.txt").write_text("a")
    assert _entries(final) == ["a.txt"] and _entries(tmp_path) == ["report"]


def test_temporaries_are_unique_per_call(tmp_path):
    with atomic_path(tmp_path / "f") as a, atomic_path(tmp_path / "f") as b:
        assert a != b
        a.write_text("1")
        b.write_text("2")
    assert (tmp_path / "f").read_text() == "1"  # the writer that finished last (the outer one)
    assert _entries(tmp_path) == ["f"]


@pytest.mark.parametrize("existing, expected", [("keep", "first"), ("replace_files", "second")])
def test_atomic_directory_when_another_run_finished_first(tmp_path, existing, expected):
    final = tmp_path / "model"
    with atomic_directory(final, existing=existing) as tmp:
        (tmp / "w.pt").write_text("second")
        (tmp / "extra").write_text("x")
        final.mkdir()  # a concurrent run completes first
        (final / "w.pt").write_text("first")
    assert (final / "w.pt").read_text() == expected
    assert _entries(final) == (["w.pt"] if existing == "keep" else ["extra", "w.pt"])
    assert _entries(tmp_path) == ["model"]


def test_atomic_directory_mode_and_failure(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "d") as tmp:
            assert (tmp.stat().st_mode & 0o777) == 0o755
            (tmp / "f").write_text("1")
    finally:
        os.umask(mask)
    with pytest.raises(ValueError):
        with atomic_directory(tmp_path / "e") as tmp:
            raise ValueError("writer failed")
    assert _entries(tmp_path) == ["d"]
    with pytest.raises(ValueError, match="existing"):
        with atomic_directory(tmp_path / "g", existing="merge"):
            pass


def test_write_atomically_failure_keeps_the_old_file(tmp_path):
    final = tmp_path / "summary.json"
    write_atomically(final, lambda fh: fh.write(b"{}"))
    with pytest.raises(OSError):
        write_atomically(final, lambda fh: (fh.write(b"{partial"), (_ for _ in ()).throw(OSError("disk full"))))
    assert final.read_bytes() == b"{}" and _entries(tmp_path) == ["summary.json"]
