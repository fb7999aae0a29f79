"""The metric (mass matrix) of a gradient-based sampler, as one validated, factored object.

Throughout, ``M`` is the mass matrix in the *covariance* sense (the inverse mass; e.g. a Fisher
covariance or the covariance of warm-up draws), ``M = L L^T``: a Langevin proposal moves by
``L xi``, a Hamiltonian momentum is ``p = L^{-T} xi`` (covariance ``M^{-1}``) and the kinetic
energy is ``p^T M p / 2``.
"""

import torch

__all__ = ["mass_factors", "covariance_of"]


def covariance_of(mass_matrix):
    """The covariance array of a mass-matrix argument: a tensor/array, or an object with ``.covariance``."""
    return getattr(mass_matrix, "covariance", mass_matrix)


def mass_factors(mass_matrix, d, dtype, device):
    """Validated ``(M, L, L^{-1})`` from a (d, d) covariance, a (d,) diagonal or a FisherResult.

    Parameters
    ----------
    mass_matrix : tensor-like (d, d) or (d,), object with ``.covariance``, or None
        Inverse mass [z^2]; None is the identity.
    d : int
        Dimension.
    dtype, device
        Of the returned tensors.

    Returns
    -------
    (M, L, Linv) : three (d, d) tensors
        The symmetrised matrix, its lower Cholesky factor and that factor's inverse.

    Raises
    ------
    ValueError
        Wrong shape, non-finite entries, not symmetric, or not positive definite.
    """
    if mass_matrix is None:
        M = torch.eye(d, dtype=dtype, device=device)
    else:
        M = torch.as_tensor(covariance_of(mass_matrix), dtype=dtype, device=device)
        if M.shape == (d,):
            M = torch.diag(M)
        if M.shape != (d, d):
            raise ValueError(f"mass_matrix: expected shape ({d}, {d}) or ({d},), got {tuple(M.shape)}")
        if not bool(torch.isfinite(M).all()):
            raise ValueError("mass_matrix has non-finite entries")
        scale = float(M.abs().max())
        # float32 rounds products to ~1e-7: allow rounding, not a different matrix
        if float((M - M.T).abs().max()) > max(1e-8, 64 * torch.finfo(M.dtype).eps) * scale:
            raise ValueError("mass_matrix is not symmetric")
        M = 0.5 * (M + M.T)
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) != 0:
        raise ValueError("mass_matrix is not positive-definite (Cholesky failed)")
    Linv = torch.linalg.solve_triangular(L, torch.eye(d, dtype=dtype, device=device), upper=False)
    return M, L, Linv
