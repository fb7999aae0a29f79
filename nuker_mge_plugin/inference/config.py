"""Moved to :mod:`nuker_mge_plugin.pipeline.config`; this name stays so that existing imports keep working.

It is the same module object (``sys.modules`` alias), so attributes set here are set there.
"""

import importlib
import sys

sys.modules[__name__] = importlib.import_module("nuker_mge_plugin.pipeline.config")
