"""Differentiable, deterministic thin-disc gas cube: a drop-in twin of ``KinMS(...).model_cube``.

KinMS (Davis et al. 2013) draws random cloudlets from the surface-brightness profile, projects
them and bins them into pixels and channels. Its *expected* cube (infinitely many clouds) is

    cube[ix, iy, iv] = integral over pixel (ix, iy) of  S_sky(x, y) * P_iv(v_los(x, y), sigma)

followed by a beam convolution and a flux normalisation, where ``P_iv`` is the probability that a
Gaussian of mean ``v_los`` and dispersion ``sigma`` falls in channel ``iv``. We evaluate exactly that
expectation on a regular grid of ``nsub x nsub`` sub-pixels per pixel (the :class:`SkyGrid`'s
``subpixel_axes``), with

* the **in-sub-pixel velocity spread** integrated analytically: across each sub-pixel of side ``h``
  the line-of-sight velocity is taken as linear, ``v0 + g_x u + g_y w`` (``g`` its analytic sky
  gradient at the sub-pixel centre), and represented by a uniform distribution (a box) of the same
  variance, width ``W = h |g|``. The line profile of a sub-pixel is that box convolved with the
  Gaussian of dispersion ``gasSigma``; its channel integral has a closed form in terms of
  ``Psi(t) = t Phi(t) + phi(t)`` (the integral of the Gaussian CDF), which we evaluate as the exact
  box-channel overlap plus a Gaussian-tail correction (no cancellation, float32-safe), or, when the
  box is narrower than a tenth of the Gaussian, by its series ``Phi(t) - (q/6) t phi(t) + ...``
  (q = (box half-width / sigma)^2).
  A midpoint rule that puts each sub-pixel's flux at one velocity under-samples this spread
  (validation/cube_vs_kinms.py, NGC 4697-like case, 0.1" pixels, nsub = 2): at ``gasSigma = 0`` it
  correlated 0.9987 with a 3e6-cloud KinMS cube, peak 3% low (now 0.99993, peak 0.6% low), and
  ``gasSigma`` fitted to a converged noise-free cube made with 8 km/s came out 0.40 km/s high
  (now 0.03 km/s low; 0.007 at nsub = 4). ``subpixel_spread=False`` restores the midpoint rule;
* ``P_iv`` integrated over the channel (erf-type differences), so a line much wider than a channel
  is smooth (no comb) and one much narrower than a channel still lands in the right channel. Each
  sub-pixel's profile is evaluated only over the channels it can reach (its box plus 6 (float32) or
  8 (float64) Gaussian sigmas) and scattered into the cube: the cost scales with the line width,
  not with the number of channels;
* surface brightness and rotation curve linearly interpolated with torch ops (gradients flow to the
  profile values, to the geometry and to any parameter the profiles were built from);
* the beam applied by zero-padded FFT convolution (linear, not circular, like KinMS's ``convolve``);
* the ``centre_pix x centre_pix`` pixels around the disc centre re-sampled ``nsub_centre`` times per
  side: a black hole's steep, sign-changing velocity field lives in the central pixels, where a
  linear velocity across a coarse sub-pixel is a poor description.

Conventions (all taken from KinMS 3.0.14's source, so either model can replace the other; the pixel
geometry is owned by :class:`~nuker_mge_plugin.dynamics.coords.SkyGrid`, exposed as ``GasCube.grid``):

* Output shape ``(x_size, y_size, v_size)`` (or ``(B, x_size, y_size, v_size)`` when batched), with
  ``x_size = round(xs / cellSize)`` etc. Axis 0 is x, axis 1 is y, axis 2 the channel; KinMS's FITS
  writer stores ``cube.T`` with ``CDELT1 < 0``, i.e. increasing x index = decreasing RA (towards West),
  increasing y index = North.
* Pixel ``ix`` is centred at ``x = (ix - x_size / 2) * cellSize`` [arcsec] from the cube reference, so
  for even sizes the reference (and a disc with ``phaseCent = [0, 0]``) sits at the centre of pixel
  ``x_size // 2``. ``phaseCent = [dx, dy]`` [arcsec] moves the disc centre to ``(dx, dy)``.
* Channel ``iv`` is centred at ``(iv - v_size / 2) * dv`` [km/s]; a line-of-sight velocity ``v`` (with
  respect to systemic) is placed at ``v + vOffset``, so positive ``vOffset`` [km/s] moves the line to
  higher channel index.
* ``posAng`` [deg]: the **redshifted** side of the disc points along ``(-sin PA, +cos PA)`` in
  (x, y): PA = 0 puts it at +y, PA = 90 at -x (North through East, as KinMS documents).
* ``inc`` [deg], in [0, 90): 0 = face-on. Disc coordinates of a sky point (relative to the disc
  centre): ``x_d = x sin PA - y cos PA``, ``y_d = (x cos PA + y sin PA) / cos i``; line-of-sight
  velocity ``v_los = -v_c(r) (x_d / r) sin i``.
* Normalisation as KinMS: with ``intFlux > 0`` [Jy km/s], ``sum(cube) * dv / sum(psf) = intFlux`` where
  ``psf`` is the pixel-sampled beam with unit peak (cube in Jy/beam); without a beam
  (``cleanOut=True`` or ``beamSize`` 0/None) ``sum(cube) * dv = intFlux`` (Jy/pixel). With
  ``intFlux`` None or 0 the cube sums to 1. Like KinMS the cube is normalised by the flux that lands
  *inside* it; we additionally warn when more than ``outside_tol`` of the disc's flux falls outside
  the field or outside the channel range (KinMS drops it silently).
* Beam ``beamSize`` [arcsec]: scalar (circular FWHM), ``[bmaj, bmin]`` or ``[bmaj, bmin, bpa]``. At
  ``bpa = 0`` the major axis lies along y and positive ``bpa`` [deg] turns it towards +x (KinMS's
  orientation). KinMS's own elliptical kernel uses ``sin^2(2 bpa) sign(tan bpa)`` where a rotated
  Gaussian has ``sin(2 bpa)``; ours is the exact rotated Gaussian, so the two agree for circular beams
  and for bpa in {0, 45, 90, 135} deg and differ slightly otherwise.

Batches, not warps. KinMS reads an array-valued ``inc``/``posAng`` as a **warp** (angles as a
function of radius), which this flat-disc model does not support: a numpy array or list with more
than one element there raises ``ValueError``. A batch of ``B`` models is asked for explicitly, by
passing torch tensors with a leading batch dimension (``inc`` of shape ``(B,)``, ``velProf`` of shape
``(B, n)``, ``phaseCent`` of shape ``(B, 2)``, ...) or by ``batch=True`` (then numpy arrays with a
leading batch dimension are accepted as well). Arguments without a batch dimension are shared by all
models. The arguments are parsed once into a :class:`DiscParams`; ``GasCube.render`` ->
``convolve`` -> ``normalise`` each take it.

Not supported (KinMS features outside this model): warps, disc thickness, ``inClouds``/
``vLOS_clouds``, ``massDist``, radial motions, ``vPosAng``/``vPhaseCent``, asymmetric drift, multiple
lines. A thin disc at exactly 90 deg is a line of zero width that no sky-plane sampling resolves
(``inc`` must be < 90 deg); near edge-on, accuracy is set by the deprojected sub-pixel size
``cellSize / nsub / cos(inc)`` compared with the scales of the surface-brightness profile: raise
``nsub`` there.

Its length (~1170 lines) is one KinMS twin whose parts (cloud-free sampling of the disc, analytic
channel integration, centre refinement, line profile with its custom backward pass) share the same
geometry and must be validated together against KinMS.
"""

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from ..constants import fwhm_to_sigma
from .coords import SkyGrid

__all__ = ["model_cube", "GasCube", "DiscParams", "interp1d", "exponential_sb", "beam_kernel_fft",
           "channel_edges"]

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
# Width floor [fraction of a channel] for gasSigma = 0: the Gaussian then becomes a step (KinMS's
# nearest-channel binning of each cloud) without a division by zero.
_SIGMA_FLOOR_FRAC = 1e-4
# KinMS zeroes kernel values below 1e-5 of the peak; we do the same so both psf sums agree.
_PSF_CUT = 1e-5
# Gaussian sigmas beyond which a sub-pixel's line profile is dropped: the tail mass Q(6) = 1e-9 is
# below float32 resolution, Q(8) = 6e-16 below float64's.
_TAIL_SIGMAS = {torch.float32: 6.0, torch.float64: 8.0}
# Box half-width / Gaussian sigma below which the box-convolved profile is evaluated by its series
# (truncation error (d^6 / 5040) |Phi^(6)| < 1e-10); above it the closed form loses at most
# ~ eps / 0.1 to cancellation.
_SERIES_BELOW = 0.1
# Per-group fixed cost [equivalent edge evaluations] when splitting sub-pixels into groups by the
# number of channels they reach (a few kernel launches and index gathers per group).
_GROUP_COST = 20000
# Elements per chunk of the (sub-pixels, edges) profile computation (see _chunks).
_CHUNK_ELEMS = 65536
# Sub-pixels (all models together) per slab of the per-sub-pixel stage (see GasCube._profiles).
_SAMPLE_CHUNK = 32768

_UNSUPPORTED = {"inClouds", "vLOS_clouds", "massDist", "radial_motion_func", "diskThick", "vPosAng",
                "vPhaseCent", "flux_clouds", "asymmetric_drift", "multiple_line_relflux", "returnClouds"}
_IGNORED = {"toplot", "fileName", "vSys", "bunit", "ra", "dec", "restFreq"}


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _as_tensor(x, dtype, device):
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device)
    # a copy: numpy views with negative strides cannot become tensors
    return torch.as_tensor(np.array(x, dtype=np.float64), dtype=dtype, device=device)


def _check_grid(name, xp):
    if xp.shape[-1] < 2:
        raise ValueError(f"{name} needs at least 2 points [arcsec], got {xp.shape[-1]}")
    if not bool(torch.isfinite(xp.detach()).all()):
        raise ValueError(f"{name} contains non-finite values")
    if not bool((torch.diff(xp.detach(), dim=-1) > 0).all()):
        raise ValueError(f"{name} must be strictly increasing [arcsec]")


def _uniform_step(xp):
    """The spacing of nodes ``xp`` (1, n) if they are uniform to 1e-9 of it (np.arange-like radius
    grids, KinMS's usual), else None (also for per-model nodes)."""
    if xp.shape[0] != 1:
        return None
    d = torch.diff(xp.detach()[0].double())
    step = float(d.mean())
    return step if bool(((d - step).abs() <= 1e-9 * step).all()) else None


def _interp_index(x, xp, step=None):
    """Where query points ``x`` (B, M) fall among nodes ``xp`` (B or 1, n): the upper bracketing node
    index, the lower node and the node spacing (B, M), ``x``, and whether ``x`` lies within
    [xp[0], xp[-1]]; one search serves several profiles. ``step``: the spacing of uniform nodes
    (:func:`_uniform_step`), which replaces the binary search by a division."""
    B = max(x.shape[0], xp.shape[0])
    n = xp.shape[-1]
    xp = xp.expand(B, n)
    x = x.expand(B, x.shape[-1])
    xd = x.detach()
    if step is not None:
        # a node at the edge of rounding may land in the neighbouring interval: harmless, linear
        # interpolation is continuous there
        idx = torch.floor((xd - xp.detach()[:, :1]) * (1.0 / step)).long() + 1
    else:
        idx = torch.searchsorted(xp.detach().contiguous(), xd.contiguous(), right=True)
    idx = idx.clamp(1, n - 1)
    x0 = torch.gather(xp, 1, idx - 1)
    x1 = torch.gather(xp, 1, idx)
    inside = (xd >= xp.detach()[:, :1]) & (xd <= xp.detach()[:, -1:])
    return idx, x0, x1 - x0, x, inside


def _interp_apply(ix, fp, outside="clamp"):
    """Linear interpolation of node values ``fp`` (B or 1, n) at an :func:`_interp_index` result.

    Returns the values (B, M) (``outside``: "clamp" holds the end values, "zero" gives 0 beyond the
    nodes). The interpolant's slope jumps at every node: for a derivative continuous in ``x``,
    interpolate :func:`_node_slopes` instead."""
    if fp.shape[0] > ix[0].shape[0]:  # batched node values on shared nodes and query points
        ix = tuple(t.expand(fp.shape[0], t.shape[-1]) for t in ix)
    idx, x0, dx, x, inside = ix
    fp = fp.expand(idx.shape[0], fp.shape[-1])
    f0 = torch.gather(fp, 1, idx - 1)
    f1 = torch.gather(fp, 1, idx)
    t = ((x - x0) / dx).clamp(0.0, 1.0)
    y = f0 + t * (f1 - f0)
    if outside == "zero":
        y = torch.where(inside, y, 0.0)
    return y


def _node_slopes(xp, fp):
    """d f / d x at the nodes (B, n) of a tabulated curve: the three-point derivative on non-uniform
    nodes (exact for a quadratic), the one-sided difference at the two ends."""
    h = torch.diff(xp, dim=-1)
    m = torch.diff(fp, dim=-1) / h                     # interval slopes (B, n - 1)
    if m.shape[-1] < 2:
        return torch.cat([m, m], dim=-1)
    h0, h1 = h[:, :-1], h[:, 1:]
    inner = (h1 * m[:, :-1] + h0 * m[:, 1:]) / (h0 + h1)
    return torch.cat([m[:, :1], inner, m[:, -1:]], dim=-1)


def interp1d(x, xp, fp, outside="clamp"):
    """Differentiable batched linear interpolation (``np.interp`` semantics).

    x: (B, M) query points; xp: (B, n) or (1, n) strictly increasing nodes; fp: (B, n) or (1, n)
    values (same units as the result). ``outside="clamp"`` holds the end values beyond the nodes
    (np.interp, what KinMS does for the rotation curve); ``outside="zero"`` returns 0 outside
    [xp[0], xp[-1]] (what KinMS's cloud sampler implies for the surface brightness).
    Gradients flow to x, xp and fp.
    """
    B = max(x.shape[0], xp.shape[0], fp.shape[0])
    return _interp_apply(_interp_index(x.expand(B, x.shape[-1]), xp), fp, outside=outside)


def exponential_sb(sbRad, scaleRad):
    """Exponential disc surface brightness ``exp(-sbRad / scaleRad)`` (arbitrary units).

    sbRad [arcsec]: (n,) tensor/array; scaleRad [arcsec]: scalar or (B,) -> (n,) or (B, n).
    Differentiable in ``scaleRad``; pass the result as ``sbProf``.
    """
    r = torch.as_tensor(sbRad)
    h = torch.as_tensor(scaleRad, dtype=r.dtype if r.is_floating_point() else torch.float64)
    r = r.to(h.dtype)
    if h.ndim == 0:
        return torch.exp(-r / h)
    return torch.exp(-r.unsqueeze(0) / h.unsqueeze(-1))


def _parse_beam(beamSize):
    """(bmaj, bmin, bpa) [arcsec, arcsec, deg] or None for no beam."""
    if beamSize is None:
        return None
    b = np.atleast_1d(np.asarray(beamSize, dtype=np.float64))
    if b.size == 1:
        b = np.array([b[0], b[0], 0.0])
    elif b.size == 2:
        b = np.array([b[0], b[1], 0.0])
    elif b.size != 3:
        raise ValueError(f"beamSize must be a scalar, [bmaj, bmin] or [bmaj, bmin, bpa]; got {beamSize!r}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"beamSize must be finite, got {beamSize!r}")
    if b[0] == 0 and b[1] == 0:
        return None
    if b[0] <= 0 or b[1] <= 0:
        raise ValueError(f"beam FWHMs must be positive [arcsec], got {beamSize!r}")
    if b[1] > b[0]:  # as KinMS: the larger one is the major axis
        b[0], b[1] = b[1], b[0]
    return b


def beam_kernel_fft(beam, cellSize, shape_pad, dtype, device):
    """rfft2 of the pixel-sampled beam on the padded grid, normalised to unit sum, and the psf sum.

    beam: (bmaj, bmin, bpa) [arcsec, arcsec, deg]; cellSize [arcsec]; shape_pad (N1, N2) padded
    grid. The kernel is centred on pixel (0, 0) with wrapped offsets so the product in Fourier space
    is a convolution without shift. Returns (kernel_fft (N1, N2//2+1) complex, psf_sum [pixels]),
    where psf_sum is the sum of the unit-peak beam (KinMS's ``psf.sum()``: beam area in pixels).
    """
    bmaj, bmin, bpa = beam
    s_maj = fwhm_to_sigma(bmaj / cellSize)
    s_min = fwhm_to_sigma(bmin / cellSize)
    N1, N2 = shape_pad
    dx = np.fft.fftfreq(N1, 1.0 / N1)  # wrapped integer offsets 0, 1, ..., -1
    dy = np.fft.fftfreq(N2, 1.0 / N2)
    X, Y = np.meshgrid(dx, dy, indexing="ij")
    t = np.radians(bpa)
    # major axis along (sin bpa, cos bpa) in (x, y): y at bpa = 0, turning towards +x (KinMS)
    u = X * np.sin(t) + Y * np.cos(t)
    w = X * np.cos(t) - Y * np.sin(t)
    psf = np.exp(-0.5 * (u / s_maj) ** 2 - 0.5 * (w / s_min) ** 2)
    psf[psf < _PSF_CUT] = 0.0
    psf_sum = float(psf.sum())
    k = torch.as_tensor(psf / psf_sum, dtype=dtype, device=device)
    return torch.fft.rfft2(k), psf_sum


def _fast_len(n):
    """Smallest 2^a 3^b 5^c >= n (FFT-friendly padded length)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def channel_edges(v_size, dv, vOffset):
    """Line-of-sight velocity edges [km/s] of the channels, (B, v_size + 1).

    Channel iv collects ``v_los + vOffset`` in [(iv - 0.5 - v_size/2) dv, (iv + 0.5 - v_size/2) dv)
    (KinMS: ``round(v_los / dv + v_size / 2 + vOffset / dv)``). vOffset: (B,) [km/s].
    """
    k = torch.arange(v_size + 1, dtype=vOffset.dtype, device=vOffset.device)
    return ((k - 0.5 - v_size / 2.0) * dv).unsqueeze(0) - vOffset.unsqueeze(-1)


def _phi(t):
    return torch.exp(-0.5 * t * t) * _INV_SQRT_2PI


def _box_gauss_cdf(d, a2, sc, wide, partials=False):
    """CDF at ``d`` of a sub-pixel's line profile: (uniform on [-a, a]) + (Gaussian of dispersion sc),
    all in channel units, ``a2 = a^2``; optionally with its partial derivatives (d/dd, d/da2, d/dsc).

    ``wide`` (``a >= 0.1 sc``): the closed form ``F(d) = (sc / 2a) [Psi((d + a) / sc) - Psi((d - a) / sc)]``
    with ``Psi(t) = max(t, 0) + Psi(-|t|)``: the ``max`` terms give the exact box CDF, the rest the
    Gaussian smoothing of its edges. Otherwise the series in ``q = (a / sc)^2`` (the box average of the
    Gaussian CDF) ``Phi(t) - (q / 6) t phi(t) + (q^2 / 120) (3t - t^3) phi(t)``, t = d / sc, which needs
    no square root of a2 and is exactly the Gaussian CDF at a = 0."""
    if wide:
        a = a2.sqrt()
        inv2a = 0.5 / a
        tp, tm = (d + a) / sc, (d - a) / sc
        up, um = tp.abs(), tm.abs()
        ep, em = _phi(up), _phi(um)  # = phi(t+-) (even)
        qp, qm = 0.5 * torch.erfc(up * (1.0 / _SQRT2)), 0.5 * torch.erfc(um * (1.0 / _SQRT2))  # Q(|t+-|)
        # Psi(-|t|) = phi(|t|) - |t| Q(|t|), small and decaying (~ phi / t^2): only absolute rounding
        # errors of order eps phi, which is what makes this form free of cancellation
        F = ((d + a) * inv2a).clamp(0.0, 1.0) + (sc * inv2a) * ((ep - up * qp) - (em - um * qm))
        if not partials:
            return F
        Pp = torch.where(tp >= 0, 1.0 - qp, qp)  # Phi(t+-)
        Pm = torch.where(tm >= 0, 1.0 - qm, qm)
        F_d = (Pp - Pm) * inv2a
        F_a2 = ((Pp + Pm) * inv2a - F / a) * inv2a  # d/da2 = (d/da) / 2a
        F_sc = (ep - em) * inv2a
        return F, F_d, F_a2, F_sc
    t = d / sc
    q = a2 / (sc * sc)
    phi = _phi(t)
    t2 = t * t
    F = 0.5 * torch.erfc(t * (-1.0 / _SQRT2)) + phi * t * (q * (q * (3.0 - t2) / 120.0 - 1.0 / 6.0))
    if not partials:
        return F
    F_t = phi * (1.0 + q * ((t2 - 1.0) / 6.0 + q * ((t2 - 6.0) * t2 + 3.0) / 120.0))
    F_q = phi * t * (q * (3.0 - t2) / 60.0 - 1.0 / 6.0)
    return F, F_t / sc, F_q / (sc * sc), -(t * F_t + 2.0 * q * F_q) / sc


def _edge_offsets(start, K, c0):
    """Channel edges start .. start + K minus the line centre, (N, K + 1) [channels]."""
    j = torch.arange(K + 1, device=c0.device, dtype=c0.dtype)
    return (start.to(c0.dtype).unsqueeze(1) + j) - c0.unsqueeze(1)


def _chunks(N, K, device):
    """Row slices of an (N, K + 1) computation with ~_CHUNK_ELEMS elements each on CPU: the ~30
    temporaries of the profile then stay in cache and are recycled by the allocator (one (68k, 9)
    float32 pass of the series form was 2-3x slower than the same work in chunks, of the closed form
    ~1.3x, measured with one thread). One slice on a GPU, where launches, not caches, are what costs."""
    if device.type != "cpu":
        return [slice(0, N)]
    rows = max(256, _CHUNK_ELEMS // (K + 1))
    return [slice(i, min(N, i + rows)) for i in range(0, N, rows)]


class _LineProfile(torch.autograd.Function):
    """Channel-integrated line profiles of N sub-pixels over windows of K channels, (N, K):
    ``flux * (F(edge_{j+1}) - F(edge_j))`` with F = :func:`_box_gauss_cdf`.

    Hand-written derivatives (reverse and forward mode) instead of autograd's graph of ~30 elementwise
    ops on (N, K + 1) arrays: ~2x less time and memory in the likelihood's backward pass. The backward
    is written in differentiable torch ops, so double backward (Hessian-vector products) still works.
    """

    generate_vmap_rule = True  # torch.func.vmap over jvp tangents (the Fisher matrix's forward mode)

    @staticmethod
    def forward(c0, a2, sc, flux, start, K, wide):
        out = []
        for sl in _chunks(c0.shape[0], K, c0.device):
            F = _box_gauss_cdf(_edge_offsets(start[sl], K, c0[sl]), a2[sl].unsqueeze(1), sc[sl].unsqueeze(1), wide)
            out.append((F[:, 1:] - F[:, :-1]) * flux[sl].unsqueeze(1))
        return torch.cat(out) if len(out) > 1 else out[0]

    @staticmethod
    def setup_context(ctx, inputs, output):
        c0, a2, sc, flux, start, K, wide = inputs
        ctx.save_for_backward(c0, a2, sc, flux, start)
        ctx.save_for_forward(c0, a2, sc, flux, start)
        ctx.K, ctx.wide = K, wide

    @staticmethod
    def _partials(ctx, c0, a2, sc, start):
        return _box_gauss_cdf(_edge_offsets(start, ctx.K, c0), a2.unsqueeze(1), sc.unsqueeze(1), ctx.wide,
                              partials=True)

    @staticmethod
    def backward(ctx, G):
        c0, a2, sc, flux, start = ctx.saved_tensors
        need = ctx.needs_input_grad
        grads = [[] for _ in range(4)]
        for sl in _chunks(c0.shape[0], ctx.K, c0.device):
            F, F_d, F_a2, F_sc = _LineProfile._partials(ctx, c0[sl], a2[sl], sc[sl], start[sl])
            g = G[sl]
            H = g.new_zeros(g.shape[0], ctx.K + 1)  # d loss / d F_j = flux (G_{j-1} - G_j)
            H[:, :-1] = -g
            H[:, 1:] += g
            H = H * flux[sl].unsqueeze(1)
            for i, (n, v) in enumerate(((need[0], F_d), (need[1], F_a2), (need[2], F_sc))):
                if n:
                    grads[i].append((H * v).sum(1))
            if need[3]:
                grads[3].append((g * (F[:, 1:] - F[:, :-1])).sum(1))
        out = [torch.cat(gl) if gl else None for gl in grads]
        if out[0] is not None:
            out[0] = -out[0]  # d = edge - c0
        return out[0], out[1], out[2], out[3], None, None, None

    @staticmethod
    def jvp(ctx, t_c0, t_a2, t_sc, t_fl, *_):
        c0, a2, sc, flux, start = ctx.saved_tensors
        F, F_d, F_a2, F_sc = _LineProfile._partials(ctx, c0, a2, sc, start)
        dF = torch.zeros_like(F)
        if t_c0 is not None:
            dF = dF - F_d * t_c0.unsqueeze(1)
        if t_a2 is not None:
            dF = dF + F_a2 * t_a2.unsqueeze(1)
        if t_sc is not None:
            dF = dF + F_sc * t_sc.unsqueeze(1)
        out = (dF[:, 1:] - dF[:, :-1]) * flux.unsqueeze(1)
        if t_fl is not None:
            out = out + (F[:, 1:] - F[:, :-1]) * t_fl.unsqueeze(1)
        return out


def _plan_groups(counts, K_max, max_groups=3):
    """Split sub-pixels by L, the number of channels they reach, into at most ``max_groups`` groups
    [(L_lo, L_hi)] minimising ``sum_g n_g (L_hi_g + 1) + _GROUP_COST`` (a group evaluates
    L_hi_g + 1 edges per sub-pixel). ``counts[L]`` = number of sub-pixels reaching L channels,
    L = 0..K_max (L = 0: dropped sub-pixels). Exact dynamic programme over the distinct L."""
    counts = np.asarray(counts)
    Ls = np.flatnonzero(counts[1:K_max + 1]) + 1
    m = len(Ls)
    if m == 0:
        return []
    n_le = np.cumsum(counts)[Ls] - counts[0]  # sub-pixels with 1 <= L <= Ls[i]
    n_lt = np.concatenate([[0], n_le[:-1]])  # ... with L < Ls[i]
    j, i = np.arange(m)[:, None], np.arange(m)[None, :]
    cost = np.where(j <= i, (n_le[None, :] - n_lt[:, None]) * (Ls[None, :] + 1.0) + _GROUP_COST, np.inf)
    D = [cost[0]]  # D[g - 1][i]: best cost of Ls[0..i] in g groups
    arg = [np.zeros(m, dtype=int)]
    for _ in range(1, max_groups):
        prev = np.concatenate([[np.inf], D[-1][:-1]])  # Ls[0..j-1] done, group starts at j
        tot = prev[:, None] + cost
        arg.append(np.argmin(tot, axis=0))
        D.append(tot[arg[-1], np.arange(m)])
    g = int(np.argmin([d[-1] for d in D]))
    out, hi = [], m - 1
    while g >= 0:
        lo = int(arg[g][hi]) if g > 0 else 0
        out.append((int(Ls[lo]), int(Ls[hi])))
        hi, g = lo - 1, g - 1
    return out[::-1]


# --------------------------------------------------------------------------------------------
# parsed parameters
# --------------------------------------------------------------------------------------------
@dataclass
class DiscParams:
    """KinMS ``model_cube`` arguments parsed once (:meth:`GasCube.parse`), batched over models.

    Every tensor has a leading model axis of length ``B`` or 1 (1 = shared by all models).

    Attributes
    ----------
    inc, posAng : (B or 1,) tensors [deg]; inclination in [0, 90), position angle.
    vOffset : (B or 1,) [km/s] line offset from the cube's central channel.
    phaseCent : (B or 1, 2) [arcsec] disc centre (x, y) from the cube reference.
    velRad, velProf : (B or 1, n) [arcsec], [km/s] circular-velocity curve.
    gasSigma : (B or 1, 1) [km/s] dispersion, or (B or 1, n) a profile on ``velRad``.
    sbRad, sbProf : (B or 1, m) [arcsec], [any unit] surface brightness; None with ``sb_fn``.
    sb_fn : callable r [arcsec] (B, M) -> (B, M) surface brightness, or None.
    intFlux : (B or 1,) [Jy km/s], or None for a unit-sum cube.
    B : number of models; batched : whether the cube gets a leading model axis.
    sb_on_velRad : sbRad and velRad are the same nodes (one interpolation search serves both).
    velRad_step, sbRad_step : node spacing [arcsec] of uniform shared nodes (no binary search), or None.
    """

    inc: torch.Tensor
    posAng: torch.Tensor
    vOffset: torch.Tensor
    phaseCent: torch.Tensor
    velRad: torch.Tensor
    velProf: torch.Tensor
    gasSigma: torch.Tensor
    sbRad: Optional[torch.Tensor]
    sbProf: Optional[torch.Tensor]
    sb_fn: Optional[Callable]
    intFlux: Optional[torch.Tensor]
    B: int
    batched: bool
    sb_on_velRad: bool = False
    velRad_step: Optional[float] = None
    sbRad_step: Optional[float] = None

    @property
    def dtype(self):
        return self.velProf.dtype

    @property
    def device(self):
        return self.velProf.device

    @property
    def gasSigma_profile(self):  # noqa: N802 -- KinMS's keyword name
        """True when ``gasSigma`` is a profile on ``velRad`` (KinMS's radius-dependent dispersion)."""
        return self.gasSigma.shape[-1] > 1


class _Parser:
    """Coerces one call's KinMS arguments to batched tensors (the rules in the module doc)."""

    def __init__(self, dtype, device, batch):
        self.dtype, self.device, self.batch = dtype, device, batch
        self.batched = batch is True
        self.sizes = {}

    def _take(self, name, x, ndim, what):
        """``x`` as a tensor with a leading model axis; ``ndim`` is its rank without one."""
        t = _as_tensor(x, self.dtype, self.device)
        if t.ndim == ndim:
            return t.unsqueeze(0)
        if t.ndim == ndim + 1:
            if self.batch is False:
                raise ValueError(f"{name} has a batch dimension (shape {tuple(t.shape)}) but batch=False; "
                                 f"give {what}")
            if not (isinstance(x, torch.Tensor) or self.batch):
                raise ValueError(f"{name} of shape {tuple(t.shape)} looks like a batch: pass it as a torch "
                                 f"tensor or with batch=True; otherwise give {what}")
            self.batched = True
            self.sizes[name] = t.shape[0]
            return t
        raise ValueError(f"{name} must be {what}, or a batch of them with a leading model axis; got shape "
                         f"{tuple(t.shape)}")

    def angle(self, name, x):
        """inc/posAng: a scalar; a numpy array/list of several values is a KinMS warp (refused)."""
        if not isinstance(x, torch.Tensor) and self.batch is not True:
            a = np.asarray(x, dtype=np.float64)
            if a.size > 1:
                raise ValueError(f"{name}: warps (radius-dependent inc/posAng) are not supported by this "
                                 f"flat thin-disc model; got an array of {a.size} values. For a batch of "
                                 f"models pass a torch tensor of shape (B,) or batch=True")
            x = a.reshape(())
        return self._take(name, x, 0, "a scalar [deg]")

    def scalar(self, name, x, unit):
        if not isinstance(x, torch.Tensor) and self.batch is not True:
            a = np.asarray(x, dtype=np.float64)
            if a.size == 1:
                x = a.reshape(())
        return self._take(name, x, 0, f"a scalar [{unit}]")

    def profile(self, name, x, unit):
        return self._take(name, x, 1, f"a 1-D profile (n,) [{unit}]")

    def centre(self, x):
        t = self._take("phaseCent", x, 1, "(2,) [arcsec]")
        if t.shape[-1] != 2:
            raise ValueError(f"phaseCent must be (2,) or (B, 2) [arcsec], got shape {tuple(t.shape)[1:]}")
        return t

    def dispersion(self, x, n_vel):
        """gasSigma -> (B or 1, 1) per-model values or (B or 1, n_vel) profiles on velRad.

        scalar; (n_vel,): KinMS's profile on velRad (shared); (B,): one value per model (a torch
        tensor, or any array with batch=True: then a 1-D array is always per model, and a shared
        profile is given as (1, n_vel)); (B, 1) or (B, n_vel) (torch tensor or batch=True)."""
        t = _as_tensor(x, self.dtype, self.device)
        if t.ndim == 0:
            return t.reshape(1, 1)
        if t.ndim == 1 and t.shape[0] == 1 and not isinstance(x, torch.Tensor) and self.batch is not True:
            return t.reshape(1, 1)
        if t.ndim == 1 and t.shape[0] == n_vel and self.batch is not True:
            return t.unsqueeze(0)  # KinMS: a profile on velRad, shared by all models
        if t.ndim == 1:
            if not (isinstance(x, torch.Tensor) or self.batch):
                raise ValueError(f"gasSigma [km/s] must be a scalar or a profile on velRad ({n_vel} values), "
                                 f"got {t.shape[0]} values; for a batch of models pass a torch tensor (B,) or "
                                 "batch=True")
            return self._batch_1d(t)
        if t.ndim == 2 and t.shape[-1] in (1, n_vel):
            return self._take("gasSigma", x, 1, f"(1,) or (n_vel={n_vel},) [km/s]")
        raise ValueError(f"gasSigma must be a scalar, (B,), (B, 1), or a profile on velRad ((n,) or (B, n) "
                         f"with n = {n_vel}) [km/s]; got shape {tuple(t.shape)}")

    def _batch_1d(self, t):
        if self.batch is False:
            raise ValueError(f"gasSigma has a batch dimension (shape {tuple(t.shape)}) but batch=False")
        self.batched = True
        self.sizes["gasSigma"] = t.shape[0]
        return t.reshape(-1, 1)

    def batch_size(self):
        B = max(self.sizes.values(), default=1)
        bad = {k: s for k, s in self.sizes.items() if s not in (1, B)}
        if bad:
            raise ValueError(f"batch sizes do not broadcast: {self.sizes}")
        return B


@dataclass
class _Profiles:
    """Sub-pixel line profiles ready to scatter: ``groups`` of (flat cube index (n, K), profile (n, K),
    model index (n,)); ``cube_flux`` (B,) their sum per model (float64, differentiable: the
    normalisation); ``sky_flux`` (B,) the flux of the disc inside the field (float64, for checks)."""

    groups: list
    cube_flux: torch.Tensor
    sky_flux: torch.Tensor
    B: int


def _finite(name, t, unit):
    if not bool(torch.isfinite(t.detach()).all()):
        raise ValueError(f"{name} must be finite [{unit}]")


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class GasCube(torch.nn.Module):
    """Cube geometry and beam, fixed at construction (KinMS's ``__init__`` arguments).

    Parameters
    ----------
    xs, ys : float
        Field size [arcsec]; the grid is ``SkyGrid.from_kinms(xs, ys, cellSize)`` (``self.grid``).
    vs : float
        Velocity range [km/s]; ``v_size = round(vs / dv)`` channels.
    cellSize : float
        Pixel size [arcsec].
    dv : float
        Channel width [km/s].
    beamSize : float, [bmaj, bmin] or [bmaj, bmin, bpa], or None
        Beam FWHMs [arcsec] and position angle [deg] (see module doc); None or 0 = no beam.
    nsub : int
        Sub-pixels per pixel side (>= 1). The in-sub-pixel velocity spread is integrated
        analytically, so 2 suffices for resolved discs at inc <~ 80 deg; raise it for nearly
        edge-on discs, where the surface brightness varies fast across a deprojected sub-pixel.
    cleanOut : bool
        Skip the beam (KinMS's ``cleanOut``): cube in Jy/pixel. What a visibility fit uses.
    outside_tol : float
        Fraction of disc flux allowed outside the field/channels before a warning.
    check : bool
        Run the (host-syncing) flux checks at each call (the input checks always run).
    nsub_centre, centre_pix : int
        The ``centre_pix x centre_pix`` pixels around the disc centre are sampled ``nsub_centre``
        times per side (a black hole's steep, sign-changing velocity field lives there;
        ``centre_pix = 0`` disables).
    subpixel_spread : bool
        Integrate the velocity spread inside each sub-pixel (module doc). False puts each
        sub-pixel's flux at its centre velocity (plain midpoint rule, converging as nsub^-2): only
        for convergence studies.

    Attributes
    ----------
    grid : SkyGrid
        The pixel grid (centres, sub-pixel axes, primary beam, matching uv grid) — build the
        visibility model from it.
    x_size, y_size, v_size : int
        Cube shape.

    ``model_cube(...)`` takes KinMS's ``model_cube`` arguments (by the same names and units) and
    returns a torch tensor (x_size, y_size, v_size), or (B, x_size, y_size, v_size) when batched.
    """

    def __init__(self, xs, ys, vs, cellSize, dv, beamSize, nsub=2, cleanOut=False,
                 outside_tol=0.01, check=True, nsub_centre=8, centre_pix=6, subpixel_spread=True):
        super().__init__()
        for name, val in (("xs", xs), ("ys", ys), ("vs", vs), ("cellSize", cellSize), ("dv", dv)):
            if not np.isfinite(val) or val <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        if isinstance(nsub, bool) or int(nsub) != nsub or nsub < 1:
            raise ValueError(f"nsub must be a positive integer [sub-pixels per pixel side], got {nsub!r}")
        if int(nsub_centre) != nsub_centre or nsub_centre < 1 or int(centre_pix) != centre_pix or centre_pix < 0:
            raise ValueError(f"nsub_centre must be a positive integer and centre_pix a non-negative integer "
                             f"[pixels], got {nsub_centre!r}, {centre_pix!r}")
        self.xs, self.ys, self.vs = float(xs), float(ys), float(vs)
        self.cellSize, self.dv = float(cellSize), float(dv)
        self.v_size = int(np.round(self.vs / self.dv))
        if int(np.round(self.xs / self.cellSize)) < 2 or int(np.round(self.ys / self.cellSize)) < 2 \
                or self.v_size < 1:
            raise ValueError(f"cube too small: needs >= 2 x 2 pixels and >= 1 channel, got "
                             f"{(round(self.xs / self.cellSize), round(self.ys / self.cellSize), self.v_size)} "
                             f"from xs={xs}, ys={ys}, vs={vs}, cellSize={cellSize}, dv={dv}")
        self.grid = SkyGrid.from_kinms(self.xs, self.ys, self.cellSize)
        self.x_size, self.y_size = self.grid.shape
        self.nsub = int(nsub)
        self.nsub_centre = int(nsub_centre)
        self.centre_pix = int(centre_pix)
        self.cleanOut = bool(cleanOut)
        self.beam = None if cleanOut else _parse_beam(beamSize)
        self.beamSize = beamSize
        self.outside_tol = float(outside_tol)
        self.check = bool(check)
        self.subpixel_spread = bool(subpixel_spread)
        self._kcache = {}
        self._pcache = {}
        if self.beam is not None:
            s_maj = fwhm_to_sigma(self.beam[0] / self.cellSize)
            R = int(math.ceil(5.0 * s_maj)) + 1  # kernel support (< 1e-5 beyond 4.8 sigma)
            self.pad_shape = (_fast_len(self.x_size + R), _fast_len(self.y_size + R))
        else:
            self.pad_shape = None

    # ------------------------------------------------------------------ caches
    def _kernel(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._kcache:
            self._kcache[key] = beam_kernel_fft(self.beam, self.cellSize, self.pad_shape, dtype, device)
        return self._kcache[key]

    def psf_sum(self):
        """Sum of the pixel-sampled unit-peak beam [pixels] (KinMS's ``psf.sum()``); 1 without beam."""
        return 1.0 if self.beam is None else self._kernel(torch.float64, "cpu")[1]

    def _axes(self, s, dtype, device):
        """The grid's sub-pixel centres (s, X), (s, Y) [arcsec], cached."""
        key = ("axes", s, dtype, str(device))
        if key not in self._pcache:
            with warnings.catch_warnings():
                # SkyGrid keeps its numpy axes read-only; torch warns (once) when wrapping them
                warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
                self._pcache[key] = self.grid.subpixel_axes(s, dtype, device)
        return self._pcache[key]

    def _coarse(self, dtype, device):
        """Sub-pixel centres (nsub, X), (nsub, Y) [arcsec] and the flat pixel index of every sub-pixel,
        (nsub, nsub, X, Y) -> ix * Y + iy (layout of the sample axis: sub-x, sub-y, x, y)."""
        key = ("coarse", dtype, str(device))
        if key not in self._pcache:
            s, X, Y = self.nsub, self.x_size, self.y_size
            xg, yg = self._axes(s, dtype, device)
            pix = torch.arange(X * Y, device=device).reshape(1, 1, X, Y).expand(s, s, X, Y).reshape(-1)
            self._pcache[key] = (xg, yg, pix)
        return self._pcache[key]

    def forward(self, *args, **kwargs):
        return self.model_cube(*args, **kwargs)

    # ------------------------------------------------------------------ parse
    def parse(self, inc, posAng, gasSigma=0, sbProf=None, sbRad=None, velRad=None, velProf=None,
              intFlux=None, phaseCent=(0.0, 0.0), vOffset=0.0, dtype=None, device=None, batch=None, **kwargs):
        """KinMS ``model_cube`` arguments -> :class:`DiscParams` (validated; see :meth:`model_cube`)."""
        bad = [k for k, v in kwargs.items() if k in _UNSUPPORTED and v not in (None, 0, [], (), False)]
        if bad:
            raise ValueError(f"KinMS options not supported by this thin-disc model: {bad}")
        other = [k for k in kwargs if k not in _UNSUPPORTED and k not in _IGNORED]
        if other:
            raise TypeError(f"unexpected arguments: {other}")
        if batch not in (None, True, False):
            raise ValueError(f"batch must be None (batched iff a torch tensor has a batch axis), True or False; "
                             f"got {batch!r}")

        # dtype/device: from the first tensor given
        if dtype is None or device is None:
            for v in (inc, posAng, sbProf, velProf, velRad, sbRad, gasSigma, intFlux, phaseCent, vOffset):
                if isinstance(v, torch.Tensor):
                    dtype = dtype or (v.dtype if v.is_floating_point() else torch.get_default_dtype())
                    device = device or v.device
                    break
        dtype = dtype or torch.get_default_dtype()
        device = torch.device(device) if device is not None else torch.device("cpu")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")

        if velProf is None:
            raise ValueError("velProf [km/s] is required")
        if sbProf is None:
            raise ValueError("sbProf is required (tabulated on sbRad, or a callable of radius [arcsec])")
        if velRad is None:
            velRad = sbRad
        if velRad is None:
            raise ValueError("velRad [arcsec] is required (or sbRad to default it to)")

        P = _Parser(dtype, device, batch)
        inc_t = P.angle("inc", inc)
        pa_t = P.angle("posAng", posAng)
        voff_t = P.scalar("vOffset", 0.0 if vOffset is None else vOffset, "km/s")
        pc = P.centre(phaseCent)
        vr = P.profile("velRad", velRad, "arcsec")
        vp = P.profile("velProf", velProf, "km/s")
        _check_grid("velRad", vr)
        if vr.shape[-1] != vp.shape[-1]:
            raise ValueError(f"velRad and velProf lengths differ: {vr.shape[-1]} vs {vp.shape[-1]}")
        gs = P.dispersion(0.0 if gasSigma is None else gasSigma, vr.shape[-1])
        if bool((gs.detach() < 0).any()) or not bool(torch.isfinite(gs.detach()).all()):
            raise ValueError("gasSigma [km/s] must be finite and >= 0")

        sr = sp = sb_fn = None
        if callable(sbProf):
            sb_fn = sbProf
        else:
            if sbRad is None:
                raise ValueError("sbRad [arcsec] is required with a tabulated sbProf")
            sr = P.profile("sbRad", sbRad, "arcsec")
            sp = P.profile("sbProf", sbProf, "any unit")
            _check_grid("sbRad", sr)
            if sr.shape[-1] != sp.shape[-1]:
                raise ValueError(f"sbRad and sbProf lengths differ: {sr.shape[-1]} vs {sp.shape[-1]}")
            if bool((sp.detach() < 0).any()) or not bool(torch.isfinite(sp.detach()).all()):
                raise ValueError("sbProf must be finite and >= 0")
            if bool((sr.detach()[:, 0] < 0).any()):
                raise ValueError("sbRad must be >= 0 [arcsec]")

        fl = None
        if intFlux is not None:
            fl = P.scalar("intFlux", intFlux, "Jy km/s")
            if bool((fl.detach() < 0).any()) or not bool(torch.isfinite(fl.detach()).all()):
                raise ValueError("intFlux [Jy km/s] must be finite and >= 0")
            if not bool((fl.detach() > 0).any()):
                fl = None  # KinMS: intFlux 0 -> unit-sum cube
            elif not bool((fl.detach() > 0).all()):
                raise ValueError("intFlux must be all > 0 or all 0/None within a batch [Jy km/s]")
        _finite("inc", inc_t, "deg")
        _finite("posAng", pa_t, "deg")
        _finite("vOffset", voff_t, "km/s")
        _finite("phaseCent", pc, "arcsec")
        _finite("velProf", vp, "km/s")
        i = inc_t.detach()
        if bool(((i < 0) | (i > 90)).any()):
            raise ValueError(f"inc must lie in [0, 90) deg, got {i.cpu().numpy().tolist()}")
        if bool((i == 90).any()):
            raise ValueError("inc = 90 deg: a thin disc seen exactly edge-on has no projected area, which no "
                             "sky-plane sampling resolves; use inc < 90 deg (and more sub-pixels, nsub, for "
                             "discs within a few degrees of edge-on)")
        # one interpolation search for both profiles when their nodes agree (and sbRad needs no gradient)
        same = (sr is not None and not sr.requires_grad and sr.shape == vr.shape
                and bool(torch.equal(sr.detach(), vr.detach())))
        return DiscParams(inc=inc_t, posAng=pa_t, vOffset=voff_t, phaseCent=pc, velRad=vr, velProf=vp,
                          gasSigma=gs, sbRad=sr, sbProf=sp, sb_fn=sb_fn, intFlux=fl, B=P.batch_size(),
                          batched=P.batched, sb_on_velRad=same, velRad_step=_uniform_step(vr),
                          sbRad_step=None if sr is None else _uniform_step(sr))

    # ------------------------------------------------------------------ stages
    def model_cube(self, inc, posAng, gasSigma=0, sbProf=None, sbRad=None, velRad=None, velProf=None,
                   intFlux=None, phaseCent=(0.0, 0.0), vOffset=0.0, dtype=None, device=None, batch=None,
                   **kwargs):
        """Model cube [Jy/beam per channel, or Jy/pixel without beam; see module doc].

        Parameters
        ----------
        inc, posAng : float or torch tensor (B,)
            Inclination [deg] in [0, 90) and position angle [deg]. A numpy array/list of several
            values (a KinMS warp) raises ValueError unless ``batch=True``.
        gasSigma : float, (n,) profile on velRad, or torch (B,), (B, 1), (B, n)
            Velocity dispersion [km/s], >= 0.
        sbProf, sbRad : (n,) or (B, n), or a callable
            Surface brightness (any unit) on sbRad [arcsec]; or a callable r [arcsec] (B, M) -> (B, M).
        velRad, velProf : (n,) or (B, n)
            Circular-velocity curve [arcsec], [km/s]; velRad defaults to sbRad.
        intFlux : float or (B,)
            Integrated flux [Jy km/s]; None/0: the cube sums to 1.
        phaseCent : (2,) or (B, 2)
            Disc centre [arcsec] from the cube reference.
        vOffset : float or (B,)
            Line offset [km/s].
        dtype, device
            Default to those of the first tensor argument (else torch's default dtype, CPU).
        batch : None, True or False
            None: batched iff a torch tensor argument has a leading model axis. True: numpy arrays
            with a leading model axis are batches too, and the result is always (B, ...). False:
            refuse batch axes.

        Returns
        -------
        torch.Tensor (x_size, y_size, v_size), or (B, x_size, y_size, v_size) when batched.
        """
        p = self.parse(inc, posAng, gasSigma=gasSigma, sbProf=sbProf, sbRad=sbRad, velRad=velRad,
                       velProf=velProf, intFlux=intFlux, phaseCent=phaseCent, vOffset=vOffset, dtype=dtype,
                       device=device, batch=batch, **kwargs)
        return self.evaluate(p)

    def evaluate(self, p):
        """render -> (checks) -> convolve -> normalise for parsed parameters ``p`` (:class:`DiscParams`).

        Without a beam the normalisation is applied to the sub-pixel line profiles before they are
        scattered into the cube (the total is the sum of the profiles): no pass over the full cube
        other than the scatter itself, forward or backward."""
        pr = self._profiles(p)
        if self.check:
            self._check_flux(pr.cube_flux, pr.sky_flux, p)
        if self.beam is None:
            cube = self._scatter(pr, self._scale(p, pr.cube_flux))
        else:
            cube = self.normalise(self.convolve(self._scatter(pr)), p)
        return cube if p.batched else cube[0]

    def convolve(self, cube):
        """The beam-convolved cube (B, X, Y, V) (unchanged without beam)."""
        if self.beam is None:
            return cube
        kfft, _ = self._kernel(cube.dtype, cube.device)
        N1, N2 = self.pad_shape
        c = cube.permute(0, 3, 1, 2)  # FFT over contiguous (x, y) planes
        f = torch.fft.rfft2(c, s=(N1, N2))
        c = torch.fft.irfft2(f * kfft, s=(N1, N2))[..., : self.x_size, : self.y_size]
        return c.permute(0, 2, 3, 1)

    def _scale(self, p, total):
        """Per-model factor (B,) [float64] that takes a cube summing to ``total`` to KinMS's normalisation."""
        if p.intFlux is None:
            return 1.0 / total
        return p.intFlux.double() * (self.psf_sum() / self.dv) / total

    def normalise(self, cube, p):
        """Scale (B, X, Y, V) to ``intFlux`` (KinMS's normalisation, module doc); sums in float64."""
        scale = self._scale(p, cube.sum(dim=(1, 2, 3), dtype=torch.float64))
        return cube * scale.to(cube.dtype).reshape(-1, 1, 1, 1)

    def render(self, p):
        """Unconvolved, unnormalised cube (B, X, Y, V) and the flux of the disc inside the field, (B,)."""
        pr = self._profiles(p)
        return self._scatter(pr), pr.sky_flux

    def _profiles(self, p):
        """Line profiles of every sub-pixel over the channels it reaches (:class:`_Profiles`).

        The pixels around the disc centre are rendered with ``nsub_centre`` sub-pixels instead of
        ``nsub``: there a black hole makes the rotation curve steep and the line-of-sight velocity
        changes sign within a pixel, which a linear velocity across a coarse sub-pixel misrepresents.
        """
        dtype, device = p.dtype, p.device
        s, X, Y, B = self.nsub, self.x_size, self.y_size, p.B
        xg, yg, pix = self._coarse(dtype, device)
        keep = None
        parts = []
        P = min(self.centre_pix, X, Y)
        sc = self.nsub_centre
        if P > 0 and sc > s:
            # pixels around the disc centre (a location, not a parameter: no gradient), inside the cube
            # (.tolist(), not .numpy(): works on torch.func's wrapped tensors under jvp/vmap)
            ixc, iyc = self.grid.pixel_of(*np.array(p.phaseCent.detach().tolist()).T)
            ix0 = torch.as_tensor(np.clip(ixc - P // 2, 0, X - P), device=device)
            iy0 = torch.as_tensor(np.clip(iyc - P // 2, 0, Y - P), device=device)
            j = torch.arange(P, device=device)
            jx, jy = ix0.reshape(-1, 1) + j, iy0.reshape(-1, 1) + j  # (Bp, P) pixel indices
            xf, yf = self._axes(sc, dtype, device)
            xp = xf[:, jx].permute(1, 0, 2)  # (Bp, sc, P) sub-pixel centres [arcsec]
            yp = yf[:, jy].permute(1, 0, 2)
            parts.append(self._samples(p, xp, yp, sc))
            pp = (jx.reshape(-1, P, 1) * Y + jy.reshape(-1, 1, P)).reshape(-1, 1, P * P)
            parts[-1]["pix"] = pp.expand(-1, sc * sc, -1).reshape(pp.shape[0], -1)
            # the coarse sub-pixels of those pixels are replaced
            ax = torch.arange(X, device=device)
            ay = torch.arange(Y, device=device)
            inx = (ax >= ix0.reshape(-1, 1)) & (ax < ix0.reshape(-1, 1) + P)  # (Bp, X)
            iny = (ay >= iy0.reshape(-1, 1)) & (ay < iy0.reshape(-1, 1) + P)
            keep = (~(inx.reshape(-1, 1, 1, X, 1) & iny.reshape(-1, 1, 1, 1, Y))).expand(-1, s, s, X, Y)
        # the coarse grid in slabs of pixel rows of ~_SAMPLE_CHUNK sub-pixels (all models): bounds the
        # temporaries of the ~60 elementwise ops of the sub-pixel stage (memory for large batches
        # under no_grad; timing was neutral for B <= 4 on 2 CPU cores)
        rows = max(1, _SAMPLE_CHUNK // (B * s * s * Y)) if device.type == "cpu" else X
        pix = pix.reshape(s, s, X, Y)
        for x0 in range(0, X, rows):
            x1 = min(X, x0 + rows)
            q = self._samples(p, xg[None, :, x0:x1], yg.unsqueeze(0), s)
            q["pix"] = pix[:, :, x0:x1].reshape(1, -1)
            q["keep"] = None if keep is None else keep[:, :, :, x0:x1].reshape(keep.shape[0], -1)
            parts.append(q)
        # sub-pixels without emission (e.g. beyond a tabulated profile's cut-off) are skipped, unless a
        # gradient could still reach them: d cube / d sbProf at a node whose value is 0 is not 0
        drop_dark = not (p.sbProf is not None and p.sbProf.requires_grad)
        return self._bin(parts, B, dtype, device, drop_dark)

    def _scatter(self, pr, scale=None):
        """Sum the sub-pixel profiles into the cube (B, X, Y, V), each model's times ``scale`` (B,)."""
        pf0 = pr.groups[0][1]
        out = torch.zeros(pr.B * self.x_size * self.y_size * self.v_size, dtype=pf0.dtype, device=pf0.device)
        for idx, pf, b in pr.groups:
            if scale is not None:
                pf = pf * scale.to(pf.dtype).index_select(0, b).unsqueeze(1)
            # in place on a fresh buffer: autograd needs only idx for it (no copy of the cube per group)
            out.index_add_(0, idx.reshape(-1), pf.reshape(-1))
        return out.reshape(pr.B, self.x_size, self.y_size, self.v_size)

    # ------------------------------------------------------------------ internals
    def _samples(self, p, xg, yg, s):
        """Per-sub-pixel line parameters for the sub-pixel centres xg (B or 1, s, nx), yg (B or 1, s, ny)
        [arcsec from the cube reference]; every tensor is (B or 1, s*s*nx*ny) in (sub-x, sub-y, x, y)
        order: ``c0`` line centre [channel units: channel k spans [k, k+1)], ``a2`` squared half-width of
        the in-sub-pixel velocity box [channels^2], ``sc`` Gaussian dispersion [channels] and ``flux``
        (surface brightness x sky area)."""
        V, dv = self.v_size, self.dv
        nx, ny = xg.shape[-1], yg.shape[-1]
        h = self.cellSize / s  # sub-pixel side [arcsec]
        pc = p.phaseCent
        x = xg.reshape(-1, s, 1, nx, 1) - pc[:, 0].reshape(-1, 1, 1, 1, 1)
        y = yg.reshape(-1, 1, s, 1, ny) - pc[:, 1].reshape(-1, 1, 1, 1, 1)
        pa_r = torch.deg2rad(p.posAng).reshape(-1, 1)
        inc_r = torch.deg2rad(p.inc).reshape(-1, 1)
        sin_pa, cos_pa = torch.sin(pa_r), torch.cos(pa_r)
        # cos i floored: inc = 90 is refused, but float32's cos(89.99999 deg) is rounding noise
        cos_i = torch.cos(inc_r).clamp_min(1e-6)
        sin_i = torch.sin(inc_r)
        sin_pa5, cos_pa5, cos_i5 = (t.reshape(-1, 1, 1, 1, 1) for t in (sin_pa, cos_pa, cos_i))
        xd = x * sin_pa5 - y * cos_pa5
        yd = (x * cos_pa5 + y * sin_pa5) / cos_i5
        # tiny softening keeps d r / d(xd, yd) finite at a sub-pixel that hits the centre exactly
        r = torch.sqrt(xd * xd + yd * yd + (1e-9 * self.cellSize) ** 2)
        Bx = r.shape[0]
        rf = r.reshape(Bx, -1)
        xd = xd.expand_as(r).reshape(Bx, -1)
        yd = yd.expand_as(r).reshape(Bx, -1)
        iv = _interp_index(rf, p.velRad, p.velRad_step)
        vc = _interp_apply(iv, p.velProf, "clamp")
        # d v_c / d r continuous in r (node slopes interpolated): the interpolant's own slope jumps at
        # every node, and a sub-pixel's velocity spread built on it made the cube, and the likelihood,
        # jump by up to ~10 nats at high S/N as sub-pixel radii crossed nodes (fast near edge-on)
        dvc = _interp_apply(iv, _node_slopes(p.velRad, p.velProf), "zero")
        if p.sb_fn is not None:
            sb = p.sb_fn(rf)
            if not isinstance(sb, torch.Tensor) or sb.shape[-1] != rf.shape[-1]:
                raise ValueError("a callable sbProf must map a (B, M) radius tensor [arcsec] to a (B, M) tensor")
        else:
            sb = _interp_apply(iv if p.sb_on_velRad else _interp_index(rf, p.sbRad, p.sbRad_step), p.sbProf, "zero")
        # line of sight velocity v = -sin i Omega(r) x_d, Omega = v_c / r, and its sky gradient
        om = vc / rf
        dom = (dvc - om) / rf  # d Omega / d r
        g_xd = -sin_i * (om + dom * xd * xd / rf)  # d v / d x_d
        g_yd = -sin_i * (dom * xd * yd / rf)  # d v / d y_d
        g_x = g_xd * sin_pa + g_yd * (cos_pa / cos_i)  # chain rule through (x_d, y_d)(x, y)
        g_y = -g_xd * cos_pa + g_yd * (sin_pa / cos_i)
        vlos = -sin_i * om * xd
        # a box of the same variance as a linear velocity across the square sub-pixel:
        # var = h^2 (g_x^2 + g_y^2) / 12 -> box half-width^2 = h^2 |g|^2 / 4 [channels^2]
        a2 = (g_x * g_x + g_y * g_y) * (0.25 * (h / dv) ** 2)
        if not self.subpixel_spread:
            a2 = torch.zeros_like(a2)
        if p.gasSigma_profile:
            sig = _interp_apply(iv, p.gasSigma, "clamp")
        else:
            sig = p.gasSigma.reshape(-1, 1)
        sc = (sig / dv).clamp_min(_SIGMA_FLOOR_FRAC)
        c0 = (vlos + p.vOffset.reshape(-1, 1)) / dv + (V / 2.0 + 0.5)
        # sky flux per sub-pixel: disc surface brightness x sub-pixel area / cos i (thin disc)
        flux = sb * (h * h / cos_i)
        return dict(c0=c0, a2=a2, sc=sc, flux=flux)

    def _bin(self, parts, B, dtype, device, drop_dark=False):
        """Every sub-pixel's channel-integrated line profile over the channels it reaches.

        Each sub-pixel reaches channels ``lo..hi`` (its box plus the Gaussian tails); sub-pixels are
        grouped by that count L (and by which form of the profile they need) and each group evaluates
        the profile at ``K + 1`` edges of a window of K >= L channels, so no work is spent on channels
        a line cannot reach. ``drop_dark``: skip sub-pixels whose flux is exactly 0 as well."""
        V, XY = self.v_size, self.x_size * self.y_size
        nt = _TAIL_SIGMAS[dtype]
        keys = ("c0", "a2", "sc", "flux", "base", "b")
        cat = {k: [] for k in keys}
        keeps = []
        sky = torch.zeros(B, dtype=torch.float64, device=device)
        b = torch.arange(B, device=device).reshape(-1, 1)
        for q in parts:
            N = max(q[k].shape[-1] for k in ("c0", "a2", "flux", "pix"))
            keep = q.get("keep")
            with torch.no_grad():  # for the checks only
                fl = q["flux"] if keep is None else q["flux"] * keep
                sky = sky + fl.sum(-1, dtype=torch.float64)
            vals = dict(q, base=b * XY + q["pix"], b=b)
            for k in keys:
                cat[k].append(vals[k].expand(B, N).reshape(-1))
            keeps.append(torch.ones(B * N, dtype=torch.bool, device=device) if keep is None
                         else keep.expand(B, N).reshape(-1))
        S = {k: torch.cat(v) if len(v) > 1 else v[0] for k, v in cat.items()}
        with torch.no_grad():
            keep = torch.cat(keeps) if len(keeps) > 1 else keeps[0]
            if drop_dark:
                keep = keep & (S["flux"] != 0)
            a = S["a2"].sqrt()
            reach = a + nt * S["sc"]
            lo = torch.floor(S["c0"] - reach).clamp(0, V - 1).long()
            hi = torch.floor(S["c0"] + reach).clamp(0, V - 1).long()
            L = (hi - lo + 1).clamp_min(1)
            wide = a >= _SERIES_BELOW * S["sc"]
            kind = torch.where(keep, wide.long() * (V + 1) + L, torch.zeros_like(L))  # 0: dropped
            counts = np.array(torch.bincount(kind, minlength=2 * (V + 1)).tolist())
        groups = []
        total = torch.zeros(B, dtype=torch.float64, device=device)
        itype = torch.int32 if B * XY * V < 2**31 else torch.int64  # half the index memory
        for w in (False, True):
            off = int(w) * (V + 1)
            for K_lo, K in _plan_groups(counts[off:off + V + 1], V):
                sel = ((kind >= off + K_lo) & (kind <= off + K)).nonzero().squeeze(1)
                g = {k: t.index_select(0, sel) for k, t in S.items()}
                start = torch.clamp(lo.index_select(0, sel), max=V - K)
                prof = _LineProfile.apply(g["c0"], g["a2"], g["sc"], g["flux"], start, K, w)
                idx = (g["base"] * V + start).unsqueeze(1) + torch.arange(K, device=device, dtype=start.dtype)
                groups.append((idx.to(itype), prof, g["b"]))
                # float64 model totals from float32 per-sub-pixel sums of <= V terms
                total = total.index_add(0, g["b"], prof.sum(1).double())
        if not groups:  # nothing in the field: an empty cube (the checks say why)
            groups.append((torch.zeros(0, 1, dtype=torch.long, device=device), torch.zeros(0, 1, dtype=dtype,
                                                                                          device=device),
                           torch.zeros(0, dtype=torch.long, device=device)))
        return _Profiles(groups=groups, cube_flux=total, sky_flux=sky, B=B)

    def _check_flux(self, cube_flux, sky_flux, p):
        """Warn/raise when disc flux falls outside the field or the channel range (counts reported).

        cube_flux, sky_flux: (B,) flux inside the cube (field and channels) and inside the field."""
        with torch.no_grad():
            in_ch = cube_flux.detach().double().cpu().numpy()
            sky = sky_flux.detach().double().cpu().numpy() * np.ones_like(in_ch)
            empty = np.flatnonzero(~(sky > 0))
            if empty.size:
                inc = (p.inc.detach().double().cpu().numpy() * np.ones_like(sky))[empty]
                if np.any(inc > 80.0):
                    raise ValueError(f"{empty.size} of {sky.size} models put no flux in the field at inc = "
                                     f"{inc.max():.6g} deg: an edge-on thin disc is narrower than the sub-pixel "
                                     "sampling (cellSize / nsub) on the sky; use a smaller inc (< 90 deg) or more "
                                     "sub-pixels (nsub)")
                raise ValueError(f"{empty.size} of {sky.size} models put no flux in the field "
                                 "(disc outside the cube, or sbProf zero over it)")
            lost_ch = 1.0 - in_ch / sky
            none = np.flatnonzero(~(in_ch > 0))
            if none.size:
                raise ValueError(f"{none.size} of {sky.size} models put no flux in any channel: the channel "
                                 "axis does not overlap the line (check vs, dv, vOffset, velProf)")
            bad = np.flatnonzero(lost_ch > self.outside_tol)
            if bad.size:
                warnings.warn(f"{bad.size} of {sky.size} models lose up to {lost_ch.max():.2%} of their flux "
                              "outside the channel range; the cube is normalised to the flux inside it",
                              stacklevel=4)
            if p.sbRad is not None:
                # disc total = integral of 2 pi r S(r) dr over the tabulated profile (trapezoid)
                r = p.sbRad.detach().double()
                f = 2 * np.pi * r * p.sbProf.detach().double()
                disc = torch.trapezoid(f, r, dim=-1).cpu().numpy() * np.ones_like(sky)
                lost = 1.0 - sky / np.where(disc > 0, disc, np.nan)
                bad = np.flatnonzero(lost > max(self.outside_tol, 3e-3 * self.nsub ** -2 + 1e-3))
                if bad.size:
                    warnings.warn(f"{bad.size} of {sky.size} models: up to {np.nanmax(lost):.2%} of the disc "
                                  "flux falls outside the field of view; the cube is normalised to the flux "
                                  "inside it", stacklevel=4)


def model_cube(xs, ys, vs, cellSize, dv, beamSize, inc, posAng, gasSigma=0, sbProf=None, sbRad=None,
               velRad=None, velProf=None, intFlux=None, phaseCent=(0.0, 0.0), vOffset=0.0, nsub=2,
               cleanOut=False, dtype=None, device=None, check=True, nsub_centre=8, centre_pix=6, batch=None,
               subpixel_spread=True, **kwargs):
    """Functional form of :class:`GasCube`: ``GasCube(xs, ..., beamSize).model_cube(inc, posAng, ...)``.

    Same arguments, names and units as ``KinMS(xs, ys, vs, cellSize, dv, beamSize).model_cube(...)``
    (xs, ys, cellSize, phaseCent, sbRad, velRad in arcsec; vs, dv, velProf, gasSigma, vOffset in
    km/s; inc, posAng in deg; intFlux in Jy km/s), plus ``batch`` (see :meth:`GasCube.model_cube`).
    Returns a torch tensor (x_size, y_size, v_size), or (B, x_size, y_size, v_size) when batched.
    Build a :class:`GasCube` once when calling in a loop (it caches the beam's FFT and the grid).
    """
    m = GasCube(xs, ys, vs, cellSize, dv, beamSize, nsub=nsub, cleanOut=cleanOut, check=check,
                nsub_centre=nsub_centre, centre_pix=centre_pix, subpixel_spread=subpixel_spread)
    return m.model_cube(inc, posAng, gasSigma=gasSigma, sbProf=sbProf, sbRad=sbRad, velRad=velRad,
                        velProf=velProf, intFlux=intFlux, phaseCent=phaseCent, vOffset=vOffset,
                        dtype=dtype, device=device, batch=batch, **kwargs)
