"""The base of every error a user can cause with a bad file, folder, option or value.

Each module defines its own errors as subclasses of `Human3rError`; the CLI prints any of them as one line
(exit code 2). This module imports nothing, so any layer may use it.
"""


class Human3rError(ValueError):
    """A bad input (file, folder, option or value) or an unusable output path; the message names it."""
