"""Model visibilities of a sky cube: on the uv grid, at arbitrary (u, v), and on gridded cells.

Conventions (all owned by :class:`~.coords.SkyGrid`; tested against a direct Fourier sum in
tests/test_visibilities.py):

* Sky cube in KinMS layout ``(..., n_x, n_y, n_chan)`` in **Jy/pixel** (e.g. ``model_cube(...,
  cleanOut=True)`` with ``intFlux``), *without* the image-plane (synthesised) beam: the
  interferometer applies its own sampling. Pixel ``(ix, iy)`` sits at ``SkyGrid.x_arcsec[ix]``
  (+x = **West**) and ``y_arcsec[iy]`` (+y = North); direction cosines ``l = -x`` (East),
  ``m = y`` -- the "mirrored sky" pitfall is settled there, once.
* Phase centre (and primary-beam pointing centre): the cube reference ``x = y = 0`` (the centre of
  pixel ``n//2`` for even sizes, half a pixel before it for odd sizes: ``SkyGrid.ramps``).
* Fourier sign (radio convention, Thompson, Moran & Swenson eq. 3.7):
  ``V(u, v) = sum_pixels A(l, m) I(l, m) exp(-2 pi i (u l + v m))`` [Jy], u, v in wavelengths.
  A point source of flux F at (l0, m0) has ``V = F exp(-2 pi i (u l0 + v m0))``.
* uv grid: ``SkyGrid.uv`` (:class:`~.coords.UVGrid`), zero spacing at cell ``(nu//2, nv//2)``.

Three evaluators of the same sum:

* :func:`cube_to_vis` -- the FFT on the cell *centres* of the uv grid (exact there);
* :func:`direct_ft` -- the direct sum at arbitrary (u, v) (slow, exact; tests and mock data);
* :class:`GriddedModel` -- the model of each usable *gridded* cell: the same Kaiser-Bessel-window
  average of V over that cell's own samples that the gridder formed from the data,
  ``M_c = sum_i w_ci V(u_i, v_i)`` (``GriddedVis.samples``), at every window size. This is what a
  likelihood over gridded cells needs: ``vis_c - M_c`` is then pure noise at the truth. The cell
  centre value differs from ``M_c`` at order ``2 pi l delta`` (delta up to 2.5 cells in grown
  windows), which for a source 1" off-centre in a 12.8" field is many sigma.

How :class:`GriddedModel` evaluates ``V(u_i, v_i)`` (type-2 NUFFT, e.g. Barnett et al. 2019, with a
Kaiser-Bessel kernel, Beatty et al. 2005): the image is divided by the Fourier transform of the
interpolation kernel (apodisation correction), zero-padded by ``oversample`` (default 2) and
FFT'd (real-to-complex); V at any point is the kernel-weighted sum of the ``W x W`` nearest
oversampled grid values, ``W`` chosen for the requested relative accuracy ``tol`` (default 1e-6 of
the channel's summed |flux|). Interpolation and window averaging are both linear and fixed by the data,
so they are folded, once, into one sparse matrix from the oversampled grid to the usable cells:
a forward pass is ``pad -> rfft2 -> sparse matmul``. Half-pixel ramps, the phase-centre shift and
the Hermitian half-plane bookkeeping are folded into the matrix, so they cost nothing per call.
It replaces the former second-order correction (``cube_to_vis(..., uv_moments=...)``: V at the
cell centre plus the KB-weighted moments of the sample offsets), which failed once the offsets
reached a cell (validation/gridded_model_accuracy.py) and carried the masked cells' NaN into
every gradient.

What a likelihood may assume about the cells (see gridder.py): each usable cell's data is a
weighted mean of its own samples and its model is the same mean of the model; cells whose windows
did not grow share no sample and are independent; grown windows share samples with neighbours
(``GriddedVis.report["overlap_factor"]``), so those cells are positively correlated.

Its length (~710 lines) is the fused FFT + sparse gridded operator with its hand-written adjoint,
in one file because the forward and backward passes must stay exact transposes of each other.
"""

import math
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
import torch
from scipy.special import i0

from ..constants import ARCSEC_RAD, C_M_S
from .coords import SkyGrid, UVGrid
from .gridder import kaiser_bessel

__all__ = ["ARCSEC_RAD", "SkyGrid", "UVGrid", "primary_beam", "alma_pb_fwhm_arcsec", "cube_to_vis", "direct_ft",
           "GriddedModel", "nufft_kernel_params"]


def alma_pb_fwhm_arcsec(freq_hz, dish_m=12.0):
    """ALMA primary-beam FWHM ~ 1.13 lambda / D (ALMA Technical Handbook).

    Parameters
    ----------
    freq_hz : float or array [Hz]
    dish_m : float [m]
        Dish diameter (12 for the main array, 7 for the ACA).

    Returns
    -------
    FWHM [arcsec], the shape of ``freq_hz``.
    """
    return 1.13 * (C_M_S / np.asarray(freq_hz, dtype=float)) / dish_m / ARCSEC_RAD


def primary_beam(x_size, y_size, cellSize, fwhm_arcsec, dtype=torch.float64, device=None):
    """Gaussian primary beam (unit peak) at the phase centre; ``SkyGrid(...).primary_beam(fwhm)``.

    Parameters
    ----------
    x_size, y_size : int [pixels]
    cellSize : float [arcsec]
    fwhm_arcsec : float or (n_chan,) array [arcsec]

    Returns
    -------
    tensor (x_size, y_size), or (x_size, y_size, n_chan) for a per-channel FWHM.
    """
    return SkyGrid(x_size, y_size, cellSize).primary_beam(fwhm_arcsec, dtype=dtype, device=device)


def _sky_grid(grid, n_x, n_y, name="grid", cellSize=None):
    """A SkyGrid from ``grid`` (a SkyGrid, or a cell size [arcsec]) for an image of n_x x n_y pixels.

    ``cellSize`` is the keyword the functions had before they took a SkyGrid (either, not both).
    """
    if cellSize is not None:
        if grid is not None:
            raise TypeError("give the grid (SkyGrid or cell size) or cellSize, not both")
        grid = cellSize
    if isinstance(grid, SkyGrid):
        if grid.shape != (n_x, n_y):
            raise ValueError(f"{name} is a SkyGrid of {grid.shape} pixels but the cube has {(n_x, n_y)}")
        return grid
    if isinstance(grid, numbers.Real) and not isinstance(grid, bool):
        if not (math.isfinite(grid) and grid > 0):
            raise ValueError(f"cellSize = {grid!r} is invalid: it must be finite and > 0 [arcsec]")
        return SkyGrid(n_x, n_y, float(grid))
    raise TypeError(f"{name} must be a SkyGrid or a cell size [arcsec], got {type(grid).__name__}")


def _check_pb(pb, n_x, n_y, n_chan, name="pb"):
    if pb.shape not in ((n_x, n_y), (n_x, n_y, n_chan)):
        raise ValueError(f"primary beam {name} has shape {tuple(pb.shape)}; it must be (n_x, n_y) = {(n_x, n_y)} "
                         f"or (n_x, n_y, n_chan) = {(n_x, n_y, n_chan)}")


def cube_to_vis(cube, grid=None, pb=None, *, cellSize=None):
    """Model visibilities on the cell centres of the uv grid (FFT; exact there).

    Parameters
    ----------
    cube : real tensor (..., n_x, n_y, n_chan) [Jy/pixel]
        Sky in KinMS layout, no image-plane beam.
    grid : SkyGrid or float
        The image's SkyGrid, or its cell size [arcsec] (then ``SkyGrid(n_x, n_y, cellSize)``);
        ``cellSize=`` (keyword) is accepted for the cell size too.
    pb : tensor (n_x, n_y) or (n_x, n_y, n_chan), optional
        Primary beam multiplying the sky.

    Returns
    -------
    complex tensor (..., n_chan, nu, nv) [Jy] on ``grid.uv`` (nu = n_x, nv = n_y). Differentiable;
    any device; complex64 for float32 input, complex128 for float64.
    """
    if cube.ndim < 3:
        raise ValueError(f"cube must be (..., n_x, n_y, n_chan), got shape {tuple(cube.shape)}")
    X, Y = cube.shape[-3], cube.shape[-2]
    sky = _sky_grid(grid, X, Y, cellSize=cellSize)
    if pb is not None:
        _check_pb(pb, X, Y, cube.shape[-1])
        cube = cube * (pb[..., None] if pb.ndim == 2 else pb)
    return _fft_sky(cube.movedim(-1, -3), sky)


def _fft_sky(img, sky):
    """Fourier sum on the uv grid of a real (..., chan, x, y) image (module doc)."""
    X, Y = sky.shape
    # Pixel j -> offset j - n//2 from the FFT origin; ifftshift puts pixel n//2 at index 0.
    img = torch.fft.ifftshift(img, dim=(-2, -1))
    # x: exp(-2 pi i u l) with l = -x  ->  exp(+2 pi i k j / X): an inverse DFT (x X);
    # y: exp(-2 pi i v m) with m = +y ->  exp(-2 pi i k j / Y): a forward DFT.
    f = torch.fft.ifft(img.to(torch.complex128 if img.dtype == torch.float64 else torch.complex64), dim=-2) * X
    f = torch.fft.fft(f, dim=-1)
    f = torch.fft.fftshift(f, dim=(-2, -1))
    rx, ry = sky.ramps(dtype=img.dtype, device=img.device)
    if rx is not None:
        f = f * rx[:, None]
    if ry is not None:
        f = f * ry[None, :]
    return f


def direct_ft(cube, grid, u, v, pb=None):
    """Direct (slow, exact) Fourier sum of the sky at arbitrary (u, v), per channel.

    Parameters
    ----------
    cube : array or tensor (n_x, n_y, n_chan) [Jy/pixel]
    grid : SkyGrid or float
        The image's SkyGrid, or its cell size [arcsec].
    u, v : array (n,) or (n_chan, n) [wavelengths]
        One set for all channels, or one per channel.
    pb : array (n_x, n_y) or (n_x, n_y, n_chan), optional
        Primary beam multiplying the sky.

    Returns
    -------
    numpy complex128 (n_chan, n) [Jy]. Separable matrix form, memory ~ n (n_x + n_y) per channel:
    the reference for tests and the independent sampler of the mock generator.
    """
    c = np.asarray(cube.detach().cpu() if isinstance(cube, torch.Tensor) else cube, dtype=np.float64)
    if c.ndim != 3:
        raise ValueError(f"cube must be (n_x, n_y, n_chan), got shape {c.shape}")
    X, Y, V = c.shape
    sky = _sky_grid(grid, X, Y)
    if pb is not None:
        p = np.asarray(pb.detach().cpu() if isinstance(pb, torch.Tensor) else pb, dtype=np.float64)
        _check_pb(p, X, Y, V)
        c = c * (p[..., None] if p.ndim == 2 else p)
    l, m = sky.l_rad, sky.m_rad
    u = np.atleast_2d(np.asarray(u, dtype=np.float64))
    v = np.atleast_2d(np.asarray(v, dtype=np.float64))
    if u.shape != v.shape or u.shape[0] not in (1, V):
        raise ValueError(f"u, v must both be (n,) or (n_chan={V}, n), got {u.shape} and {v.shape}")
    out = np.empty((V, u.shape[-1]), dtype=np.complex128)
    for k in range(V):
        uk, vk = u[k % u.shape[0]], v[k % v.shape[0]]
        ex = np.exp(-2j * np.pi * np.outer(uk, l))  # (n, X)
        ey = np.exp(-2j * np.pi * np.outer(vk, m))  # (n, Y)
        out[k] = np.einsum("nx,nx->n", ex, ey @ c[:, :, k].T)
    return out


# ------------------------------------------------------------------------------------------------
# NUFFT kernel
# ------------------------------------------------------------------------------------------------
def nufft_kernel_params(oversample=2.0, tol=1e-6):
    """Width and shape of the Kaiser-Bessel interpolation kernel for a relative accuracy ``tol``.

    Parameters
    ----------
    oversample : float
        Oversampling factor sigma of the padded FFT, in [1.2, 4].
    tol : float
        Target accuracy of V relative to the channel's summed |flux| (1e-6: a 1 Jy source is
        modelled to 1 uJy), in [1e-14, 1e-1].

    Returns
    -------
    (W, beta): W [oversampled cells] the kernel's full width, beta its shape,
    ``beta = pi W (1 - 1 / (2 sigma))`` (near optimal, Beatty et al. 2005), and
    ``W = ceil(ln(5 / tol) / (pi sqrt(1 - 1/sigma)))``, the error falling as
    exp(-pi W sqrt(1 - 1/sigma)) (Barnett et al. 2019). Calibrated on the worst case, a point
    source in a corner of the field (where the apodisation correction is largest): measured
    errors 1.0e-6, 4.5e-7, 3.8e-7 for tol = 1e-6 at sigma = 2, 1.5, 1.25 (W = 7, 9, 11); a random
    image is ten times better. tests/test_gridded_model.py checks both against the direct sum.
    """
    if not (1.2 <= oversample <= 4.0):
        raise ValueError(f"oversample = {oversample!r} is invalid: it must lie in [1.2, 4]")
    if not (1e-14 <= tol <= 1e-1):
        raise ValueError(f"tol = {tol!r} is invalid: it must lie in [1e-14, 0.1] (relative accuracy)")
    W = int(math.ceil(math.log(5.0 / tol) / (math.pi * math.sqrt(1.0 - 1.0 / oversample))))
    W = max(W, 2)
    return W, math.pi * W * (1.0 - 0.5 / oversample)


def _kb(z, W, beta):
    """KB kernel at z [oversampled cells], support |z| < W/2, unit peak (the gridder's window)."""
    return kaiser_bessel(2.0 * np.asarray(z, dtype=np.float64) / W, beta)


def _kb_hat(xi, W, beta):
    """Continuous Fourier transform int _kb(z) exp(2 pi i z xi) dz (xi in cycles per cell)."""
    s = beta**2 - (math.pi * W * np.asarray(xi, dtype=np.float64)) ** 2
    r = np.sqrt(np.abs(s))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(s > 0, np.sinh(r) / r, np.where(s < 0, np.sin(r) / r, 1.0))
    return W * f / i0(beta)


def _fast_len(n):
    """Smallest even 2^a 3^b 5^c >= n (fast FFT sizes)."""
    m = max(2, int(n))
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1 and m % 2 == 0:
            return m
        m += 1


# ------------------------------------------------------------------------------------------------
# the fused FFT + sparse operator, with a cheap backward pass
# ------------------------------------------------------------------------------------------------
_FFT_BLOCK = 64  # images per FFT call (see _GriddedOperator)


def _torch_csr(m, rdtype, device):
    """scipy real CSR -> torch CSR (int32 indices when they fit: MKL's native type, half the traffic)."""
    m = m.tocsr()
    idx = torch.int32 if m.nnz < 2**31 - 1 and max(m.shape) < 2**31 - 1 else torch.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr).to(idx).to(device),
                                       torch.from_numpy(m.indices).to(idx).to(device),
                                       torch.from_numpy(np.ascontiguousarray(m.data)).to(dtype=rdtype, device=device),
                                       size=m.shape, check_invariants=False)


# How stacked real products combine into the model (torch backend). With x = (Re F, Im F) and the
# blocks A = [P_re; P_im; Q_re; Q_im] (each n_cells rows), y = conj(P F) + Q F has
#   Re y = P_re Re F - P_im Im F + Q_re Re F - Q_im Im F,
#   Im y = -(P_re Im F + P_im Re F) + Q_re Im F + Q_im Re F.
# _COMB[k, j, l]: coefficient of (block k, input part j) in output part l (j, l: 0 = re, 1 = im).
_COMB = np.array([[[1, 0], [0, -1]], [[0, -1], [-1, 0]], [[1, 0], [0, 1]], [[0, 1], [-1, 0]]], dtype=np.float64)


def _transposed(x):
    """x.T made contiguous; on CPU in column blocks (torch's strided copy of a (B, n) complex array
    into (n, B) is ~5x slower than a blocked one)."""
    if x.device.type != "cpu":
        return x.t().contiguous()
    out = torch.empty((x.shape[1], x.shape[0]), dtype=x.dtype)
    step = 65536
    for i in range(0, x.shape[1], step):
        out[i:i + step] = x[:, i:i + step].t()
    return out


def _fft_forward(img, My, Mx, F, pad):
    """F[c, kx, ky] = rfft2 of img[c] (n_y, n_x) zero-padded to (My, Mx), x halved (F contiguous).

    Pruned: the r2c transform runs on the n_y image rows only, then the layout turns so that the
    second transform also runs along contiguous memory (the spectrum is stored (kx, ky)), from a
    zero-padded scratch buffer ``pad`` (>= block, Kx, My) whose padding stays zero between calls
    (a fresh zeroed buffer per call costs as much as the transform on CPU), straight into F.
    """
    C, ny = img.shape[:2]
    for c0 in range(0, C, _FFT_BLOCK):
        c1 = min(C, c0 + _FFT_BLOCK)
        p = pad[:c1 - c0]
        p[..., :ny] = torch.fft.rfft(img[c0:c1], n=Mx, dim=-1).transpose(-1, -2)  # (c, Kx, n_y)
        torch.fft.fft(p, dim=-1, out=F[c0:c1])


def _fft_adjoint(G, ny, nx, out):
    """out[c] = adjoint of _fft_forward applied to G[c] (C, Kx, My) (the c2r bins already halved).

    grad_x = Re sum_k G_k exp(+2 pi i k.x) over the stored half-spectrum, cropped to the image: a
    c2c inverse transform along ky, a crop to the image rows, and a c2r transform along kx (which
    doubles every bin but kx = 0 and the Nyquist column; the operator's transpose halved them).
    torch's own r2c backward would run a full complex FFT instead.
    """
    C, Kx = G.shape[:2]
    Mx = 2 * (Kx - 1)
    for c0 in range(0, C, _FFT_BLOCK):
        c1 = min(C, c0 + _FFT_BLOCK)
        t = torch.fft.ifft(G[c0:c1], dim=-1, norm="forward")[..., :ny]  # (c, Kx, n_y)
        t = t.transpose(-1, -2).contiguous()
        out[c0:c1] = torch.fft.irfft(t, n=Mx, dim=-1, norm="forward")[..., :nx]


class _GriddedOperator(torch.autograd.Function):
    """Scaled image (B, C, n_y, n_x) -> model (n_cells, B): padded rfft2, then sparse products.

    Forward: F = rfft2 of the image zero-padded to (My, Mx), stored (C, Kx, My) per model and
    flattened to the grid vector; then y = conj(P F) + Q F. Backward: F_bar = conj(P^T y_bar) +
    Q^H y_bar with precomputed transposes (forming them per call, as torch's generic sparse backward
    does, costs more than the product), then the FFT adjoint.

    Two backends for the sparse products (``ops[0]``):
    * ``"scipy"`` (CPU): complex CSR products in scipy's compiled kernels (one index per complex
      entry, the batch as columns); measured 1.5x faster than torch's CPU CSR (real, MKL) for one
      model and free of the OpenMP parallel-region stalls that a loaded machine inflicts on every
      torch call;
    * ``"torch"`` (CUDA, or forced): A stacks the real and imaginary parts of P (and Q) as one real
      CSR matrix (cuSPARSE; torch's complex CSR kernels are slower), applied to the whole batch at
      once as (n_grid, 2B) columns; ``comb`` recombines the blocks.
    FFTs run over blocks of at most ``_FFT_BLOCK`` images: one call over hundreds of images is
    several times slower per image (cache and allocation effects measured on CPU).
    """

    @staticmethod
    def forward(ctx, img, ops, M, pad):
        My, Mx = M
        B, C, ny, nx = img.shape
        Kx = Mx // 2 + 1
        ctx.saved = (ops, M, (ny, nx))
        cd = torch.complex128 if img.dtype == torch.float64 else torch.complex64
        if ops[0] == "scipy":
            _, P, PT, Q, QH = ops
            F = torch.empty((B, C, Kx, My), dtype=cd)
            for b in range(B):
                _fft_forward(img[b], My, Mx, F[b], pad)
            # (n_grid, B): one pass over the matrix for the whole batch (scipy makes the
            # transposed copy, cheaper than writing the spectra with a stride of B)
            f = F.view(B, -1).numpy().T if B > 1 else F.view(-1, 1).numpy()
            y = np.conj(P @ f)
            if Q is not None:
                y += Q @ f
            return torch.from_numpy(y)
        _, A, AT, comb = ops
        F = torch.empty((B, C, Kx, My), dtype=cd, device=img.device)
        for b in range(B):
            _fft_forward(img[b], My, Mx, F[b], pad)
        # (n_grid, 2B) = (Re F, Im F) of each model side by side: one pass over the matrix for the batch
        x = torch.view_as_real(_transposed(F.view(B, -1))).view(-1, 2 * B)
        K = comb.shape[0] // 2
        n_cells = A.shape[0] // K
        out = A @ x  # (K n_cells, 2B): each block times (Re F, Im F)
        out = out.view(K, n_cells, B, 2).permute(1, 2, 0, 3).reshape(n_cells, B, 2 * K) @ comb
        return torch.view_as_complex(out)

    @staticmethod
    def backward(ctx, g):
        ops, (My, Mx), (ny, nx) = ctx.saved
        Kx = Mx // 2 + 1
        n_cells, B = g.shape
        g = g.resolve_conj()
        if ops[0] == "scipy":
            _, P, PT, Q, QH = ops
            gn = np.ascontiguousarray(g.numpy())
            G = np.conj(PT @ gn)  # (n_grid, B)
            if QH is not None:
                G += QH @ gn
            G = torch.from_numpy(np.ascontiguousarray(G.T)).view(B, -1, Kx, My)
            out = torch.empty((B, G.shape[1], ny, nx), dtype=g.real.dtype)
            for b in range(B):
                _fft_adjoint(G[b], ny, nx, out[b])
            return out, None, None, None
        _, A, AT, comb = ops
        K = comb.shape[0] // 2
        gx = torch.view_as_real(g) @ comb.T  # adjoint of the combination, (n_cells, B, 2K)
        gx = gx.view(n_cells, B, K, 2).permute(2, 0, 1, 3).reshape(K * n_cells, 2 * B)
        G = _transposed(torch.view_as_complex((AT @ gx).view(-1, B, 2))).view(B, -1, Kx, My)
        out = torch.empty((B, G.shape[1], ny, nx), dtype=g.real.dtype, device=g.device)
        for b in range(B):
            _fft_adjoint(G[b], ny, nx, out[b])
        return out, None, None, None


# ------------------------------------------------------------------------------------------------
# the gridded-cell model
# ------------------------------------------------------------------------------------------------
def _select_samples(samples, keep):
    """The CellSamples of the cells where ``keep`` (bool, one per cell) is True."""
    from .gridder import CellSamples

    counts = samples.counts[keep]
    take = np.repeat(keep, samples.counts)
    return CellSamples(ptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), u=samples.u[take],
                       v=samples.v[take], weight=samples.weight[take],
                       row=None if samples.row is None else samples.row[take])


class GriddedModel(torch.nn.Module):
    """Exact model of the usable gridded cells: the gridder's window average of V, per cell.

    Parameters
    ----------
    gridded : GriddedVis
        Output of :func:`~.gridder.grid_visibilities` (with its ``samples``).
    sky : SkyGrid, optional
        The model image; default ``gridded.sky``. Its ``uv`` must be the gridded data's grid.
    pb : array or tensor (n_x, n_y) or (n_x, n_y, n_chan), optional
        Primary beam multiplying the sky; folded into the apodisation correction (free per call).
    oversample : float
        FFT oversampling factor, in [1.2, 4] (rounded up to a fast even FFT size).
    tol : float
        Relative accuracy of each V(u_i, v_i), in [1e-14, 0.1] (of the channel's summed |flux|).
    select : bool array (n_chan, nu, nv), optional
        Further cells to leave out: only ``gridded.mask & select`` are modelled (e.g.
        ``gridded.halfwidth <= 0.5`` keeps the non-overlapping windows only, for strictly
        independent cells). ``report["information_kept"]`` gives the kept share of
        ``sum 1 / sigma^2`` over the usable cells. ``overlap`` is then recomputed over the kept
        cells only (a sample shared with a left-out cell is no longer shared).
    backend : "auto", "scipy" or "torch"
        Sparse products: "scipy" (CPU only) uses scipy's compiled complex CSR kernels, "torch" torch
        CSR (MKL on CPU, cuSPARSE on CUDA). "auto" takes scipy for a single model on CPU (10-30%
        faster there on a shared 2-core machine) and torch otherwise (it passes over the matrix
        once for the whole batch). Each form is built on first use and cached.
    chunk : int
        Kernel entries (samples x W^2) built at once during the precomputation, >= 1000
        (peak memory ~ 100 bytes each: 100 MB at the default).

    Attributes (buffers; data vectors on the model's cells, in ``np.flatnonzero(mask)`` order)
    ----------
    vis : (n_cells,) complex128 [Jy]; sigma : (n_cells,) float64 [Jy per component];
    n_eff, n_vis, halfwidth [cells] : (n_cells,); chan, ku, kv, cell_index : (n_cells,) int64
    (channel, uv cell, flat index into (n_chan, nu, nv)); overlap : (n_cells,) float64, the overlap
    multiplicity ``m_c >= 1`` of each modelled cell among the modelled cells
    (:func:`~.gridder.cell_overlap`; ``gridded.overlap`` when nothing is left out by ``select``),
    whose inverse is the likelihood's ``cell_weight`` (all 1 for a hand-made ``samples`` without
    ``row``). ``report``: sizes of the operator, and ``overlap_max`` / ``overlap_mean`` of the
    modelled cells.

    Memory: the operator has ``report["nnz"]`` complex entries (about ``(2 h sigma + W)^2`` per cell
    of window half-width h, ~100 at the defaults), bounded by the number of cells whatever the
    number of visibilities; kept as a complex128 master (20 bytes per entry) plus, per dtype,
    device and backend used, the operator and its transpose (float32: 24 bytes per entry for
    scipy, 32 for torch; ``report["master_mbytes"]``, ``report["operator_mbytes_float32"]``).

    Call
    ----
    ``model(cube)`` with cube (B, n_x, n_y, n_chan) or (n_x, n_y, n_chan) real [Jy/pixel] returns
    the complex model (B, n_cells) or (n_cells,) [Jy]: complex64 for float32 cubes (sums of at
    most a few hundred terms, relative error ~1e-6), complex128 for float64. Differentiable in
    the cube; any device (the operator is moved and cached per dtype and device on first use).
    Channels without usable cells are not transformed. NaN never enters: only usable cells exist.
    One module holds FFT scratch space: do not call the same instance from several threads at once.
    """

    def __init__(self, gridded, sky=None, pb=None, *, oversample=2.0, tol=1e-6, select=None, backend="auto",
                 chunk=1_000_000):
        super().__init__()
        from .gridder import GriddedVis, cell_overlap

        if not isinstance(gridded, GriddedVis):
            raise TypeError(f"gridded must be a GriddedVis (grid_visibilities), got {type(gridded).__name__}")
        if gridded.samples is None:
            raise ValueError("gridded has no samples record: grid it with this version of grid_visibilities")
        sky = gridded.sky if sky is None else sky
        if not isinstance(sky, SkyGrid):
            raise TypeError("sky must be a SkyGrid (the gridded data were gridded on a bare UVGrid)")
        g, h = sky.uv, gridded.grid
        same = math.isclose(g.du, h.du, rel_tol=1e-9) and math.isclose(g.dv, h.dv, rel_tol=1e-9)
        if g.shape != h.shape or not same:
            raise ValueError(f"sky.uv {g} does not match the gridded data's grid {h}")
        if backend not in ("auto", "scipy", "torch"):
            raise ValueError(f"backend = {backend!r} is invalid: choose 'auto', 'scipy' or 'torch'")
        self.backend = backend
        if not (isinstance(chunk, numbers.Integral) and chunk >= 1000):
            raise ValueError(f"chunk = {chunk!r} is invalid: it must be an integer >= 1000")
        self.sky = sky
        n_chan, nu, nv = gridded.mask.shape
        self.n_chan = n_chan
        cell_index = np.flatnonzero(gridded.mask.ravel())
        samples = gridded.samples
        if samples.n_cells != cell_index.size:
            raise ValueError(f"gridded.samples has {samples.n_cells} cells but the mask {cell_index.size}")
        info_all = float(np.sum(gridded.sigma.ravel()[cell_index] ** -2.0))
        overlap = None if gridded.overlap is None else gridded.overlap.ravel()[cell_index]
        if select is not None:
            sel = np.asarray(select)
            if sel.shape != gridded.mask.shape or sel.dtype != bool:
                raise ValueError(f"select must be a bool array of shape {gridded.mask.shape} (n_chan, nu, nv), "
                                 f"got {sel.dtype} {sel.shape}")
            keep = sel.ravel()[cell_index]
            cell_index, samples = cell_index[keep], _select_samples(samples, keep)
            overlap = None if overlap is None or not keep.all() else overlap[keep]  # else: recomputed below
        if cell_index.size == 0:
            raise ValueError("gridded has no usable cell" + ("" if select is None else " in select"))
        chan, ku, kv = np.unravel_index(cell_index, (n_chan, nu, nv))
        self.n_cells = int(cell_index.size)
        if overlap is None:  # over the kept cells; 1 (no correction) for a hand-made record without rows
            overlap = cell_overlap(samples) if samples.row is not None else np.ones(cell_index.size)
        for name, arr, dt in (("vis", gridded.vis.ravel()[cell_index], torch.complex128),
                              ("sigma", gridded.sigma.ravel()[cell_index], torch.float64),
                              ("n_eff", gridded.n_eff.ravel()[cell_index], torch.float64),
                              ("n_vis", gridded.n_vis.ravel()[cell_index], torch.int64),
                              ("halfwidth", gridded.halfwidth.ravel()[cell_index], torch.float64),
                              ("overlap", overlap, torch.float64),
                              ("chan", chan, torch.int64), ("ku", ku, torch.int64), ("kv", kv, torch.int64),
                              ("cell_index", cell_index, torch.int64)):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(arr)).to(dt))

        # channels that carry cells; everything below works on this subset
        self._chans = np.unique(chan)
        self._all_chans = self._chans.size == n_chan
        pos = np.full(n_chan, -1, np.int64)
        pos[self._chans] = np.arange(self._chans.size)
        n_x, n_y = sky.shape
        Mx, My = _fast_len(math.ceil(oversample * n_x)), _fast_len(math.ceil(oversample * n_y))
        W, beta = nufft_kernel_params(min(Mx / n_x, My / n_y, 4.0), tol)
        self._M = (My, Mx)
        self._kernel = (W, beta)

        # apodisation correction [1 / kernel transform] at the pixels' offsets from the FFT origin
        # (pixel n//2), times the primary beam, in the FFT's (chan, y, x) layout
        jx = np.arange(n_x) - n_x // 2
        jy = np.arange(n_y) - n_y // 2
        apod = 1.0 / (_kb_hat(jy / My, W, beta)[:, None] * _kb_hat(jx / Mx, W, beta)[None, :])  # (n_y, n_x)
        if pb is not None:
            p = np.asarray(pb.detach().cpu() if isinstance(pb, torch.Tensor) else pb, dtype=np.float64)
            _check_pb(p, n_x, n_y, n_chan)
            if not np.all(np.isfinite(p)):
                raise ValueError("primary beam pb has non-finite values")
            scale = (p.T[None] if p.ndim == 2 else p.transpose(2, 1, 0)[self._chans]) * apod
        else:
            scale = apod[None]
        self.register_buffer("_scale", torch.as_tensor(np.ascontiguousarray(scale)), persistent=False)

        P, Q = self._build(samples, chan, pos, W, beta, chunk)
        self._master = {"P": P, "Q": Q if Q.nnz else None}
        self._cache = {}
        nnz = P.nnz + Q.nnz
        self.report = dict(n_cells=self.n_cells, n_pairs=int(samples.ptr[-1]), channels=int(self._chans.size),
                           n_chan=int(n_chan), oversampled_grid=[Mx, My], kernel_width=W, kernel_beta=beta,
                           tol=tol, nnz=int(nnz), nnz_p=int(P.nnz), nnz_q=int(Q.nnz), nnz_per_cell=nnz / self.n_cells,
                           master_mbytes=nnz * 20 / 1e6, operator_mbytes_float32=nnz * 32 / 1e6,
                           cells_left_out=int(gridded.mask.sum()) - self.n_cells,
                           information_kept=float(np.sum(self.sigma.numpy() ** -2.0)) / info_all,
                           overlap_max=float(overlap.max()), overlap_mean=float(overlap.mean()))

    # -------------------------------------------------------------- precomputation
    def _build(self, samples, chan, pos, W, beta, chunk):
        """The sparse operators P, Q with ``model = conj(P @ F) + Q @ F`` (F: rfft2 of the scaled image).

        Derivation, per axis (frame coordinate g [wavelengths] with g_x = -u because l = -x, g_y = v;
        pixel offsets (j - n//2 - half) cell):
          exp(-2 pi i g (j - n//2 - half) d) = exp(2 pi i g half d) exp(-2 pi i z j'/M), z = g M d,
          exp(-2 pi i z j'/M) ~ sum_k psi(z - k) exp(-2 pi i k j'/M) / psi_hat(j'/M)   (NUFFT),
          sum_j' I'_j exp(-2 pi i k j'/M) = exp(2 pi i k (n//2) / M) FFT_M[I'][k mod M].
        The stored half-spectrum F[kx, ky] has kx in [0, Mx/2]; the u >= 0 cells need kx < 0, read as
        conj(F[-kx, -ky]) (Hermitian symmetry of a real image): those entries go, conjugated, into P;
        the few with 0 < kx mod Mx < Mx/2 (samples just below u = 0) read F directly, into Q.
        """
        n_x, n_y = self.sky.shape
        My, Mx = self._M
        d = self.sky.cell_arcsec * ARCSEC_RAD
        hx, hy = self.sky.half_pixel
        cx, cy = n_x // 2, n_y // 2
        Kx = Mx // 2 + 1
        ncol = self._chans.size * My * Kx
        ptr, counts = samples.ptr, samples.counts
        t = np.arange(W)
        per_pair = 2 * W * W
        P_blocks, Q_blocks = [], []
        c0 = 0
        n_cells = counts.size
        while c0 < n_cells:
            # as many whole cells as fit in `chunk` kernel entries (at least one)
            lim = np.searchsorted(ptr, ptr[c0] + max(chunk // per_pair, 1), side="right") - 1
            c1 = min(max(lim, c0 + 1), n_cells)
            sl = slice(ptr[c0], ptr[c1])
            u, v, w = samples.u[sl], samples.v[sl], samples.weight[sl]
            row = np.repeat(np.arange(c1 - c0), counts[c0:c1])
            cpos = pos[chan[c0:c1]][row]
            gx, gy = -u * Mx * d, v * My * d  # frame coordinates [oversampled cells]
            kx = np.floor(gx - W / 2.0).astype(np.int64)[:, None] + 1 + t  # (p, W) nearest grid points
            ky = np.floor(gy - W / 2.0).astype(np.int64)[:, None] + 1 + t
            # kernel weights x the grid point's centring phase exp(2 pi i k (n//2) / M), per axis
            # (integer arithmetic mod M keeps the phase exact)
            fx = _kb(gx[:, None] - kx, W, beta) * np.exp(2j * np.pi * ((kx * cx) % Mx) / Mx)
            fy = _kb(gy[:, None] - ky, W, beta) * np.exp(2j * np.pi * ((ky * cy) % My) / My)
            a = w * np.exp(2j * np.pi * d * (-u * hx + v * hy))  # weight x half-pixel ramp
            val = (a[:, None, None] * fx[:, :, None] * fy[:, None, :]).ravel()
            KX = np.broadcast_to(kx[:, :, None], (len(u), W, W)).ravel()
            KY = np.broadcast_to(ky[:, None, :], (len(u), W, W)).ravel()
            R = np.broadcast_to(row[:, None, None], (len(u), W, W)).ravel()
            C = np.broadcast_to(cpos[:, None, None], (len(u), W, W)).ravel()
            r = KX % Mx
            conj = (r == 0) | (r >= Mx // 2)
            # grid points are stored (chan, kx, ky): column = (c Kx + kx) My + ky
            colP = (C * Kx + (-KX) % Mx) * My + (-KY) % My
            colQ = (C * Kx + r) * My + KY % My
            shape = (c1 - c0, ncol)
            nz = val != 0
            mP, mQ = conj & nz, ~conj & nz
            P_blocks.append(sp.csr_matrix((np.conj(val[mP]), (R[mP], colP[mP])), shape=shape))
            Q_blocks.append(sp.csr_matrix((val[mQ], (R[mQ], colQ[mQ])), shape=shape))
            c0 = c1
        P = sp.vstack(P_blocks, format="csr")
        Q = sp.vstack(Q_blocks, format="csr")
        for m in (P, Q):
            m.sum_duplicates()
            m.sort_indices()
        return P, Q

    def _ops(self, rdtype, device, backend):
        """(operator tuple for :class:`_GriddedOperator`, scale, chans) for ``rdtype``, ``device`` and
        ``backend`` ("scipy" or "torch"), built on first use and cached."""
        device = torch.device(device)
        key = (rdtype, str(device), backend)
        if key not in self._cache:
            P, Q = self._master["P"], self._master["Q"]
            # rows of the transposes are grid points (chan, kx, ky): halve those that the c2r transform
            # of the backward pass doubles (all but kx = 0 and kx = Mx/2)
            My, Mx = self._M
            kx = (np.arange(P.shape[1]) // My) % (Mx // 2 + 1)
            half = sp.diags(np.where((kx == 0) | (kx == Mx // 2), 1.0, 0.5))
            if backend == "scipy" and device.type != "cpu":
                raise ValueError(f"backend 'scipy' works on CPU tensors only, got a cube on {device}")
            if backend == "scipy":
                cd = np.complex64 if rdtype == torch.float32 else np.complex128
                ops = ("scipy", P.astype(cd), (half @ P.T).tocsr().astype(cd),
                       None if Q is None else Q.astype(cd),
                       None if Q is None else (half @ Q.conj().T).tocsr().astype(cd))
            else:
                blocks = [P.real, P.imag] + ([] if Q is None else [Q.real, Q.imag])
                A = sp.vstack(blocks, format="csr")
                A.eliminate_zeros()
                comb = torch.as_tensor(_COMB[:len(blocks)].reshape(-1, 2), dtype=rdtype, device=device)
                ops = ("torch", _torch_csr(A, rdtype, device), _torch_csr(half @ A.T, rdtype, device), comb)
            chans = None if self._all_chans else torch.as_tensor(self._chans, device=device)
            cd = torch.complex64 if rdtype == torch.float32 else torch.complex128
            # scratch for the padded FFT (its padding is never written): one module must not run
            # two forward passes concurrently in different threads
            pad = torch.zeros((min(self._chans.size, _FFT_BLOCK), Mx // 2 + 1, My), dtype=cd, device=device)
            self._cache[key] = (ops, self._scale.to(dtype=rdtype, device=device), chans, pad)
        return self._cache[key]

    # -------------------------------------------------------------- forward
    def forward(self, cube):
        if not isinstance(cube, torch.Tensor):
            raise TypeError(f"cube must be a torch tensor, got {type(cube).__name__}")
        if cube.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"cube must be float32 or float64, got {cube.dtype}")
        single = cube.ndim == 3
        if single:
            cube = cube.unsqueeze(0)
        n_x, n_y = self.sky.shape
        if cube.ndim != 4 or tuple(cube.shape[1:]) != (n_x, n_y, self.n_chan):
            raise ValueError(f"cube has shape {tuple(cube.shape)}; expected (B, n_x, n_y, n_chan) = "
                             f"(B, {n_x}, {n_y}, {self.n_chan}) or without B")
        if cube.shape[0] == 0:
            raise ValueError("cube has an empty batch dimension (B = 0)")
        backend = self.backend
        if backend == "auto":  # measured on CPU: scipy for one model, torch CSR for batches
            backend = "scipy" if cube.device.type == "cpu" and cube.shape[0] == 1 else "torch"
        ops, scale, chans, pad = self._ops(cube.dtype, cube.device, backend)
        img = cube.permute(0, 3, 2, 1)  # (B, chan, y, x): x last, the axis the real FFT halves
        if chans is not None:
            img = img.index_select(1, chans)
        # scale first: the product then takes the scale's contiguous (chan, y, x) layout in one pass
        img = (scale * img).contiguous()
        out = _GriddedOperator.apply(img, ops, self._M, pad).transpose(0, 1)
        return out[0] if single else out

    def extra_repr(self):
        r = self.report
        return (f"n_cells={r['n_cells']}, channels={r['channels']}/{r['n_chan']}, grid={self.sky.shape}, "
                f"oversampled={tuple(r['oversampled_grid'])}, W={r['kernel_width']}, nnz={r['nnz']}")
