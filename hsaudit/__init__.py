"""Hidden-systematics audit: the science library (no law/luigi imports here).

Each module is usable on its own: numpy / awkward / torch in, numpy / files out.
"""

__version__ = "0.1.0"
