"""The MGE table users hold: a Nuker profile as 64 Gaussians in jampy's column order.

``nuker_to_mge`` turns the five Nuker parameters (seed paper eq. 2) into an :class:`MGE`
whose ``surf_pc, sigma_arcsec, qobs`` are exactly the first three arguments of
``jampy.mge.vcirc`` (peak surface densities [Msun/pc^2], widths [arcsec], axis ratios).

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import dataclasses
import json
import math

import numpy as np
import torch

from . import __version__
from ._files import atomic_write
from .basis import FIT_R_MAX_PC, FIT_R_MIN_PC, SIGMA_GRID_PC, pc_per_arcsec
from .backends import REGISTRY, get_backend
from .constants import INC_RANGE_DEG, INC_RULE
from .nuker import ALPHA_RANGE, BETA_MINUS_GAMMA_RANGE, GAMMA_RANGE, check_nuker_params, nuker_surface_density

#: Break radii [pc] the exact backend accepts: the fit range 3 pc-3 kpc must see the break.
EXACT_R_B_PC_RANGE = REGISTRY["exact"].r_b_pc_range
_COLUMNS = ("surf_pc", "sigma_arcsec", "qobs")


@dataclasses.dataclass(frozen=True, repr=False)
class MGE:
    """A Multi-Gaussian Expansion of a stellar surface mass density.

    Attributes
    ----------
    surf_pc : (K,) float64, peak surface mass density of each Gaussian [Msun/pc^2].
    sigma_arcsec : (K,) float64, dispersion of each Gaussian along the major axis [arcsec].
    qobs : (K,) float64, observed axis ratio of each Gaussian.
    distance : float, distance [Mpc] that converts arcsec to pc.
    meta : dict, provenance (Nuker parameters, backend, package version).
    """

    surf_pc: np.ndarray
    sigma_arcsec: np.ndarray
    qobs: np.ndarray
    distance: float
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        arrays = [np.array(getattr(self, c), dtype=np.float64).reshape(-1) for c in _COLUMNS]
        if len({a.size for a in arrays}) != 1:
            raise ValueError("surf_pc, sigma_arcsec and qobs must have the same length, got "
                             + ", ".join(str(a.size) for a in arrays))
        for name, a in zip(_COLUMNS, arrays):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite")
            a.flags.writeable = False
            object.__setattr__(self, name, a)
        if np.any(arrays[1] <= 0):
            raise ValueError("sigma_arcsec must be > 0")
        if np.any((arrays[2] <= 0) | (arrays[2] > 1)):
            raise ValueError("qobs must be in (0, 1]")
        if not (np.isfinite(self.distance) and self.distance > 0):
            raise ValueError(f"distance = {self.distance!r} Mpc is invalid: it must be > 0")
        object.__setattr__(self, "distance", float(self.distance))

    def __len__(self):
        return self.surf_pc.size

    def __repr__(self):
        """One line: size, sigma range, axis ratio, distance, total mass and provenance (not the arrays)."""
        if not len(self):
            return f"MGE(0 Gaussians, distance={self.distance:g} Mpc)"
        q = np.unique(self.qobs)
        q_txt = f"{q[0]:g}" if q.size == 1 else f"{q.min():g}-{q.max():g}"
        neg = int(np.sum(self.surf_pc < 0))
        shape = ", ".join(f"{k}={self.meta[k]:g}" for k in ("alpha", "beta", "gamma") if k in self.meta)
        return (f"MGE({len(self)} Gaussians, sigma {self.sigma_arcsec.min():.4g}-{self.sigma_arcsec.max():.4g} "
                f"arcsec, qobs={q_txt}, distance={self.distance:g} Mpc, table mass "
                f"{float(self.projected_mass(np.inf)):.4g} Msun"
                + (f", {neg} negative amplitudes" if neg else "")
                + (f", {self.meta['backend']} backend" if "backend" in self.meta else "")
                + (f", Nuker {shape}" if shape else "") + ")")

    @property
    def pc_per_arcsec(self):
        """Parsec per arcsec at this MGE's distance."""
        return pc_per_arcsec(self.distance)

    @property
    def table(self):
        """(K, 3) array with columns surf_pc [Msun/pc^2], sigma_arcsec [arcsec], qobs."""
        return np.column_stack([self.surf_pc, self.sigma_arcsec, self.qobs])

    def surface_density(self, R_arcsec):
        """Surface mass density [Msun/pc^2] at elliptical radius ``R_arcsec`` (eq. 4).

        ``R = sqrt(x^2 + y^2 / qobs^2)``; for a Nuker MGE all Gaussians share one qobs, so this
        is the major-axis profile.
        """
        R = np.asarray(R_arcsec, dtype=float)
        g = np.exp(-0.5 * (R[..., None] / self.sigma_arcsec) ** 2)
        return g @ self.surf_pc

    def projected_mass(self, R_arcsec):
        """Projected stellar mass [Msun] inside the isophote of semi-major axis ``R_arcsec``.

        For each Gaussian: 2 pi surf_pc sigma_pc^2 qobs (1 - exp(-R^2 / 2 sigma^2)); with
        ``R_arcsec = inf`` it is the total mass.
        """
        R = np.asarray(R_arcsec, dtype=float)
        sigma_pc = self.sigma_arcsec * self.pc_per_arcsec
        frac = -np.expm1(-0.5 * (R[..., None] / self.sigma_arcsec) ** 2)
        return frac @ (2 * math.pi * self.surf_pc * sigma_pc**2 * self.qobs)

    def vcirc(self, rad_arcsec, inc_deg, mbh, soft=0.0):
        """Circular velocity [km/s] in the equatorial plane at ``rad_arcsec``, via jampy.

        Parameters
        ----------
        rad_arcsec : scalar or (R,) radii [arcsec], finite and >= 0; v = 0 at rad = 0 (jampy
            returns NaN there).
        inc_deg : inclination [deg], 0 < inc_deg <= 90 and > arccos(qobs) (deprojection).
        mbh : black-hole mass [Msun], finite and >= 0.
        soft : Plummer softening of the black hole [arcsec], finite and >= 0.

        Returns
        -------
        (R,) float64 array [km/s].
        """
        from .adapters.jampy_shim import jampy_vcirc
        rad = np.atleast_1d(np.asarray(rad_arcsec, dtype=float))
        _check_inclination(inc_deg, self.qobs)
        for name, value, unit in (("mbh", mbh, "Msun"), ("soft", soft, "arcsec")):
            v = np.asarray(value, dtype=float)
            if v.ndim or not np.isfinite(v) or v < 0:
                raise ValueError(f"{name} = {value!r} is invalid: it must be a finite number >= 0 [{unit}]")
        if rad.ndim != 1 or not np.all(np.isfinite(rad)) or np.any(rad < 0):
            raise ValueError(f"rad_arcsec = {rad_arcsec!r} is invalid: radii must be finite and >= 0 [arcsec]")
        v = np.zeros_like(rad)
        pos = rad > 0
        if pos.any():
            v[pos] = jampy_vcirc(self.surf_pc, self.sigma_arcsec, self.qobs, float(inc_deg), float(mbh),
                                 self.distance, rad[pos], soft=float(soft))
        return v

    def kinms_velocity(self, rad_arcsec, inc_deg, mbh, soft=0.0):
        """``(velRad, velProf)`` [arcsec, km/s] for ``KinMS(...).model_cube(velRad=..., velProf=...)``.

        ``rad_arcsec`` must be >= 0 and strictly increasing (KinMS's ``velRad``); the usual grid
        starting at 0 gives ``velProf[0] = 0``. Other arguments as :meth:`vcirc`.
        """
        velRad = np.atleast_1d(np.asarray(rad_arcsec, dtype=float)).copy()
        if velRad.ndim != 1 or np.any(velRad < 0) or np.any(np.diff(velRad) <= 0):
            raise ValueError("rad_arcsec must be non-negative and strictly increasing for KinMS")
        return velRad, self.vcirc(velRad, inc_deg, mbh, soft=soft)

    def save(self, path):
        """Write a plain text table that ``numpy.loadtxt`` reads (columns surf_pc, sigma_arcsec, qobs)."""
        header = [
            "Nuker MGE written by nuker-mge-plugin " + __version__,
            "columns: surf_pc [Msun/pc^2, peak surface density]  sigma_arcsec [arcsec]  qobs",
            "distance_mpc: " + repr(self.distance),
            "meta: " + json.dumps(self.meta, sort_keys=True),
        ]

        def write(target):
            np.savetxt(target, self.table, fmt="%.17e", header="\n".join(header))

        if hasattr(path, "write"):  # an open file: the caller owns it
            write(path)
        else:  # a temporary file renamed onto ``path``: an interrupted save leaves no partial table
            atomic_write(path, write)

    @classmethod
    def load(cls, path):
        """Read a table written by :meth:`save`."""
        distance, meta = None, {}
        with open(path) as f:
            for line in f:
                if not line.startswith("#"):
                    break
                text = line[1:].strip()
                if text.startswith("distance_mpc:"):
                    distance = float(text.split(":", 1)[1])
                elif text.startswith("meta:"):
                    meta = json.loads(text.split(":", 1)[1])
        if distance is None:
            raise ValueError(f"{path}: no 'distance_mpc:' header line; not written by MGE.save")
        surf, sigma, q = np.loadtxt(path, ndmin=2).T
        return cls(surf, sigma, q, distance, meta)


def _check_inclination(inc_deg, qobs):
    inc = np.asarray(inc_deg, dtype=float)
    lo, hi = INC_RANGE_DEG
    if inc.ndim or not np.isfinite(inc) or not lo < inc <= hi:
        raise ValueError(f"inc_deg = {inc_deg!r} is invalid: it must be finite{INC_RULE}")
    inc_min = np.degrees(np.arccos(np.min(qobs)))
    if inc <= inc_min:
        raise ValueError(f"inc_deg = {float(inc):g} cannot deproject qobs = {np.min(qobs):g}: "
                         f"the inclination must exceed arccos(qobs) = {inc_min:.3f} deg")


def r_b_range_arcsec(distance, backend="exact"):
    """Break radii [arcsec] the given backend accepts at ``distance`` [Mpc]."""
    lo, hi = get_backend(backend).r_b_pc_range
    scale = pc_per_arcsec(distance)
    return lo / scale, hi / scale


def nuker_to_mge(*, sigma_b, r_b, alpha, beta, gamma, qobs, distance, backend="exact"):
    """Nuker profile (eq. 2) -> 64-Gaussian MGE on the fixed basis, ready for jampy and KinMS.

    Parameters
    ----------
    sigma_b : surface mass density at the break radius [Msun/pc^2], > 0.
    r_b : break radius [arcsec], > 0 (its value in pc must lie in the backend's range).
    alpha : sharpness of the break, > 0.   beta : outer slope, > gamma.   gamma : inner slope, in [0, 2).
    qobs : observed axis ratio, shared by all Gaussians, in (0, 1].
    distance : [Mpc], > 0.
    backend : "exact" (least-squares projection) or "nn" (neural emulator, Appendix-A box only).

    Returns an :class:`MGE` with float64 arrays of length 64.
    """
    params = dict(sigma_b=sigma_b, r_b=r_b, alpha=alpha, beta=beta, gamma=gamma, qobs=qobs, distance=distance)
    for name, value in params.items():
        params[name] = _real_scalar(name, value)
    sigma_b, r_b, alpha, beta, gamma, qobs, distance = params.values()
    be = get_backend(backend)
    if distance <= 0:
        raise ValueError(f"distance = {distance:g} Mpc is invalid: it must be > 0")
    check_nuker_params(sigma_b=sigma_b, r_b=r_b, alpha=alpha, beta=beta, gamma=gamma, qobs=qobs)
    r_b_pc = r_b * pc_per_arcsec(distance)
    lo, hi = r_b_range_arcsec(distance, backend)
    if not lo <= r_b <= hi:
        pc_lo, pc_hi = be.r_b_pc_range
        raise ValueError(f"r_b = {r_b:g} arcsec ({r_b_pc:.4g} pc at {distance:g} Mpc) is outside the "
                         f"{backend} backend's range {pc_lo:g}-{pc_hi:g} pc: at this distance r_b must be "
                         f"in [{lo:.4g}, {hi:.4g}] arcsec")
    amps = be.amplitudes(alpha, beta, gamma, r_b_pc).detach().cpu().numpy()[0]
    if not np.all(np.isfinite(amps)):
        raise ValueError(f"alpha = {alpha:g}, beta = {beta:g}, gamma = {gamma:g}, r_b = {r_b_pc:.4g} pc: this Nuker "
                         f"profile changes by more than float64 can hold over the fit range 3 pc-3.75 kpc, and the "
                         f"{backend} backend cannot represent it; use a less extreme beta or alpha")
    surf_pc = sigma_b * amps
    meta = dict(sigma_b=sigma_b, r_b_arcsec=r_b, r_b_pc=r_b_pc, alpha=alpha, beta=beta, gamma=gamma,
                backend=backend, version=__version__)
    return MGE(surf_pc, SIGMA_GRID_PC / pc_per_arcsec(distance), np.full(surf_pc.size, float(qobs)), distance, meta)


def _real_scalar(name, value):
    """A finite Python float from a real number, numpy scalar or 0-d array; TypeError/ValueError else."""
    if isinstance(value, (bool, np.bool_)) or isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.ndim != 0 or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}"
                        + (f" of shape {arr.shape}" if arr.ndim else ""))
    x = float(arr)
    if not math.isfinite(x):
        raise ValueError(f"{name} = {value!r} is invalid: it must be finite")
    return x


def profile_error(mge, *, n=256):
    """Max fractional error of ``mge`` against its Nuker over the fitted range 3 pc-3 kpc (M1)."""
    m = mge.meta
    R_pc = np.logspace(np.log10(FIT_R_MIN_PC), np.log10(FIT_R_MAX_PC), n)
    nuk = nuker_surface_density(R_pc, m["sigma_b"], m["r_b_pc"], m["alpha"], m["beta"], m["gamma"])
    return float(np.max(np.abs(mge.surface_density(R_pc / mge.pc_per_arcsec) / nuk - 1)))


__all__ = ["MGE", "nuker_to_mge", "profile_error", "r_b_range_arcsec",
           "ALPHA_RANGE", "GAMMA_RANGE", "BETA_MINUS_GAMMA_RANGE"]
