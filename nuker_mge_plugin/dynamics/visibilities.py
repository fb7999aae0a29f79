"""Model visibilities of a sky cube on the cells of a regular uv grid (differentiable, batched).

Conventions (stated once, tested against a direct Fourier sum in tests/test_visibilities.py):

* Sky cube in KinMS layout ``(..., x_size, y_size, n_chan)`` in **Jy/pixel** (e.g. ``model_cube(...,
  cleanOut=True)`` with ``intFlux``), *without* the image-plane (synthesised) beam: the interferometer
  applies its own sampling. Pixel ``(ix, iy)`` is centred at sky offset
  ``l = -(ix - x_size/2) cellSize``, ``m = (iy - y_size/2) cellSize`` [arcsec -> rad]: increasing x
  index points **West** (KinMS's FITS header has ``CDELT1 < 0``), so ``l`` (East) runs against the
  array's first axis -- the "mirrored sky" pitfall. ``m`` is North.
* Phase centre (and primary-beam pointing centre): the cube reference, i.e. the centre of pixel
  ``(x_size//2, y_size//2)`` for even sizes (where a KinMS disc with ``phaseCent=[0, 0]`` sits). For odd
  sizes it lies half a pixel before pixel ``n//2``; the half-pixel phase ramp is applied explicitly.
* Fourier sign (radio convention, Thompson, Moran & Swenson eq. 3.7):
  ``V(u, v) = sum_pixels A(l, m) I(l, m) exp(-2 pi i (u l + v m))`` [Jy], u, v in wavelengths.
  A point source of flux F at (l0, m0) has ``V = F exp(-2 pi i (u l0 + v m0))``.
* uv grid: ``nu = x_size`` cells along u, ``nv = y_size`` along v, spacing ``du = 1 / (x_size dl)``,
  ``dv = 1 / (y_size dm)`` [wavelengths] (dl = dm = cellSize in rad). Cell ``(ku, kv)`` is centred at
  ``u = (ku - nu//2) du``, ``v = (kv - nv//2) dv``: zero spacing at cell ``(nu//2, nv//2)``
  (``fftshift`` order). The FFT gives the exact Fourier sum at the cell centres (no interpolation).
* Output layout ``(..., n_chan, nu, nv)`` complex.

The model is exact at cell centres; gridded data (gridder.py) are window-weighted averages over a
cell, which differ from the centre value by the window's smoothing (an image-plane taper that is
negligible for a source much smaller than the field: the field should be several times the disc).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ARCSEC_RAD", "UVGrid", "primary_beam", "alma_pb_fwhm_arcsec", "cube_to_vis", "direct_ft"]

ARCSEC_RAD = math.pi / (180.0 * 3600.0)
C_M_S = 299792458.0


@dataclass(frozen=True)
class UVGrid:
    """Regular uv grid matching an image of ``nu x nv`` pixels of ``cellSize`` arcsec.

    nu, nv: cells; du, dv: spacing [wavelengths]; zero spacing at cell (nu//2, nv//2).
    """

    nu: int
    nv: int
    du: float
    dv: float

    @classmethod
    def from_image(cls, x_size, y_size, cellSize):
        """Grid for an image of x_size x y_size pixels of cellSize [arcsec]."""
        if int(x_size) != x_size or int(y_size) != y_size or x_size < 2 or y_size < 2:
            raise ValueError(f"image sizes must be integers >= 2, got {x_size}, {y_size}")
        if not np.isfinite(cellSize) or cellSize <= 0:
            raise ValueError(f"cellSize must be positive [arcsec], got {cellSize!r}")
        d = cellSize * ARCSEC_RAD
        return cls(int(x_size), int(y_size), 1.0 / (x_size * d), 1.0 / (y_size * d))

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


def alma_pb_fwhm_arcsec(freq_hz, dish_m=12.0):
    """ALMA 12-m primary-beam FWHM [arcsec] ~ 1.13 lambda / D (ALMA Technical Handbook)."""
    return 1.13 * (C_M_S / np.asarray(freq_hz, dtype=float)) / dish_m / ARCSEC_RAD


def primary_beam(x_size, y_size, cellSize, fwhm_arcsec, dtype=torch.float64, device=None):
    """Gaussian primary beam (unit peak) at the phase centre on the cube's pixels, (x_size, y_size).

    fwhm_arcsec [arcsec]: scalar, or (n_chan,) for a frequency-dependent beam -> (x, y, n_chan).
    """
    f = torch.as_tensor(np.asarray(fwhm_arcsec, dtype=float), dtype=dtype, device=device)
    if not bool((f > 0).all()):
        raise ValueError("primary-beam FWHM must be > 0 [arcsec]")
    x = (torch.arange(x_size, dtype=dtype, device=device) - x_size / 2.0) * cellSize
    y = (torch.arange(y_size, dtype=dtype, device=device) - y_size / 2.0) * cellSize
    r2 = x[:, None] ** 2 + y[None, :] ** 2
    s = f / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    if f.ndim == 0:
        return torch.exp(-0.5 * r2 / s**2)
    return torch.exp(-0.5 * r2[..., None] / s**2)


def _ramp(n, d_lambda, dtype, device, sign):
    """exp(sign * 2 pi i u_k * 0.5 * d) for odd n (pixel centres half a pixel off the FFT origin)."""
    k = torch.arange(n, dtype=dtype, device=device) - n // 2
    ph = sign * 2.0 * math.pi * k * (n / 2.0 - n // 2) / n
    return torch.polar(torch.ones_like(ph), ph)


def cube_to_vis(cube, cellSize, pb=None, uv_moments=None):
    """Model visibilities [Jy] on the UVGrid cells of a sky cube [Jy/pixel].

    cube: (..., x_size, y_size, n_chan) real tensor in KinMS layout (no image-plane beam);
    cellSize [arcsec]; pb: primary beam multiplying the sky, (x_size, y_size) or
    (x_size, y_size, n_chan), or None. Returns (..., n_chan, nu, nv) complex, with the grid
    ``UVGrid.from_image(x_size, y_size, cellSize)``. Differentiable; any device/dtype.

    uv_moments: optional (n_chan, nu, nv, 5) KB-weighted moments of the data's sample offsets
    from each cell centre (``GriddedVis.uv_moments``: du, dv [wavelengths], du^2, du dv, dv^2
    [wavelengths^2]); the model is then the same weighted average of V over the samples, to second
    order in the offsets: V + sum_i <d_i> dV/du_i + 1/2 sum_ij <d_i d_j> d2V/du_i du_j, with the
    derivatives from FFTs of (-2 pi i l)^k I (5 extra FFTs). NaN moments (masked cells) give NaN.
    """
    if cube.ndim < 3:
        raise ValueError(f"cube must be (..., x, y, chan), got shape {tuple(cube.shape)}")
    if not np.isfinite(cellSize) or cellSize <= 0:
        raise ValueError(f"cellSize must be positive [arcsec], got {cellSize!r}")
    X, Y = cube.shape[-3], cube.shape[-2]
    if pb is not None:
        if pb.shape not in ((X, Y), (X, Y, cube.shape[-1])):
            raise ValueError(f"primary beam shape {tuple(pb.shape)} does not match the cube {(X, Y)}")
        cube = cube * (pb[..., None] if pb.ndim == 2 else pb)
    img = cube.movedim(-1, -3)  # (..., chan, x, y)
    if uv_moments is not None:
        mo = torch.as_tensor(uv_moments, dtype=img.dtype, device=img.device)
        if mo.shape[-4:] != (img.shape[-3], X, Y, 5):
            raise ValueError(f"uv_moments shape {tuple(mo.shape)} does not match (n_chan, nu, nv, 5) = "
                             f"{(img.shape[-3], X, Y, 5)}")
        d = cellSize * ARCSEC_RAD
        lx = (-(torch.arange(X, dtype=img.dtype, device=img.device) - X / 2.0) * d)[:, None]
        my = ((torch.arange(Y, dtype=img.dtype, device=img.device) - Y / 2.0) * d)[None, :]
        w = -2.0 * math.pi  # d/du exp(-2 pi i u l) = (-2 pi i l) exp(...)
        f0 = _fft_sky(img, X, Y)
        fl = _fft_sky(img * lx, X, Y)
        fm = _fft_sky(img * my, X, Y)
        fll = _fft_sky(img * lx * lx, X, Y)
        flm = _fft_sky(img * lx * my, X, Y)
        fmm = _fft_sky(img * my * my, X, Y)
        m = [mo[..., k] for k in range(5)]
        return (f0 + 1j * w * (m[0] * fl + m[1] * fm)
                - 0.5 * w * w * (m[2] * fll + 2.0 * m[3] * flm + m[4] * fmm))
    return _fft_sky(img, X, Y)


def _fft_sky(img, X, Y):
    """Fourier sum on the grid of a real (..., chan, x, y) image (see the module doc)."""
    # Pixel j -> offset j - n//2 from the FFT origin; ifftshift puts pixel n//2 at index 0.
    img = torch.fft.ifftshift(img, dim=(-2, -1))
    # x: exp(-2 pi i u l) with l = -(ix - X/2) dl  ->  exp(+2 pi i k j / X): an inverse DFT (x X);
    # y: exp(-2 pi i v m) with m = +(iy - Y/2) dm ->  exp(-2 pi i k j / Y): a forward DFT.
    f = torch.fft.ifft(img.to(torch.complex128 if img.dtype == torch.float64 else torch.complex64), dim=-2) * X
    f = torch.fft.fft(f, dim=-1)
    f = torch.fft.fftshift(f, dim=(-2, -1))
    if X % 2:
        f = f * _ramp(X, 1.0, img.dtype, img.device, -1.0)[:, None]
    if Y % 2:
        f = f * _ramp(Y, 1.0, img.dtype, img.device, +1.0)[None, :]
    return f


def direct_ft(cube, cellSize, u, v, pb=None):
    """Direct (slow, exact) Fourier sum of the sky at arbitrary (u, v) [wavelengths], per channel.

    cube (x, y, n_chan) [Jy/pixel] numpy/torch; u, v: (n,) or (n_chan, n) [wavelengths]. Returns
    (n_chan, n) complex128 numpy. Separable matrix form, memory ~ n (x + y). Reference for tests
    and the independent sampler of the mock generator.
    """
    c = np.asarray(cube.detach().cpu() if isinstance(cube, torch.Tensor) else cube, dtype=np.float64)
    X, Y, V = c.shape
    if pb is not None:
        p = np.asarray(pb.detach().cpu() if isinstance(pb, torch.Tensor) else pb, dtype=np.float64)
        c = c * (p[..., None] if p.ndim == 2 else p)
    l = -(np.arange(X) - X / 2.0) * cellSize * ARCSEC_RAD
    m = (np.arange(Y) - Y / 2.0) * cellSize * ARCSEC_RAD
    u = np.atleast_2d(np.asarray(u, dtype=np.float64))
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    out = np.empty((V, u.shape[-1]), dtype=np.complex128)
    for k in range(V):
        uk, vk = u[k % u.shape[0]], v[k % v.shape[0]]
        ex = np.exp(-2j * np.pi * np.outer(uk, l))  # (n, X)
        ey = np.exp(-2j * np.pi * np.outer(vk, m))  # (n, Y)
        out[k] = np.einsum("nx,nx->n", ex, ey @ c[:, :, k].T)
    return out
