"""Errors a user can fix: reported as one sentence, without a traceback."""


class UserError(Exception):
    """A mistake in the user's input (config, files, environment) with a clear fix.

    The entry points print ``str(error)`` on one line and exit with status 2 instead of
    showing a traceback. Set ``HYDRA_FULL_ERROR=1`` to see the traceback anyway.
    """
