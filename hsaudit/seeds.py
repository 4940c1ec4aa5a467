"""Seeds derived from the configuration seed and names, so that every random stream is
reproducible and independent of the order in which tasks happen to run."""

import hashlib


def derive_seed(base_seed: int, *keys) -> int:
    """A 31-bit seed from a base seed and any number of keys (names, indices)."""
    text = "/".join([str(int(base_seed))] + [str(k) for k in keys])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF
