"""The Nuker surface-density profile (seed paper eq. 2) and its parameter box (Appendix A).

All functions accept numpy arrays or torch tensors (torch in -> torch out, and
differentiable); they broadcast their arguments like numpy.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import math

import numpy as np
import torch

#: Appendix-A training box of the Nuker shape parameters (inclusive ranges).
ALPHA_RANGE = (0.1, 10.0)
GAMMA_RANGE = (0.001, 1.2)
BETA_MINUS_GAMMA_RANGE = (0.3, 3.0)
R_B_PC_RANGE = (2.0, 2000.0)
#: Largest surface mass density at the break radius [Msun/pc^2] accepted by the public checks.
SIGMA_B_MAX = 1.0e12

_LN2 = math.log(2.0)


def _is_torch(*xs):
    return any(isinstance(x, torch.Tensor) for x in xs)


def as_tensor_on(v, dtype, device):
    """``v`` as a tensor of ``dtype`` on ``device``; Python scalars are filled in place on the
    device rather than copied from the host, which would stall a CUDA queue."""
    if isinstance(v, (int, float)):
        return torch.full((), float(v), dtype=dtype, device=device)
    return torch.as_tensor(v, dtype=dtype, device=device)


def log_nuker(R, sigma_b, r_b, alpha, beta, gamma):
    """Natural log of the Nuker surface density, eq. (2), evaluated without overflow.

    ``ln Sigma = ln Sigma_b + (beta-gamma)/alpha ln 2 - gamma ln x
    + (gamma-beta)/alpha ln(1 + x^alpha)``, ``x = R / r_b``.

    Parameters
    ----------
    R, r_b : radius and break radius, any common length unit (pc or arcsec).
    sigma_b : surface mass density at the break radius [Msun/pc^2], > 0.
    alpha, beta, gamma : transition sharpness, outer and inner slopes.

    Returns ln(Sigma) with Sigma in the units of ``sigma_b`` [Msun/pc^2].
    """
    if _is_torch(R, sigma_b, r_b, alpha, beta, gamma):
        ref = next(x for x in (R, sigma_b, r_b, alpha, beta, gamma) if isinstance(x, torch.Tensor))
        R, sigma_b, r_b, alpha, beta, gamma = (as_tensor_on(v, ref.dtype, ref.device)
                                               for v in (R, sigma_b, r_b, alpha, beta, gamma))
        lnx = torch.log(R) - torch.log(r_b)
        # logaddexp(0, t) = ln(1 + e^t) is exact and finite for any t.
        soft = torch.logaddexp(torch.zeros_like(lnx), alpha * lnx)
        return torch.log(sigma_b) + (beta - gamma) / alpha * _LN2 - gamma * lnx + (gamma - beta) / alpha * soft
    R, sigma_b, r_b, alpha, beta, gamma = (np.asarray(v, dtype=float) for v in (R, sigma_b, r_b, alpha, beta, gamma))
    lnx = np.log(R) - np.log(r_b)
    soft = np.logaddexp(0.0, alpha * lnx)
    return np.log(sigma_b) + (beta - gamma) / alpha * _LN2 - gamma * lnx + (gamma - beta) / alpha * soft


def nuker_surface_density(R, sigma_b, r_b, alpha, beta, gamma):
    """Nuker surface density Sigma(R) [units of ``sigma_b``, Msun/pc^2], eq. (2).

    ``R`` and ``r_b`` share one length unit. Computed as exp(log_nuker(...)), so it
    neither overflows nor underflows inside the Appendix-A box for R in 0.1 pc-100 kpc.
    """
    ln = log_nuker(R, sigma_b, r_b, alpha, beta, gamma)
    return torch.exp(ln) if isinstance(ln, torch.Tensor) else np.exp(ln)


def _scalar_or_array(name, value):
    arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=float)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def check_nuker_params(*, sigma_b=1.0, r_b=1.0, alpha, beta, gamma, qobs=1.0):
    """Raise ``ValueError`` naming the first Nuker parameter outside its physical range.

    Physical ranges (any Nuker, not only the training box): 0 < sigma_b <= 1e12 Msun/pc^2, r_b > 0,
    alpha > 0, 0 <= gamma < 2 (finite projected mass), beta > gamma, 0 < qobs <= 1. Arrays are checked elementwise.
    """
    v = {k: _scalar_or_array(k, x) for k, x in
         dict(sigma_b=sigma_b, r_b=r_b, alpha=alpha, beta=beta, gamma=gamma, qobs=qobs).items()}
    for name in ("sigma_b", "r_b", "alpha"):
        if np.any(v[name] <= 0):
            raise ValueError(f"{name} = {_show(v[name], v[name] <= 0)} is invalid: it must be > 0")
    bad = v["sigma_b"] > SIGMA_B_MAX
    if np.any(bad):
        raise ValueError(f"sigma_b = {_show(v['sigma_b'], bad)} Msun/pc^2 is invalid: it must be <= {SIGMA_B_MAX:g} "
                         "(a million times the densest galaxy centres; beyond it masses overflow float64)")
    bad = (v["gamma"] < 0) | (v["gamma"] >= 2)
    if np.any(bad):
        raise ValueError(f"gamma = {_show(v['gamma'], bad)} is invalid: the inner slope must be in [0, 2) "
                         "(the projected mass diverges for gamma >= 2)")
    bad = v["beta"] <= v["gamma"]
    if np.any(bad):
        raise ValueError(f"beta = {_show(np.broadcast_to(v['beta'], bad.shape), bad)} is invalid: "
                         "the outer slope beta must be > gamma")
    bad = (v["qobs"] <= 0) | (v["qobs"] > 1)
    if np.any(bad):
        raise ValueError(f"qobs = {_show(v['qobs'], bad)} is invalid: the axis ratio must be in (0, 1]")


def check_training_box(alpha, beta, gamma, r_b_pc):
    """Raise ``ValueError`` if any shape vector lies outside the Appendix-A box."""
    checks = (
        ("alpha", np.asarray(alpha, float), ALPHA_RANGE),
        ("gamma", np.asarray(gamma, float), GAMMA_RANGE),
        ("beta - gamma", np.asarray(beta, float) - np.asarray(gamma, float), BETA_MINUS_GAMMA_RANGE),
        ("r_b [pc]", np.asarray(r_b_pc, float), R_B_PC_RANGE),
    )
    tol = 1e-9
    for name, x, (lo, hi) in checks:
        bad = (x < lo * (1 - tol)) | (x > hi * (1 + tol)) | ~np.isfinite(x)
        if np.any(bad):
            raise ValueError(f"{name} = {_show(x, bad)} is outside the emulator's training box "
                             f"[{lo:g}, {hi:g}] (seed paper Appendix A); use backend='exact' outside it")


def _show(x, bad):
    x = np.asarray(x)
    if x.ndim == 0:
        return f"{float(x):g}"
    bad = np.broadcast_to(bad, x.shape)
    vals = x[bad]
    return f"{float(vals[0]):g}" + (f" (and {vals.size - 1} more)" if vals.size > 1 else "")
