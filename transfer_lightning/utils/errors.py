"""Errors a user can fix: reported as one sentence, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (config, files, environment) with a clear fix.

    The entry points print ``str(error)`` on one line and exit with status 2 instead of
    showing a traceback. Set ``HYDRA_FULL_ERROR=1`` to see the traceback anyway.
    """


def first_line(error: BaseException, limit: int | None = None) -> str:
    """The first line of ``error``'s message (cut to ``limit`` characters when given), or its class name when empty.

    The one way an underlying error is quoted inside our own one-line messages.
    """
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else type(error).__name__
