"""File-permission helper for atomic writes.

``tempfile.mkstemp``/``mkdtemp`` create private files (0600) and folders (0700); an output
renamed into place from them would stay unreadable for the rest of a group sharing a
``DATA_PATH``. :func:`apply_umask` gives it the mode a plain ``open``/``mkdir`` would have.
"""

from __future__ import annotations

import os


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path, directory: bool = False) -> None:
    """chmod ``path`` to 0666 (files) or 0777 (folders) minus the process umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())
