"""Atomic file writes with ordinary permissions.

``tempfile.mkstemp``/``mkdtemp`` create private files (0600) and folders (0700); an output
renamed into place from them would stay unreadable for the rest of a group sharing a
``DATA_PATH``. :func:`apply_umask` gives it the mode a plain ``open``/``mkdir`` would have;
:func:`write_atomically` writes a file through a temporary one next to it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path, directory: bool = False) -> None:
    """chmod ``path`` to 0666 (files) or 0777 (folders) minus the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def write_atomically(path, write) -> Path:
    """Call ``write(binary file handle)`` on a temporary file next to ``path`` and rename it
    into place; on any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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
