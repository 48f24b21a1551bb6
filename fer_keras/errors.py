"""The one exception type for problems a user can fix (bad input, wrong folder, unknown name).

The CLI prints a `UserError` as one line and exits non-zero; anything else is a bug and keeps
its traceback under `--debug`.
"""


class UserError(Exception):
    """Bad input: the message says what was wrong and what was received."""
