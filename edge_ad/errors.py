"""User-facing errors.

A ``UserError`` is something the user can fix (a wrong path, a bad config key, a corrupt file). The CLI
prints its message on one line and exits non-zero, without a traceback; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """An error caused by input the user controls; its message says what is wrong and what to do."""

    exit_code = 2


def make_dir(path: Path, what: str = "output folder") -> None:
    """``mkdir -p`` whose failures (a file in the way, no permission, a read-only disk) are the user's to fix."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"cannot make the {what} {path}: a file is in the way; choose another path") from None
    except OSError as e:
        raise UserError(f"cannot make the {what} {path}: {e.strerror or e}; choose another path") from None
