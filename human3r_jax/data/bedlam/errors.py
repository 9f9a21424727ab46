"""The error every module of the BEDLAM pipeline raises for a bad dataset file or folder."""

from human3r_jax.errors import Human3rError


class DataError(Human3rError):
    """A dataset file or folder is missing or malformed; the message names it."""
