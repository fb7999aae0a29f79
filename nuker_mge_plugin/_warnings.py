"""The warning category of a fit's findings, so that Python callers can act on them.

A fit's ``warning:`` lines (sub-pixel sampling that biases the MAP, chains that have not converged,
divergent transitions) are logged for a person and kept in ``summary.json``; they are also issued
as :class:`FitWarning`, which a script or notebook can catch, filter or turn into errors::

    import warnings
    from nuker_mge_plugin import FitWarning
    warnings.simplefilter("error", FitWarning)   # an unconverged fit now raises

The command line logs the lines itself and silences the category, so that nothing prints twice.
"""

import warnings

__all__ = ["FitWarning", "log_warning", "silence_fit_warnings"]


class FitWarning(UserWarning):
    """A fit's result needs care before it is quoted (see ``summary["warnings"]``)."""


def log_warning(line, log=print, *, stacklevel=3):
    """Log ``line`` and, when it is a ``warning:`` line, also issue it as a :class:`FitWarning`."""
    log(line)
    if line.startswith("warning"):
        warnings.warn(line.removeprefix("warning:").strip(), FitWarning, stacklevel=stacklevel)


def silence_fit_warnings():
    """Ignore :class:`FitWarning` in this process: for callers that log the lines themselves (the
    command line, the survey's workers), so that each prints once."""
    warnings.filterwarnings("ignore", category=FitWarning)
