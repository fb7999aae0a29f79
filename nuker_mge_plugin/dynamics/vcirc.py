"""Differentiable circular velocity of an axisymmetric MGE plus a black hole (torch).

Physics (Cappellari 2008, MNRAS 390, 71; Cappellari 2020, MNRAS 494, 4819, eqs. 35, 38, 45)
------------------------------------------------------------------------------------------
A projected Gaussian of peak surface density ``surf`` [Msun/pc^2], width ``sigma`` [pc] and
observed axis ratio ``qobs`` seen at inclination ``i`` deprojects (eq. 35, 38) into an oblate
3-D Gaussian of intrinsic axis ratio ``q`` and peak density ``rho`` with

    q^2 = (qobs^2 - cos^2 i) / sin^2 i,     e^2 = 1 - q^2 = (1 - qobs^2) / sin^2 i,
    q rho = surf qobs / (sqrt(2 pi) sigma)                          [Msun/pc^3].

Its circular velocity in the equatorial plane (eq. 45 after the substitution
``1 + tau = 1/u^2`` of Chandrasekhar's tau integral) is

    v^2(R) = 4 pi G R^2 sum_k q_k rho_k I_k(R),
    I_k(R) = int_0^1 u^2 exp(-u^2 R^2 / (2 sigma_k^2)) / sqrt(1 - e_k^2 u^2) du,

to which a Plummer-softened black hole adds ``G M_BH R^2 / (R^2 + s^2)^(3/2)``
(Keplerian ``G M_BH / R`` for s = 0). For q = 1 the sum is ``G M(<R) / R``.

Quadrature (why it is accurate to ~1e-11 with 24 nodes)
-------------------------------------------------------
Two features of the integrand defeat a plain rule in u:

* for R >> sigma_k the Gaussian lives at u ~ sigma_k / R: we integrate only up to
  ``u_max = min(1, sqrt(40) sigma_k / R)`` (what is dropped is < exp(-40) of the term);
* for a flat Gaussian (q -> 0) the weight ``1/sqrt(1 - e^2 u^2)`` peaks near u = 1 over a
  width ~q^2: we substitute ``u = sin(theta) / lam`` with ``lam = max(e, 1/2)``, which
  cancels the weight exactly when e >= 1/2 and leaves the smooth factor
  ``cos(theta) / sqrt(cos^2 theta + kappa sin^2 theta)`` (kappa = 1 - e^2/lam^2) otherwise.

After both steps the integrand is an entire, slowly varying function of ``theta / theta_max``
on [0, 1], and one fixed Gauss-Legendre rule serves every Gaussian, radius and flattening.
The rule is smooth in all inputs, so autograd gives exact derivatives of the approximant.

The sum over Gaussians (whose amplitudes may have either sign for least-squares MGEs) is
done in float64 even for float32 inputs, as docs/design.rst ("Numerical rules") asks for reductions.

Fast path (shared sigma and radii; see the comment above ``_mge_sum_fast``)
---------------------------------------------------------------------------
When ``sigma_arcsec`` is (K,) and ``rad`` is (R,) for the whole batch (a Nuker MGE: one sigma
grid, one set of data radii), ``a = rad^2 / (2 sigma^2)`` is the same for every model and I
depends on the model only through q_intr. I is then read from a Chebyshev interpolant in
q_intr on [0.01, 1] (20 nodes, 1e-14 relative to the quadrature above) whose coefficients are
tabulated once per (sigma, radii) with the quadrature above and cached; the batch costs one
float64 GEMM. It is used automatically when every q_intr >= 0.01 and the batch has >= 8
models or the table is already cached; both paths agree to ~1e-13 (tests/test_vcirc.py).

Its length (~640 lines) is two evaluation paths of one quantity (general quadrature and the
Chebyshev table, and VcircTable, the module form of the latter) that must agree to the last digits;
they share the input checks and the final velocity.
"""

import math
from collections import OrderedDict
from functools import lru_cache

import numpy as np
import torch

from ..basis import pc_per_arcsec
from ..constants import G_KMS2_PC_PER_MSUN, INC_RANGE_DEG, INC_RULE


#: Gauss-Legendre nodes per (Gaussian, radius): max error ~1e-11 for any a and q_intr >= 0.01.
N_NODES = 24
#: u-range cut in units of the Gaussian's own scale: exp(-40) ~ 4e-18 of the term is dropped.
_TRUNC_SQ = 40.0
#: Below e^2 = 1/4 the substitution uses lam = 1/2, which keeps it regular at e = 0 (sphere).
_LAM2_MIN = 0.25
#: Work on the 4-D (batch, Gaussian, radius, node) tensor in chunks of about this many elements.
_CHUNK_ELEMENTS = 1 << 19

__all__ = ["vcirc", "vcirc_qintr", "VcircTable", "G_KMS2_PC_PER_MSUN", "shell_integral", "vcirc_from_e2"]


# ----------------------------------------------------------------------------- quadrature
@lru_cache(maxsize=16)
def _gl_nodes_np(n):
    x, w = np.polynomial.legendre.leggauss(n)
    return 0.5 * (x + 1.0), 0.5 * w  # on [0, 1]


def _gl_nodes(n, dtype, device):
    t, w = _gl_nodes_np(n)
    return torch.as_tensor(t, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


def shell_integral(a, e2, n_nodes=N_NODES):
    """I(a, e^2) = int_0^1 u^2 exp(-a u^2) / sqrt(1 - e^2 u^2) du  (Cappellari 2020 eq. 45).

    ``a = R^2 / (2 sigma^2)`` (dimensionless, > 0) and ``e2 = 1 - q_intr^2`` in [0, 1) are
    tensors broadcasting together; the result has their broadcast shape. Differentiable in
    both. See the module docstring for the change of variables.
    """
    t, w = _gl_nodes(n_nodes, a.dtype, a.device)
    # u_max = min(1, sqrt(_TRUNC_SQ / a)); clamp before rsqrt keeps it (and its gradient) finite.
    u_max = torch.rsqrt(torch.clamp(a / _TRUNC_SQ, min=1.0))
    lam2 = torch.clamp(e2, min=_LAM2_MIN)
    lam = torch.sqrt(lam2)
    theta_max = torch.asin(lam * u_max)                # u = sin(theta)/lam in [0, u_max]
    s2 = torch.sin(theta_max[..., None] * t) ** 2      # (..., N): lam^2 u^2 at the nodes
    f = s2 * torch.exp(-(a / lam2)[..., None] * s2)
    with torch.no_grad():
        round_ish = bool((e2 < _LAM2_MIN).any())
    if round_ish:
        # Leftover weight sqrt(1 - lam^2 u^2) / sqrt(1 - e^2 u^2); exactly 1 where lam^2 = e^2.
        # Here theta <= pi/6, so 1 - s2 >= 3/4 carries no cancellation.
        ratio = (e2 / lam2)[..., None]
        f = f * torch.sqrt((1.0 - s2) / (1.0 - ratio * s2))
    return (f @ w) * theta_max / (lam2 * lam)


# ----------------------------------------------------------------------------- inputs
_PER_GAUSS = "per-Gaussian"
_PER_MODEL = "per-model"
_PER_RADIUS = "per-radius"


def _is_array_like(x):
    return isinstance(x, (torch.Tensor, np.ndarray, np.generic, list, tuple))


def _work_dtype_device(values):
    """Promoted floating dtype (float64 if none; at least float32) and the common device."""
    dtypes, devices = [], set()
    for x in values:
        if isinstance(x, torch.Tensor):
            devices.add(x.device)
            if x.is_floating_point():
                dtypes.append(x.dtype)
        elif isinstance(x, (np.ndarray, np.generic)) and np.issubdtype(x.dtype, np.floating):
            dtypes.append(torch.from_numpy(np.zeros(1, dtype=x.dtype)).dtype)
    if len(devices) > 1:
        raise ValueError(f"inputs live on different devices: {sorted(map(str, devices))}; move them to one")
    dtype = torch.float64
    if dtypes:
        dtype = dtypes[0]
        for d in dtypes[1:]:
            dtype = torch.promote_types(dtype, d)
    if dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32  # half precision cannot hold the dynamic range of v^2
    device = devices.pop() if devices else torch.device("cpu")
    return dtype, device


def _to_tensor(name, x, dtype, device):
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a complex tensor")
        return x.to(dtype=dtype, device=device)
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name} must be a number or an array of numbers, got {type(x).__name__}") from exc
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name} must be a number or an array of numbers, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise TypeError(f"{name} must be real, got a complex array")
    # a copy of read-only arrays (an MGE's table): torch warns on, and must not write through, them
    return torch.as_tensor(arr.astype(np.float64, copy=not arr.flags.writeable), device=device).to(dtype)


def _describe_bad(t, bad):
    vals = t.detach()[bad].flatten()[:4].cpu().tolist()
    idx = torch.nonzero(bad.cpu(), as_tuple=False)[:4].tolist()
    where = [tuple(i) if len(i) > 1 else (i[0] if i else ()) for i in idx]
    return f"{vals} at index {where}" if t.ndim else f"{vals[0]}"


def _check_range(name, t, low=None, high=None, low_open=True, high_open=False, rule=""):
    """Raise ValueError naming ``name`` and its valid range if any element is out of it."""
    d = t.detach()
    bad = ~torch.isfinite(d)
    if low is not None:
        bad |= (d <= low) if low_open else (d < low)
    if high is not None:
        bad |= (d >= high) if high_open else (d > high)
    if bool(bad.any()):
        raise ValueError(f"{name} = {_describe_bad(d, bad)} is invalid: it must be finite{rule}")


def _batch_of(name, t, kind):
    """Batch size implied by one input (None if unbatched), per the shape rules of vcirc()."""
    if kind == _PER_GAUSS:
        if t.ndim > 2:
            raise ValueError(f"{name} must have shape (K,) or (B, K) (or (B, 1)), got {tuple(t.shape)}")
        return t.shape[0] if t.ndim == 2 else None
    if kind == _PER_MODEL:
        if t.ndim > 1:
            raise ValueError(f"{name} must be a scalar or have shape (B,), got {tuple(t.shape)}")
        return t.shape[0] if t.ndim == 1 else None
    if t.ndim > 2:
        raise ValueError(f"{name} must have shape (R,) or (B, R), got {tuple(t.shape)}")
    return t.shape[0] if t.ndim == 2 else None


def _common_batch(named):
    """The common batch size B of (name, tensor, kind) triples; 1-sized batches broadcast."""
    sizes = [(n, tuple(t.shape), b) for n, t, k in named if (b := _batch_of(n, t, k)) is not None]
    big = [s for s in sizes if s[2] != 1]
    for n, shape, b in big[1:]:
        if b != big[0][2]:
            n0, shape0, b0 = big[0]
            raise ValueError(f"batch shapes do not match: {n0} has shape {shape0} (batch {b0}) "
                             f"but {n} has shape {shape} (batch {b})")
    if big:
        return big[0][2], True
    return 1, bool(sizes)


def _per_gauss_2d(name, t, B, K):
    t2 = t.reshape(1, -1) if t.ndim < 2 else t
    try:
        return torch.broadcast_to(t2, (B, K))
    except RuntimeError:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, which does not broadcast to (B, K) = {(B, K)}; "
                         "give per-Gaussian values as (K,) or (B, K) and per-model values as (B, 1)") from None


def _identical_rows(t):
    """True if every row of the 2-D ``t`` equals the first and no gradient needs the rows apart.

    ``np.stack`` of B Nuker MGEs at one distance gives (B, K) sigma with identical rows; treating
    it as one shared (K,) row lets the fast path take it (one comparison, no copy).
    """
    if t.requires_grad and torch.is_grad_enabled():
        return False
    return bool(torch.equal(t, t[:1].expand_as(t)))


def _prepare(surf_pc, sigma_arcsec, q, q_name, inc_deg, mbh, distance, rad, soft):
    """Convert, validate and broadcast the inputs of vcirc/vcirc_qintr.

    Returns a dict of 2-D tensors (B, K) / (B, R) and 1-D (B,) tensors, plus output flags.
    """
    raw = dict(surf_pc=surf_pc, sigma_arcsec=sigma_arcsec, **{q_name: q}, inc_deg=inc_deg, mbh=mbh,
               distance=distance, rad=rad, soft=soft)
    numpy_out = not any(isinstance(x, torch.Tensor) for x in raw.values())
    dtype, device = _work_dtype_device(raw.values())
    t = {k: _to_tensor(k, v, dtype, device) for k, v in raw.items()}
    kinds = {"surf_pc": _PER_GAUSS, "sigma_arcsec": _PER_GAUSS, q_name: _PER_GAUSS, "inc_deg": _PER_MODEL,
             "mbh": _PER_MODEL, "distance": _PER_MODEL, "soft": _PER_MODEL, "rad": _PER_RADIUS}
    if t["surf_pc"].ndim == 0:
        t["surf_pc"] = t["surf_pc"].reshape(1)
    B, batched = _common_batch([(k, t[k], kinds[k]) for k in kinds])
    K = t["surf_pc"].shape[-1]
    if K == 0:
        raise ValueError("surf_pc is empty: the MGE needs at least one Gaussian")
    scalar_rad = t["rad"].ndim == 0
    rad_t = t["rad"].reshape(1, -1) if t["rad"].ndim < 2 else t["rad"]

    _check_range("surf_pc", t["surf_pc"], rule=" (any sign: least-squares MGEs have negative terms)")
    _check_range("sigma_arcsec", t["sigma_arcsec"], low=0.0, rule=" and > 0 [arcsec]")
    _check_range(q_name, t[q_name], low=0.0, high=1.0, rule=f" and 0 < {q_name} <= 1")
    _check_range("inc_deg", t["inc_deg"], low=INC_RANGE_DEG[0], high=INC_RANGE_DEG[1], rule=INC_RULE)
    _check_range("mbh", t["mbh"], low=0.0, low_open=False, rule=" and >= 0 [Msun]")
    _check_range("distance", t["distance"], low=0.0, rule=" and > 0 [Mpc]")
    _check_range("rad", t["rad"], low=0.0, low_open=False, rule=" and >= 0 [arcsec]")
    _check_range("soft", t["soft"], low=0.0, low_open=False, rule=" and >= 0 [arcsec]")

    # Shared (one row for the whole batch) sigma and radii allow the fast path of _mge_sum_fast.
    sig_t = t["sigma_arcsec"]
    shared_sigma = sig_t.ndim < 2 or sig_t.shape[0] == 1 or _identical_rows(sig_t)
    shared_rad = rad_t.shape[0] == 1 or _identical_rows(rad_t)
    out = dict(
        surf_pc=_per_gauss_2d("surf_pc", t["surf_pc"], B, K),
        sigma_arcsec=_per_gauss_2d("sigma_arcsec", t["sigma_arcsec"], B, K),
        q=_per_gauss_2d(q_name, t[q_name], B, K),
        rad=torch.broadcast_to(rad_t, (B, rad_t.shape[-1])),
    )
    out["sigma_shared"] = out["sigma_arcsec"][0] if shared_sigma else None   # (K,) or None
    out["rad_shared"] = out["rad"][0] if shared_rad else None                 # (R,) or None
    for k in ("inc_deg", "mbh", "distance", "soft"):
        out[k] = torch.broadcast_to(t[k].reshape(-1), (B,))
    return out, dict(numpy_out=numpy_out, batched=batched, scalar_rad=scalar_rad, dtype=dtype)


def _finish(v, flags):
    if not flags["batched"]:
        v = v[0]
    if flags["scalar_rad"]:
        v = v[..., 0]
    if flags["numpy_out"]:
        return v.detach().cpu().numpy()
    return v


# ----------------------------------------------------------------------------- physics
def _deprojected_e2(qobs, inc_deg):
    """e^2 = 1 - q_intr^2 = (1 - qobs^2) / sin^2 i  (Cappellari 2020 eq. 35); (B, K).

    Raises ValueError naming the batch members whose inclination is too low (qobs <= |cos i|).
    """
    inc = torch.deg2rad(inc_deg)[:, None]
    cos_i = torch.cos(inc)
    with torch.no_grad():
        margin = (qobs.double() - cos_i.double().abs())
        bad = margin <= 0
    if bool(bad.any()):
        members = torch.nonzero(bad.any(dim=1)).flatten().cpu().tolist()
        worst = qobs.detach().double().min(dim=1).values.cpu().numpy()
        details = ", ".join(f"#{b}: inc_deg={float(inc_deg[b]):.6g}, min qobs={worst[b]:.6g}, "
                            f"cos(inc)={abs(math.cos(math.radians(float(inc_deg[b])))):.6g}" for b in members[:5])
        raise ValueError(f"inclination too low to deproject the MGE (needs qobs > cos(inc) for every Gaussian) "
                         f"for batch members {members}: {details}")
    sin_i = torch.sin(inc)
    # (1 - q)(1 + q) avoids the cancellation of 1 - q^2 for nearly round Gaussians.
    return (1.0 - qobs) * (1.0 + qobs) / (sin_i * sin_i)


def _acc_dtype(device):
    """Accumulation dtype of the sums over Gaussians: float64 (float32 on MPS, which lacks it)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _mge_sum_general(surf_pc, sigma_pc, qobs, e2, R, n_nodes, acc):
    """sum_k surf_k qobs_k / sigma_k * I(R^2 / (2 sigma_k^2), e2_k): (B, R) in ``acc``; any shapes."""
    B, K = surf_pc.shape
    n_rad = R.shape[-1]
    per_model = max(1, K * n_rad * n_nodes)
    chunk = max(1, _CHUNK_ELEMENTS // per_model)
    pieces = []
    for lo in range(0, B, chunk):
        sl = slice(lo, lo + chunk)
        a = 0.5 * (R[sl, None, :] / sigma_pc[sl, :, None]) ** 2           # (b, K, R)
        integ = shell_integral(a, e2[sl, :, None], n_nodes)                # (b, K, R)
        # q_k rho_k / ... = surf qobs / (sqrt(2 pi) sigma) (eq. 38); constants applied below.
        coef = (surf_pc[sl] * qobs[sl] / sigma_pc[sl]).to(acc)             # (b, K)
        pieces.append(torch.einsum("bk,bkr->br", coef, integ.to(acc)))
    return torch.cat(pieces, dim=0)                                        # (B, R)


def _velocity_from_sum(mge_sum, R, at_centre, mbh, soft_pc, dtype):
    """v_c [km/s] (B, R) in ``dtype`` from the Gaussian sum (in its accumulation dtype) plus the BH."""
    acc = mge_sum.dtype
    R_acc = R.to(acc)
    omega2_mge = 2.0 * math.sqrt(2.0 * math.pi) * G_KMS2_PC_PER_MSUN * mge_sum
    soft2 = (soft_pc.to(acc) ** 2)[:, None]
    omega2_bh = G_KMS2_PC_PER_MSUN * mbh.to(acc)[:, None] * (R_acc * R_acc + soft2) ** -1.5
    v2 = R_acc * R_acc * (omega2_mge + omega2_bh)
    with torch.no_grad():
        negative = (v2 < 0) & ~at_centre
    if bool(negative.any()):
        members = torch.nonzero(negative.any(dim=1)).flatten().cpu().tolist()
        raise ValueError(f"the MGE has negative enclosed mass (v_c^2 < 0) for batch members {members}; "
                         "check the signs of surf_pc")
    positive = v2 > 0
    v = torch.where(positive, torch.sqrt(torch.where(positive, v2, torch.ones_like(v2))), torch.zeros_like(v2))
    v = torch.where(at_centre, torch.zeros_like(v), v)
    return v.to(dtype)


def vcirc_from_e2(surf_pc, sigma_pc, qobs, e2, mbh, rad_pc, soft_pc, n_nodes=N_NODES):
    """v_c [km/s] in the equatorial plane from deprojected quantities, all in pc (eq. 45).

    ``surf_pc``, ``sigma_pc``, ``qobs``, ``e2``: (B, K) peak surface density [Msun/pc^2], width
    [pc], observed axis ratio and intrinsic eccentricity squared; ``mbh`` (B,) [Msun];
    ``rad_pc`` (B, R) [pc], ``soft_pc`` (B,) [pc]. Returns (B, R) in the dtype of the inputs;
    the sum over Gaussians is accumulated in float64 (float32 on devices without float64).
    No input checks: the public ``vcirc``/``vcirc_qintr`` do them. Always the general
    (per-element quadrature) path.
    """
    dtype, device = surf_pc.dtype, surf_pc.device
    # R = 0 has no orbit; evaluate at a harmless radius and return 0 there (finite gradients).
    at_centre = rad_pc <= 0
    R = torch.where(at_centre, torch.ones_like(rad_pc), rad_pc)
    mge_sum = _mge_sum_general(surf_pc, sigma_pc, qobs, e2, R, n_nodes, _acc_dtype(device))
    return _velocity_from_sum(mge_sum, R, at_centre, mbh, soft_pc, dtype)


# ----------------------------------------------------------------------------- fast path
# When every model of a batch shares sigma_arcsec (K,) and the radii (R,) [arcsec], the
# argument a_kr = rad_r^2 / (2 sigma_k^2) of the shell integral is a ratio of angles, the same
# for every model whatever its distance; the only per-model (per-Gaussian) dependence of
# I(a, e^2) left is through q_intr. On q_intr in [_FAST_Q_MIN, 1], I is an analytic function of
# q_intr with no singularity near the interval: with u = sin(theta)/e,
#     I = e^-3 int_0^{arccos q} sin^2(theta) exp(-a sin^2(theta) / e^2) d(theta),  e^2 = 1 - q^2,
# is analytic in q through q = 0 (arccos q and e are), and analytic in e^2 at q = 1. So a
# degree-(n-1) Chebyshev interpolant in q on [_FAST_Q_MIN, 1] converges geometrically,
# uniformly in a: measured max |interpolant / shell_integral - 1| over a in {0} U [1e-12, 1e8],
# q in [0.01, 1]: 6e-12 (n = 16), 1.2e-14 (n = 20), flat beyond (the rounding floor).
# So with the table of Chebyshev coefficients
#     C[k, n, r] = sum_m Vinv[n, m] shell_integral(a_kr, 1 - q_m^2)       (q_m: Chebyshev nodes)
# built once (n*K*R quadratures, independent of the batch) the batch costs one GEMM,
#     sum_k coef[b, k] I(a_kr, q_bk) = sum_(k, n) (coef[b, k] T_n(x_bk)) C[(k, n), r],
# with x = the image of q_intr on [-1, 1] and T_n(x) by the three-term recurrence (exact
# derivatives in q, no singular point). Per-Gaussian q_intr is allowed. The table does not
# depend on surf, q, inclination, M_BH or distance and is cached per (sigma_arcsec, rad)
# when neither needs a gradient (a fit evaluates many batches on one radius grid).

#: Lower end of the q_intr interval of the interpolation; smaller q_intr take the general path.
_FAST_Q_MIN = 0.01
#: Chebyshev nodes in q_intr: 1.2e-14 relative to the quadrature itself for q_intr >= 0.01.
_FAST_N_Q = 20
#: Without a cached table the fast path pays n*K*R quadratures up front: take it from this batch size.
_FAST_MIN_BATCH = 8
#: Tables cached (least recently used dropped), and the largest one cached [bytes].
_FAST_CACHE_SIZE = 8
_FAST_CACHE_MAX_BYTES = 64 << 20
_fast_cache = OrderedDict()

#: Testing aid: None (automatic), "fast" or "general" forces a path ("fast" raises if it cannot apply).
_FORCE_PATH = None
#: Which path the last vcirc/vcirc_qintr call took ("fast" or "general").
_last_path = None


@lru_cache(maxsize=8)
def _cheb_setup_np(n, q_min):
    """Chebyshev points of the 2nd kind in q on [q_min, 1] and the values -> coefficients matrix."""
    x = np.cos(np.pi * np.arange(n) / (n - 1))
    q = q_min + 0.5 * (x + 1.0) * (1.0 - q_min)
    vinv = np.linalg.inv(np.polynomial.chebyshev.chebvander(x, n - 1))   # (n coeffs, n nodes)
    return q, vinv


def _fast_table(sigma_arcsec, rad_arcsec, n_nodes, acc):
    """(K * n, R) table of Chebyshev coefficients in q_intr of I(rad^2 / (2 sigma^2), q)."""
    q_np, vinv_np = _cheb_setup_np(_FAST_N_Q, _FAST_Q_MIN)
    dev = sigma_arcsec.device
    q = torch.as_tensor(q_np, dtype=acc, device=dev)
    vinv = torch.as_tensor(vinv_np, dtype=acc, device=dev)
    e2 = ((1.0 - q) * (1.0 + q))[:, None]                                   # (n, 1)
    a = 0.5 * (rad_arcsec.to(acc)[None, :] / sigma_arcsec.to(acc)[:, None]) ** 2   # (K, R)
    K, R = a.shape
    flat_a = a.reshape(-1)
    chunk = max(1, _CHUNK_ELEMENTS // (n_nodes * _FAST_N_Q))
    vals = torch.cat([shell_integral(flat_a[None, lo:lo + chunk], e2, n_nodes)
                      for lo in range(0, K * R, chunk)], dim=1)             # (n nodes, K * R)
    coeffs = vinv @ vals                                                    # (n coeffs, K * R)
    return coeffs.reshape(_FAST_N_Q, K, R).transpose(0, 1).reshape(K * _FAST_N_Q, R)


def _cache_key(sigma_arcsec, rad_arcsec, n_nodes, acc):
    s = sigma_arcsec.detach().to("cpu", torch.float64).numpy().tobytes()
    r = rad_arcsec.detach().to("cpu", torch.float64).numpy().tobytes()
    return (s, r, str(sigma_arcsec.device), acc, n_nodes, _FAST_N_Q, _FAST_Q_MIN)


def _mge_sum_fast(coef, q_intr, sigma_arcsec, rad_arcsec, n_nodes, acc, key=None):
    """Same as _mge_sum_general for shared sigma (K,) and radii (R,) [arcsec] (any per-model scale).

    ``coef`` (B, K) = surf qobs / sigma_pc and ``q_intr`` (B, K) in [_FAST_Q_MIN, 1], both in ``acc``.
    """
    table = _fast_cache.get(key) if key is not None else None
    if table is None:
        if key is not None:
            with torch.no_grad():
                table = _fast_table(sigma_arcsec, rad_arcsec, n_nodes, acc)
            if table.numel() * table.element_size() <= _FAST_CACHE_MAX_BYTES:
                _fast_cache[key] = table
                while len(_fast_cache) > _FAST_CACHE_SIZE:
                    _fast_cache.popitem(last=False)
        else:   # sigma or radii need a gradient: build the table in the graph
            table = _fast_table(sigma_arcsec, rad_arcsec, n_nodes, acc)
    else:
        _fast_cache.move_to_end(key)
    return _contract(coef, q_intr, table)


def _contract(coef, q_intr, table):
    """sum_k coef[b, k] I(a_kr, q_bk) (B, R) from the Chebyshev table (K * n, R) of :func:`_fast_table`."""
    x = (2.0 * q_intr - (1.0 + _FAST_Q_MIN)) / (1.0 - _FAST_Q_MIN)         # (B, K) in [-1, 1]
    cheb = [torch.ones_like(x), x]
    for _ in range(2, _FAST_N_Q):
        cheb.append(2.0 * x * cheb[-1] - cheb[-2])
    weights = coef[:, :, None] * torch.stack(cheb, dim=-1)                  # (B, K, n)
    return weights.reshape(coef.shape[0], -1) @ table                      # (B, R)


def _vcirc_prepared(p, qobs, e2, n_nodes, qintr_acc):
    """v_c (B, R) from prepared inputs; ``qintr_acc()`` gives q_intr (B, K) in the accumulation dtype."""
    global _last_path
    dtype, device = p["surf_pc"].dtype, p["surf_pc"].device
    acc = _acc_dtype(device)
    pc = pc_per_arcsec(p["distance"])                                      # (B,) pc per arcsec
    sigma_pc = p["sigma_arcsec"] * pc[:, None]
    rad_pc = p["rad"] * pc[:, None]
    at_centre = rad_pc <= 0
    # R = 0 has no orbit; evaluate at a harmless radius and return 0 there (finite gradients).
    R = torch.where(at_centre, torch.ones_like(rad_pc), rad_pc)
    B = R.shape[0]

    sig_s, rad_s = p["sigma_shared"], p["rad_shared"]
    mge_sum = None
    if _FORCE_PATH != "general" and sig_s is not None and rad_s is not None:
        q_intr = qintr_acc()
        with torch.no_grad():
            covered = bool((q_intr >= _FAST_Q_MIN).all())
        grad_table = torch.is_grad_enabled() and (sig_s.requires_grad or rad_s.requires_grad)
        rad_eval = torch.where(rad_s <= 0, torch.ones_like(rad_s), rad_s)
        key = None if grad_table else _cache_key(sig_s, rad_eval, n_nodes, acc)
        if covered and (_FORCE_PATH == "fast" or B >= _FAST_MIN_BATCH or key in _fast_cache):
            coef = p["surf_pc"].to(acc) * qobs.to(acc) / sigma_pc.to(acc)
            mge_sum = _mge_sum_fast(coef, q_intr, sig_s, rad_eval, n_nodes, acc, key)
            _last_path = "fast"
    if mge_sum is None:
        if _FORCE_PATH == "fast":
            raise RuntimeError("_FORCE_PATH = 'fast' but the fast path does not apply to these inputs")
        mge_sum = _mge_sum_general(p["surf_pc"], sigma_pc, qobs, e2, R, n_nodes, acc)
        _last_path = "general"
    return _velocity_from_sum(mge_sum, R, at_centre, p["mbh"], p["soft"] * pc, dtype)


def vcirc(surf_pc, sigma_arcsec, qobs, inc_deg, mbh, distance, rad, soft=0.0, *, n_nodes=N_NODES):
    """Circular velocity [km/s] of an axisymmetric MGE plus a black hole, like ``jampy.mge.vcirc``.

    Cappellari (2020) eq. (45) with the deprojection of eqs. (35), (38) and a Plummer-softened
    black hole; same arguments, units and meaning as ``jampy.mge.vcirc``.

    Parameters
    ----------
    surf_pc : (K,) or (B, K)
        Peak surface densities of the Gaussians [Msun/pc^2]; finite, any sign.
    sigma_arcsec : (K,) or (B, K)
        Gaussian dispersions [arcsec], > 0.
    qobs : scalar, (K,), (B, 1) or (B, K)
        Observed axis ratios, 0 < qobs <= 1, and qobs > |cos(inc)| (deprojection).
    inc_deg : scalar or (B,)
        Inclination [deg], 0 < inc_deg <= 90, 90 = edge-on (the package's one rule, constants.INC_RULE).
    mbh : scalar or (B,)
        Black-hole mass [Msun], >= 0.
    distance : scalar or (B,)
        Distance [Mpc], > 0; ``pc_per_arcsec = distance * pi / 0.648``.
    rad : scalar, (R,) or (B, R)
        Radii in the equatorial plane [arcsec], >= 0 (v = 0 is returned at rad = 0).
    soft : scalar or (B,)
        Plummer softening length of the black hole [arcsec], >= 0.
    n_nodes : int
        Gauss-Legendre nodes per Gaussian and radius (default 24: ~1e-11 relative).

    Returns
    -------
    v_c [km/s] of shape (R,) (unbatched) or (B, R). numpy in -> numpy out; any torch tensor in
    -> torch tensor out on that tensor's device, in the promoted floating dtype of the inputs,
    differentiable with respect to every continuous input.

    Raises
    ------
    ValueError
        non-finite or out-of-range inputs (naming the parameter and its range), inclination
        too low to deproject (naming the batch members), mismatched batch shapes (giving both).
    """
    p, flags = _prepare(surf_pc, sigma_arcsec, qobs, "qobs", inc_deg, mbh, distance, rad, soft)
    e2 = _deprojected_e2(p["q"], p["inc_deg"])

    def qintr_acc():   # from the inputs in the accumulation dtype: 1 - e^2 loses digits in float32
        acc = _acc_dtype(e2.device)
        inc = torch.deg2rad(p["inc_deg"].to(acc))[:, None]
        cos_i, q = torch.cos(inc), p["q"].to(acc)
        return torch.sqrt((q - cos_i) * (q + cos_i)) / torch.sin(inc)
    return _finish(_vcirc_prepared(p, p["q"], e2, n_nodes, qintr_acc), flags)


def vcirc_qintr(surf_pc, sigma_arcsec, qintr, inc_deg, mbh, distance, rad, soft=0.0, *, n_nodes=N_NODES):
    """Circular velocity [km/s] parametrised by the intrinsic axis ratio ``qintr`` (Table 1).

    Identical to :func:`vcirc` with ``qobs = sqrt(qintr^2 sin^2 i + cos^2 i)`` (Cappellari 2020
    eq. 35 inverted), so every 0 < qintr <= 1 and 0 < inc_deg <= 90 deprojects: no sample of a
    (qintr, inc) prior box can hit the deprojection limit. ``qintr`` has the shapes allowed for
    ``qobs`` (scalar, (K,), (B, 1), (B, K)); the other arguments are those of :func:`vcirc`.
    ``surf_pc`` is still the *projected* peak surface density [Msun/pc^2] seen at ``inc_deg``.
    """
    p, flags = _prepare(surf_pc, sigma_arcsec, qintr, "qintr", inc_deg, mbh, distance, rad, soft)
    qintr_t = p["q"]
    inc = torch.deg2rad(p["inc_deg"])[:, None]
    sin_i, cos_i = torch.sin(inc), torch.cos(inc)
    qobs = torch.sqrt((qintr_t * sin_i) ** 2 + cos_i ** 2)
    e2 = (1.0 - qintr_t) * (1.0 + qintr_t)   # = 1 - qintr^2 without cancellation
    return _finish(_vcirc_prepared(p, qobs, e2, n_nodes, lambda: qintr_t.to(_acc_dtype(qintr_t.device))), flags)


class VcircTable(torch.nn.Module):
    """:func:`vcirc_qintr` for MGEs on fixed widths at fixed radii and distance, its table a buffer.

    A fit evaluates the circular velocity of many models on one set of Gaussian widths (the
    64-Gaussian basis) at one set of radii (the rotation curve's nodes). What does not depend on
    the model -- the Chebyshev coefficients in q_intr of the shell integrals, (K * n, R) -- is
    computed once here and kept as a buffer, so that it moves with ``.to(device)`` like the rest
    of the model and no cache outside the module is involved. Each call then costs one GEMM.

    Parameters
    ----------
    sigma_arcsec : (K,) tensor
        Gaussian dispersions [arcsec], > 0.
    rad_arcsec : (R,) tensor
        Radii in the equatorial plane [arcsec], >= 0 (v = 0 at rad = 0).
    distance_mpc : float
        Distance [Mpc], > 0.
    n_nodes : int
        Gauss-Legendre nodes of the shell integrals (as :func:`vcirc_qintr`).

    Calling it with ``surf_pc`` (B, K) [Msun/pc^2] (projected peak surface densities at
    ``inc_deg``), ``qintr`` (B, 1) or (B, K) (intrinsic axis ratio, in (0, 1]), ``inc_deg`` (B,)
    [deg], ``mbh`` (B,) [Msun] and ``soft_arcsec`` (scalar or (B,)) [arcsec] returns v_c (B, R)
    [km/s] in ``surf_pc``'s dtype, equal to :func:`vcirc_qintr` (tests/test_vcirc.py). Batch
    members with ``qintr < 0.01``, which the interpolation does not cover, take the general path.
    The inputs are not range-checked here (a fit's parameters are inside their priors): use
    :func:`vcirc_qintr` for checked, any-shape inputs.
    """

    def __init__(self, sigma_arcsec, rad_arcsec, distance_mpc, *, n_nodes=N_NODES):
        super().__init__()
        sigma = torch.as_tensor(sigma_arcsec)
        rad = torch.as_tensor(rad_arcsec, dtype=sigma.dtype, device=sigma.device)
        if sigma.ndim != 1 or rad.ndim != 1 or not bool((sigma > 0).all()) or not bool((rad >= 0).all()):
            raise ValueError("VcircTable: sigma_arcsec must be (K,) > 0 and rad_arcsec (R,) >= 0 [arcsec]")
        if not (math.isfinite(distance_mpc) and distance_mpc > 0):
            raise ValueError(f"distance_mpc = {distance_mpc!r} is invalid: it must be finite and > 0 [Mpc]")
        self.distance_mpc, self.n_nodes = float(distance_mpc), int(n_nodes)
        self.register_buffer("sigma_arcsec", sigma)
        self.register_buffer("rad_arcsec", rad)
        acc = _acc_dtype(sigma.device)
        with torch.no_grad():
            table = _fast_table(sigma, torch.where(rad <= 0, torch.ones_like(rad), rad), self.n_nodes, acc)
        self.register_buffer("table", table)

    def forward(self, surf_pc, qintr, inc_deg, mbh, soft_arcsec=0.0):
        dtype, device = surf_pc.dtype, surf_pc.device
        B, K = surf_pc.shape
        acc = self.table.dtype
        qintr = torch.as_tensor(qintr, dtype=dtype, device=device).expand(B, K)
        inc_deg = torch.as_tensor(inc_deg, dtype=dtype, device=device).reshape(B)
        inc = torch.deg2rad(inc_deg)[:, None]
        with torch.no_grad():
            covered = bool((qintr.to(acc) >= _FAST_Q_MIN).all())
        if not covered:
            return vcirc_qintr(surf_pc, self.sigma_arcsec.to(dtype), qintr, inc_deg, mbh,
                               self.distance_mpc, self.rad_arcsec.to(dtype), soft_arcsec, n_nodes=self.n_nodes)
        qobs = torch.sqrt((qintr * torch.sin(inc)) ** 2 + torch.cos(inc) ** 2)
        pc = pc_per_arcsec(torch.full((B,), self.distance_mpc, dtype=dtype, device=device))
        sigma_pc = self.sigma_arcsec.to(dtype)[None, :] * pc[:, None]
        rad_pc = self.rad_arcsec.to(dtype)[None, :] * pc[:, None]
        at_centre = rad_pc <= 0
        R = torch.where(at_centre, torch.ones_like(rad_pc), rad_pc)
        coef = surf_pc.to(acc) * qobs.to(acc) / sigma_pc.to(acc)
        mge_sum = _contract(coef, qintr.to(acc), self.table)
        mbh = torch.as_tensor(mbh, dtype=dtype, device=device).expand(B)
        soft = torch.as_tensor(soft_arcsec, dtype=dtype, device=device).expand(B)
        return _velocity_from_sum(mge_sum, R, at_centre, mbh, soft * pc, dtype)
