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
import numpy as np
import torch

from ..constants import ARCSEC_RAD, C_M_S
from .coords import SkyGrid, UVGrid

__all__ = ["ARCSEC_RAD", "UVGrid", "primary_beam", "alma_pb_fwhm_arcsec", "cube_to_vis", "direct_ft"]

def alma_pb_fwhm_arcsec(freq_hz, dish_m=12.0):
    """ALMA 12-m primary-beam FWHM [arcsec] ~ 1.13 lambda / D (ALMA Technical Handbook)."""
    return 1.13 * (C_M_S / np.asarray(freq_hz, dtype=float)) / dish_m / ARCSEC_RAD


def primary_beam(x_size, y_size, cellSize, fwhm_arcsec, dtype=torch.float64, device=None):
    """Gaussian primary beam (unit peak) at the phase centre on the cube's pixels, (x_size, y_size).

    fwhm_arcsec [arcsec]: scalar, or (n_chan,) for a frequency-dependent beam -> (x, y, n_chan).
    Shorthand for ``SkyGrid(x_size, y_size, cellSize).primary_beam(fwhm_arcsec)``.
    """
    return SkyGrid(x_size, y_size, cellSize).primary_beam(fwhm_arcsec, dtype=dtype, device=device)


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
