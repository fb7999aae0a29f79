"""The one place that finds jampy's MGE circular-velocity function, whatever jampy is installed.

jampy >= 7.2 exposes ``jampy.mge.vcirc``; older releases ship ``jampy.mge_vcirc.mge_vcirc``.
Both take ``(surf_pc, sigma_arcsec, qobs, inc_deg, mbh, distance, rad, soft=0.)`` and return km/s.
"""

import functools


@functools.lru_cache(maxsize=None)
def jampy_vcirc_function():
    """Return jampy's ``vcirc(surf_pc, sigma_arcsec, qobs, inc_deg, mbh, distance, rad, soft=0.)``."""
    try:
        from jampy.mge import vcirc
        return vcirc
    except ImportError:
        pass
    try:
        from jampy.mge_vcirc import mge_vcirc
        return mge_vcirc
    except ImportError as err:
        raise ImportError("jampy's MGE circular velocity was not found (tried jampy.mge.vcirc and "
                          "jampy.mge_vcirc.mge_vcirc); install jampy>=7 ('pip install \"jampy>=7,<9\"' "
                          "on Python < 3.12)") from err


def jampy_vcirc(surf_pc, sigma_arcsec, qobs, inc_deg, mbh, distance, rad, soft=0.0):
    """jampy's circular velocity [km/s] of an MGE plus black hole; arguments as jampy's."""
    return jampy_vcirc_function()(surf_pc, sigma_arcsec, qobs, inc_deg, mbh, distance, rad, soft=soft)
