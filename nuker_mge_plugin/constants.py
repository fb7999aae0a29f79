"""Physical constants and unit conversions used across the package (one place for each).

Values are the host packages' own where they have one (jampy's G), so that our numbers and
theirs agree to the last digit they can.
"""

import math

#: Gravitational constant [(km/s)^2 pc / Msun], jampy's value (6.674e-11 SI, CODATA 2018).
G_KMS2_PC_PER_MSUN = 0.004301

#: One arcsecond in radians.
ARCSEC_RAD = math.pi / (180.0 * 3600.0)

#: Speed of light [m/s] and [km/s] (exact, SI).
C_M_S = 299792458.0
C_KMS = C_M_S / 1e3

#: Gaussian FWHM / sigma = 2 sqrt(2 ln 2) ~ 2.3548.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

#: Rest frequency [Hz] of 12CO(2-1) and 12CO(1-0) (CDMS/Splatalogue).
CO21_REST_HZ = 230.538e9
CO10_REST_HZ = 115.2712018e9


#: Inclinations [deg] that deproject, one rule for every public function (0 = face-on has no
#: line-of-sight rotation and cannot be deprojected; 90 = edge-on; beyond 90 is the same disc seen
#: from the other side, which we ask users to fold back rather than guess their intent).
INC_RANGE_DEG = (0.0, 90.0)
INC_RULE = " and 0 < inc_deg <= 90 [deg] (90 = edge-on)"


def fwhm_to_sigma(fwhm):
    """Gaussian dispersion from its full width at half maximum (same unit)."""
    return fwhm / FWHM_PER_SIGMA


__all__ = ["G_KMS2_PC_PER_MSUN", "ARCSEC_RAD", "C_M_S", "C_KMS", "FWHM_PER_SIGMA", "CO21_REST_HZ",
           "CO10_REST_HZ", "INC_RANGE_DEG", "INC_RULE", "fwhm_to_sigma"]
