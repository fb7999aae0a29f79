"""Nuker stellar-mass profiles as analytically deprojectable Multi-Gaussian Expansions.

A plugin for jampy, KinMS, kinms_fitter and mgefit: describe the stars of a galaxy
by the five Nuker parameters and hand the host packages the MGE table they expect.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

__version__ = "0.1.0"

from .basis import SIGMA_GRID_PC, pc_per_arcsec  # noqa: E402
from .nuker import nuker_surface_density  # noqa: E402
from .mge import MGE, nuker_to_mge  # noqa: E402
from ._warnings import FitWarning  # noqa: E402

__all__ = ["MGE", "nuker_to_mge", "FitWarning", "nuker_surface_density", "SIGMA_GRID_PC", "pc_per_arcsec",
           "__version__"]
