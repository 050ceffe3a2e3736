"""User-facing errors.

A ``UserError`` is something the user can fix (a wrong path, a bad config key, a corrupt file). The CLI
prints its message on one line and exits non-zero, without a traceback; anything else is a bug and keeps
its traceback.
"""


class UserError(Exception):
    """An error caused by input the user controls; its message says what is wrong and what to do."""

    exit_code = 2
