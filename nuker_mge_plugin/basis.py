"""The fixed Gaussian basis of the Nuker MGE and unit conversions (seed paper, Appendix B).

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import numpy as np

N_GAUSS = 64
SIGMA_MIN_PC = 1.0
SIGMA_MAX_PC = 1.0e4

#: Widths [pc] of the 64 Gaussians, log-uniform from 1 pc to 10 kpc (Appendix B).
SIGMA_GRID_PC = np.logspace(np.log10(SIGMA_MIN_PC), np.log10(SIGMA_MAX_PC), N_GAUSS)
SIGMA_GRID_PC.flags.writeable = False

#: Radius range [pc] over which a Nuker MGE reproduces the Nuker profile (docs/metrics.rst M1).
FIT_R_MIN_PC = 3.0
FIT_R_MAX_PC = 3000.0

#: Radius inside which the projected mass of the Nuker is conserved (docs/metrics.rst M1b).
MASS_R0_PC = 3.0


def pc_per_arcsec(distance_mpc):
    """Parsec per arcsec at ``distance_mpc`` [Mpc]; jampy's constant ``distance * pi / 0.648``."""
    return distance_mpc * np.pi / 0.648


def metric_radii_pc(n=256):
    """The M1 evaluation radii: ``n`` log-spaced values in [3 pc, 3 kpc]."""
    return np.logspace(np.log10(FIT_R_MIN_PC), np.log10(FIT_R_MAX_PC), n)
