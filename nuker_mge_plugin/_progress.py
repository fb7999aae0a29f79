"""Progress bars that stay out of log files.

A tqdm bar redraws itself with carriage returns; on a terminal that is one line updating in
place, but in a file or a pipe (a batch job's log, a survey worker's output) every frame stays,
and a long run's log fills with them. :func:`progress_bar` returns the same
``tqdm.auto.tqdm`` bar, disabled when its stream is not a terminal, and redrawn at most every
0.5 s.

The environment variable ``NUKER_MGE_PROGRESS`` overrides the terminal test: ``1`` shows the bars
whatever the stream, ``0`` hides them everywhere. A caller's own ``disable=True`` (a
``--no-progress`` option) always wins. In a Jupyter notebook, where ``tqdm.auto`` draws a widget
rather than writing to the stream, the terminal test does not apply.
"""

import os
import sys

from tqdm.auto import tqdm

#: The environment variable that forces the bars on (``1``) or off (``0``).
ENV_VAR = "NUKER_MGE_PROGRESS"
#: Seconds between two redraws, unless the caller passes its own ``mininterval``.
MININTERVAL = 0.5

__all__ = ["ENV_VAR", "MININTERVAL", "progress_bar", "progress_enabled"]


def _is_terminal(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


def _draws_a_widget():
    """True when ``tqdm.auto`` picked the notebook bar, which does not write to a stream."""
    return any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__)


def progress_enabled(stream=None):
    """Whether a bar on ``stream`` (default ``sys.stderr``) should be shown.

    ``NUKER_MGE_PROGRESS=1`` -> True, ``NUKER_MGE_PROGRESS=0`` -> False; otherwise True only for a
    terminal (``stream.isatty()``), or for the notebook widget when no stream is given.
    """
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced == "1":
        return True
    if forced == "0":
        return False
    if stream is None:
        if _draws_a_widget():
            return True
        stream = sys.stderr
    return _is_terminal(stream)


def progress_bar(iterable=None, **tqdm_kwargs):
    """A ``tqdm.auto.tqdm`` bar that is shown only where it belongs (see the module docstring).

    Parameters
    ----------
    iterable : iterable, optional
        What to wrap, as tqdm's first argument (``progress_bar(range(n), desc=...)``).
    **tqdm_kwargs
        Passed to ``tqdm.auto.tqdm`` (``total``, ``desc``, ``file``, ``disable``, ...). ``file``
        (default ``sys.stderr``) is the stream tested; ``disable=True`` keeps the bar off;
        ``mininterval`` defaults to :data:`MININTERVAL`.

    Returns
    -------
    tqdm.auto.tqdm
        Use it as any tqdm bar (``update``, ``set_postfix``, ``close``, or as a context manager);
        a disabled bar accepts the same calls and writes nothing.
    """
    stream = tqdm_kwargs.get("file")
    show = progress_enabled(stream)
    tqdm_kwargs["disable"] = bool(tqdm_kwargs.get("disable", False)) or not show
    tqdm_kwargs.setdefault("mininterval", MININTERVAL)
    return tqdm(iterable, **tqdm_kwargs)
