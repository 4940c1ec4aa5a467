"""Users see one clear line for mistakes they can fix, not a traceback.

``AuditError`` is raised for bad configs, missing branches, corrupt files and the like.
luigi logs failures with the full traceback; this filter shortens such records to the
task line plus the error message, and the excepthook does the same for errors raised
while the command line is parsed (e.g. an unknown --config).
"""

import logging
import sys

from analysis.errors import AuditError

_installed = False


class CleanAuditErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AuditError):
            first = record.getMessage().splitlines()[0] if record.getMessage() else ""
            record.msg = f"{first}\nerror: {exc}" if first else f"error: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    if issubclass(exc_type, AuditError):
        print(f"error: {exc}", file=sys.stderr)
        return
    _previous(exc_type, exc, tb)


def install_clean_error_reporting() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    flt = CleanAuditErrors()
    for name in ("luigi-interface", "luigi", "law"):
        logger = logging.getLogger(name)
        logger.addFilter(flt)
        for handler in logger.handlers:
            handler.addFilter(flt)
    # handlers attached later (luigi configures logging at start-up) get the filter too
    _orig_add = logging.Logger.addHandler

    def add_handler(self, handler, _orig=_orig_add):
        if self.name.split(".")[0] in ("luigi-interface", "luigi", "law", "root"):
            handler.addFilter(flt)
        return _orig(self, handler)

    logging.Logger.addHandler = add_handler
    logging.getLogger().addFilter(flt)
    for handler in logging.getLogger().handlers:
        handler.addFilter(flt)
    sys.excepthook = _excepthook
