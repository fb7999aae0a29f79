"""The reference of every key of the three TOML files the command line reads (fit, survey, mock),
generated from their declarations (:mod:`nuker_mge_plugin.schema`); the docs' configuration page
is made of it (``.. config-reference::`` in docs/conf.py)."""

from .mock import MockObservationTable
from .pipeline.config import GalaxyConfig
from .pipeline.config import config_reference as _fit_reference
from .schema import reference_rst
from .survey import SECTIONS as SURVEY_SECTIONS

__all__ = ["FILES", "config_reference"]

#: The files whose keys are documented.
FILES = ("fit", "survey", "mock")


def config_reference(which="fit"):
    """reST tables of every key of a ``"fit"``, ``"survey"`` or ``"mock"`` file."""
    if which == "fit":
        return _fit_reference()
    if which == "survey":
        return reference_rst(SURVEY_SECTIONS)
    if which == "mock":
        return reference_rst([("galaxy", GalaxyConfig, "The galaxy, as in a fit configuration."),
                              ("observation", MockObservationTable, "The simulated observation; [truth] holds "
                               "the 15 parameters of a fit's [priors], each a number.")])
    raise ValueError(f"which = {which!r} is invalid: choose one of {', '.join(map(repr, FILES))}")
