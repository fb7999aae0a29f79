"""Target densities with exact answers, for proving that a sampler draws from the right distribution.

Each target is a :class:`Target`: a batched log-density ``logp_and_grad(z)`` in the sampler's
(unconstrained) space, dispersed starting points, and the *exact* mean, variance and 5% / 95%
quantiles of every coordinate in the checked space (``constrain(z)``), computed analytically or
with scipy to ~1e-10 -- never by Monte Carlo. :func:`check_moments` compares a sampler's draws with
them in units of their Monte Carlo standard errors (MCSE, :mod:`.diagnostics`).

Targets (all densities are normalised, natural log; chains never interact):

* :func:`gaussian_ill_conditioned`: N(mu, Sigma) in d = 15, Sigma's eigenvalues log-spaced over a
  condition number of 1e4 and rotated by a fixed random orthogonal matrix;
* :func:`banana`: a Rosenbrock-like curved 2-D density (Haario, Saksman & Tamminen 1999,
  Computational Statistics 14, 375: the "twisted Gaussian"): x1 ~ N(0, s1^2),
  x2 | x1 ~ N(b (x1^2 - s1^2), s2^2);
* :func:`funnel`: Neal's funnel (Neal 2003, Annals of Statistics 31, 705) in the centred
  parametrisation, v ~ N(0, 3^2), x_i | v ~ N(0, e^v), i = 1..d-1;
* :func:`bounded`: parameters with uniform priors on [0, 1] and Gaussian likelihoods, two of whose
  posteriors pile against a bound, sampled in logit space with the exact log-Jacobian.

Typical use::

    t = funnel()
    z0 = t.initial(4, torch.Generator().manual_seed(0))
    res = run_sampler(t.logp_and_grad, z0)              # draws (C, N, d) in z
    report = check_moments(t.constrain(res.samples_unconstrained), t)
    assert report["pass"], report["worst"]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from scipy import integrate, optimize, special, stats

from . import diagnostics

__all__ = ["Target", "STATISTICS", "gaussian_ill_conditioned", "banana", "funnel", "bounded", "all_targets",
           "check_moments"]

#: The statistics :func:`check_moments` compares, in order.
STATISTICS = ("mean", "var", "q05", "q95")

_LOG_2PI = math.log(2.0 * math.pi)
_Z95 = float(stats.norm.ppf(0.95))


def _identity(z):
    return np.asarray(z, dtype=np.float64)


@dataclass(frozen=True)
class Target:
    """A density with exact marginal moments and quantiles.

    Attributes
    ----------
    name : str
        Short name (``gaussian_ill_conditioned``, ``banana``, ``funnel``, ``bounded``).
    dim : int
        Dimension d of the sampled (unconstrained) space.
    logp_and_grad : callable
        ``z (C, d) float64 tensor -> (logp (C,), grad (C, d))``, the normalised log density [nats]
        of the sampled space and its gradient, detached; row c depends on ``z[c]`` only.
    initial : callable
        ``initial(C, generator) -> (C, d)`` float64 tensor of dispersed starting points
        (``generator`` a ``torch.Generator``; same generator state, same points).
    mean, var, q05, q95 : ndarray (d,)
        Exact mean, variance and 5% / 95% quantiles of each coordinate of ``constrain(z)``.
    constrain : callable
        ``z (..., d) array -> theta (..., d)`` ndarray: the checked space (identity except for
        :func:`bounded`).
    sample : callable
        ``sample(n, rng) -> (n, d)`` ndarray of exact independent draws of ``theta`` (``rng`` a
        ``numpy.random.Generator``), to test the checks themselves.
    names : tuple of str
        Coordinate names.
    unchecked : dict
        ``statistic -> (d,) bool`` mask of values that :func:`check_moments` reports but does not
        count towards ``pass``, with the reason in ``notes`` (empty: everything is checked).
    notes : str
        What the target tests and any caveat.
    params : dict
        The target's parameters (for the Gaussian also ``eigenvalues`` (d,) and ``cov`` (d, d)).
    """

    name: str
    dim: int
    logp_and_grad: Callable
    initial: Callable
    mean: np.ndarray
    var: np.ndarray
    q05: np.ndarray
    q95: np.ndarray
    constrain: Callable = _identity
    sample: Optional[Callable] = None
    names: tuple = ()
    unchecked: dict = field(default_factory=dict)
    notes: str = ""
    params: dict = field(default_factory=dict)

    def exact(self, stat):
        """The exact (d,) array of statistic ``stat`` (one of :data:`STATISTICS`)."""
        return getattr(self, stat)


# ---------------------------------------------------------------------------------------------- Gaussian
def gaussian_ill_conditioned(d=15, condition=1e4, seed=2024):
    """A correlated Gaussian whose covariance eigenvalues span ``condition``.

    ``Sigma = Q diag(lambda) Q^T`` with ``lambda_k`` log-spaced from 1 to ``condition`` and ``Q`` a
    random orthogonal matrix (QR of a seeded standard-normal matrix, signs fixed); the mean is
    ``mu_k = linspace(-1, 1, d)``. The marginals are exact normals: mean ``mu``, variance
    ``Sigma_kk``, quantiles ``mu_k -+ 1.6449 sqrt(Sigma_kk)``.

    Parameters
    ----------
    d : int
        Dimension.
    condition : float
        Ratio of the largest to the smallest covariance eigenvalue (standard deviations span its
        square root: 100 for 1e4).
    seed : int
        Seed of the rotation (numpy ``default_rng``).

    Returns
    -------
    Target
        Starts: ``mu + 2 L xi`` (``Sigma = L L^T``, ``xi ~ N(0, I)``): twice over-dispersed exact draws.
    """
    rng = np.random.default_rng(seed)
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    Q = Q * np.sign(np.diag(R))
    lam = np.logspace(0.0, math.log10(condition), d)
    Sig = (Q * lam) @ Q.T
    Sig = 0.5 * (Sig + Sig.T)
    P = (Q / lam) @ Q.T
    P = 0.5 * (P + P.T)
    mu = np.linspace(-1.0, 1.0, d)
    L = np.linalg.cholesky(Sig)
    log_norm = -0.5 * (d * _LOG_2PI + float(np.log(lam).sum()))
    mu_t, P_t, L_t = (torch.as_tensor(a, dtype=torch.float64) for a in (mu, P, L))

    def logp_and_grad(z):
        r = z.detach().to(torch.float64) - mu_t
        Pr = r @ P_t
        return -0.5 * (Pr * r).sum(-1) + log_norm, -Pr

    def initial(C, generator):
        xi = torch.randn(C, d, generator=generator, dtype=torch.float64)
        return mu_t + 2.0 * xi @ L_t.T

    def sample(n, rng):
        return mu + rng.standard_normal((n, d)) @ L.T

    sd = np.sqrt(np.diag(Sig))
    return Target(name="gaussian_ill_conditioned", dim=d, logp_and_grad=logp_and_grad, initial=initial,
                  mean=mu.copy(), var=np.diag(Sig).copy(), q05=mu - _Z95 * sd, q95=mu + _Z95 * sd, sample=sample,
                  names=tuple(f"x{k}" for k in range(d)),
                  notes="rotated Gaussian: tests the metric (mass-matrix) adaptation on strong correlations",
                  params=dict(d=d, condition=condition, seed=seed, eigenvalues=lam, cov=Sig.copy()))


# ---------------------------------------------------------------------------------------------- banana
def _banana_cdf_x2(t, b, s1, s2):
    """P(x2 <= t) = E_x1[Phi((t - b (x1^2 - s1^2)) / s2)], x1 = s1 u, u ~ N(0, 1) (quadrature, symmetric in u)."""
    f = lambda u: stats.norm.pdf(u) * special.ndtr((t - b * s1 * s1 * (u * u - 1.0)) / s2)  # noqa: E731
    return 2.0 * integrate.quad(f, 0.0, 40.0, epsabs=1e-14, epsrel=1e-13, limit=400)[0]


def banana(b=1.0, s1=1.0, s2=0.5):
    """Haario's twisted Gaussian: x1 ~ N(0, s1^2), x2 | x1 ~ N(b (x1^2 - s1^2), s2^2).

    The conditional mean of x2 is a parabola in x1: at x1 = +-2 s1 it sits ``4 b s1^2 / s2``
    conditional standard deviations (8 for the defaults) above its value at x1 = 0, so no single
    Gaussian (no mass matrix) fits the density. Exact values: ``E x1 = E x2 = 0``,
    ``var x1 = s1^2``, ``var x2 = 2 b^2 s1^4 + s2^2`` (``x1^2 / s1^2`` is chi-square with one degree of
    freedom, variance 2); x1's quantiles are normal; x2's solve ``P(x2 <= t) = p`` (brentq to 1e-12
    on a quadrature of the conditional normal CDF over x1).

    Parameters
    ----------
    b : float
        Curvature [1 / x1] (Haario et al. use ``b s1^2 / s2`` = 3 "moderately" and 10 "strongly"
        twisted; the default is 2 here).
    s1, s2 : float
        Standard deviations of x1 and of x2 given x1.

    Returns
    -------
    Target
        Starts: uniform on [-2, 2]^2 (Stan's default initialisation). Starts far in the tails
        (e.g. x1 = 4.5, x2 = 2.5, where |grad log p| ~ 600) can trap a Langevin sampler: the
        density's tails are quartic in x1, and MALA is not geometrically ergodic for tails lighter
        than Gaussian (Roberts & Tweedie 1996, Bernoulli 2, 341).
    """
    s1, s2, b = float(s1), float(s2), float(b)
    var2 = 2.0 * b * b * s1 ** 4 + s2 * s2
    sd2 = math.sqrt(var2)
    q = [optimize.brentq(lambda t: _banana_cdf_x2(t, b, s1, s2) - p, -b * s1 * s1 - 20 * s2, 40 * sd2 + 20 * s2,
                         xtol=1e-13, rtol=1e-14) for p in (0.05, 0.95)]
    log_norm = -_LOG_2PI - math.log(s1) - math.log(s2)

    def logp_and_grad(z):
        z = z.detach().to(torch.float64)
        x1, x2 = z[:, 0], z[:, 1]
        r = (x2 - b * (x1 * x1 - s1 * s1)) / (s2 * s2)       # d(-log p)/dx2
        lp = -0.5 * (x1 / s1) ** 2 - 0.5 * r * r * s2 * s2 + log_norm
        g = torch.stack([-x1 / (s1 * s1) + 2.0 * b * x1 * r, -r], dim=-1)
        return lp, g

    def initial(C, generator):
        return 4.0 * torch.rand(C, 2, generator=generator, dtype=torch.float64) - 2.0

    def sample(n, rng):
        x1 = s1 * rng.standard_normal(n)
        return np.stack([x1, b * (x1 * x1 - s1 * s1) + s2 * rng.standard_normal(n)], axis=-1)

    return Target(name="banana", dim=2, logp_and_grad=logp_and_grad, initial=initial,
                  mean=np.zeros(2), var=np.array([s1 * s1, var2]), q05=np.array([-_Z95 * s1, q[0]]),
                  q95=np.array([_Z95 * s1, q[1]]), sample=sample, names=("x1", "x2"),
                  notes="curved density: a position-dependent correlation that no fixed metric removes",
                  params=dict(b=b, s1=s1, s2=s2))


# ---------------------------------------------------------------------------------------------- funnel
def _funnel_cdf_x(t, sd_v):
    """P(x <= t) = E_v[Phi(t e^{-v/2})], v ~ N(0, sd_v^2) (quadrature in u = v / sd_v)."""
    f = lambda u: stats.norm.pdf(u) * special.ndtr(t * math.exp(-0.5 * sd_v * u))  # noqa: E731
    return integrate.quad(f, -40.0, 40.0, epsabs=1e-14, epsrel=1e-13, limit=800, points=(0.0,))[0]


def funnel(d=10, sd_v=3.0):
    """Neal's funnel, centred: v ~ N(0, sd_v^2), x_i | v ~ N(0, e^v), i = 1..d-1; z = (v, x_1, ..., x_{d-1}).

    Exact values: v is N(0, sd_v^2); each x_i is symmetric (mean 0) with ``var x_i = E e^v =
    exp(sd_v^2 / 2)`` (exp(4.5) = 90.0 for sd_v = 3) and quantiles ``-+ t`` with
    ``E_v[Phi(t e^{-v/2})] = 0.95`` (brentq on a quadrature over v).

    The neck (v << 0: x's scale e^{v/2} is 0.08 at v = -5, the 5% quantile of v being -4.93)
    needs step sizes ~10x smaller than the mouth: a fixed-step sampler either rejects there or
    never enters, under-sampling negative v (a biased mean and 5% quantile of v) with divergences
    -- which is what this target is there to expose.

    Caveat (``unchecked``): the variance of x_i is reported but not counted towards ``pass``.
    ``E x_i^4 = 3 exp(2 sd_v^2) = 2e8``, and ``E x_i^2`` is carried by v ~ sd_v^2 = 9 (a 3-sigma
    event): the sample variance's distribution is so skewed that its MCSE-normalised error is not
    close to N(0, 1) for any feasible run: with exact independent draws (4 x 2000, 200 replicates)
    |z| > 4 in 18% of them, mean z -1.8, sd 2.5, min -18. Its mean and quantiles, and all of v's
    statistics, are well behaved on the same draws (mean z within 0.2 of 0, sd 0.95-1.1).

    Parameters
    ----------
    d : int
        Dimension (1 + d - 1 x's).
    sd_v : float
        Standard deviation of v.

    Returns
    -------
    Target
        Starts: uniform on [-2, 2]^d (Stan's default initialisation).
    """
    n_x = d - 1
    q95x = optimize.brentq(lambda t: _funnel_cdf_x(t, sd_v) - 0.95, 1e-6, 1e3, xtol=1e-13, rtol=1e-14)
    var_x = math.exp(0.5 * sd_v * sd_v)
    log_norm_v = -0.5 * _LOG_2PI - math.log(sd_v)

    def logp_and_grad(z):
        z = z.detach().to(torch.float64)
        v, x = z[:, 0], z[:, 1:]
        e = torch.exp(-v)
        sx2 = (x * x).sum(-1)
        lp = -0.5 * (v / sd_v) ** 2 + log_norm_v - 0.5 * e * sx2 - 0.5 * n_x * (v + _LOG_2PI)
        gv = -v / (sd_v * sd_v) + 0.5 * e * sx2 - 0.5 * n_x
        return lp, torch.cat([gv[:, None], -x * e[:, None]], dim=-1)

    def initial(C, generator):
        return 4.0 * torch.rand(C, d, generator=generator, dtype=torch.float64) - 2.0

    def sample(n, rng):
        v = sd_v * rng.standard_normal(n)
        return np.concatenate([v[:, None], np.exp(0.5 * v)[:, None] * rng.standard_normal((n, n_x))], axis=-1)

    unchecked = {s: np.zeros(d, dtype=bool) for s in STATISTICS}
    unchecked["var"][1:] = True
    return Target(name="funnel", dim=d, logp_and_grad=logp_and_grad, initial=initial,
                  mean=np.zeros(d), var=np.array([sd_v * sd_v] + [var_x] * n_x),
                  q05=np.array([-_Z95 * sd_v] + [-q95x] * n_x), q95=np.array([_Z95 * sd_v] + [q95x] * n_x),
                  sample=sample, names=("v",) + tuple(f"x{i}" for i in range(1, d)), unchecked=unchecked,
                  notes="centred funnel: curvature varying by e^v; var(x_i) reported, not checked (see docstring)",
                  params=dict(d=d, sd_v=sd_v))


# ---------------------------------------------------------------------------------------------- bounded
def bounded(mu=(0.05, 0.5, 0.98), sd=(0.1, 0.15, 0.05)):
    """Uniform priors on [0, 1] and Gaussian likelihoods: posteriors piled against the bounds.

    ``theta_k ~ U(0, 1)`` a priori and ``N(mu_k; theta_k, sd_k)`` the likelihood, so the posterior
    of ``theta_k`` is a normal (``mu_k``, ``sd_k``) truncated to [0, 1] -- for the defaults piled
    against 0 (k = 0), nearly free (k = 1) and piled against 1 (k = 2). Sampled in ``z = logit(theta)``
    with the exact log-Jacobian: ``log p(z) = log N(theta; mu, sd) - log Z + log s(1 - s)``,
    ``s = theta = sigmoid(z)``, ``Z = Phi((1 - mu) / sd) - Phi(-mu / sd)``. The exact mean, variance
    and quantiles of theta are those of ``scipy.stats.truncnorm``; checks run on ``constrain(z) = theta``.

    Parameters
    ----------
    mu, sd : sequence of float
        Peak and width of each likelihood (same length; the dimension).

    Returns
    -------
    Target
        Starts: z uniform on [-2, 2]^d (theta in [0.12, 0.88]).
    """
    mu_a, sd_a = np.asarray(mu, dtype=np.float64), np.asarray(sd, dtype=np.float64)
    d = mu_a.size
    dist = stats.truncnorm((0.0 - mu_a) / sd_a, (1.0 - mu_a) / sd_a, loc=mu_a, scale=sd_a)
    log_z = np.log(special.ndtr((1.0 - mu_a) / sd_a) - special.ndtr(-mu_a / sd_a))
    log_norm = float((-0.5 * _LOG_2PI - np.log(sd_a) - log_z).sum())
    mu_t, sd_t = torch.as_tensor(mu_a), torch.as_tensor(sd_a)

    def logp_and_grad(z):
        z = z.detach().to(torch.float64)
        s = torch.sigmoid(z)
        r = (s - mu_t) / sd_t
        log_jac = torch.nn.functional.logsigmoid(z) + torch.nn.functional.logsigmoid(-z)  # log s (1 - s)
        lp = (-0.5 * r * r + log_jac).sum(-1) + log_norm
        g = -r / sd_t * s * (1.0 - s) + (1.0 - 2.0 * s)
        return lp, g

    def initial(C, generator):
        return 4.0 * torch.rand(C, d, generator=generator, dtype=torch.float64) - 2.0

    def constrain(z):
        return special.expit(np.asarray(z, dtype=np.float64))

    def sample(n, rng):
        return dist.rvs(size=(n, d), random_state=rng)

    return Target(name="bounded", dim=d, logp_and_grad=logp_and_grad, initial=initial,
                  mean=np.asarray(dist.mean(), dtype=np.float64), var=np.asarray(dist.var(), dtype=np.float64),
                  q05=np.asarray(dist.ppf(0.05), dtype=np.float64), q95=np.asarray(dist.ppf(0.95), dtype=np.float64),
                  constrain=constrain, sample=sample, names=tuple(f"theta{k}" for k in range(d)),
                  notes="posteriors piled against a prior bound, sampled through logit with its Jacobian",
                  params=dict(mu=mu_a.tolist(), sd=sd_a.tolist()))


def all_targets():
    """The four targets with their default parameters, ``name -> Target``."""
    return {t.name: t for t in (gaussian_ill_conditioned(), banana(), funnel(), bounded())}


# ---------------------------------------------------------------------------------------------- the check
def check_moments(samples, target, n_mcse=4.0):
    """Compare draws with the target's exact mean, variance and 5% / 95% quantiles, in MCSE units.

    For each coordinate k and statistic s, ``z = (estimate - exact) / MCSE`` with, all chains pooled:

    * mean: the sample mean, MCSE :func:`.diagnostics.mcse_mean`;
    * var: the mean of ``(x - xbar)^2`` (xbar the pooled mean), MCSE = :func:`.diagnostics.mcse_mean`
      of ``(x - xbar)^2`` (the variance is the mean of that quantity);
    * q05, q95: ``numpy.quantile`` of the pooled draws, MCSE :func:`.diagnostics.mcse_quantile`.

    A correct sampler gives z roughly N(0, 1) (the MCSEs come from the chains' own autocorrelation,
    so chains stuck in one region, whose ESS is over-estimated, are caught by R-hat rather than by z).

    Parameters
    ----------
    samples : array (C, N, d)
        Draws in the target's checked space (``target.constrain(z)``), C chains of N draws.
    target : Target
        The target (its ``mean``, ``var``, ``q05``, ``q95`` and ``unchecked``).
    n_mcse : float
        Pass threshold: every checked ``|z| < n_mcse``.

    Returns
    -------
    dict
        ``z``, ``estimate``, ``exact``, ``mcse``: ``statistic -> (d,) ndarray``; ``max_abs_z`` (float,
        over the checked values; inf if an MCSE is zero or NaN); ``z_by_name`` (``"stat[name]" -> z``,
        every value); ``worst`` (e.g. ``"q05[v]"``);
        ``pass`` (bool, ``max_abs_z < n_mcse``); ``r_hat``, ``ess_bulk``, ``ess_tail`` ((d,) arrays,
        :mod:`.diagnostics`), ``max_r_hat``, ``min_ess_bulk``, ``min_ess_tail``; ``unchecked``
        (list of the names reported but not counted, e.g. ``"var[x1]"``); ``n_mcse``.
    """
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim != 3 or x.shape[2] != target.dim:
        raise ValueError(f"samples: expected (chains, draws, {target.dim}), got {x.shape}")
    d = target.dim
    names = target.names if len(target.names) == d else tuple(str(k) for k in range(d))
    est = {s: np.empty(d) for s in STATISTICS}
    se = {s: np.empty(d) for s in STATISTICS}
    for k in range(d):
        xk = x[:, :, k]
        m = float(xk.mean())
        dev2 = (xk - m) ** 2
        est["mean"][k], se["mean"][k] = m, diagnostics.mcse_mean(xk)
        est["var"][k], se["var"][k] = float(dev2.mean()), diagnostics.mcse_mean(dev2)
        for s, p in (("q05", 0.05), ("q95", 0.95)):
            est[s][k], se[s][k] = float(np.quantile(xk, p)), diagnostics.mcse_quantile(xk, p)
    exact = {s: np.asarray(target.exact(s), dtype=np.float64) for s in STATISTICS}
    z = {}
    for s in STATISTICS:
        diff = est[s] - exact[s]
        with np.errstate(divide="ignore", invalid="ignore"):
            zs = diff / se[s]
        zs = np.where(np.isfinite(se[s]) & (se[s] > 0), zs, np.where(diff == 0, 0.0, np.inf))
        z[s] = np.where(np.isnan(zs), np.inf, zs)
    worst, max_abs = None, -1.0
    unchecked = []
    for s in STATISTICS:
        mask = np.asarray(target.unchecked.get(s, np.zeros(d, dtype=bool)), dtype=bool)
        for k in range(d):
            if mask[k]:
                unchecked.append(f"{s}[{names[k]}]")
            elif abs(z[s][k]) > max_abs:
                worst, max_abs = f"{s}[{names[k]}]", float(abs(z[s][k]))
    r_hat = np.array([diagnostics.rhat(x[:, :, k]) for k in range(d)])
    e_bulk = np.array([diagnostics.ess_bulk(x[:, :, k]) for k in range(d)])
    e_tail = np.array([diagnostics.ess_tail(x[:, :, k]) for k in range(d)])

    def nan_or(f, a):
        return float(f(a)) if np.isfinite(a).all() else math.nan
    z_by_name = {f"{s}[{names[k]}]": float(z[s][k]) for s in STATISTICS for k in range(d)}
    return dict(z=z, z_by_name=z_by_name, estimate=est, exact=exact, mcse=se, max_abs_z=max_abs, worst=worst,
                **{"pass": bool(max_abs < n_mcse)}, r_hat=r_hat, ess_bulk=e_bulk, ess_tail=e_tail,
                max_r_hat=nan_or(np.max, r_hat), min_ess_bulk=nan_or(np.min, e_bulk),
                min_ess_tail=nan_or(np.min, e_tail), unchecked=unchecked, n_mcse=float(n_mcse))
