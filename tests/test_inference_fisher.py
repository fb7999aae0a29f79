"""Empirical Fisher matrix (seed paper appendix C.1) against analytic and finite-difference truths."""

import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin.inference.fisher import (empirical_fisher, fisher_covariance, fisher_from_jacobian,
                                               hessian_fisher, residual_jacobian, student_t_fisher_weight)

DT = torch.float64


def _linear(n=300, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, d, generator=g, dtype=DT)
    y = torch.randn(n, generator=g, dtype=DT)
    sig = 0.5 + torch.rand(n, generator=g, dtype=DT)
    return A, y, sig, (lambda z: (A @ z - y) / sig)


@pytest.mark.parametrize("method, chunk", [("forward", 1), ("forward", 3), ("forward", 4),
                                           ("forward-loop", 4), ("reverse", 4)])
def test_linear_gaussian_exact(method, chunk):
    A, y, sig, rfun = _linear()
    z = torch.tensor([0.3, -1.0, 2.0, 0.1], dtype=DT)
    res = empirical_fisher(rfun, z, method=method, chunk_size=chunk, ridge_frac=1e-3, ridge_min=1e-9,
                           return_jacobian=True)
    Aw = A / sig[:, None]
    F = Aw.T @ Aw
    assert torch.allclose(res.jacobian, Aw, atol=1e-13, rtol=0)
    assert torch.allclose(res.fisher, F, atol=1e-11, rtol=1e-13)
    lam = max(1e-3 * float(torch.median(torch.diagonal(F))), 1e-9)
    assert res.ridge == pytest.approx(lam, rel=1e-12)
    cov = torch.linalg.inv(F + lam * torch.eye(4, dtype=DT))
    assert torch.allclose(res.covariance, cov, rtol=1e-10, atol=1e-14)
    assert torch.equal(res.covariance, res.covariance.T)
    assert torch.allclose(res.cholesky @ res.cholesky.T, res.covariance, rtol=1e-12, atol=1e-15)
    assert bool((torch.linalg.eigvalsh(res.covariance) > 0).all())
    assert res.chi2 == pytest.approx(float((rfun(z) ** 2).sum()), rel=1e-12)
    assert res.n_residuals == 300 and res.fisher.dtype == DT


def test_nonlinear_vs_finite_differences():
    g = torch.Generator().manual_seed(3)
    B = torch.randn(500, 3, generator=g, dtype=DT)

    def rfun(z):
        t = B @ z
        return torch.sin(t) + 0.3 * t ** 2 + torch.exp(0.2 * B[:, 0] * z[1])

    z = torch.tensor([0.2, -0.4, 0.7], dtype=DT)
    r, J = residual_jacobian(rfun, z, chunk_size=2)
    h = 1e-6
    Jfd = torch.stack([(rfun(z + h * e) - rfun(z - h * e)) / (2 * h) for e in torch.eye(3, dtype=DT)], 1)
    assert torch.allclose(J, Jfd, rtol=1e-7, atol=1e-8)
    res = empirical_fisher(rfun, z)
    assert torch.allclose(res.fisher, Jfd.T @ Jfd, rtol=1e-7)
    # row-blocked accumulation gives the same matrix
    assert torch.allclose(fisher_from_jacobian(J, row_block=7), res.fisher, rtol=1e-13)


def test_complex_residuals_are_stacked_real_imag():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(100, 3, generator=g, dtype=DT)
    c = torch.randn(100, generator=g, dtype=DT)

    def rc(z):
        return (A @ z) * torch.exp(1j * c * z[0])

    def rr(z):
        v = rc(z)
        return torch.stack([v.real, v.imag], -1)

    z = torch.tensor([0.5, 1.0, -0.3], dtype=DT)
    assert torch.allclose(empirical_fisher(rc, z).fisher, empirical_fisher(rr, z).fisher, rtol=1e-12)


def test_million_residuals_float32_bounded():
    # 1e6 float32 residuals, 3 parameters: J is 12 MB; F accumulated in float64 from row blocks.
    n, d = 1_000_000, 3
    x = torch.linspace(-1, 1, n, dtype=torch.float32)
    basis = torch.stack([torch.ones_like(x), x, x * x], 1)

    def rfun(z):
        return basis @ z.to(torch.float32) - 1.0

    res = empirical_fisher(rfun, torch.zeros(d, dtype=torch.float32), chunk_size=3, row_block=1 << 17)
    F = basis.double().T @ basis.double()
    assert res.fisher.dtype == DT
    assert torch.allclose(res.fisher, F, rtol=1e-6)


def test_ridge_and_prior_precision():
    F = torch.zeros(3, 3, dtype=DT)
    P, C, L, lam = fisher_covariance(F, ridge_frac=0.1, ridge_min=1e-2)
    assert lam == 1e-2 and torch.allclose(C, 100 * torch.eye(3, dtype=DT))
    F = torch.diag(torch.tensor([1.0, 100.0, 1e4], dtype=DT))
    P, C, L, lam = fisher_covariance(F, ridge_frac=0.01, ridge_min=0.0, prior_precision=torch.full((3,), 0.5))
    assert lam == pytest.approx(1.0)
    assert torch.allclose(torch.diagonal(C), 1 / torch.tensor([2.5, 101.5, 1e4 + 1.5], dtype=DT))
    with pytest.raises(ValueError, match="ridge_min"):
        fisher_covariance(F, ridge_frac=0.0, ridge_min=0.0)
    with pytest.raises(ValueError, match="positive-definite"):
        fisher_covariance(-F, ridge_frac=0.0, ridge_min=1e-6)
    with pytest.raises(ValueError, match="non-finite"):
        fisher_covariance(F * float("nan"))


def test_nonfinite_residuals_rejected():
    def rfun(z):
        return torch.stack([z[0], torch.log(z[1])])

    with pytest.raises(ValueError, match="non-finite"):
        empirical_fisher(rfun, torch.tensor([1.0, -1.0], dtype=DT))
    with pytest.raises(ValueError, match="method"):
        empirical_fisher(rfun, torch.tensor([1.0, 1.0], dtype=DT), method="adjoint")


@pytest.mark.parametrize("method", ["reverse", "forward"])
def test_hessian_route_gaussian_equals_gauss_newton(method):
    A, y, sig, rfun = _linear(n=50, d=3)
    z = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    h = hessian_fisher(lambda t: 0.5 * (rfun(t) ** 2).sum(), z, method=method)
    e = empirical_fisher(rfun, z)
    assert torch.allclose(h.fisher, e.fisher, rtol=1e-10)
    assert torch.allclose(h.covariance, e.covariance, rtol=1e-9)
    assert h.n_clipped == 0 and h.chi2 == pytest.approx(e.chi2)


def test_hessian_route_student_t_vs_finite_differences_and_clipping():
    A, y, sig, rfun = _linear(n=80, d=3, seed=5)
    nu = 4.0

    def nll(t):
        return 0.5 * (nu + 1) * torch.log1p(rfun(t) ** 2 / nu).sum()

    z = torch.tensor([0.0, 0.5, -0.5], dtype=DT)
    res = hessian_fisher(nll, z)

    def grad(t):
        t = t.clone().requires_grad_(True)
        return torch.autograd.grad(nll(t), t)[0]

    eps = 1e-5
    Hfd = torch.stack([(grad(z + eps * e) - grad(z - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=DT)])
    Hfd = 0.5 * (Hfd + Hfd.T)
    assert bool((torch.linalg.eigvalsh(Hfd) > 0).all())     # convex here: nothing clipped
    assert res.n_clipped == 0
    assert torch.allclose(res.fisher, Hfd, rtol=1e-6, atol=1e-6)
    # far in the tails a Student-t NLL is concave: negative eigenvalues are clipped, result stays PD
    far = hessian_fisher(lambda t: 0.5 * (nu + 1) * torch.log1p((t - 100.0) ** 2 / nu).sum(),
                         torch.zeros(3, dtype=DT), ridge_min=1e-3)
    assert far.n_clipped == 3
    assert bool((torch.linalg.eigvalsh(far.covariance) > 0).all())


def test_student_t_fisher_weight_matches_expected_information():
    from scipy import integrate, stats
    for nu in (2.0, 4.0, 30.0):
        # E[(d/dmu log t_nu(x - mu))^2] for unit scale
        score2 = lambda x: ((nu + 1) * x / (nu + x * x)) ** 2 * stats.t.pdf(x, nu)  # noqa: E731
        info = integrate.quad(score2, -np.inf, np.inf)[0]
        assert student_t_fisher_weight(nu) ** 2 == pytest.approx(info, rel=1e-7)
    w = student_t_fisher_weight(torch.tensor([1.0, 10.0]))
    assert w.shape == (2,)
    with pytest.raises(ValueError, match="nu"):
        student_t_fisher_weight(0.0)
    assert math.isclose(student_t_fisher_weight(1e12), 1.0, rel_tol=1e-9)


def test_auto_falls_back_to_reverse_when_torch_func_fails():
    A, y, sig, rfun = _linear(n=40, d=3)

    def leaves_torch(z):
        np.asarray(z.detach().cpu().numpy())      # e.g. a pixel lookup on the host: breaks torch.func
        return rfun(z)

    z = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    with pytest.raises(RuntimeError):
        residual_jacobian(leaves_torch, z, method="forward")
    with pytest.warns(RuntimeWarning, match="using method='reverse'"):
        res = empirical_fisher(leaves_torch, z)
    assert torch.allclose(res.fisher, empirical_fisher(rfun, z, method="forward").fisher, rtol=1e-12)


@pytest.mark.parametrize("kind", ["student_t", "gaussian"])
def test_overlap_weights_duplicate_cell_counts_once(kind):
    """A cell duplicated exactly, both copies weighted 1/2 (its overlap multiplicity 2), gives the
    log-likelihood and the Fisher matrix J^T J of the single cell (likelihood.py cell_weight)."""
    from nuker_mge_plugin.inference.likelihood import GriddedLikelihood

    g = torch.Generator().manual_seed(3)
    n, d = 12, 3
    A = torch.randn(n, d, generator=g, dtype=DT) + 1j * torch.randn(n, d, generator=g, dtype=DT)
    vis = torch.randn(n, generator=g, dtype=DT) + 1j * torch.randn(n, generator=g, dtype=DT)
    sig = 0.5 + torch.rand(n, generator=g, dtype=DT)
    neff = 2.0 + 5 * torch.rand(n, generator=g, dtype=DT)
    dup = torch.cat([torch.arange(n), torch.tensor([4])])  # cell 4 twice
    w = torch.ones(n + 1, dtype=DT)
    w[4] = w[-1] = 0.5
    one = GriddedLikelihood(vis, sig, neff, kind=kind)
    two = GriddedLikelihood(vis[dup], sig[dup], neff[dup], kind=kind, cell_weight=w)
    assert torch.equal(GriddedLikelihood(vis, sig, neff, kind=kind, cell_weight=torch.ones(n)).const, one.const)
    z = torch.randn(5, d, generator=g, dtype=DT)
    torch.testing.assert_close(two(z.to(A.dtype) @ A[dup].T), one(z.to(A.dtype) @ A.T), rtol=1e-13, atol=1e-11)
    F = [fisher_from_jacobian(residual_jacobian(lambda t, lk=lk, Ak=Ak: lk.whitened_residuals(Ak @ t.to(A.dtype)),
                                                z[0], method="reverse")[1]) for lk, Ak in ((one, A), (two, A[dup]))]
    torch.testing.assert_close(F[1], F[0], rtol=1e-12, atol=1e-12)
    # unweighted, the duplicate is counted twice: more information than the data hold
    plain = GriddedLikelihood(vis[dup], sig[dup], neff[dup], kind=kind)
    assert float(plain.residual_weights()[4]) == pytest.approx(float(two.residual_weights()[4]) * math.sqrt(2))


def test_cell_weight_validated():
    from nuker_mge_plugin.inference.likelihood import GriddedLikelihood

    vis, sig, neff = torch.ones(3, dtype=torch.complex128), torch.ones(3, dtype=DT), torch.full((3,), 4.0, dtype=DT)
    for bad in ([1.0, 0.0, 1.0], [1.0, 1.5, 1.0], [1.0, float("nan"), 1.0], [-0.5, 1.0, 1.0], [1.0, 1.0]):
        with pytest.raises(ValueError, match="cell_weight"):
            GriddedLikelihood(vis, sig, neff, cell_weight=torch.tensor(bad, dtype=DT))
    lk = GriddedLikelihood(vis, sig, neff, cell_weight=[1.0, 0.5, 0.25])
    assert torch.equal(lk.cell_weight, torch.tensor([1.0, 0.5, 0.25], dtype=DT))
