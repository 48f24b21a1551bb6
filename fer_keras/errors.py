"""The one exception type for problems a user can fix (bad input, wrong folder, unknown name).

The CLI prints a `UserError` as one line and exits non-zero; anything else is a bug and keeps
its traceback under `--debug`.
"""


class UserError(Exception):
    """Bad input: the message says what was wrong and what was received."""


def first_line(error):
    """The first line of an exception's message (at most 300 characters), for a one-line UserError."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
