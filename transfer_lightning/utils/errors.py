"""Errors a user can fix: reported as one sentence, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, files, environment) with a clear fix.

    The entry points print ``str(error)`` on one line and exit with status 2 instead of
    showing a traceback. Set ``HYDRA_FULL_ERROR=1`` to see the traceback anyway.
    """


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (cut to ``limit`` characters when given), or its class name when empty.
    A first line that only announces what follows (``Error(s) in loading state_dict for X:``) keeps the next one.

    The one way an underlying error is quoted inside our own one-line messages.
    """
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return text[:limit]
