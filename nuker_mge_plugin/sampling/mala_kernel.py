"""Metropolis-adjusted Langevin (MALA) with a mass matrix, batched over chains: the kernel.

An ``init``/``step`` kernel on a state object, like blackjax's: :meth:`MALA.init_state` evaluates
the target at the starting points, :meth:`MALA.step` moves every chain once and returns a new
:class:`MALAState`; :meth:`MALA.sample` is the emcee-like generator over steps. The tuning
schedule of the seed paper's appendix C that drives it is :func:`~.mala.run_mala`.

Kernel. With ``M`` the mass matrix in the covariance sense (inverse mass; e.g. the ridge Fisher
covariance of :mod:`nuker_mge_plugin.inference.fisher`; factored by :func:`.metric.mass_factors`),
``M = L L^T``, step size ``eps`` and ``g = grad log p(z)``:

    z' = z + (eps^2 / 2) M g(z) + eps L xi,         xi ~ N(0, I),
    log q(z' | z) = -|L^{-1} (z' - z - (eps^2/2) M g(z))|^2 / (2 eps^2) + const,
    accept with probability min(1, p(z') q(z | z') / (p(z) q(z' | z)))        (Besag 1994).

All ``C`` chains move at once: one batched call ``logp_and_grad(z) -> (logp (C,), grad (C, d))``
per step. A proposal with a non-finite ``logp``, ``grad`` or position is rejected and counted (as
a "divergence"); NaN/Inf never enter the chain state.

Reproducibility: one ``torch.Generator`` seeded once on the device of the chains; each step draws
``xi`` (C, d) then ``u`` (C,) from it, so one seed gives identical chains on one device type, and a
restored generator state (:meth:`MALA.rng_state`, :meth:`MALA.set_rng_state`) replays them exactly.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from __future__ import annotations

import math
import numbers
import secrets
from dataclasses import dataclass
from typing import Optional

import torch

from .metric import mass_factors

__all__ = ["TARGET_ACCEPT", "optimal_step_size", "value_and_grad", "MALAState", "MALA"]

#: Optimal MALA acceptance rate for high-dimensional targets (Roberts & Rosenthal 1998).
TARGET_ACCEPT = 0.574


def optimal_step_size(dim):
    """Roberts & Rosenthal (1998) step size ``1.65 d^(-1/6)`` for a standardised Gaussian target.

    With the mass matrix equal to the posterior covariance this is the step that gives an
    acceptance near 0.574 for large ``d``; a starting guess otherwise.

    Parameters
    ----------
    dim : int
        Number of sampled dimensions ``d`` >= 1.

    Returns
    -------
    float
        Step size (dimensionless: it multiplies ``L xi``, in units of the mass matrix's scale).
    """
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 1:
        raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
    return 1.65 * dim ** (-1.0 / 6.0)


def value_and_grad(logp_fn):
    """Turn a batched log-density into the ``logp_and_grad`` callable that :class:`MALA` needs.

    Parameters
    ----------
    logp_fn : callable
        ``logp_fn(z) -> logp``, ``z`` (C, d) -> (C,) log-posterior in the unconstrained space
        (natural log). Chains must not interact (no reductions across the batch), so that the
        gradient of ``logp.sum()`` is each chain's own gradient.

    Returns
    -------
    callable
        ``z (C, d) -> (logp (C,), grad (C, d))``, both detached.
    """
    def logp_and_grad(z):
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            lp = logp_fn(zz)
            (g,) = torch.autograd.grad(lp.sum(), zz, allow_unused=True)
        if g is None:
            g = torch.zeros_like(zz)
        return lp.detach(), g.detach()

    return logp_and_grad


@dataclass
class MALAState:
    """State of ``C`` chains after a step.

    Attributes
    ----------
    z : torch.Tensor, (C, d)
        Positions (unconstrained).
    logp : torch.Tensor, (C,)
        Log target density at ``z`` (finite).
    grad : torch.Tensor, (C, d)
        Its gradient (finite).
    accepted : torch.Tensor or None, (C,) bool
        Whether the last proposal was accepted (None for an initial state).
    accept_prob : torch.Tensor or None, (C,)
        Metropolis-Hastings acceptance probability of the last proposal (0 if non-finite).
    nonfinite : torch.Tensor or None, (C,) bool
        Whether the last proposal had a non-finite position, logp or gradient (rejected).
    step_size : float or None
        Step size used for the last step.
    """

    z: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor
    accepted: Optional[torch.Tensor] = None
    accept_prob: Optional[torch.Tensor] = None
    nonfinite: Optional[torch.Tensor] = None
    step_size: Optional[float] = None


def _check_step_size(eps, what="step_size"):
    """``float(eps)`` if it is a finite real number > 0, else ``ValueError`` naming ``what``."""
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not (eps > 0 and math.isfinite(eps)):
        raise ValueError(f"{what} must be a finite number > 0, got {eps!r}")
    return float(eps)


class MALA:
    """Batched MALA kernel with a fixed mass matrix; an emcee-like :meth:`sample` generator.

    Parameters
    ----------
    logp_and_grad : callable
        ``z (C, d) -> (logp (C,), grad (C, d))``: log target density (natural log, unconstrained
        space) and its gradient for all chains in one call. Non-finite values are allowed and
        mean "reject".
    mass_matrix : torch.Tensor (d, d) or (d,), or FisherResult, optional
        Proposal covariance ``M`` (inverse mass) [z^2]; default identity.
    step_size : float, optional
        Default step size ``eps``; default :func:`optimal_step_size` (d).
    generator : torch.Generator or int, optional
        Random stream; an int seeds a fresh generator on the chains' device at the first
        :meth:`init_state`. Default: a random seed (recorded in :attr:`seed`).

    Attributes
    ----------
    n_grad_calls : int
        Batched ``logp_and_grad`` calls so far (each evaluates all C chains).
    seed : int or None
        The seed used if the generator was created here.
    """

    def __init__(self, logp_and_grad, *, mass_matrix=None, step_size=None, generator=None):
        if not callable(logp_and_grad):
            raise TypeError("logp_and_grad must be callable: z (C, d) -> (logp (C,), grad (C, d))")
        self.logp_and_grad = logp_and_grad
        self._mass_in = mass_matrix
        self.M = self.L = self.Linv = None
        self.step_size = None if step_size is None else _check_step_size(step_size)
        self.seed = None
        if generator is None:
            generator = secrets.randbits(63)
        if isinstance(generator, numbers.Integral) and not isinstance(generator, bool):
            self.seed = int(generator)
            self.generator = None
        elif isinstance(generator, torch.Generator):
            self.generator = generator
        else:
            raise TypeError(f"generator: expected a torch.Generator or an int seed, got {type(generator).__name__}")
        self.n_grad_calls = 0

    # ------------------------------------------------------------------ set-up
    def set_mass_matrix(self, mass_matrix, d=None, dtype=None, device=None):
        """Replace the mass matrix ``M`` (d, d) covariance [z^2] (or (d,) diagonal, or a FisherResult).

        Parameters
        ----------
        mass_matrix : tensor-like (d, d) or (d,), or object with ``.covariance``
            The new proposal covariance (inverse mass) [z^2], validated by :func:`.metric.mass_factors`.
        d : int, optional
        dtype, device : optional
            Default to those of the current matrix (all three are needed before the first
            :meth:`init_state`).

        Raises
        ------
        ValueError
            Wrong shape, non-finite, not symmetric or not positive-definite.
        """
        d = self.M.shape[0] if d is None else d
        dtype = self.M.dtype if dtype is None else dtype
        device = self.M.device if device is None else device
        self.M, self.L, self.Linv = mass_factors(mass_matrix, d, dtype, device)

    def rng_state(self):
        """The generator's state (a uint8 tensor, what ``torch.Generator.get_state`` returns)."""
        return self.generator.get_state()

    def set_rng_state(self, rng_state, device):
        """Continue from a saved :meth:`rng_state` on a fresh generator on ``device``.

        Parameters
        ----------
        rng_state : torch.Tensor
            From :meth:`rng_state` (of a generator on the same device type).
        device : torch.device or str
            Device of the chains.
        """
        self.generator = torch.Generator(device=device)
        self.generator.set_state(rng_state)

    def _evaluate(self, z):
        lp, g = self.logp_and_grad(z)
        self.n_grad_calls += 1
        C, d = z.shape
        if not isinstance(lp, torch.Tensor) or not isinstance(g, torch.Tensor):
            raise TypeError("logp_and_grad must return two torch.Tensors (logp (C,), grad (C, d))")
        if lp.shape != (C,) or g.shape != (C, d):
            raise ValueError(f"logp_and_grad returned shapes {tuple(lp.shape)}, {tuple(g.shape)}; "
                             f"expected ({C},) and ({C}, {d})")
        return lp.detach().to(z.dtype), g.detach().to(z.dtype)

    def init_state(self, z):
        """Evaluate the target at starting points.

        Parameters
        ----------
        z : torch.Tensor, shape (C, d)
            Starting positions (unconstrained), one row per chain.

        Returns
        -------
        MALAState

        Raises
        ------
        ValueError
            If ``logp`` or ``grad`` is non-finite at any start (naming the chains).
        """
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or not z.is_floating_point():
            raise ValueError(f"z: expected a floating tensor of shape (C, d), got {getattr(z, 'shape', type(z))}")
        if not bool(torch.isfinite(z).all()):
            raise ValueError("z: starting positions have non-finite entries")
        z = z.detach()
        if self.M is None:
            self.M, self.L, self.Linv = mass_factors(self._mass_in, z.shape[1], z.dtype, z.device)
        if self.M.shape[0] != z.shape[1]:
            raise ValueError(f"z has d = {z.shape[1]} columns but the mass matrix is {tuple(self.M.shape)}")
        if self.generator is None:
            self.generator = torch.Generator(device=z.device)
            self.generator.manual_seed(self.seed)
        elif self.generator.device.type != z.device.type:
            raise ValueError(f"generator is on {self.generator.device}, the chains on {z.device}")
        if self.step_size is None:
            self.step_size = optimal_step_size(z.shape[1])
        lp, g = self._evaluate(z)
        bad = ~(torch.isfinite(lp) & torch.isfinite(g).all(-1))
        if bool(bad.any()):
            idx = bad.nonzero().reshape(-1).tolist()
            raise ValueError(f"z: log density or gradient is non-finite at the start of chain(s) {idx[:10]}"
                             + (" ..." if len(idx) > 10 else ""))
        return MALAState(z=z.clone(), logp=lp, grad=g)

    # ------------------------------------------------------------------ kernel
    def step(self, state, step_size=None):
        """One MALA step of all chains.

        Parameters
        ----------
        state : MALAState
            Current state (finite ``logp`` and ``grad``).
        step_size : float, optional
            Step size for this step (default :attr:`step_size`).

        Returns
        -------
        MALAState
            New state with ``accepted``, ``accept_prob``, ``nonfinite`` (C,) of this step.
        """
        eps = self.step_size if step_size is None else _check_step_size(step_size)
        z, g, lp = state.z, state.grad, state.logp
        C, d = z.shape
        gen = self.generator
        # Fixed draw order (xi, then u) so that a seed and a restored RNG state replay exactly.
        xi = torch.randn((C, d), generator=gen, dtype=z.dtype, device=z.device)
        u = torch.rand((C,), generator=gen, dtype=z.dtype, device=z.device)
        half = 0.5 * eps * eps
        zp = z + half * (g @ self.M) + eps * (xi @ self.L.T)          # M symmetric: M g = g M
        zfin = torch.isfinite(zp).all(-1, keepdim=True)
        # A non-finite proposal is never handed to the model: evaluate the current point instead.
        lp_p, g_p = self._evaluate(torch.where(zfin, zp, z))
        ok = zfin.squeeze(-1) & torch.isfinite(lp_p) & torch.isfinite(g_p).all(-1)
        okc = ok[:, None]
        zp = torch.where(okc, zp, z)
        g_p = torch.where(okc, g_p, g)
        lp_p = torch.where(ok, lp_p, lp)
        # log q(z | z') - log q(z' | z); the forward term is -|xi|^2 / 2 exactly.
        w = ((z - zp - half * (g_p @ self.M)) @ self.Linv.T) / eps
        log_alpha = lp_p - lp - 0.5 * (w * w).sum(-1) + 0.5 * (xi * xi).sum(-1)
        neg_inf = torch.full_like(log_alpha, -math.inf)
        log_alpha = torch.where(ok & ~torch.isnan(log_alpha), log_alpha, neg_inf)
        accepted = torch.log(u) < log_alpha
        acc_c = accepted[:, None]
        return MALAState(z=torch.where(acc_c, zp, z), logp=torch.where(accepted, lp_p, lp),
                         grad=torch.where(acc_c, g_p, g), accepted=accepted,
                         accept_prob=torch.exp(log_alpha.clamp(max=0.0)), nonfinite=~ok, step_size=eps)

    def sample(self, initial, n_steps, *, step_size=None):
        """Generator of per-step states (like ``emcee.EnsembleSampler.sample``).

        Parameters
        ----------
        initial : MALAState or torch.Tensor (C, d)
            Starting state, or starting positions (evaluated with :meth:`init_state`).
        n_steps : int
            Number of steps.
        step_size : float, optional
            Step size (default :attr:`step_size`).

        Yields
        ------
        MALAState
            The state after each step.
        """
        if isinstance(n_steps, bool) or not isinstance(n_steps, numbers.Integral) or n_steps < 0:
            raise ValueError(f"n_steps must be an integer >= 0, got {n_steps!r}")
        state = initial if isinstance(initial, MALAState) else self.init_state(initial)
        for _ in range(int(n_steps)):
            state = self.step(state, step_size)
            yield state

