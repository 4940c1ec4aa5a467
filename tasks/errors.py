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


_MARKER = "analysis.errors.AuditError: "


class CleanAuditErrors(logging.Filter):
    """luigi reports failures either with exc_info or with the traceback already formatted
    into the message text; both forms are cut down to the first line plus the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, AuditError):
            self._shorten(record, record.getMessage(), str(exc))
        elif isinstance(record.msg, str) and _MARKER in (text := record.getMessage()):
            self._shorten(record, text, text.split(_MARKER, 1)[1].strip())
        return True

    @staticmethod
    def _shorten(record: logging.LogRecord, text: str, error: str) -> None:
        first = text.splitlines()[0].rstrip(":") if text else ""
        record.msg = f"{first}\nerror: {error}" if first else f"error: {error}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None


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
