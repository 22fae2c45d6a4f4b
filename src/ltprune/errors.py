"""Errors a user can act on.

Every failure that comes from the user's input (a model, a data file, a checkpoint, a
hyperparameter) is raised as an ``LTPError`` subclass with a one-line message, so the CLI can
print it without a traceback and library users can catch one type.
"""


class LTPError(Exception):
    """Base class for errors caused by the user's input."""


class ConfigError(LTPError, ValueError):
    """A hyperparameter or LTP config value is invalid."""


class UnsupportedModelError(LTPError, TypeError):
    """The model's architecture has no ltprune adapter."""


class CheckpointError(LTPError, OSError):
    """A checkpoint is missing, corrupt or inconsistent."""


class DataError(LTPError, ValueError):
    """A data set or file cannot be used as asked (missing column, empty file, bad labels...)."""
