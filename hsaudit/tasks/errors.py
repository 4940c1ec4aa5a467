"""Users see one clear line for mistakes they can fix, not a traceback.

``AuditError`` is raised for bad configs, missing branches, corrupt files and the like.
luigi logs failures with the full traceback; this filter shortens such records to the
task line plus the error message, and the excepthook does the same for errors raised
while the command line is parsed (e.g. an unknown --config).
"""

import errno
import logging
import re
import sys

from hsaudit.errors import AuditError

_installed = False


_MARKER = "hsaudit.errors.AuditError: "


class CleanAuditErrors(logging.Filter):
    """luigi reports failures either with exc_info or with the traceback already formatted
    into the message text; both forms are cut down to the first line plus the error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        user = user_message(exc) if exc is not None else None
        if user is not None:
            self._shorten(record, record.getMessage(), user)
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


def user_message(exc: BaseException) -> str | None:
    """The one line a user sees for an error they can fix, or None for a real bug."""
    if isinstance(exc, AuditError):
        return str(exc)
    try:
        from luigi.parameter import MissingParameterException, ParameterException
    except ImportError:  # pragma: no cover - luigi is a dependency
        return None
    if isinstance(exc, MissingParameterException):
        m = re.search(r"requires the '(\w+)' parameter", str(exc))
        name = m.group(1) if m else "?"
        if name == "version":
            return ("--version is missing: every output path carries a version; add e.g. --version v1 "
                    "(the same version again reuses finished outputs)")
        return f"--{name.replace('_', '-')} is missing: this task requires it"
    if isinstance(exc, ParameterException):
        return " ".join(str(exc).split())
    if isinstance(exc, (ValueError, TypeError)) and _raised_parsing_a_parameter(exc):
        # e.g. --branch ten: luigi's IntParameter.parse calls int("ten")
        return f"a command-line value has the wrong type ({exc}); see law run <Task> --help"
    if isinstance(exc, OSError) and exc.errno in _USER_ERRNOS:
        from hsaudit.tasks.base import _os_reason, data_path

        return f"{_os_reason(exc)}; check DATA_PATH={data_path()} (a writable folder with free space)"
    return None


def _raised_parsing_a_parameter(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name == "parse" and code.co_filename.replace("\\", "/").endswith("luigi/parameter.py"):
            return True
        tb = tb.tb_next
    return False


# file-system conditions a user fixes (permissions, full disk, read-only, wrong kind of path)
_USER_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT,
                errno.ENOTDIR, errno.EISDIR, errno.EEXIST}


def _excepthook(exc_type, exc, tb, _previous=sys.excepthook):
    text = user_message(exc)
    if text is not None:
        print(f"error: {text}", file=sys.stderr)
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
