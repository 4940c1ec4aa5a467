"""Counter-based hashing of 64-bit keys: the SplitMix64 finaliser.

Per-event random numbers that do not depend on which other events are present or on their
order (bootstrap multipliers, attack starting points, train/test splits) come from hashing
an event key together with a seed. :func:`splitmix64` is the finaliser of Steele, Lea and
Flood's SplitMix64 generator ("Fast splittable pseudorandom number generators", OOPSLA
2014): a bijection of uint64 values whose output bits all depend on all input bits.
"""

from __future__ import annotations

import numpy as np

GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x):
    """SplitMix64 finaliser of uint64 values (an array or a ``np.uint64`` scalar), with
    wrapping uint64 arithmetic. Other dtypes are a TypeError: mixed with a signed integer,
    numpy would silently compute in float64."""
    if getattr(x, "dtype", None) != np.uint64:
        raise TypeError(f"splitmix64 needs uint64 values, got {getattr(x, 'dtype', type(x).__name__)}")
    with np.errstate(over="ignore"):
        z = x + GOLDEN_GAMMA
        z = (z ^ (z >> np.uint64(30))) * MIX_1
        z = (z ^ (z >> np.uint64(27))) * MIX_2
        return z ^ (z >> np.uint64(31))


__all__ = ["splitmix64", "GOLDEN_GAMMA", "MIX_1", "MIX_2"]
