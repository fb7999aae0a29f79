"""One object owns the sky grid's coordinates, and one the matching uv grid (cf. MPoL's GridCoords).

Every convention about where a pixel or a uv cell sits is written here once; the gas cube, the
visibility model, the gridder, the direct Fourier sum and the mock generator all take a
:class:`SkyGrid` (or its :class:`UVGrid`) instead of re-deriving it.

Sky (KinMS's layout, measured on KinMS 3.0.14; docs/conventions.rst)
-------------------------------------------------------------------
* Arrays are ``(x, y)`` = ``(n_x, n_y)``; pixel ``(ix, iy)`` is centred at the offset
  ``x = (ix - n_x/2) cell``, ``y = (iy - n_y/2) cell`` [arcsec] from the reference (phase centre):
  for even sizes the reference is the centre of pixel ``n//2``; for odd sizes it lies half a pixel
  before it (``half_pixel`` = 0.5), which the Fourier transform undoes with an explicit ramp.
* Increasing ``ix`` points **West** (KinMS's FITS header has ``CDELT1 < 0``), increasing ``iy``
  **North**. Direction cosines: ``l = -x`` (East), ``m = y`` (North), in radians.

uv (radio convention, Thompson, Moran & Swenson eq. 3.7)
-------------------------------------------------------
* ``V(u, v) = sum A(l, m) I(l, m) exp(-2 pi i (u l + v m))``, u, v in wavelengths.
* ``n_u = n_x`` cells along u, ``n_v = n_y`` along v, spacing ``du = 1 / (n_x dl)``; cell
  ``(ku, kv)`` is centred at ``u = (ku - n_u//2) du``, ``v = (kv - n_v//2) dv`` (``fftshift`` order:
  zero spacing at cell ``(n_u//2, n_v//2)``).
"""

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..constants import ARCSEC_RAD, fwhm_to_sigma

__all__ = ["SkyGrid", "UVGrid"]


def _check_size(name, n):
    if isinstance(n, bool) or int(n) != n or n < 2:
        raise ValueError(f"{name} = {n!r} is invalid: it must be an integer >= 2 [pixels]")
    return int(n)


def _check_cell(cell_arcsec):
    if not (np.isfinite(cell_arcsec) and cell_arcsec > 0):
        raise ValueError(f"cell_arcsec = {cell_arcsec!r} is invalid: it must be finite and > 0 [arcsec]")
    return float(cell_arcsec)


@dataclass(frozen=True)
class UVGrid:
    """Regular uv grid of ``nu x nv`` cells of ``du x dv`` wavelengths; zero spacing at (nu//2, nv//2)."""

    nu: int
    nv: int
    du: float
    dv: float

    @classmethod
    def from_image(cls, x_size, y_size, cellSize):
        """The grid matching an image of ``x_size x y_size`` pixels of ``cellSize`` [arcsec]."""
        return SkyGrid(x_size, y_size, cellSize).uv

    @property
    def u(self):
        """Cell-centre u [wavelengths], (nu,)."""
        return (np.arange(self.nu) - self.nu // 2) * self.du

    @property
    def v(self):
        """Cell-centre v [wavelengths], (nv,)."""
        return (np.arange(self.nv) - self.nv // 2) * self.dv

    @property
    def shape(self):
        return (self.nu, self.nv)

    def half_plane_mask(self):
        """Cells that carry independent information for a real sky, (nu, nv) bool.

        A real sky has V(-u, -v) = conj V(u, v): we keep u > 0, plus the u = 0 column with v > 0,
        and drop the zero-spacing cell (never measured; its conjugate-paired estimate has no
        imaginary information) and the unpaired Nyquist column/row of even sizes.
        """
        ku = np.arange(self.nu)[:, None] - self.nu // 2
        kv = np.arange(self.nv)[None, :] - self.nv // 2
        m = (ku > 0) | ((ku == 0) & (kv > 0))
        if self.nv % 2 == 0:
            m &= kv > -(self.nv // 2)  # the -nv/2 row has no conjugate partner on the grid
        return m


@dataclass(frozen=True)
class SkyGrid:
    """An ``n_x x n_y`` image of ``cell_arcsec`` pixels centred on the phase centre (module doc).

    Construct directly, or from KinMS's field sizes with :meth:`from_kinms`.
    """

    n_x: int
    n_y: int
    cell_arcsec: float

    def __post_init__(self):
        object.__setattr__(self, "n_x", _check_size("n_x", self.n_x))
        object.__setattr__(self, "n_y", _check_size("n_y", self.n_y))
        object.__setattr__(self, "cell_arcsec", _check_cell(self.cell_arcsec))

    @classmethod
    def from_kinms(cls, xs, ys, cellSize):
        """KinMS's field ``xs x ys`` [arcsec] in pixels of ``cellSize`` [arcsec]: ``n = round(xs / cellSize)``."""
        cell = _check_cell(cellSize)
        for name, val in (("xs", xs), ("ys", ys)):
            if not (np.isfinite(val) and val > 0):
                raise ValueError(f"{name} = {val!r} is invalid: it must be finite and > 0 [arcsec]")
        return cls(int(round(xs / cell)), int(round(ys / cell)), cell)

    # ---------------------------------------------------------------- sky coordinates
    @property
    def shape(self):
        return (self.n_x, self.n_y)

    @property
    def half_pixel(self):
        """Offset [pixels] of the reference from pixel ``n//2``'s centre along (x, y): 0 or 0.5."""
        return (self.n_x / 2.0 - self.n_x // 2, self.n_y / 2.0 - self.n_y // 2)

    @cached_property
    def x_arcsec(self):
        """Pixel-centre x offsets [arcsec] (+x = West), (n_x,) read-only."""
        return self._axis(self.n_x)

    @cached_property
    def y_arcsec(self):
        """Pixel-centre y offsets [arcsec] (+y = North), (n_y,) read-only."""
        return self._axis(self.n_y)

    def _axis(self, n):
        a = (np.arange(n) - n / 2.0) * self.cell_arcsec
        a.flags.writeable = False
        return a

    @property
    def l_rad(self):
        """Direction cosine l (East) of each x pixel [rad], (n_x,)."""
        return -self.x_arcsec * ARCSEC_RAD

    @property
    def m_rad(self):
        """Direction cosine m (North) of each y pixel [rad], (n_y,)."""
        return self.y_arcsec * ARCSEC_RAD

    def axes(self, dtype=torch.float64, device=None):
        """Pixel-centre (x, y) offsets [arcsec] as tensors, (n_x,) and (n_y,)."""
        # np.array copies: the cached axes are read-only, which torch warns about
        return (torch.as_tensor(np.array(self.x_arcsec), dtype=dtype, device=device),
                torch.as_tensor(np.array(self.y_arcsec), dtype=dtype, device=device))

    def subpixel_axes(self, nsub, dtype=torch.float64, device=None):
        """Midpoint-rule sub-pixel centres [arcsec], (nsub, n_x) and (nsub, n_y).

        Sub-pixel k of pixel i sits at ``(i - n/2 + (k + 0.5)/nsub - 0.5) cell``. The sub-pixel
        index leads so that summing sub-pixels into pixels adds contiguous blocks.
        """
        k = (torch.arange(nsub, dtype=dtype, device=device).reshape(nsub, 1) + 0.5) / nsub - 0.5
        x, y = self.axes(dtype, device)
        return (x + k * self.cell_arcsec, y + k * self.cell_arcsec)

    def pixel_of(self, x_arcsec, y_arcsec):
        """(ix, iy) of the pixels holding sky offsets [arcsec] (nearest centre; may lie off the grid)."""
        return (np.round(np.asarray(x_arcsec) / self.cell_arcsec + self.n_x / 2.0).astype(np.int64),
                np.round(np.asarray(y_arcsec) / self.cell_arcsec + self.n_y / 2.0).astype(np.int64))

    def primary_beam(self, fwhm_arcsec, dtype=torch.float64, device=None):
        """Gaussian primary beam (unit peak) centred on the phase centre.

        fwhm_arcsec [arcsec]: scalar -> (n_x, n_y); (n_chan,) -> (n_x, n_y, n_chan).
        """
        f = torch.as_tensor(np.asarray(fwhm_arcsec, dtype=float), dtype=dtype, device=device)
        if f.ndim > 1 or not bool(torch.isfinite(f).all() & (f > 0).all()):
            raise ValueError(f"fwhm_arcsec = {fwhm_arcsec!r} is invalid: the primary-beam FWHM must be a "
                             "finite scalar or (n_chan,) array > 0 [arcsec]")
        x, y = self.axes(dtype, device)
        r2 = x[:, None] ** 2 + y[None, :] ** 2
        s = fwhm_to_sigma(f)
        if f.ndim == 0:
            return torch.exp(-0.5 * r2 / s**2)
        return torch.exp(-0.5 * r2[..., None] / s**2)

    # ---------------------------------------------------------------- uv coordinates
    @cached_property
    def uv(self):
        """The matching :class:`UVGrid`: du = 1 / (n_x cell), dv = 1 / (n_y cell) [wavelengths]."""
        d = self.cell_arcsec * ARCSEC_RAD
        return UVGrid(self.n_x, self.n_y, 1.0 / (self.n_x * d), 1.0 / (self.n_y * d))

    def ramps(self, dtype=torch.float64, device=None):
        """Half-pixel phase ramps along u and v, (n_u,) and (n_v,) complex, or None for even sizes.

        For odd n the reference sits half a pixel before pixel n//2, which the FFT takes as origin:
        multiplying the FFT by these moves the origin onto the reference (the l axis runs against x,
        hence the opposite signs).
        """
        out = []
        for n, sign, half in ((self.n_x, -1.0, self.half_pixel[0]), (self.n_y, 1.0, self.half_pixel[1])):
            if half == 0:
                out.append(None)
                continue
            k = torch.arange(n, dtype=dtype, device=device) - n // 2
            ph = sign * 2.0 * math.pi * k * half / n
            out.append(torch.polar(torch.ones_like(ph), ph))
        return tuple(out)
