"""Exceptions a user can cause, with messages that name the file or key and the fix."""

__all__ = ["BrainpredError", "DataError", "ConfigError"]


class BrainpredError(Exception):
    """Base class of the errors brainpred raises for bad input or configuration."""


class DataError(BrainpredError):
    """A data file is missing, corrupt or inconsistent (the message names the file)."""


class ConfigError(BrainpredError):
    """A configuration value is invalid (the message names the key)."""
