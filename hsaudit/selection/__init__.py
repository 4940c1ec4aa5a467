"""coffea event selection of the mu + tau_h H -> tau tau analysis with systematic shifts.

Modules: ``objects`` (reading NanoAOD collections, object selection), ``shifts`` (object-level
shifts, MET propagation, weight variations), ``features`` (the feature registry), ``processor``
(the coffea processor, all variants in one pass), ``run`` (entry points and executors).
"""

from hsaudit.selection.features import FEATURE_KINDS, FEATURES, resolve_features
from hsaudit.selection.processor import SelectionProcessor
from hsaudit.selection.run import normalise_weights, plan_chunks, require_events, select_chunk, select_files

__all__ = [
    "FEATURE_KINDS", "FEATURES", "resolve_features",
    "SelectionProcessor", "normalise_weights", "plan_chunks", "require_events", "select_chunk", "select_files",
]
