"""The ``exact`` Nuker -> MGE backend: a regularised, mass-conserving least-squares projection.

For each Nuker shape (Sigma_b = 1) we solve for the 64 peak amplitudes ``a_i`` on the
fixed basis (``basis.SIGMA_GRID_PC``) that minimise

    mean_j [Sigma_MGE(R_j) / Sigma_N(R_j) - 1]^2              (fractional profile, eq. 4; R_j in 3 pc-10 kpc)
  + w_M^2 [M2D_MGE(<R0) / M2D_N(<R0) - 1]^2                    (projected mass inside R0 = 3 pc)
  + w_0^2 [M3D_MGE(<R0) / M3D_N(<R0) - 1]^2                    (spherical 3-D mass inside R0)
  + w_3^2 mean_k [(M3D_MGE - M3D_N)(R0 < r < r_k) / M3D_N(<r_k)]^2   (3-D mass beyond R0, r_k to 3 kpc)
  + lambda sum_i (n_i a_i)^2                                    (Tikhonov on column-normalised amplitudes)

where n_i is the RMS of the i-th Gaussian's fractional design column. Normalising the columns
makes one dimensionless ``lambda`` suit the whole parameter box. Without it the fractional system
has condition number ~1e16 and its solution alternates in sign with huge amplitudes (cancellation
factor kappa ~ 1e4-1e8), which is harmless in float64 but destroys float32 work downstream;
lambda = 1e-12 keeps kappa below ~1e3 at no measurable cost in accuracy. M3D is the enclosed
mass of the spherical (qobs = 1) deprojection, which sets v_c^2 = G M3D(<r) / r (docs/metrics.rst M3);
for the Nuker it comes from an Abel quadrature (nuker_enclosed_mass_3d), for a Gaussian in
closed form (gaussian_enclosed_mass_3d).

Why each term is there:

* Profile rows out to 10 kpc (the widest Gaussian), not just past the 3 kpc of docs/metrics.rst M1.
  With rows ending at 3.75 kpc the widest Gaussians were fixed only by their nearly flat cores
  there, and beyond it the MGE swung negative: Sigma_MGE / Sigma_N - 1 = -37 at 8 kpc and -160
  at 15 kpc for alpha = 9.27, gamma = 0.056, beta = 2.33, r_b = 1143 pc. The circular velocity
  sees that mass, because the Abel deprojection turns the outer profile into 3-D density at all
  smaller radii: v_c(300 pc) was 2.1% off the Abel truth although M1 was 4e-4. Measured: the
  deprojection of the MGE profile inside 3.75 kpc joined to the Nuker beyond it is off by only
  5e-5, the Nuker inside joined to the MGE beyond by the full 2.1%; the ringing of the
  amplitudes around the sharp break was not the cause.
* 3-D mass rows. A 10-kpc basis cannot follow a shallow outer profile (beta ~ 0.3) beyond
  ~1.5 sigma_max, yet such a tail still sets the core density: truncating that Nuker even at
  100 kpc moves v_c(300 pc) by ~1%. The mass rows let the widest Gaussians carry a compensating
  bump at 10-20 kpc instead. They are needed inside large cores too: for gamma ~ 0 and r_b ~ 2
  kpc, M3D(<r) at r << r_b is a small difference of projected masses (M3D / M2D ~ r / r_b), so
  narrow Gaussians that change Sigma by 1e-6 change v_c by 1e-3. One row per Gaussian width (16
  per decade) pins them; with 2, 4 or 12 rows per decade v_c still erred by 1.5e-3, 2e-3 and
  9e-4 between the rows there. The rows ask for the mass beyond R0 only (normalised by the whole
  M3D(<r_k)), plus one lightly weighted row (w_0 = 0.03) for the mass inside R0: rows on the
  whole M3D(<r_k) all contain the cusp mass inside 3 pc that no table on this basis can place
  (next paragraph), and 48 of them overrode the profile fit of steep cusps.
* The projected mass row restores the cusp mass below the smallest Gaussian that a
  profile-only fit drops; that mass sets the circular velocity at ALMA radii.

Measured with these terms (seed 1, validation/vcirc_vs_jampy.py, M3): v_c off the Abel truth by
at most 3.3e-5 over 200 M1 draws and 6.7e-5 over 200 draws of the corner alpha >= 3,
r_b >= 300 pc (before: 1.4e-3 and 2.5e-2), and M1 p99 3.2e-3, max 3.5e-2 (before: 4.3e-3,
4.7e-2) over 10,000 draws (validation/emulator_accuracy.py), at the same speed.

The aims conflict for profiles that are steep at 3 pc (local slope >~ 2): most of their
projected mass inside 3 pc lies within the smallest Gaussian's reach (sigma_min = 1 pc), and
no 64-Gaussian table on this basis can hold it without a ~1% profile error at 3.0-3.3 pc; at
the steepest corner of the box (alpha = 0.1, gamma = 1.2, beta = 4.2, r_b = 2 pc) neither
the profile (M1 ~ 0.3) nor v_c (~0.2) is reproduced. ``conserve_mass=False`` drops all mass
terms (profile error p99 ~2e-4, but v_c errors of tens of per cent for steep cusps and of per
cent for shallow outer profiles); the default keeps them. validation/emulator_accuracy.py
measures both, validation/vcirc_vs_jampy.py the v_c (M3).

Everything is torch, batched over the leading dimension, float64 by default, and
differentiable with respect to the Nuker parameters (QR solve of the stacked system).
"""

import functools
import math

import numpy as np
import torch

from .basis import FIT_R_MAX_PC, FIT_R_MIN_PC, MASS_R0_PC, SIGMA_GRID_PC, SIGMA_MAX_PC
from .nuker import as_tensor_on, log_nuker

# Fit radii [pc]: from the M1 inner edge (going further in costs accuracy at 3 pc: the basis
# cannot follow a steep profile inside ~3 sigma_min) out to the widest Gaussian, 10 kpc: stopping
# near the M1 outer edge left the widest Gaussians free to swing far from the Nuker beyond it,
# which v_c feels (module docstring). 62 per decade, ~4 per Gaussian width: 103 per decade, the
# density of the earlier grid, gave a larger M1 (median 9.5e-5 vs 7.6e-5, p99 4.6e-3 vs 3.5e-3
# on 4000 draws checked at 2000 radii) for 1.6x the rows.
FIT_RADII_PC = np.logspace(np.log10(FIT_R_MIN_PC), np.log10(SIGMA_MAX_PC), 220)
#: Tikhonov strength on column-normalised amplitudes: keeps kappa p99 < 1e3 (M1).
RIDGE = 1e-12
#: Weight of the projected-mass row: M1b p99 ~ 4e-5; larger weights only cost profile accuracy
#: (with the earlier cumulative 3-D mass rows, weights of 1 and 3 gave M1 ~ 2-7 for steep cusps
#: outside the box).
MASS_WEIGHT = 0.1
#: Radii [pc] of the 3-D (spherical) enclosed-mass rows: 3 pc-3 kpc, 16 per decade like the basis
#: (fewer rows leave v_c errors of ~1e-3 between them in large cores; see the module docstring).
MASS3D_RADII_PC = MASS_R0_PC * np.logspace(0.0, np.log10(FIT_R_MAX_PC / MASS_R0_PC), 49)
#: Weight of the 3-D mass rows (their RMS fractional error counts like the profile's RMS).
MASS3D_WEIGHT = 1.0
#: Weight of the row on the 3-D mass inside 3 pc. 0.03 keeps v_c of large cores (gamma ~ 0,
#: r_b ~ 2 kpc) within 1e-5 at 3 pc (without it: 1e-2) and leaves steep cusps outside the box
#: (gamma up to 1.9) no worse than before the 3-D rows; 0.1 or 0.3 help cusps inside the box but
#: worsen those outside it (M1 p99 0.41, 0.85 against 0.36 before).
MASS3D_INNER_WEIGHT = 0.03

# Composite Gauss-Legendre rule in u = ln R for the enclosed-mass integral.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_MASS_SPAN_LN = 36.0  # integrate ln R over [ln R0 - 36, ln R0]; the rest is a power-law tail
_MASS_PANELS = 72


@functools.lru_cache(maxsize=16)
def _mass_nodes(dtype, device):
    edges = np.linspace(-_MASS_SPAN_LN, 0.0, _MASS_PANELS + 1)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    u = (mid[:, None] + half[:, None] * _GL_X[None, :]).ravel()
    w = (half[:, None] * _GL_W[None, :]).ravel()
    return torch.as_tensor(u, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


def nuker_enclosed_mass_2d(R0, r_b, alpha, beta, gamma, sigma_b=1.0):
    """Projected mass M2D(<R0) = int_0^R0 2 pi R Sigma(R) dR of a circular Nuker [Msun].

    ``R0`` and ``r_b`` in pc, ``sigma_b`` in Msun/pc^2; torch tensors broadcast over a
    leading batch. Gauss-Legendre quadrature in ln R plus the analytic inner power-law
    tail, accurate to ~1e-12 for gamma < 2 (finite cusp mass).
    """
    ref = next((x for x in (R0, r_b, alpha, beta, gamma, sigma_b) if isinstance(x, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    device = ref.device if ref is not None else None
    R0, r_b, alpha, beta, gamma, sigma_b = (as_tensor_on(v, dtype, device)
                                            for v in (R0, r_b, alpha, beta, gamma, sigma_b))
    u, w = _mass_nodes(dtype, alpha.device)
    lnR = torch.log(R0)[..., None] + u
    lnS = log_nuker(torch.exp(lnR), sigma_b[..., None], r_b[..., None], alpha[..., None], beta[..., None],
                    gamma[..., None])
    body = (w * torch.exp(2.0 * lnR + lnS)).sum(-1)
    lnR_min = torch.log(R0) - _MASS_SPAN_LN
    tail = torch.exp(2.0 * lnR_min + log_nuker(torch.exp(lnR_min), sigma_b, r_b, alpha, beta, gamma)) / (2.0 - gamma)
    return 2.0 * math.pi * (body + tail)


def mge_surface_density(surf, sigma, R):
    """Sigma_MGE(R) = sum_i surf_i exp(-R^2 / (2 sigma_i^2)) (eq. 4); ``surf`` (..., K), R (..., N)."""
    g = torch.exp(-0.5 * (R[..., :, None] / sigma[..., None, :]) ** 2)
    return (g * surf[..., None, :]).sum(-1)


def gaussian_enclosed_mass_2d(sigma, R0):
    """Projected mass inside R0 of a circular Gaussian of unit peak: 2 pi sigma^2 (1 - exp(-R0^2/2sigma^2)).

    ``sigma`` and ``R0`` in one length unit; the mass is in (that unit)^2 times the peak surface density.
    """
    return 2.0 * math.pi * sigma**2 * -torch.expm1(-0.5 * (R0 / sigma) ** 2)


def mge_enclosed_mass_2d(surf, sigma, R0):
    """Projected mass inside R0 of a circular MGE: sum_i surf_i 2 pi sigma_i^2 (1 - exp(-R0^2/2sigma_i^2))."""
    return (surf * gaussian_enclosed_mass_2d(sigma, R0)).sum(-1)


# Quadrature of the spherical (Abel) enclosed mass, nuker_enclosed_mass_3d. In u = ln R,
#
#     M(<r) = M2D(<r_0) + int_{ln r_0}^{ln r} 2 pi f du + int_{ln r}^inf K(r e^-u) f du,
#     f = R^2 Sigma(R),  K(y) = 4 [asin(y) - y / sqrt(1 - y^2)]  (<= 0: the cylinder outside the sphere),
#
# with r_0 = min(r, 3 pc) and M2D(<r_0) from nuker_enclosed_mass_2d. K has an inverse-square-root
# singularity at R = r: the first _NEAR_LN of ln R beyond each r is done in t (R = r cosh t, which
# removes it; 2 panels of 8-point Gauss-Legendre). Everything else uses one grid of u nodes shared
# by all radii, whose panel edges include every ln r and ln r + _NEAR_LN, so one evaluation of f
# per node serves every radius (a fixed matrix applies the weights, 2 pi or w K). Panels are at
# most 0.25 wide in ln R up to max(ln r_max + _NEAR_LN, ln 20 kpc) -- the break of any Nuker of
# the exact backend's range (r_b <= 10 kpc) lies inside; its width in ln R is ~1/alpha (0.1 at the
# Appendix-A box's alpha = 10; much sharper breaks lose accuracy) -- then 12 geometrically
# widening panels reach 30 beyond max(ln r_max, ln 20 kpc), where f K, decaying at least as
# R^-(1 + beta) beyond both r and r_b, is below 1e-13 of its peak for beta >= 0. Against
# validation/common.py's quad (epsrel 1e-11): <= 1e-7 over the Appendix-A box and its corners,
# at ~1300 Nuker evaluations per profile for the 49 rows of exact_amplitudes (a t-grid per
# radius needed ~10,000, and made the solve 1.4x slower).
_GL8_X, _GL8_W = np.polynomial.legendre.leggauss(8)
_NEAR_LN = 0.3
_PANEL_LN = 0.25
_FINE_TO_LN = math.log(2.0e4)
_FAR_LN, _FAR_PANELS, _FAR_GROWTH = 30.0, 12, 3.9


def _gl_panels(edges):
    """8-point Gauss-Legendre nodes and weights of the composite rule on ``edges``."""
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[1:] + edges[:-1])
    return (mid[:, None] + half[:, None] * _GL8_X).ravel(), (half[:, None] * _GL8_W).ravel()


def _shell_kernel(y):
    """K(y) = 4 [asin(y) - y / sqrt(1 - y^2)] for 0 < y < 1 (numpy, float64); its series
    -4 (y^3/3 + 3 y^5/10 + 15 y^7/56) below y = 1e-2, where the direct form cancels."""
    y = np.asarray(y, dtype=float)
    direct = 4.0 * (np.arcsin(y) - y / np.sqrt(1.0 - y * y))
    return np.where(y < 1e-2, -4.0 * y**3 * (1.0 / 3.0 + y * y * (0.3 + y * y * 15.0 / 56.0)), direct)


def _shell_bracket(x):
    """[asin(x) sqrt(1 - x^2) - x] / x^2 for 0 < x <= 1 (numpy, float64): the shell integrand
    in t (x = 1 / cosh t); series -x/3 - 2x^3/15 - 8x^5/105 below 1e-2, where the direct form cancels."""
    x = np.asarray(x, dtype=float)
    direct = (np.arcsin(x) * np.sqrt(np.clip(1.0 - x * x, 0.0, None)) - x) / (x * x)
    return np.where(x < 1e-2, -x / 3.0 - 2.0 * x**3 / 15.0 - 8.0 * x**5 / 105.0, direct)


@functools.lru_cache(maxsize=32)
def _mass3d_rule(r_key, r0, dtype, device):
    """Host-built (float64, then cast) rule for nuker_enclosed_mass_3d at the radii ``r_key`` [pc]:
    shared u nodes (Nu,), the (N, Nu) weight matrix, and the near-part radii (N, Q) and weights."""
    lnr = np.log(np.asarray(r_key, dtype=float))
    fine_end = max(lnr[-1] + _NEAR_LN, _FINE_TO_LN)
    knots = np.unique(np.concatenate([[math.log(r0)], lnr, lnr + _NEAR_LN, [fine_end]]))
    edges = [knots[0]]
    for a, b in zip(knots[:-1], knots[1:]):
        edges.extend(np.linspace(a, b, max(1, math.ceil((b - a) / _PANEL_LN - 1e-9)) + 1)[1:])
    s = np.linspace(0.0, 1.0, _FAR_PANELS + 1)[1:]
    far_span = max(lnr[-1], _FINE_TO_LN) + _FAR_LN - fine_end
    edges.extend(fine_end + far_span * np.expm1(_FAR_GROWTH * s) / np.expm1(_FAR_GROWTH))
    u, w = _gl_panels(np.asarray(edges))
    d = u[None, :] - lnr[:, None]                                           # (N, Nu)
    W_in = np.where(d < 0, 2.0 * math.pi, 0.0) * w
    W_far = np.where(d > _NEAR_LN, _shell_kernel(np.exp(-np.maximum(d, _NEAR_LN))), 0.0) * w
    t, wt = _gl_panels(np.linspace(0.0, math.acosh(math.exp(_NEAR_LN)), 3))
    near_R = np.exp(lnr)[:, None] * np.cosh(t)                              # (N, Q)
    near_w = 4.0 * np.exp(2.0 * lnr)[:, None] * (wt * _shell_bracket(1.0 / np.cosh(t)))
    tt = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return tt(u), tt(np.stack([W_in, W_far])), tt(near_R), tt(near_w)


def _nuker_mass3d(r_np, r_b, alpha, beta, gamma, sigma_b, m2d_r0, r0):
    """(M3D(<r), M2D(<r)) [Msun], each (..., N), on tensors of one batch shape, given M2D(<r0) (...)."""
    u, W, near_R, near_w = _mass3d_rule(tuple(r_np.tolist()), r0, alpha.dtype, alpha.device)
    P = lambda v, n: v.reshape(v.shape + (1,) * n)  # noqa: E731
    f = torch.exp(2.0 * u + log_nuker(torch.exp(u), P(sigma_b, 1), P(r_b, 1), P(alpha, 1), P(beta, 1),
                                      P(gamma, 1)))                          # (..., Nu)
    near = torch.exp(log_nuker(near_R, P(sigma_b, 2), P(r_b, 2), P(alpha, 2), P(beta, 2), P(gamma, 2)))
    m2d = m2d_r0[..., None] + f @ W[0].transpose(0, 1)
    return m2d + f @ W[1].transpose(0, 1) + (near * near_w).sum(-1), m2d


def nuker_enclosed_mass_3d(r, r_b, alpha, beta, gamma, sigma_b=1.0):
    """Spherical enclosed mass M(<r) [Msun] of the Abel-deprojected circular Nuker (eq. 2).

    The quantity behind docs/metrics.rst M3: a qobs = 1 Nuker has v_c^2 = G M(<r) / r. Swapping the
    Abel integral and the volume integral and integrating by parts gives (validation/common.py)

        M(<r) = M2D(<r) + 4 int_r^inf R Sigma(R) [asin(r/R) - r / sqrt(R^2 - r^2)] dR,

    with M2D the projected mass (nuker_enclosed_mass_2d); the second term removes the cylinder
    mass outside the sphere, so it needs Sigma far beyond r.

    Parameters
    ----------
    r : array_like, shape (N,)
        Strictly increasing radii [pc], shared by the batch (not differentiated).
    r_b : tensor or float
        Break radius [pc].
    alpha, beta, gamma : tensor or float
        Nuker slopes (gamma < 2, beta > gamma); all parameters broadcast to a batch shape (...).
    sigma_b : tensor or float
        Surface density at r_b [Msun/pc^2].

    Returns
    -------
    torch.Tensor, shape (..., N)
        M(<r) [Msun]; relative accuracy ~1e-7 or better inside the Appendix-A box against an
        adaptive quadrature at epsrel 1e-11. Differentiable in the Nuker parameters.
    """
    ref = next((x for x in (r_b, alpha, beta, gamma, sigma_b) if isinstance(x, torch.Tensor)), None)
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float64
    device = ref.device if ref is not None else None
    r_np = np.asarray(r.detach().cpu() if isinstance(r, torch.Tensor) else r, dtype=float).reshape(-1)
    if r_np.size == 0 or np.any(~np.isfinite(r_np)) or np.any(r_np <= 0) or np.any(np.diff(r_np) <= 0):
        raise ValueError("r must be a non-empty, strictly increasing array of positive radii [pc]")
    r_b, alpha, beta, gamma, sigma_b = torch.broadcast_tensors(
        *(as_tensor_on(v, dtype, device) for v in (r_b, alpha, beta, gamma, sigma_b)))
    # nuker_enclosed_mass_2d's fixed panels are made for R0 ~ 3 pc: start there (or lower).
    r0 = min(float(r_np[0]), MASS_R0_PC)
    m2d0 = nuker_enclosed_mass_2d(torch.tensor(r0, dtype=dtype, device=alpha.device), r_b, alpha, beta, gamma,
                                  sigma_b)
    return _nuker_mass3d(r_np, r_b, alpha, beta, gamma, sigma_b, m2d0, r0)[0]


def gaussian_enclosed_mass_3d(sigma, r):
    """Spherical mass inside r of the deprojection of a circular Gaussian of unit peak.

    A unit-peak Gaussian surface density of width sigma is the projection of a spherical
    Gaussian of total mass 2 pi sigma^2; its mass inside r is
    2 pi sigma^2 [erf(x) - (2 / sqrt(pi)) x exp(-x^2)], x = r / (sqrt(2) sigma), evaluated by
    its series (2 / sqrt(pi)) (2x^3/3 - 2x^5/5 + x^7/7 - x^9/27 + x^11/132) for x < 0.2, where
    the difference cancels. ``sigma`` (K,) and ``r`` (N,) tensors in one length unit; returns
    (N, K) in (that unit)^2 times the peak surface density.
    """
    x = r[:, None] / (math.sqrt(2.0) * sigma)
    x2 = x * x
    series = x * x2 * (2.0 / 3.0 + x2 * (-2.0 / 5.0 + x2 * (1.0 / 7.0 + x2 * (-1.0 / 27.0 + x2 / 132.0))))
    direct = torch.erf(x) * (math.sqrt(math.pi) / 2.0) - x * torch.exp(-x2)
    return 4.0 * math.sqrt(math.pi) * sigma**2 * torch.where(x < 0.2, series, direct)


def exact_amplitudes(alpha, beta, gamma, r_b_pc, *, dtype=torch.float64, device=None,
                     conserve_mass=True, ridge=RIDGE, mass_weight=MASS_WEIGHT, mass3d_weight=MASS3D_WEIGHT):
    """Peak amplitudes [Msun/pc^2 per unit Sigma_b] of the Nuker MGE on ``SIGMA_GRID_PC``.

    Parameters
    ----------
    alpha, beta, gamma : tensor, array or float, shape (B,) or scalar
        Nuker slopes.
    r_b_pc : tensor, array or float, shape (B,) or scalar
        Break radius [pc].
    dtype, device : torch dtype and device of the solve and of the result.
    conserve_mass : bool
        Keep the projected mass inside 3 pc and the spherical 3-D masses at
        ``MASS3D_RADII_PC`` as weighted equations (see the module docstring); False fits the
        profile alone.
    ridge, mass_weight, mass3d_weight : float
        Tikhonov strength, the weight of the projected-mass row and that of the 3-D mass rows
        (the row inside 3 pc keeps the ratio ``MASS3D_INNER_WEIGHT / MASS3D_WEIGHT`` to them);
        a weight of 0 drops its rows.

    Returns
    -------
    torch.Tensor, shape (B, 64)
        Peak amplitudes; multiply by Sigma_b [Msun/pc^2] for physical peak surface densities.
        Differentiable with respect to all four shape parameters.
    """
    if not conserve_mass:
        mass_weight = mass3d_weight = 0.0
    ref = next((x for x in (alpha, beta, gamma, r_b_pc) if isinstance(x, torch.Tensor)), None)
    if device is None:
        device = ref.device if ref is not None else torch.device("cpu")
    t = lambda v: torch.as_tensor(v, dtype=dtype, device=device).reshape(-1)  # noqa: E731
    alpha, beta, gamma, r_b = torch.broadcast_tensors(*map(t, (alpha, beta, gamma, r_b_pc)))
    B = alpha.shape[0]

    sigma = torch.tensor(SIGMA_GRID_PC, dtype=dtype, device=device)
    r = torch.tensor(FIT_RADII_PC, dtype=dtype, device=device)
    ln_nuk_r = log_nuker(r, 1.0, r_b[:, None], alpha[:, None], beta[:, None], gamma[:, None])  # (B, N)
    ln_gauss = -0.5 * (r[:, None] / sigma[None, :]) ** 2                                       # (N, K)
    # Fractional design g_i(r_j) / Sigma_N(r_j) / sqrt(N), normalised by its column RMS n_i, both
    # in log space: for steep outer slopes (beta >~ 50, outside the box) 1/Sigma_N at 10 kpc
    # exceeds 1e150 and the squares in a plain norm overflow.
    ln_design = ln_gauss - ln_nuk_r[:, :, None] - 0.5 * math.log(r.numel())                     # (B, N, K)
    ln_col_norm = 0.5 * torch.logsumexp(2.0 * ln_design, dim=1)                                 # (B, K)
    inv_norm = torch.exp(-ln_col_norm)[:, None, :]                                               # 1 / n_i
    rows = [torch.exp(ln_design - ln_col_norm[:, None, :])]
    rhs = [torch.full((B, r.numel()), 1.0 / math.sqrt(r.numel()), dtype=dtype, device=device)]

    if mass_weight or mass3d_weight:
        R0 = torch.tensor(MASS_R0_PC, dtype=dtype, device=device)
        m_nuk = nuker_enclosed_mass_2d(R0, r_b, alpha, beta, gamma)                   # (B,)
    if mass_weight:
        m_basis = gaussian_enclosed_mass_2d(sigma, R0)                                # (K,)
        rows.append((mass_weight * m_basis / m_nuk[:, None])[:, None, :] * inv_norm)
        rhs.append(torch.full((B, 1), mass_weight, dtype=dtype, device=device))
    if mass3d_weight:
        n3 = MASS3D_RADII_PC.size
        # The 3-D mass integral starts from the projected mass inside 3 pc of the row above.
        m3_nuk, m2d_nuk = _nuker_mass3d(MASS3D_RADII_PC, r_b, alpha, beta, gamma, torch.ones_like(alpha),
                                        m_nuk, MASS_R0_PC)                            # (B, N3) each
        # Row 0: M3D(<r_0 = 3 pc), lightly weighted. Rows k >= 1: the mass between r_0 and r_k
        # relative to the whole M3D(<r_k). Not M3D(<r_k) itself: for a steep cusp all of those
        # are dominated by the mass inside 3 pc that the basis cannot place (module docstring),
        # and 48 rows asking for it overrode the profile fit (M1 ~ 10 for gamma ~ 1.5-1.9, outside
        # the box). Nor the shells r_{k-1} < r < r_k: each would weigh a tiny outer shell like
        # the whole mass and ask for the profile beyond the basis (M1 median x2). The mass inside
        # 3 pc still needs its own row for cores, where it is tiny and spurious narrow Gaussians
        # could inflate it; MASS3D_INNER_WEIGHT is small enough not to distort steep cusps.
        target = torch.cat([m3_nuk[:, :1], m3_nuk[:, 1:] - m3_nuk[:, :1]], dim=-1)           # (B, N3)
        # For a nearly flat Sigma (beta -> 0, outside the box) the 3-D mass is a vanishing
        # difference of projected masses that drowns in rounding (~1e-15 M2D): drop such rows
        # rather than divide by noise.
        ok = m3_nuk > 1e-9 * m2d_nuk
        w3 = torch.full((n3,), mass3d_weight / math.sqrt(n3 - 1), dtype=dtype, device=device)
        w3[0] = MASS3D_INNER_WEIGHT * mass3d_weight / MASS3D_WEIGHT
        w3 = ok.to(dtype) * w3                                                             # (B, N3)
        m3_safe = torch.where(ok, m3_nuk, torch.ones_like(m3_nuk))
        m3_basis = _gaussian_mass3d_table(dtype, device)                               # (N3, K)
        rows.append(w3[:, :, None] * m3_basis / m3_safe[:, :, None] * inv_norm)
        rhs.append(w3 * target / m3_safe)

    # Tikhonov rows on the normalised amplitudes d_i = n_i a_i.
    K = sigma.numel()
    rows.append(math.sqrt(ridge) * torch.eye(K, dtype=dtype, device=device).expand(B, K, K))
    rhs.append(torch.zeros((B, K), dtype=dtype, device=device))
    A = torch.cat(rows, dim=1)
    Q, Rm = torch.linalg.qr(A)
    d = torch.linalg.solve_triangular(Rm, Q.transpose(-1, -2) @ torch.cat(rhs, dim=1)[..., None], upper=True)[..., 0]
    return d * inv_norm[:, 0, :]


@functools.lru_cache(maxsize=16)
def _gaussian_mass3d_table(dtype, device):
    """(N3, K) spherical masses of the unit-peak basis Gaussians inside ``MASS3D_RADII_PC[0]`` (row
    0) and between it and each further radius (rows k >= 1), built once in float64 and cast."""
    tab = gaussian_enclosed_mass_3d(torch.tensor(SIGMA_GRID_PC, dtype=torch.float64),
                                    torch.tensor(MASS3D_RADII_PC, dtype=torch.float64))
    return torch.cat([tab[:1], tab[1:] - tab[:1]], dim=0).to(dtype=dtype, device=device)

