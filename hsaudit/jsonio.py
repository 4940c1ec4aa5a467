"""numpy (and torch) values to plain JSON-serialisable Python.

The audit's JSON outputs (task results, the model's info file, summary.json) hold nested
dicts and lists of numbers that are often numpy scalars or arrays. :func:`to_json` turns
such a structure into dicts, lists, str, int, float, bool and None; :func:`json_default` is
the same conversion for ``json.dumps(..., default=json_default)``.

Conventions, the same in every output:

- arrays and tensors become (nested) lists, numpy scalars the Python number they hold;
- tuples become lists, ``pathlib`` paths their string;
- mapping keys become strings the way ``json`` writes them (``1`` -> ``"1"``,
  ``True`` -> ``"true"``, ``None`` -> ``"null"``), numpy keys their value's string;
- NaN and inf are kept (``nonfinite="keep"``; ``json`` writes ``NaN`` / ``Infinity``) or
  become None (``nonfinite="null"``, strict JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath

import numpy as np

NONFINITE = ("keep", "null")


def _key(k):
    if isinstance(k, str):
        return k
    if isinstance(k, (bool, np.bool_)):
        return "true" if k else "false"
    if k is None:
        return "null"
    if isinstance(k, np.generic):
        k = k.item()
    if isinstance(k, float):
        return float.__repr__(k) if math.isfinite(k) else ("NaN" if k != k else ("Infinity" if k > 0 else "-Infinity"))
    return str(k)


def to_json(obj, *, nonfinite: str = "keep"):
    """``obj`` with every numpy / torch value converted (see the module doc)."""
    if nonfinite not in NONFINITE:
        raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
    return _convert(obj, nonfinite == "null")


def _convert(obj, null_nonfinite: bool):
    if isinstance(obj, Mapping):
        return {_key(k): _convert(v, null_nonfinite) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_convert(v, null_nonfinite) for v in obj]
    if isinstance(obj, (str, bytes)) or obj is None:
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.generic):
        obj = obj.item()
    elif hasattr(obj, "tolist"):  # numpy arrays, torch tensors
        return _convert(obj.tolist(), null_nonfinite)
    if null_nonfinite and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_default(obj):
    """``default=`` hook of ``json.dumps`` for numpy scalars and arrays, torch tensors and
    paths; anything else raises TypeError (as ``json`` does)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot serialise {type(obj).__name__} as JSON")


__all__ = ["to_json", "json_default", "NONFINITE"]
