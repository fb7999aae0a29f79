"""Differentiable torch dynamics: MGE circular velocity, gas cube, visibilities."""

from .vcirc import G_KMS2_PC_PER_MSUN, vcirc, vcirc_qintr  # noqa: F401
from .cube import DiscParams, GasCube, model_cube  # noqa: F401,E402
from .coords import SkyGrid  # noqa: F401,E402
from .visibilities import GriddedModel, UVGrid, cube_to_vis, primary_beam  # noqa: F401,E402
from .gridder import GriddedVis, grid_visibilities  # noqa: F401,E402
