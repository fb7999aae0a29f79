"""The error of a bad configuration file (fit, survey or mock)."""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A bad configuration: one line naming the key (``section.key``) and what it expects."""
