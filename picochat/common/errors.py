"""Errors a user can cause. The CLI prints them as one sentence and exits non-zero, no traceback."""


class UserError(Exception):
    """Something the user can fix (bad flag, missing artifact, corrupt file): say what and what to do."""

    exit_code = 2
