"""Atomic file writes with ordinary permissions, and clean-up of what killed writers left.

``tempfile.mkstemp``/``mkdtemp`` create private files (0600) and folders (0700); an output
renamed into place from them would stay unreadable for the rest of a group sharing a
``DATA_PATH``. :func:`apply_umask` gives it the mode a plain ``open``/``mkdir`` would have;
:func:`write_atomically` writes a file through a temporary one next to it;
:func:`atomic_path` and :func:`atomic_directory` yield a temporary path (file or folder) for
writers that want a name (parquet, ROOT, npz, tar) and move it into place on success. These
are the only places that rename a temporary output into place.

Temporary names carry the writer's process id and a short hash of its host name
(:func:`temporary_name`: ``.tmp-<pid>-h<host hash>-<name>...``), so that
:func:`remove_stale_temporaries` can remove the leftovers of writers that were killed
(``kill -9``) once their process is gone, and never those of a live writer, even on a
``DATA_PATH`` shared by several machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from pathlib import Path

# legacy names (.tmp-<pid>-<name>) have no host: they are removed only when their pid is not
# running here and they have not been touched for this long
LEGACY_MIN_AGE_S = 3600.0
_TMP = re.compile(r"^\.tmp-(\d+)-(?:h([0-9a-f]{8})-)?")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path, directory: bool = False) -> None:
    """chmod ``path`` to 0666 (files) or 0777 (folders) minus the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def host_hash() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def temporary_name(name: str) -> str:
    """The name of this process's temporary for an output called ``name``."""
    return f".tmp-{os.getpid()}-h{host_hash()}-{name}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(folder) -> list[Path]:
    """Remove ``.tmp-<pid>-...`` files and folders in ``folder`` whose writer process is dead
    (same host; see module doc). Returns what was removed; never raises for a vanished entry."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    me, host = os.getpid(), host_hash()
    for entry in entries:
        m = _TMP.match(entry.name)
        if not m:
            continue
        pid, their_host = int(m.group(1)), m.group(2)
        if pid == me or (their_host is not None and their_host != host) or _pid_running(pid):
            continue
        if their_host is None:
            try:
                if time.time() - entry.lstat().st_mtime < LEGACY_MIN_AGE_S:
                    continue
            except OSError:
                continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def write_atomically(path, write) -> Path:
    """Call ``write(binary file handle)`` on a temporary file next to ``path`` and rename it
    into place; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temporary_name(path.name) + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        apply_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def move_directory_into_place(tmp, final, keep_existing: bool = True) -> bool:
    """Rename the finished folder ``tmp`` to ``final``. If ``final`` already exists (another
    run of the same task finished first: outputs are deterministic), keep that one and remove
    ``tmp`` (``keep_existing=False``: leave ``tmp`` for the caller). Returns True when
    ``tmp`` became ``final``."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        try:
            os.replace(tmp, final)
            return True
        except OSError:
            if not final.is_dir():  # not the race with a concurrent writer: a real error
                raise
    if keep_existing:
        shutil.rmtree(tmp, ignore_errors=True)
    return False


def unique_temporary(final, suffix: str = "") -> Path:
    """A temporary path next to ``final``, unique per call (two threads of one process
    writing the same output must not share one)."""
    final = Path(final)
    return final.with_name(f"{temporary_name(final.name)}.{uuid.uuid4().hex[:8]}{suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path, suffix: str = ""):
    """Yield a temporary path next to ``path`` for the caller to write a file or a folder
    to; on success it is renamed to ``path`` (a folder that a concurrent run completed first
    is kept, see :func:`move_directory_into_place`); on any error, or when nothing was
    written, ``path`` is untouched and the temporary is removed. ``suffix`` ends the
    temporary's name, for writers that choose the format by extension."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(final, suffix)
    try:
        yield tmp
        if tmp.is_dir():
            move_directory_into_place(tmp, final)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


@contextlib.contextmanager
def atomic_directory(path, existing: str = "keep"):
    """Yield a fresh temporary folder next to ``path`` (mode as from ``mkdir``); on success
    it becomes ``path``. When ``path`` already exists (a concurrent run finished first),
    ``existing="keep"`` keeps that folder and drops the new one (deterministic outputs),
    ``existing="replace_files"`` moves each new file into it, replacing files of the same
    name. On failure nothing is left at ``path`` and the temporary is removed."""
    if existing not in ("keep", "replace_files"):
        raise ValueError(f"existing must be 'keep' or 'replace_files', got {existing!r}")
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary(final)
    try:
        tmp.mkdir()
        apply_umask(tmp, directory=True)
        yield tmp
        if existing == "keep":
            move_directory_into_place(tmp, final)
        else:
            names = sorted(p.name for p in tmp.iterdir())
            if not move_directory_into_place(tmp, final, keep_existing=False):
                for name in names:
                    os.replace(tmp / name, final / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
