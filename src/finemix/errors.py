"""One error type for everything a user can get wrong.

The CLI prints ``FinemixError`` as a single line and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class FinemixError(Exception):
    """Bad input, bad option or an unusable checkpoint, explained in one line."""
