"""Physical constants and unit conversions used across the package (one place for each).

Values are the host packages' own where they have one (jampy's G), so that our numbers and
theirs agree to the last digit they can.
"""

import math

import numpy as np

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

#: Gas surface-brightness profiles of the disc model (model.forward.NukerDiscModel).
SURFACE_BRIGHTNESS = ("exponential", "ring")
#: How a FITS cube's velocity axis is read: as astropy reads the header, or as radio / optical velocities.
VELOCITY_CONVENTIONS = ("header", "radio", "optical")


def fwhm_to_sigma(fwhm):
    """Gaussian dispersion from its full width at half maximum (same unit)."""
    return fwhm / FWHM_PER_SIGMA


def _check_rest(rest_freq_hz):
    if not (np.isfinite(rest_freq_hz) and rest_freq_hz > 0):
        raise ValueError(f"rest_freq_hz = {rest_freq_hz!r} is invalid: it must be finite and > 0 [Hz]")
    return float(rest_freq_hz)


def radio_velocity_kms(freq_hz, rest_freq_hz):
    """Radio-definition velocity ``v = c (1 - f / f_rest)`` [km/s] of frequencies ``freq_hz`` [Hz].

    The one velocity convention of the package (KinMS's and CASA's ``VRAD``); its inverse is
    :func:`radio_frequency_hz`.
    """
    return C_KMS * (1.0 - np.asarray(freq_hz, dtype=np.float64) / _check_rest(rest_freq_hz))


def radio_frequency_hz(vel_kms, rest_freq_hz):
    """Frequency ``f = f_rest (1 - v / c)`` [Hz] of radio-definition velocities ``vel_kms`` [km/s]."""
    return _check_rest(rest_freq_hz) * (1.0 - np.asarray(vel_kms, dtype=np.float64) / C_KMS)


def optical_to_radio_kms(vopt_kms):
    """Radio-definition velocity [km/s] of optical-definition velocities ``c (f_rest / f - 1)`` [km/s]."""
    return C_KMS * (1.0 - 1.0 / (1.0 + np.asarray(vopt_kms, dtype=np.float64) / C_KMS))


__all__ = ["G_KMS2_PC_PER_MSUN", "ARCSEC_RAD", "C_M_S", "C_KMS", "FWHM_PER_SIGMA", "CO21_REST_HZ",
           "CO10_REST_HZ", "INC_RANGE_DEG", "INC_RULE", "SURFACE_BRIGHTNESS", "VELOCITY_CONVENTIONS",
           "fwhm_to_sigma", "radio_velocity_kms", "radio_frequency_hz", "optical_to_radio_kms"]
