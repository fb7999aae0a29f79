"""The ``exact`` Nuker -> MGE backend: a regularised, mass-conserving least-squares projection.

For each Nuker shape (Sigma_b = 1) we solve for the 64 peak amplitudes ``a_i`` on the
fixed basis (``basis.SIGMA_GRID_PC``) that minimise

    mean_j [Sigma_MGE(r_j) / Sigma_N(r_j) - 1]^2            (fractional profile error, eq. 4)
  + w_M^2 [M2D_MGE(<R0) / M2D_N(<R0) - 1]^2                  (projected mass inside R0 = 3 pc)
  + lambda sum_i (n_i a_i)^2                                  (Tikhonov on column-normalised amplitudes)

over log-spaced radii r_j in [3 pc, 3.75 kpc], where n_i is the RMS of the i-th Gaussian's
fractional design column. Normalising the columns makes one dimensionless ``lambda`` suit the
whole parameter box. Without it the fractional system has condition number ~1e16 and its
solution alternates in sign with huge amplitudes (cancellation factor kappa ~ 1e4-1e8), which
is harmless in float64 but destroys float32 work downstream; lambda = 1e-12 keeps kappa
below ~1e3 at no measurable cost in accuracy. The mass row restores the cusp mass below the smallest
Gaussian that a profile-only fit drops; that mass sets the circular velocity at ALMA radii.

The two aims conflict for profiles that are steep at 3 pc (local slope >~ 2): most of their
projected mass inside 3 pc lies within the smallest Gaussian's reach (sigma_min = 1 pc), and
no 64-Gaussian table on this basis can hold it without a ~1% profile error at 3.0-3.3 pc.
``conserve_mass=False`` drops the mass row (profile error p99 ~2e-4, but v_c errors of tens of
per cent for steep cusps); the default keeps it. validation/emulator_accuracy.py measures both.

Everything is torch, batched over the leading dimension, float64 by default, and
differentiable with respect to the Nuker parameters (QR solve of the stacked system).
"""

import functools
import math

import numpy as np
import torch

from .basis import FIT_R_MAX_PC, FIT_R_MIN_PC, MASS_R0_PC, SIGMA_GRID_PC
from .nuker import as_tensor_on, log_nuker

#: Fit radii [pc]: a little wider than the M1 range so the end points are not edge cases.
# Fit radii [pc]: from the M1 inner edge (going further in costs accuracy at 3 pc: the basis
# cannot follow a steep profile inside ~3 sigma_min) to a little beyond the outer edge.
FIT_RADII_PC = np.logspace(np.log10(FIT_R_MIN_PC), np.log10(FIT_R_MAX_PC * 1.25), 320)
#: Tikhonov strength on column-normalised amplitudes: keeps kappa p99 < 1e3 (M1).
RIDGE = 1e-12
#: Weight of the projected-mass row: M1b p99 ~ 3e-5; larger weights only cost profile accuracy.
MASS_WEIGHT = 0.1

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


def exact_amplitudes(alpha, beta, gamma, r_b_pc, *, dtype=torch.float64, device=None,
                     conserve_mass=True, ridge=RIDGE, mass_weight=MASS_WEIGHT):
    """Peak amplitudes [Msun/pc^2 per unit Sigma_b] of the Nuker MGE on ``SIGMA_GRID_PC``.

    Parameters are tensors or arrays of shape (B,) (or scalars); ``r_b_pc`` in pc. Returns a
    (B, 64) tensor; multiply by Sigma_b [Msun/pc^2] for physical peak surface densities.
    Differentiable with respect to all four shape parameters. ``conserve_mass`` adds the
    projected mass inside 3 pc as a weighted equation (see the module docstring).
    """
    if not conserve_mass:
        mass_weight = 0.0
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
    design = torch.exp(ln_gauss - ln_nuk_r[:, :, None]) / math.sqrt(r.numel())                 # (B, N, K)
    col_norm = torch.linalg.vector_norm(design, dim=1)                                          # (B, K)

    R0 = torch.tensor(MASS_R0_PC, dtype=dtype, device=device)
    m_nuk = nuker_enclosed_mass_2d(R0, r_b, alpha, beta, gamma)                   # (B,)
    m_basis = gaussian_enclosed_mass_2d(sigma, R0)                                # (K,)
    mass_row = mass_weight * m_basis / m_nuk[:, None]                             # (B, K)

    K = sigma.numel()
    eye = math.sqrt(ridge) * torch.eye(K, dtype=dtype, device=device).expand(B, K, K)
    A = torch.cat([design, mass_row[:, None, :], eye * col_norm[:, None, :]], dim=1) / col_norm[:, None, :]
    rhs = torch.cat([torch.full((B, r.numel()), 1.0 / math.sqrt(r.numel()), dtype=dtype, device=device),
                     torch.full((B, 1), mass_weight, dtype=dtype, device=device),
                     torch.zeros((B, K), dtype=dtype, device=device)], dim=1)
    Q, Rm = torch.linalg.qr(A)
    d = torch.linalg.solve_triangular(Rm, Q.transpose(-1, -2) @ rhs[..., None], upper=True)[..., 0]
    return d / col_norm
