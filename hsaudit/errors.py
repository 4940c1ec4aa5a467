"""The one exception type for mistakes a user can fix.

Everything a user can cause (bad config, missing branch, corrupt file, NaN in inputs,
empty selection, unknown names) is raised as ``AuditError`` with a message that names
the thing to fix. The command-line layer prints the message and exits non-zero instead
of showing a traceback from deep inside a library.
"""


class AuditError(Exception):
    """A problem with the user's input, with a message that says what to fix."""
