"""A kinms_fitter velocity profile whose stellar mass is a Nuker profile (seed paper Table 1).

Use it like kinms_fitter's own ``velocity_profs.mge_vcirc``::

    from nuker_mge_plugin.adapters.kinms_fitter import nuker_vcirc
    fit.vel_profile = [nuker_vcirc(distance=11.4, guesses=[...], minimums=[...], maximums=[...])]

Free parameters, in order (Table 1 names): ``intensity_rb`` = log10 Sigma_b [Msun/pc^2],
``break_r`` [arcsec], ``alpha``, ``gamma_minus_beta`` (< 0), ``gamma``, ``qintr`` (intrinsic axis
ratio, so every inclination deprojects) and ``logMBH`` [log10 Msun].

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import numpy as np

from ..mge import nuker_to_mge

LABELS = ["intensity_rb", "break_r", "alpha", "gamma_minus_beta", "gamma", "qintr", "logMBH"]
UNITS = ["log10(Msun/pc^2)", "arcsec", "", "", "", "", "log_Msun"]
#: Table 1 bounds of the seed paper, usable as defaults.
TABLE1_MIN = [1.0, 0.41, 0.1, -3.0, 0.001, 0.1, 6.0]
TABLE1_MAX = [5.0, 5.0, 10.0, -0.3, 1.2, 1.0, 9.79934]


def qobs_from_qintr(qintr, inc_deg):
    """Observed axis ratio of an oblate spheroid of intrinsic ratio ``qintr`` seen at ``inc_deg``."""
    inc = np.radians(inc_deg)
    return np.sqrt(qintr**2 * np.sin(inc) ** 2 + np.cos(inc) ** 2)


class nuker_vcirc:  # noqa: N801 -- kinms_fitter names its profiles in lower case
    """Circular velocity [km/s] of a Nuker stellar mass (via its 64-Gaussian MGE and jampy) plus a BH.

    Parameters
    ----------
    distance : galaxy distance [Mpc].
    guesses, minimums, maximums : 7 values each, in the order of ``LABELS``.
    priors, precisions, fixed : as in kinms_fitter (optional).
    backend : "exact" or "nn" Nuker -> MGE backend.
    """

    def __init__(self, distance, guesses, minimums=TABLE1_MIN, maximums=TABLE1_MAX, priors=None,
                 precisions=None, fixed=None, backend="exact"):
        self.distance = float(distance)
        self.backend = backend
        self.freeparams = len(LABELS)
        self.labels = np.array(LABELS)
        self.units = np.array(UNITS)
        self.operation = "quad"
        self.guess = np.array(guesses, dtype=float)
        self.min = np.array(minimums, dtype=float)
        self.max = np.array(maximums, dtype=float)
        for name, arr in (("guesses", self.guess), ("minimums", self.min), ("maximums", self.max)):
            if arr.shape != (self.freeparams,):
                raise ValueError(f"{name} must have {self.freeparams} values ({', '.join(LABELS)}), got {arr.size}")
        if np.any(self.min > self.max):
            raise ValueError("minimums must not exceed maximums")
        if self.max[3] >= 0:
            raise ValueError("gamma_minus_beta must stay < 0 (beta > gamma): its maximum must be negative")
        self.fixed = np.resize(False, self.freeparams) if fixed is None else np.asarray(fixed)
        self.priors = np.resize(None, self.freeparams) if priors is None else np.asarray(priors)
        self.precisions = (self.max - self.min) / 10.0 if precisions is None else np.asarray(precisions)

    def __repr__(self):
        return f"{self.__class__.__name__}(distance={self.distance} Mpc, backend={self.backend!r}, labels={LABELS})"

    def mge(self, args, inc_deg):
        """The MGE (see :func:`nuker_to_mge`) for parameter vector ``args`` at ``inc_deg``."""
        log_sb, r_b, alpha, g_minus_b, gamma, qintr, _ = np.asarray(args, dtype=float)
        return nuker_to_mge(sigma_b=10**log_sb, r_b=r_b, alpha=alpha, beta=gamma - g_minus_b, gamma=gamma,
                            qobs=float(qobs_from_qintr(qintr, inc_deg)), distance=self.distance,
                            backend=self.backend)

    def __call__(self, x, args, **kwargs):
        """v_c [km/s] at radii ``x`` [arcsec]; kinms_fitter passes ``inc=`` [deg]."""
        inc = float(np.atleast_1d(kwargs.get("inc", 90.0))[0])
        return self.mge(args, inc).vcirc(np.asarray(x, dtype=float), inc, 10 ** float(args[6]))
