"""Empirical Fisher information and the ridge-regularised covariance used as the MALA mass matrix
(seed paper, appendix C.1).

For whitened residuals ``r(z) = (y_model(z) - y) / sigma`` (n_res,) at a point ``z`` (d,),

    J = dr/dz  (n_res, d),   F = J^T J,   F~ = F + lambda I,
    lambda = max(ridge_frac * median(diag F), ridge_min),   Cov(z) ~ F~^{-1}.

``F`` is the Gauss-Newton approximation to the Hessian of the negative log-likelihood
``0.5 |r|^2``; it is positive semi-definite by construction and needs first derivatives only.

The Jacobian is built column by column with forward-mode autodiff (a Jacobian-vector product per
basis direction, ``chunk_size`` directions at a time under ``torch.func.vmap``), so the peak memory
is ``chunk_size`` forward passes plus the ``d x n_res`` Jacobian itself (d = 15, n_res = 1e6:
120 MB in float64); ``F`` is accumulated from row blocks of ``row_block`` residuals in float64.
Two fallbacks cover forward models that ``torch.func`` cannot batch or differentiate in forward
mode: ``method="forward-loop"`` (one ``torch.func.jvp`` per direction, no vmap) and
``method="reverse"`` (the double-backward trick ``J v = d/du [(J^T u) . v]`` with ordinary
autograd: one forward graph kept in memory, ``d`` double-backward passes). The default
``method="auto"`` tries ``forward`` and falls back to ``reverse`` (with a warning) when the model
raises a ``RuntimeError``/``NotImplementedError`` under ``torch.func`` -- e.g. a ``.numpy()`` or
``.item()`` call on a tensor derived from ``z``, or an op without a forward-mode formula.

Non-Gaussian likelihoods (the Student-t of seed paper sec. 2.2). Two routes:

1. Whitened residuals with Fisher weights (recommended). For a Student-t with ``nu`` degrees of
   freedom and scale ``s`` the Fisher information of the location is ``(nu + 1) / ((nu + 3) s^2)``
   per datum, independent of the residual. Passing
   ``r_i = student_t_fisher_weight(nu_i) * (y_model_i - y_i) / s_i`` to :func:`empirical_fisher`
   therefore gives the *expected* Fisher matrix of the Student-t likelihood exactly -- positive
   semi-definite, first derivatives only, the same code path. (For the paper's Gaussian with
   ``2 sigma``, ``r_i = (y_model_i - y_i) / (2 sigma_i)``.)
2. :func:`hessian_fisher`: the Hessian of any scalar negative log-likelihood ``nll(z)``, symmetrised
   and with negative eigenvalues clipped to 0 before the ridge (a Student-t NLL is not convex: far
   from the mode its Hessian can be indefinite). Costs ``d`` Hessian-vector products of the full
   model; use it when the likelihood is not a sum of squares of any residual.

All matrices are returned in float64 on the device of ``z``.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["FisherResult", "residual_jacobian", "fisher_from_jacobian", "fisher_covariance",
           "empirical_fisher", "hessian_fisher", "student_t_fisher_weight"]

_METHODS = ("auto", "forward", "forward-loop", "reverse")


@dataclass
class FisherResult:
    """Fisher matrix and the covariance derived from it (all float64, on the device of ``z``).

    Attributes
    ----------
    z : torch.Tensor, (d,)
        Point where the matrix was evaluated (unconstrained coordinates).
    fisher : torch.Tensor, (d, d)
        ``F = J^T J`` (or the clipped Hessian for :func:`hessian_fisher`) [1/z^2].
    ridge : float
        ``lambda = max(ridge_frac * median(diag F), ridge_min)``.
    precision : torch.Tensor, (d, d)
        ``F~ = F + prior_precision + lambda I``, symmetric positive-definite.
    covariance : torch.Tensor, (d, d)
        ``F~^{-1}``: the mass matrix (inverse mass) for :mod:`.mala` [z^2].
    cholesky : torch.Tensor, (d, d)
        Lower-triangular ``L`` with ``covariance = L L^T``.
    chi2 : float
        ``sum r^2`` at ``z`` (residual route) or ``2 nll(z)`` (Hessian route).
    n_residuals : int
        Number of real residuals (0 for the Hessian route).
    n_clipped : int
        Negative Hessian eigenvalues clipped to 0 (Hessian route; 0 otherwise).
    jacobian : torch.Tensor or None, (n_res, d)
        ``J`` in the residuals' dtype, if requested.
    """

    z: torch.Tensor
    fisher: torch.Tensor
    ridge: float
    precision: torch.Tensor
    covariance: torch.Tensor
    cholesky: torch.Tensor
    chi2: float
    n_residuals: int = 0
    n_clipped: int = 0
    jacobian: Optional[torch.Tensor] = None


def student_t_fisher_weight(nu):
    """Multiplier turning Student-t residuals into Fisher-whitened ones: ``sqrt((nu+1)/(nu+3))``.

    Parameters
    ----------
    nu : float or torch.Tensor (any shape)
        Degrees of freedom, > 0 (for a gridded cell: ``n_eff - 1``).

    Returns
    -------
    Same type/shape as ``nu``: weights in (1/sqrt(3), 1); multiply ``(y_model - y) / s`` by it.
    """
    if isinstance(nu, torch.Tensor):
        if bool((~(nu > 0)).any()):
            raise ValueError("nu: Student-t degrees of freedom must be > 0 (and not NaN)")
        return torch.sqrt((nu + 1.0) / (nu + 3.0))
    if isinstance(nu, bool) or not isinstance(nu, numbers.Real) or not nu > 0:
        raise ValueError(f"nu: Student-t degrees of freedom must be a number > 0, got {nu!r}")
    return math.sqrt((nu + 1.0) / (nu + 3.0))


def _check_point(z):
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"z: expected a torch.Tensor of shape (d,), got {type(z).__name__}")
    if z.ndim != 1 or z.numel() == 0:
        raise ValueError(f"z: expected shape (d,) with d >= 1, got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"z: expected a floating-point tensor, got {z.dtype}")
    if not bool(torch.isfinite(z).all()):
        raise ValueError("z: the evaluation point has non-finite entries")


def _check_ridge(ridge_frac, ridge_min):
    for name, v in (("ridge_frac", ridge_frac), ("ridge_min", ridge_min)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (v >= 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if ridge_frac == 0 and ridge_min == 0:
        raise ValueError("ridge_frac and ridge_min are both 0: the ridge would not guarantee a "
                         "positive-definite matrix; set ridge_min > 0")


def _flat_real(r):
    """Residuals as a flat real vector: complex values become stacked (real, imag) pairs."""
    if r.is_complex():
        r = torch.view_as_real(r)
    return r.reshape(-1)


def residual_jacobian(residual_fn, z, *, chunk_size=4, method="auto"):
    """Jacobian ``J = dr/dz`` of whitened residuals at one point, by autodiff, column-chunked.

    Parameters
    ----------
    residual_fn : callable
        ``residual_fn(z) -> r``: ``z`` (d,) -> residuals of any shape, real or complex (complex are
        used as stacked real/imag pairs), dimensionless (already divided by their sigma). It must
        be a pure torch function of ``z`` (no ``.item()``, no numpy) for the ``forward`` methods.
    z : torch.Tensor, shape (d,)
        Evaluation point (unconstrained coordinates); its dtype/device are those of the work.
    chunk_size : int
        Basis directions pushed through the model at once (``method="forward"``): the peak memory
        is about ``chunk_size`` forward passes. Ignored by the other methods.
    method : {"auto", "forward", "forward-loop", "reverse"}
        ``forward``: ``torch.func.vmap`` over ``torch.func.jvp``; ``forward-loop``: one
        ``torch.func.jvp`` per direction (for functions vmap cannot batch); ``reverse``: double
        backward with ``torch.autograd`` (for ops without forward-mode derivatives, or code that
        leaves torch, e.g. ``.numpy()``); ``auto`` (default): ``forward``, falling back to
        ``reverse`` with a warning if ``torch.func`` fails.

    Returns
    -------
    r : torch.Tensor, shape (n_res,)
        Flat real residuals at ``z`` (detached).
    J : torch.Tensor, shape (n_res, d)
        In the residuals' dtype (a transposed view of a contiguous (d, n_res) array).
    """
    _check_point(z)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
    if method == "auto":
        try:
            return residual_jacobian(residual_fn, z, chunk_size=chunk_size, method="forward")
        except (RuntimeError, NotImplementedError) as exc:
            warnings.warn(f"residual_jacobian: forward-mode autodiff failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0][:200]}); using method='reverse'", RuntimeWarning,
                          stacklevel=2)
            return residual_jacobian(residual_fn, z, chunk_size=chunk_size, method="reverse")
    d = z.numel()
    z = z.detach()
    f = lambda x: _flat_real(residual_fn(x))  # noqa: E731
    eye = torch.eye(d, dtype=z.dtype, device=z.device)
    cols = []
    if method == "reverse":
        zz = z.clone().requires_grad_(True)
        with torch.enable_grad():
            r = f(zz)
            if not r.requires_grad:
                raise ValueError("residual_fn(z) does not depend on z through autograd")
            # g(u) = J^T u is linear in u, so the vector-Jacobian product of g with v is
            # d(g . v)/du = J v: a Jacobian column per v = e_i, from reverse mode only.
            u = torch.zeros_like(r, requires_grad=True)
            (g,) = torch.autograd.grad(r, zz, grad_outputs=u, create_graph=True)
            for i in range(d):
                (jv,) = torch.autograd.grad(g, u, grad_outputs=eye[i].to(g.dtype), retain_graph=i < d - 1,
                                            allow_unused=True)
                cols.append((torch.zeros_like(r) if jv is None else jv).detach()[None])
        r = r.detach()
    else:
        r = None

        def jvp_one(v):
            return torch.func.jvp(f, (z,), (v,))

        if method == "forward":
            batched = torch.func.vmap(jvp_one)
            for s in range(0, d, chunk_size):
                rr, jv = batched(eye[s:s + chunk_size])
                if r is None:
                    r = rr[0].detach()
                cols.append(jv.detach())
        else:
            for i in range(d):
                rr, jv = jvp_one(eye[i])
                if r is None:
                    r = rr.detach()
                cols.append(jv.detach()[None])
    JT = torch.cat(cols, 0)
    return r, JT.T


def fisher_from_jacobian(J, *, row_block=1 << 18):
    """``F = J^T J`` in float64, accumulated over row blocks so the float64 copy stays small.

    Parameters
    ----------
    J : torch.Tensor, shape (n_res, d)
        Jacobian of the whitened residuals, any floating dtype.
    row_block : int
        Residuals converted to float64 at a time (memory ``8 d row_block`` bytes).

    Returns
    -------
    torch.Tensor, shape (d, d), float64, symmetric positive semi-definite.
    """
    if not isinstance(J, torch.Tensor) or J.ndim != 2:
        raise ValueError(f"J: expected a 2-D tensor (n_res, d), got {getattr(J, 'shape', type(J))}")
    if isinstance(row_block, bool) or not isinstance(row_block, numbers.Integral) or row_block < 1:
        raise ValueError(f"row_block must be an integer >= 1, got {row_block!r}")
    n, d = J.shape
    F = torch.zeros((d, d), dtype=torch.float64, device=J.device)
    for s in range(0, n, row_block):
        b = J[s:s + row_block].to(torch.float64)
        F += b.T @ b
    return 0.5 * (F + F.T)


def fisher_covariance(fisher, *, ridge_frac=1e-4, ridge_min=1e-8, prior_precision=None):
    """Ridge-regularise a Fisher matrix and invert it (seed paper appendix C.1).

    Parameters
    ----------
    fisher : torch.Tensor, shape (d, d)
        Symmetric positive semi-definite Fisher matrix ``F`` [1/z^2].
    ridge_frac : float >= 0
        Ridge as a fraction of the median diagonal of ``F``.
    ridge_min : float >= 0
        Lower limit of the ridge (it must be > 0 if ``F`` can have a zero median diagonal).
    prior_precision : torch.Tensor, shape (d,) or (d, d), optional
        Curvature of the negative log-prior added to ``F`` (not part of the paper's formula; e.g.
        :meth:`~.parameters.ParameterSpace.prior_precision_unconstrained`). It gives directions the
        data do not constrain the prior's scale instead of ``1 / lambda``. The ridge is computed
        from ``F`` alone, as in the paper.

    Returns
    -------
    precision : torch.Tensor, (d, d) float64
        ``F~ = F + prior_precision + lambda I``.
    covariance : torch.Tensor, (d, d) float64
        ``F~^{-1}``, exactly symmetric.
    cholesky : torch.Tensor, (d, d) float64
        Lower ``L``, ``covariance = L L^T``.
    ridge : float
        ``lambda``.

    Raises
    ------
    ValueError
        Non-finite entries, a non-square matrix, or a regularised matrix that is still not
        positive-definite (e.g. a negative-definite input).
    """
    _check_ridge(ridge_frac, ridge_min)
    if not isinstance(fisher, torch.Tensor) or fisher.ndim != 2 or fisher.shape[0] != fisher.shape[1]:
        raise ValueError(f"fisher: expected a square (d, d) tensor, got {getattr(fisher, 'shape', type(fisher))}")
    F = fisher.to(torch.float64)
    if not bool(torch.isfinite(F).all()):
        raise ValueError("fisher: the Fisher matrix has non-finite entries (non-finite residuals "
                         "or Jacobian at this point?)")
    d = F.shape[0]
    F = 0.5 * (F + F.T)
    lam = max(ridge_frac * float(torch.median(torch.diagonal(F))), ridge_min)
    P = F + lam * torch.eye(d, dtype=F.dtype, device=F.device)
    if prior_precision is not None:
        pp = torch.as_tensor(prior_precision, dtype=torch.float64, device=F.device)
        if pp.shape == (d,):
            pp = torch.diag(pp)
        if pp.shape != (d, d):
            raise ValueError(f"prior_precision: expected shape ({d},) or ({d}, {d}), got {tuple(pp.shape)}")
        if not bool(torch.isfinite(pp).all()):
            raise ValueError("prior_precision has non-finite entries")
        P = P + 0.5 * (pp + pp.T)
    Lp, info = torch.linalg.cholesky_ex(P)
    if int(info) != 0:
        raise ValueError(f"fisher: F + ridge ({lam:g}) is not positive-definite (minor {int(info)} fails); "
                         "the input is not a positive semi-definite Fisher matrix")
    # Cov = P^{-1} from the Cholesky factor of P (better conditioned than a general inverse).
    C = torch.cholesky_inverse(Lp)
    C = 0.5 * (C + C.T)
    Lc, info = torch.linalg.cholesky_ex(C)
    if int(info) != 0:
        raise ValueError(f"covariance F~^-1 is numerically not positive-definite (condition number of "
                         f"F~ too large for float64; increase ridge_frac, now {ridge_frac:g})")
    return P, C, Lc, lam


def empirical_fisher(residual_fn, z, *, ridge_frac=1e-4, ridge_min=1e-8, prior_precision=None,
                     chunk_size=4, method="auto", row_block=1 << 18, return_jacobian=False):
    """Empirical Fisher matrix ``J^T J`` of whitened residuals and its ridge covariance (appendix C.1).

    Parameters
    ----------
    residual_fn : callable
        ``z (d,) -> r``, whitened residuals (any shape, real or complex = stacked real/imag),
        dimensionless. For a Student-t likelihood multiply them by
        :func:`student_t_fisher_weight` (module docstring).
    z : torch.Tensor, shape (d,)
        Evaluation point (unconstrained coordinates), e.g. the best sampled point.
    ridge_frac, ridge_min, prior_precision
        See :func:`fisher_covariance`.
    chunk_size, method
        See :func:`residual_jacobian`.
    row_block : int
        See :func:`fisher_from_jacobian`.
    return_jacobian : bool
        Keep ``J`` (n_res, d) in the result.

    Returns
    -------
    FisherResult
        float64 matrices on ``z``'s device; ``covariance`` is the mass matrix for :mod:`.mala`.

    Raises
    ------
    ValueError
        Non-finite residuals or Jacobian entries (mask bad data before whitening), or a matrix
        that cannot be made positive-definite.
    """
    r, J = residual_jacobian(residual_fn, z, chunk_size=chunk_size, method=method)
    nbad = int((~torch.isfinite(r)).sum())
    if nbad:
        raise ValueError(f"residual_fn(z): {nbad} of {r.numel()} residuals are non-finite; mask bad "
                         "cells (NaN sigma) before whitening")
    badcol = (~torch.isfinite(J)).any(0)
    if bool(badcol.any()):
        cols = badcol.nonzero().reshape(-1).tolist()
        raise ValueError(f"Jacobian has non-finite entries in column(s) {cols} of z")
    Fm = fisher_from_jacobian(J, row_block=row_block)
    P, C, L, lam = fisher_covariance(Fm, ridge_frac=ridge_frac, ridge_min=ridge_min,
                                     prior_precision=prior_precision)
    chi2 = float((r.to(torch.float64) ** 2).sum())
    return FisherResult(z=z.detach().to(torch.float64), fisher=Fm, ridge=lam, precision=P, covariance=C,
                        cholesky=L, chi2=chi2, n_residuals=r.numel(), n_clipped=0,
                        jacobian=J if return_jacobian else None)


def hessian_fisher(nll_fn, z, *, ridge_frac=1e-4, ridge_min=1e-8, prior_precision=None, method="reverse"):
    """Covariance from the Hessian of a scalar negative log-likelihood (e.g. Student-t).

    The Hessian is symmetrised, its negative eigenvalues (non-convex NLL away from the mode) are
    set to 0, then the ridge of :func:`fisher_covariance` is applied to the result.

    Parameters
    ----------
    nll_fn : callable
        ``z (d,) -> scalar`` negative log-likelihood (natural log), a torch function of ``z``.
    z : torch.Tensor, shape (d,)
        Evaluation point (unconstrained coordinates).
    ridge_frac, ridge_min, prior_precision
        See :func:`fisher_covariance`.
    method : {"reverse", "forward"}
        ``reverse``: ``d`` Hessian-vector products by double backward with ``torch.autograd``;
        ``forward``: ``torch.func.jacfwd(torch.func.grad(nll_fn))`` (forward-over-reverse).

    Returns
    -------
    FisherResult
        ``fisher`` holds the clipped Hessian, ``n_clipped`` the number of clipped eigenvalues,
        ``chi2 = 2 nll(z)``.
    """
    _check_point(z)
    if method not in ("reverse", "forward"):
        raise ValueError(f"method must be 'reverse' or 'forward', got {method!r}")
    z = z.detach()
    d = z.numel()
    if method == "forward":
        H = torch.func.jacfwd(torch.func.grad(nll_fn))(z)
        with torch.no_grad():
            val = nll_fn(z)
    else:
        zz = z.clone().requires_grad_(True)
        with torch.enable_grad():
            val = nll_fn(zz)
            if val.numel() != 1:
                raise ValueError(f"nll_fn(z) must return a scalar, got shape {tuple(val.shape)}")
            (g,) = torch.autograd.grad(val.reshape(()), zz, create_graph=True)
            rows = []
            for i in range(d):
                (h,) = torch.autograd.grad(g[i], zz, retain_graph=i < d - 1, allow_unused=True)
                rows.append(torch.zeros_like(z) if h is None else h.detach())
        H = torch.stack(rows)
    H = H.to(torch.float64)
    if not bool(torch.isfinite(H).all()) or not bool(torch.isfinite(val).all()):
        raise ValueError("nll_fn: non-finite value or Hessian at z")
    H = 0.5 * (H + H.T)
    evals, evecs = torch.linalg.eigh(H)
    n_clipped = int((evals < 0).sum())
    Hc = (evecs * evals.clamp(min=0)) @ evecs.T
    Hc = 0.5 * (Hc + Hc.T)
    P, C, L, lam = fisher_covariance(Hc, ridge_frac=ridge_frac, ridge_min=ridge_min,
                                     prior_precision=prior_precision)
    return FisherResult(z=z.to(torch.float64), fisher=Hc, ridge=lam, precision=P, covariance=C, cholesky=L,
                        chi2=2.0 * float(val.detach().reshape(())), n_residuals=0, n_clipped=n_clipped)
