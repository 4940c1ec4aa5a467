"""Atomic file writes with ordinary permissions, and clean-up of what killed writers left.

``tempfile.mkstemp``/``mkdtemp`` create private files (0600) and folders (0700); an output
renamed into place from them would stay unreadable for the rest of a group sharing a
``DATA_PATH``. :func:`apply_umask` gives it the mode a plain ``open``/``mkdir`` would have;
:func:`write_atomically` writes a file through a temporary one next to it.

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


def move_directory_into_place(tmp, final) -> bool:
    """Rename the finished folder ``tmp`` to ``final``. If ``final`` already exists (another
    run of the same task finished first: outputs are deterministic), keep that one and remove
    ``tmp``. Returns True when ``tmp`` became ``final``."""
    tmp, final = Path(tmp), Path(final)
    if not final.exists():
        try:
            os.replace(tmp, final)
            return True
        except OSError:
            if not final.is_dir():  # not the race with a concurrent writer: a real error
                raise
    shutil.rmtree(tmp, ignore_errors=True)
    return False
