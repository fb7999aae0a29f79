"""Differentiable, deterministic thin-disc gas cube: a drop-in twin of ``KinMS(...).model_cube``.

KinMS (Davis et al. 2013) draws random cloudlets from the surface-brightness profile, projects
them and bins them into pixels and channels. Its *expected* cube (infinitely many clouds) is

    cube[ix, iy, iv] = integral over pixel (ix, iy) of  S_sky(x, y) * P_iv(v_los(x, y), sigma)

followed by a beam convolution and a flux normalisation, where ``P_iv`` is the probability that a
Gaussian of mean ``v_los`` and dispersion ``sigma`` falls in channel ``iv``. We evaluate exactly that
expectation on a regular sub-pixel grid (midpoint rule, ``nsub x nsub`` samples per pixel), with

* ``P_iv`` integrated analytically over the channel by erf differences, so a line much wider than a
  channel is smooth (no comb) and one much narrower than a channel still lands in the right channel;
* surface brightness and rotation curve linearly interpolated with torch ops (gradients flow to the
  profile values, to the geometry and to any parameter the profiles were built from);
* the beam applied by zero-padded FFT convolution (linear, not circular, like KinMS's ``convolve``).
* the ``centre_pix x centre_pix`` pixels around the disc centre re-sampled ``nsub_centre`` times per
  side: a black hole's steep, sign-changing velocity field lives in the central pixels (with nsub=2
  alone the NGC 4697-like case differs from a 4e6-cloud KinMS cube by 6.7% of the peak there; with
  the refined centre by 1.6%, most of it KinMS's own Monte Carlo noise).

Conventions (all taken from KinMS 3.0.14's source, so either model can replace the other):

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
* ``inc`` [deg]: 0 = face-on. Disc coordinates of a sky point (relative to the disc centre):
  ``x_d = x sin PA - y cos PA``, ``y_d = (x cos PA + y sin PA) / cos i``; line-of-sight velocity
  ``v_los = -v_c(r) (x_d / r) sin i``.
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

Not supported (KinMS features outside this model): warps (array-valued ``inc``/``posAng``), disc
thickness, ``inClouds``/``vLOS_clouds``, ``massDist``, radial motions, ``vPosAng``/``vPhaseCent``,
asymmetric drift, multiple lines. A thin disc at exactly 90 deg is a line of zero width that no
sky-plane sampling resolves: keep ``inc`` below ~89 deg or raise ``nsub`` (accuracy is set by the
deprojected sub-pixel size ``cellSize / nsub / cos(inc)`` compared with the scales of the profiles).
"""

import math
import warnings

import numpy as np
import torch

__all__ = ["model_cube", "GasCube", "interp1d", "exponential_sb", "beam_kernel_fft", "channel_edges"]

_SQRT2 = math.sqrt(2.0)
# Width floor [fraction of a channel] for gasSigma = 0: the erf step then becomes a channel-binning
# box (KinMS's nearest-channel binning) without a division by zero.
_SIGMA_FLOOR_FRAC = 1e-4
# KinMS zeroes kernel values below 1e-5 of the peak; we do the same so both psf sums agree.
_PSF_CUT = 1e-5


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def _as_tensor(x, dtype, device):
    if isinstance(x, torch.Tensor):
        return x.to(dtype=dtype, device=device)
    # a copy: numpy views with negative strides cannot become tensors
    return torch.as_tensor(np.array(x, dtype=np.float64), dtype=dtype, device=device)


def _batched(name, x, dtype, device, ndim, expected):
    """``x`` with a leading batch axis added if it has rank ``ndim``. Returns (tensor, batched?)."""
    t = _as_tensor(x, dtype, device)
    if t.ndim == ndim:
        return t.unsqueeze(0), False
    if t.ndim == ndim + 1:
        return t, True
    raise ValueError(f"{name} must be {expected}, got shape {tuple(t.shape)}")


def _batch_scalar(name, x, dtype, device):
    """A per-model scalar as a (B,) tensor; B = 1 for a plain number. Returns (tensor, batched?)."""
    return _batched(name, x, dtype, device, 0,
                    "a scalar or a 1-D batch of scalars (radial warps are not supported)")


def _batch_profile(name, x, dtype, device):
    """A profile as a (B, n) tensor; (n,) -> (1, n). Returns (tensor, batched?)."""
    return _batched(name, x, dtype, device, 1, "1-D (n,) or 2-D (B, n)")


def _check_grid(name, xp):
    if xp.shape[-1] < 2:
        raise ValueError(f"{name} needs at least 2 points, got {xp.shape[-1]}")
    d = torch.diff(xp.detach(), dim=-1)
    if not bool(torch.isfinite(xp.detach()).all()):
        raise ValueError(f"{name} contains non-finite values")
    if not bool((d > 0).all()):
        raise ValueError(f"{name} must be strictly increasing")


def interp1d(x, xp, fp, outside="clamp"):
    """Differentiable batched linear interpolation (``np.interp`` semantics).

    x: (B, M) query points; xp: (B, n) or (1, n) strictly increasing nodes; fp: (B, n) or (1, n)
    values (same units as the result). ``outside="clamp"`` holds the end values beyond the nodes
    (np.interp, what KinMS does for the rotation curve); ``outside="zero"`` returns 0 outside
    [xp[0], xp[-1]] (what KinMS's cloud sampler implies for the surface brightness).
    Gradients flow to x, xp and fp.
    """
    B = max(x.shape[0], xp.shape[0], fp.shape[0])
    n = xp.shape[-1]
    xp = xp.expand(B, n)
    fp = fp.expand(B, n)
    x = x.expand(B, x.shape[-1])
    idx = torch.searchsorted(xp.detach().contiguous(), x.detach().contiguous(), right=True)
    idx = idx.clamp(1, n - 1)
    x0 = torch.gather(xp, 1, idx - 1)
    x1 = torch.gather(xp, 1, idx)
    f0 = torch.gather(fp, 1, idx - 1)
    f1 = torch.gather(fp, 1, idx)
    t = ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)
    y = f0 + t * (f1 - f0)
    if outside == "zero":
        inside = (x >= xp[:, :1]) & (x <= xp[:, -1:])
        y = torch.where(inside, y, torch.zeros_like(y))
    return y


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
    s_maj = bmaj / cellSize / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    s_min = bmin / cellSize / (2.0 * math.sqrt(2.0 * math.log(2.0)))
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


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------
class GasCube(torch.nn.Module):
    """Cube geometry and beam, fixed at construction (KinMS's ``__init__`` arguments).

    xs, ys [arcsec]: field size; vs [km/s]: velocity range; cellSize [arcsec/pixel];
    dv [km/s/channel]; beamSize [arcsec] (see module doc; None/0 = no beam);
    nsub: sub-pixel samples per pixel side (midpoint rule; 2-4 is plenty for resolved discs at
    inc <~ 80 deg, more for edge-on discs); cleanOut: skip the beam (KinMS's ``cleanOut``);
    outside_tol: fraction of disc flux allowed to fall outside the field/channels before a warning;
    check: run the (host-syncing) flux checks at each call; nsub_centre, centre_pix: the
    ``centre_pix x centre_pix`` pixels around the disc centre are sampled ``nsub_centre`` times per
    side (a black hole's steep, sign-changing velocity field lives there; 0 disables).

    ``model_cube(...)`` takes KinMS's ``model_cube`` arguments (by the same names and units) and
    returns a torch tensor (x_size, y_size, v_size), or (B, x_size, y_size, v_size) if any parameter
    is batched.
    """

    def __init__(self, xs, ys, vs, cellSize, dv, beamSize, nsub=2, cleanOut=False,
                 outside_tol=0.01, check=True, nsub_centre=8, centre_pix=6):
        super().__init__()
        for name, val in (("xs", xs), ("ys", ys), ("vs", vs), ("cellSize", cellSize), ("dv", dv)):
            if not np.isfinite(val) or val <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        if int(nsub) != nsub or nsub < 1:
            raise ValueError(f"nsub must be a positive integer, got {nsub!r}")
        self.xs, self.ys, self.vs = float(xs), float(ys), float(vs)
        self.cellSize, self.dv = float(cellSize), float(dv)
        self.x_size = int(np.round(self.xs / self.cellSize))
        self.y_size = int(np.round(self.ys / self.cellSize))
        self.v_size = int(np.round(self.vs / self.dv))
        if min(self.x_size, self.y_size, self.v_size) < 1:
            raise ValueError(f"cube has no pixels/channels: sizes {(self.x_size, self.y_size, self.v_size)} "
                             f"from xs={xs}, ys={ys}, vs={vs}, cellSize={cellSize}, dv={dv}")
        self.nsub = int(nsub)
        if int(nsub_centre) != nsub_centre or nsub_centre < 1 or int(centre_pix) != centre_pix or centre_pix < 0:
            raise ValueError("nsub_centre must be a positive integer and centre_pix a non-negative integer")
        self.nsub_centre = int(nsub_centre)
        self.centre_pix = int(centre_pix)
        self.cleanOut = bool(cleanOut)
        self.beam = None if cleanOut else _parse_beam(beamSize)
        self.beamSize = beamSize
        self.outside_tol = float(outside_tol)
        self.check = bool(check)
        self._kcache = {}
        if self.beam is not None:
            s_maj = self.beam[0] / self.cellSize / 2.3548
            R = int(math.ceil(5.0 * s_maj)) + 1  # kernel support (< 1e-5 beyond 4.8 sigma)
            self.pad_shape = (_fast_len(self.x_size + R), _fast_len(self.y_size + R))
        else:
            self.pad_shape = None

    # sub-pixel centres [arcsec] relative to the cube reference, (nsub, x_size) and (nsub, y_size):
    # sub-pixel k of pixel ix sits at (ix - n/2 + (k + 0.5)/nsub - 0.5) cellSize. The sub-pixel index
    # leads so that summing sub-pixels into pixels adds contiguous blocks (much faster than a
    # strided reduction).
    def _subgrid(self, dtype, device):
        s = self.nsub

        def axis(n):
            k = torch.arange(s, dtype=dtype, device=device).reshape(s, 1)
            ix = torch.arange(n, dtype=dtype, device=device).reshape(1, n)
            return (ix - n / 2.0 + (k + 0.5) / s - 0.5) * self.cellSize

        return axis(self.x_size), axis(self.y_size)

    def _kernel(self, dtype, device):
        key = (dtype, str(device))
        if key not in self._kcache:
            self._kcache[key] = beam_kernel_fft(self.beam, self.cellSize, self.pad_shape, dtype, device)
        return self._kcache[key]

    def forward(self, *args, **kwargs):
        return self.model_cube(*args, **kwargs)

    def model_cube(self, inc, posAng, gasSigma=0, sbProf=None, sbRad=None, velRad=None, velProf=None,
                   intFlux=None, phaseCent=(0.0, 0.0), vOffset=0.0, dtype=None, device=None, **kwargs):
        """Model cube [Jy/beam per channel, or Jy/pixel without beam; see module doc].

        inc, posAng [deg]: scalar or (B,). gasSigma [km/s]: scalar, (B,) or a profile on velRad
        ((n,) or (B, n)). sbProf: surface brightness (arbitrary units) on sbRad [arcsec] ((n,) or
        (B, n)), or a callable r[arcsec] (B, M) -> (B, M). velRad [arcsec] / velProf [km/s]: circular
        velocity curve ((n,) or (B, n)); velRad defaults to sbRad. intFlux [Jy km/s]: scalar or (B,)
        (None/0: cube sums to 1). phaseCent [arcsec]: (2,) or (B, 2). vOffset [km/s]: scalar or (B,).
        dtype/device default to those of the first tensor argument (else torch's default dtype, CPU).
        """
        unsupported = {"inClouds", "vLOS_clouds", "massDist", "radial_motion_func", "diskThick",
                       "vPosAng", "vPhaseCent", "flux_clouds", "asymmetric_drift", "multiple_line_relflux",
                       "returnClouds"}
        bad = [k for k, v in kwargs.items() if k in unsupported and v not in (None, 0, [], (), False)]
        if bad:
            raise ValueError(f"KinMS options not supported by this thin-disc model: {bad}")
        other = [k for k in kwargs if k not in unsupported and k not in
                 {"toplot", "fileName", "vSys", "bunit", "ra", "dec", "restFreq"}]
        if other:
            raise TypeError(f"unexpected arguments: {other}")

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

        inc_t, b1 = _batch_scalar("inc", inc, dtype, device)
        pa_t, b2 = _batch_scalar("posAng", posAng, dtype, device)
        voff_t, b3 = _batch_scalar("vOffset", 0.0 if vOffset is None else vOffset, dtype, device)
        pc = _as_tensor(phaseCent, dtype, device)
        if pc.shape[-1] != 2 or pc.ndim > 2:
            raise ValueError(f"phaseCent must be (2,) or (B, 2) [arcsec], got shape {tuple(pc.shape)}")
        b4 = pc.ndim == 2
        pc = pc.reshape(-1, 2)
        vr, b5 = _batch_profile("velRad", velRad, dtype, device)
        vp, b6 = _batch_profile("velProf", velProf, dtype, device)
        _check_grid("velRad", vr)
        if vr.shape[-1] != vp.shape[-1]:
            raise ValueError(f"velRad and velProf lengths differ: {vr.shape[-1]} vs {vp.shape[-1]}")
        batched = b1 or b2 or b3 or b4 or b5 or b6

        gs = _as_tensor(0.0 if gasSigma is None else gasSigma, dtype, device)
        gs_profile = False
        if gs.ndim == 0:
            gs = gs.reshape(1, 1)
        elif gs.ndim == 1 and gs.shape[0] == vr.shape[-1] and gs.shape[0] > 1:
            gs, gs_profile = gs.unsqueeze(0), True  # profile on velRad (KinMS)
        elif gs.ndim == 1:
            gs, batched = gs.unsqueeze(-1), True
        elif gs.ndim == 2 and gs.shape[-1] == vr.shape[-1]:
            gs_profile, batched = True, True
        else:
            raise ValueError(f"gasSigma must be a scalar, (B,), or a profile on velRad; got {tuple(gs.shape)}")
        if bool((gs.detach() < 0).any()) or not bool(torch.isfinite(gs.detach()).all()):
            raise ValueError("gasSigma [km/s] must be finite and >= 0")

        if callable(sbProf):
            sb_fn, sr, sp = sbProf, None, None
        else:
            if sbRad is None:
                raise ValueError("sbRad [arcsec] is required with a tabulated sbProf")
            sr, b7 = _batch_profile("sbRad", sbRad, dtype, device)
            sp, b8 = _batch_profile("sbProf", sbProf, dtype, device)
            _check_grid("sbRad", sr)
            if sr.shape[-1] != sp.shape[-1]:
                raise ValueError(f"sbRad and sbProf lengths differ: {sr.shape[-1]} vs {sp.shape[-1]}")
            if bool((sp.detach() < 0).any()) or not bool(torch.isfinite(sp.detach()).all()):
                raise ValueError("sbProf must be finite and >= 0")
            if bool((sr.detach()[:, 0] < 0).any()):
                raise ValueError("sbRad must be >= 0 [arcsec]")
            batched = batched or b7 or b8
            sb_fn = None

        if intFlux is None:
            fl = None
        else:
            fl, b9 = _batch_scalar("intFlux", intFlux, dtype, device)
            if bool((fl.detach() < 0).any()) or not bool(torch.isfinite(fl.detach()).all()):
                raise ValueError("intFlux [Jy km/s] must be finite and >= 0")
            batched = batched or b9
            if not bool((fl.detach() > 0).any()):
                fl = None  # KinMS: intFlux 0 -> unit-sum cube
            elif not bool((fl.detach() > 0).all()):
                raise ValueError("intFlux must be all > 0 or all 0/None within a batch")
        for name, t in (("inc", inc_t), ("posAng", pa_t), ("vOffset", voff_t), ("phaseCent", pc),
                        ("velProf", vp)):
            if not bool(torch.isfinite(t.detach()).all()):
                raise ValueError(f"{name} must be finite")
        if bool(((inc_t.detach() < 0) | (inc_t.detach() > 90)).any()):
            raise ValueError("inc must lie in [0, 90] deg")

        sizes = [t.shape[0] for t in (inc_t, pa_t, voff_t, pc, vr, vp, gs) + ((sr, sp) if sr is not None else ())
                 + ((fl,) if fl is not None else ())]
        B = max(sizes)
        if any(s not in (1, B) for s in sizes):
            raise ValueError(f"batch sizes do not broadcast: {sizes}")

        cube, sky_flux = self._render(B, inc_t, pa_t, voff_t, pc, vr, vp, gs, gs_profile, sb_fn, sr, sp)

        if self.check:
            self._check_flux(cube, sky_flux, sr, sp, inc_t)

        if self.beam is not None:
            kfft, psf_sum = self._kernel(dtype, device)
            N1, N2 = self.pad_shape
            f = torch.fft.rfft2(cube, s=(N1, N2))
            cube = torch.fft.irfft2(f * kfft, s=(N1, N2))[..., : self.x_size, : self.y_size]
        else:
            psf_sum = 1.0

        total = cube.sum(dim=(1, 2, 3), keepdim=True)
        if fl is None:
            cube = cube / total
        else:
            cube = cube * (fl.reshape(-1, 1, 1, 1) * psf_sum / (total * self.dv))
        cube = cube.permute(0, 2, 3, 1)  # (B, V, X, Y) -> KinMS's (B, x, y, v)
        return cube if batched else cube[0]

    def _render(self, B, inc, pa, voff, pc, vr, vp, gs, gs_profile, sb_fn, sr, sp):
        """Unconvolved, unnormalised cube (B, V, X, Y) and the flux of the disc inside the field.

        The pixels around the disc centre are re-rendered with ``nsub_centre`` sub-pixels: there a
        black hole makes the rotation curve steep and the line-of-sight velocity changes sign
        within a pixel, which a coarse sub-grid samples poorly (validation/cube_vs_kinms.py).
        """
        dtype, device = vp.dtype, vp.device
        s, X, Y = self.nsub, self.x_size, self.y_size
        xg, yg = self._subgrid(dtype, device)
        cube, flux = self._render_grid(xg.unsqueeze(0), yg.unsqueeze(0), s, inc, pa, voff, pc, vr, vp, gs,
                                       gs_profile, sb_fn, sr, sp)
        P = min(self.centre_pix, X, Y)
        sc = self.nsub_centre
        if P > 0 and sc > s:
            # pixel holding the disc centre (detached: a location, not a parameter), patch inside the cube
            c = pc.detach() / self.cellSize
            ix = (torch.round(c[:, 0] + X / 2.0).long() - P // 2).clamp(0, X - P)
            iy = (torch.round(c[:, 1] + Y / 2.0).long() - P // 2).clamp(0, Y - P)
            k = (torch.arange(sc, dtype=dtype, device=device).reshape(1, sc, 1) + 0.5) / sc - 0.5
            j = torch.arange(P, dtype=dtype, device=device).reshape(1, 1, P)
            xp = (ix.to(dtype).reshape(-1, 1, 1) + j - X / 2.0 + k) * self.cellSize  # (Bp, sc, P)
            yp = (iy.to(dtype).reshape(-1, 1, 1) + j - Y / 2.0 + k) * self.cellSize
            patch, _ = self._render_grid(xp, yp, sc, inc, pa, voff, pc, vr, vp, gs, gs_profile, sb_fn, sr, sp)
            cube = cube.expand(max(cube.shape[0], patch.shape[0]), -1, -1, -1).clone()
            for b in range(cube.shape[0]):
                bi = b if ix.shape[0] > 1 else 0
                bp = b if patch.shape[0] > 1 else 0
                x0, y0 = int(ix[bi]), int(iy[bi])
                cube[b, :, x0:x0 + P, y0:y0 + P] = patch[bp]
        if cube.shape[0] != B:
            cube = cube.expand(B, -1, -1, -1)
        return cube, flux

    def _render_grid(self, xg, yg, s, inc, pa, voff, pc, vr, vp, gs, gs_profile, sb_fn, sr, sp):
        """Unconvolved cube (B, V, nx, ny) of the pixels whose sub-pixel centres [arcsec from the cube
        reference] are xg (B or 1, s, nx) and yg (B or 1, s, ny), and the sky flux they hold, (B,)."""
        V = self.v_size
        X, Y = xg.shape[-1], yg.shape[-1]
        # sky offsets from the disc centre [arcsec], layout (B, sub_x, sub_y, X, Y)
        x = xg.reshape(-1, s, 1, X, 1) - pc[:, 0].reshape(-1, 1, 1, 1, 1)
        y = yg.reshape(-1, 1, s, 1, Y) - pc[:, 1].reshape(-1, 1, 1, 1, 1)
        pa_r = torch.deg2rad(pa).reshape(-1, 1, 1, 1, 1)
        inc_r = torch.deg2rad(inc).reshape(-1, 1, 1, 1, 1)
        sin_pa, cos_pa = torch.sin(pa_r), torch.cos(pa_r)
        # cos i floored: a thin disc at exactly 90 deg has no sky area (see module doc)
        cos_i = torch.cos(inc_r).clamp_min(1e-6)
        sin_i = torch.sin(inc_r)
        xd = x * sin_pa - y * cos_pa
        yd = (x * cos_pa + y * sin_pa) / cos_i
        # tiny softening keeps d r / d(xd, yd) finite at a sub-pixel that hits the centre exactly
        r = torch.sqrt(xd * xd + yd * yd + (1e-9 * self.cellSize) ** 2)
        Bx = r.shape[0]
        xd = xd.expand_as(r)
        rf = r.reshape(Bx, -1)
        if sb_fn is None:
            sb = interp1d(rf, sr, sp, outside="zero")
        else:
            sb = sb_fn(rf)
            if not isinstance(sb, torch.Tensor) or sb.shape[-1] != rf.shape[-1]:
                raise ValueError("a callable sbProf must map a (B, M) radius tensor [arcsec] to a (B, M) tensor")
        vc = interp1d(rf, vr, vp, outside="clamp")
        vlos = -vc * (xd.reshape(Bx, -1) / rf) * sin_i.reshape(-1, 1)
        # sky flux per sub-pixel: disc surface brightness x sub-pixel area / cos i (thin disc)
        flux = sb * ((self.cellSize / s) ** 2 / cos_i.reshape(-1, 1))
        Bm = max(flux.shape[0], vlos.shape[0])
        flux = flux.expand(Bm, -1)
        if gs_profile:
            sig = interp1d(rf, vr, gs, outside="clamp")
        else:
            sig = gs.reshape(-1, 1)
        sig = sig.clamp_min(_SIGMA_FLOOR_FRAC * self.dv)
        edges = channel_edges(V, self.dv, voff)  # (B or 1, V+1)
        # (B, V+1, M): Gaussian CDF at each channel edge; channel weight = difference (erf-integrated)
        inv = (1.0 / (sig * _SQRT2)).unsqueeze(1)  # (B or 1, 1, M or 1)
        a = (vlos.unsqueeze(1) * inv)
        hf = (0.5 * flux).unsqueeze(1)
        Bo = max(a.shape[0], hf.shape[0], edges.shape[0])
        M = a.shape[-1]
        # Channel chunks keep each temporary below ~8 MB: large fresh CPU allocations are
        # page-faulted in on every call and cost more than the arithmetic.
        nch = max(1, min(V, (1 << 20) // max(1, Bo * M) - 1))
        parts = []
        for k0 in range(0, V, nch):
            k1 = min(V, k0 + nch)
            cdf = torch.erf(edges[:, k0:k1 + 1].unsqueeze(-1) * inv - a)  # (B, nch+1, M): erf at the edges
            sub = (cdf[:, 1:] - cdf[:, :-1]) * hf  # erf-integrated Gaussian x sub-pixel flux
            parts.append(sub.reshape(Bo, k1 - k0, s * s, X * Y).sum(dim=2))
        cube = torch.cat(parts, dim=1).reshape(Bo, V, X, Y)
        return cube, flux.sum(dim=-1)

    def _check_flux(self, cube, sky_flux, sr, sp, inc):
        """Warn/raise when disc flux falls outside the field or the channel range (counts reported)."""
        with torch.no_grad():
            in_ch = cube.detach().sum(dim=(1, 2, 3)).double().cpu().numpy()
            sky = sky_flux.detach().double().cpu().numpy() * np.ones_like(in_ch)
            empty = np.flatnonzero(~(sky > 0))
            if empty.size:
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
                              stacklevel=3)
            if sr is not None:
                # disc total = integral of 2 pi r S(r) dr over the tabulated profile (trapezoid)
                r = sr.detach().double()
                f = 2 * np.pi * r * sp.detach().double()
                disc = torch.trapezoid(f, r, dim=-1).cpu().numpy() * np.ones_like(sky)
                lost = 1.0 - sky / np.where(disc > 0, disc, np.nan)
                bad = np.flatnonzero(lost > max(self.outside_tol, 3e-3 * self.nsub ** -2 + 1e-3))
                if bad.size:
                    warnings.warn(f"{bad.size} of {sky.size} models: up to {np.nanmax(lost):.2%} of the disc "
                                  "flux falls outside the field of view; the cube is normalised to the flux "
                                  "inside it", stacklevel=3)


def model_cube(xs, ys, vs, cellSize, dv, beamSize, inc, posAng, gasSigma=0, sbProf=None, sbRad=None,
               velRad=None, velProf=None, intFlux=None, phaseCent=(0.0, 0.0), vOffset=0.0, nsub=2,
               cleanOut=False, dtype=None, device=None, check=True, nsub_centre=8, centre_pix=6, **kwargs):
    """Functional form of :class:`GasCube`: ``GasCube(xs, ..., beamSize).model_cube(inc, posAng, ...)``.

    Same arguments, names and units as ``KinMS(xs, ys, vs, cellSize, dv, beamSize).model_cube(...)``
    (xs, ys, cellSize, phaseCent, sbRad, velRad in arcsec; vs, dv, velProf, gasSigma, vOffset in
    km/s; inc, posAng in deg; intFlux in Jy km/s). Returns a torch tensor (x_size, y_size, v_size),
    or (B, x_size, y_size, v_size) when batched. Build a :class:`GasCube` once when calling in a loop
    (it caches the beam's FFT).
    """
    m = GasCube(xs, ys, vs, cellSize, dv, beamSize, nsub=nsub, cleanOut=cleanOut, check=check,
                nsub_centre=nsub_centre, centre_pix=centre_pix)
    return m.model_cube(inc, posAng, gasSigma=gasSigma, sbProf=sbProf, sbRad=sbRad, velRad=velRad,
                        velProf=velProf, intFlux=intFlux, phaseCent=phaseCent, vOffset=vOffset,
                        dtype=dtype, device=device, **kwargs)
