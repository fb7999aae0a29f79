"""Metropolis-adjusted Langevin (MALA) with a mass matrix, batched over chains, and the tuning
schedule of the seed paper's appendix C.

Kernel. With ``M`` the mass matrix in the covariance sense (inverse mass; e.g. the ridge Fisher
covariance of :mod:`.fisher`), ``M = L L^T``, step size ``eps`` and ``g = grad log p(z)``:

    z' = z + (eps^2 / 2) M g(z) + eps L xi,         xi ~ N(0, I),
    log q(z' | z) = -|L^{-1} (z' - z - (eps^2/2) M g(z))|^2 / (2 eps^2) + const,
    accept with probability min(1, p(z') q(z | z') / (p(z) q(z' | z)))        (Besag 1994).

All ``C`` chains move at once: one batched call ``logp_and_grad(z) -> (logp (C,), grad (C, d))``
per step. A proposal with a non-finite ``logp``, ``grad`` or position is rejected and counted (per
stage, as a "divergence"); NaN/Inf never enter the chain state.

Schedule (:func:`run_mala`, appendix C):

a. burn-in stages; after each, the mass matrix is recomputed at the best point sampled so far by a
   caller-supplied ``mass_matrix_fn(z_best)`` (the empirical Fisher covariance, appendix C.1, or
   anything else; none keeps the identity). Optionally (``adapt_mass_matrix``) the covariance of
   the burn-in's draws so far, all chains pooled, is blended in: the Fisher matrix is the
   posterior's curvature at one point, and where the posterior is far from Gaussian (parameters the
   data barely constrain, a posterior piled against a prior bound) it is wrong by 10x in variance
   both ways, which no step size mends. Optionally (default) the step size is adapted during
   burn-in by a Robbins-Monro rule towards the target acceptance;
b. a step-size stage: a short run for each candidate step size, continuing the chains; the one
   whose mean acceptance probability is closest to 0.574 is kept -- the optimal acceptance rate of
   MALA for high-dimensional targets (Roberts & Rosenthal 1998, J. R. Stat. Soc. B 60, 255);
c. ``n_draws`` sampling steps (times ``thin``) with that step size and mass matrix.

Reproducibility: one ``torch.Generator`` seeded once per run on the device of the chains; each
step draws ``xi`` (C, d) then ``u`` (C,) from it, so one seed gives identical chains on one device
type. Checkpoints (every ``checkpoint_every`` steps) append one chunk file of the new steps and
atomically replace a small state file holding everything needed to continue (RNG state, chain
state, step size, mass matrix, stage and step counters, accumulators); ``resume=True`` continues
a killed run and gives bitwise the same chains as an uninterrupted run with the same seed.

Checkpoint directory layout::

    state.pt            torch.save dict (loads with weights_only=True); replaced atomically
                        (temp file + os.replace) at every checkpoint, after the chunk it counts
    chunk_000000.npz    steps [0, k), chunk_000001.npz steps [k, 2k), ... (k = checkpoint_every;
                        the last one may be shorter); arrays, leading axis = step:
                        z (n, C, d), logp (n, C), accepted (n, C) bool, accept_prob (n, C),
                        nonfinite (n, C) bool, step_size (n,), stage (n,) int (index into
                        state["stage_names"])

A chunk file whose index is >= ``state["n_chunks"]`` is left over from a run killed between the
two writes and is overwritten on resume.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from __future__ import annotations

import math
import numbers
import os
import secrets
import time
from dataclasses import dataclass, field, fields
from collections.abc import Mapping
from typing import Optional, Sequence

import numpy as np
import torch

__all__ = ["TARGET_ACCEPT", "optimal_step_size", "value_and_grad", "MALAState", "MALA", "MALASchedule",
           "StepInfo", "MALAResult", "run_mala", "load_checkpoint_result"]

#: Optimal MALA acceptance rate for high-dimensional targets (Roberts & Rosenthal 1998).
TARGET_ACCEPT = 0.574

_STATE_FILE = "state.pt"
_CHUNK_FMT = "chunk_{:06d}.npz"
_FORMAT_VERSION = 2  # 2: burn-in moments for adapt_mass_matrix


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


def _mass_factors(mass_matrix, d, dtype, device):
    """Validated (M, L, L^{-1}) from a (d, d) covariance, a (d,) diagonal or a FisherResult."""
    if mass_matrix is None:
        M = torch.eye(d, dtype=dtype, device=device)
    else:
        M = getattr(mass_matrix, "covariance", mass_matrix)
        M = torch.as_tensor(M, dtype=dtype, device=device)
        if M.shape == (d,):
            M = torch.diag(M)
        if M.shape != (d, d):
            raise ValueError(f"mass_matrix: expected shape ({d}, {d}) or ({d},), got {tuple(M.shape)}")
        if not bool(torch.isfinite(M).all()):
            raise ValueError("mass_matrix has non-finite entries")
        scale = float(M.abs().max())
        if float((M - M.T).abs().max()) > 1e-8 * scale:
            raise ValueError("mass_matrix is not symmetric")
        M = 0.5 * (M + M.T)
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) != 0:
        raise ValueError("mass_matrix is not positive-definite (Cholesky failed)")
    Linv = torch.linalg.solve_triangular(L, torch.eye(d, dtype=dtype, device=device), upper=False)
    return M, L, Linv


def _check_step_size(eps, what="step_size"):
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

        ``d``, ``dtype``, ``device`` default to those of the current one.
        """
        d = self.M.shape[0] if d is None else d
        dtype = self.M.dtype if dtype is None else dtype
        device = self.M.device if device is None else device
        self.M, self.L, self.Linv = _mass_factors(mass_matrix, d, dtype, device)

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
            self.M, self.L, self.Linv = _mass_factors(self._mass_in, z.shape[1], z.dtype, z.device)
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


# ====================================================================== driver
@dataclass
class MALASchedule:
    """The appendix-C schedule.

    Attributes
    ----------
    burn_in : sequence of int
        Steps of each burn-in stage; after each, ``mass_matrix_fn`` is called at the best point
        sampled so far. Default (200, 200).
    step_sizes : sequence of float
        Candidate step sizes of the step-size stage; if ``relative_step_sizes`` (default),
        multipliers of the step the last burn-in stage adapted to (the geometric mean over its
        second half; without ``adapt_burn_in``, the step at the end of burn-in), else absolute.
        Empty: skip the stage.
    relative_step_sizes : bool
        See ``step_sizes``.
    step_size_steps : int
        Steps per candidate (each continues the chains).
    n_draws : int
        Draws per chain kept in the sampling stage.
    thin : int
        Sampling steps per kept draw (the stage runs ``n_draws * thin`` steps).
    target_accept : float
        Acceptance aimed at (default 0.574, Roberts & Rosenthal 1998).
    adapt_burn_in : bool
        Adapt the step size during burn-in: after each step
        ``eps *= exp(adapt_gain * (mean accept prob - target_accept))``.
    adapt_gain : float
        Gain of that rule.
    reset_step_size : bool
        After each mass-matrix update, restart the step size from the run's initial step size
        (the new matrix changes the scale the step size refers to).
    adapt_mass_matrix : bool
        After each burn-in stage, the new mass matrix is ``(n S + n0 F) / (n + n0)``: ``S`` the
        covariance of the burn-in's draws so far from the first stage's second half on [z^2] (all
        chains pooled, so it spans the chains' spread too), ``n`` their number, ``F`` the
        ``mass_matrix_fn`` result (or the current matrix without one) and ``n0 = 5 d`` draws of
        shrinkage towards it (Stan's windowed adaptation does the same towards a small identity).
        Default False: the paper's Fisher matrix alone.
    """

    burn_in: Sequence[int] = (200, 200)
    step_sizes: Sequence[float] = (0.5, 0.7, 0.85, 1.0, 1.2, 1.4, 2.0)
    relative_step_sizes: bool = True
    step_size_steps: int = 100
    n_draws: int = 1000
    thin: int = 1
    target_accept: float = TARGET_ACCEPT
    adapt_burn_in: bool = True
    adapt_gain: float = 0.2
    reset_step_size: bool = True
    adapt_mass_matrix: bool = False

    def validate(self):
        """Raise ``ValueError`` naming the first bad field."""
        def count(name, v, minimum):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
                raise ValueError(f"schedule.{name} must be an integer >= {minimum}, got {v!r}")
        for i, n in enumerate(self.burn_in):
            count(f"burn_in[{i}]", n, 1)
        for i, e in enumerate(self.step_sizes):
            _check_step_size(e, f"schedule.step_sizes[{i}]")
        count("step_size_steps", self.step_size_steps, 1)
        count("n_draws", self.n_draws, 1)
        count("thin", self.thin, 1)
        if not 0 < self.target_accept < 1:
            raise ValueError(f"schedule.target_accept must be in (0, 1), got {self.target_accept!r}")
        if not (isinstance(self.adapt_gain, numbers.Real) and 0 <= self.adapt_gain < 10):
            raise ValueError(f"schedule.adapt_gain must be in [0, 10), got {self.adapt_gain!r}")

    def as_dict(self):
        """Plain-Python dict (tuples -> lists, numpy scalars -> Python) for checkpoints and records."""
        return dict(burn_in=[int(n) for n in self.burn_in], step_sizes=[float(e) for e in self.step_sizes],
                    relative_step_sizes=bool(self.relative_step_sizes), step_size_steps=int(self.step_size_steps),
                    n_draws=int(self.n_draws), thin=int(self.thin), target_accept=float(self.target_accept),
                    adapt_burn_in=bool(self.adapt_burn_in), adapt_gain=float(self.adapt_gain),
                    reset_step_size=bool(self.reset_step_size), adapt_mass_matrix=bool(self.adapt_mass_matrix))

    @classmethod
    def from_mapping(cls, mapping):
        """Build from a mapping (e.g. a TOML table); unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(mapping) - known)
        if bad:
            raise ValueError(f"schedule: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        sch = cls(**dict(mapping))
        sch.validate()
        return sch


@dataclass
class StepInfo:
    """Passed to ``run_mala``'s ``callback`` after every step (and checkpoint).

    global_step : steps done so far in the whole run; stage : stage name; step_in_stage : steps
    done in it; step_size : the step size used; state : the :class:`MALAState` after the step.
    """

    global_step: int
    stage: str
    step_in_stage: int
    step_size: float
    state: MALAState


@dataclass
class MALAResult:
    """Output of :func:`run_mala` (numpy arrays on the host).

    Attributes
    ----------
    samples : ndarray (C, N, d')
        Draws in the constrained space (``transform`` applied; == ``samples_unconstrained`` if
        no transform), N = ``n_draws``.
    samples_unconstrained : ndarray (C, N, d)
        Draws in the sampler's space.
    logp : ndarray (C, N)
        Log target at the draws.
    accepted, accept_prob, nonfinite : ndarray (C, N)
        Per sampling step kept: accepted (bool), MH acceptance probability, non-finite proposal.
    trace_logp, trace_accepted, trace_accept_prob, trace_nonfinite : ndarray (C, T)
        The same for every step of every stage (T steps in total), for trace plots.
    trace_stage : ndarray (T,) int
        Stage index of each step (into ``stage_names``).
    trace_step_size : ndarray (T,)
        Step size of each step.
    warmup_unconstrained : ndarray (C, T_warm, d)
        Positions during burn-in and step-size stages (every step).
    warmup : ndarray (C, T_warm, d')
        The same in the constrained space (``transform`` applied).
    stage_names : list of str
        ``burn_in_0``, ..., ``step_size_0``, ..., ``sample``.
    acceptance : dict
        Stage name -> fraction of accepted proposals.
    mean_accept_prob : dict
        Stage name -> mean MH acceptance probability (what step-size tuning compares with the target).
    n_nonfinite : dict
        Stage name -> number of rejected non-finite proposals (chains x steps).
    step_size : float
        Step size of the sampling stage.
    step_size_trials : list of (float, float)
        (step size, mean accept prob) of each candidate.
    mass_matrix : ndarray (d, d)
        Mass matrix (proposal covariance) of the sampling stage.
    mass_matrix_history : list of (str, ndarray (d, d))
        ("initial", M0) then (burn-in stage name, M) for each update.
    best_z : ndarray (d,), best_logp : float
        Best point sampled (highest log target) in the whole run.
    wall_time : float
        Seconds spent stepping (summed over resumed sessions; steps redone after a kill count
        once).
    n_grad_calls : int
        Batched ``logp_and_grad`` calls (initial evaluation included; ``mass_matrix_fn``'s own
        work not included). ``n_grad_evals`` = ``n_grad_calls * C``.
    seed : int or None
        Seed of the run (None if a user Generator was passed).
    names : tuple of str or None
        Column names of ``samples``.
    schedule : dict
        The schedule used.
    """

    samples: np.ndarray
    samples_unconstrained: np.ndarray
    logp: np.ndarray
    accepted: np.ndarray
    accept_prob: np.ndarray
    nonfinite: np.ndarray
    trace_logp: np.ndarray
    trace_accepted: np.ndarray
    trace_accept_prob: np.ndarray
    trace_nonfinite: np.ndarray
    trace_stage: np.ndarray
    trace_step_size: np.ndarray
    warmup_unconstrained: np.ndarray
    warmup: np.ndarray
    stage_names: list
    acceptance: dict
    mean_accept_prob: dict
    n_nonfinite: dict
    step_size: float
    step_size_trials: list
    mass_matrix: np.ndarray
    mass_matrix_history: list
    best_z: np.ndarray
    best_logp: float
    wall_time: float
    n_grad_calls: int
    n_grad_evals: int
    seed: Optional[int]
    names: Optional[tuple] = None
    schedule: dict = field(default_factory=dict)

    @property
    def n_nonfinite_total(self):
        """Non-finite proposals over all stages."""
        return int(sum(self.n_nonfinite.values()))

    def sample_stats(self):
        """Per-draw statistics, each (C, N), in the form :mod:`.results` takes.

        Returns
        -------
        dict
            ``logp`` (log target [nats, up to a constant]), ``accepted`` (bool), ``step_size``,
            ``acceptance_rate`` (MH acceptance probability), ``diverging`` (non-finite proposal,
            rejected).
        """
        return {"logp": self.logp, "accepted": self.accepted, "step_size": np.full(self.logp.shape, self.step_size),
                "acceptance_rate": self.accept_prob, "diverging": self.nonfinite}

    def traces(self, names=None):
        """Per-stage traces ``stage -> {name -> (C, steps), "logp": (C, steps)}`` (constrained).

        Burn-in and step-size stages hold every step; ``sample`` holds the kept draws. The form
        :mod:`.results` takes for its trace figure. ``names`` as in :meth:`draws`.
        """
        names = self._names(names)
        sample_id = len(self.stage_names) - 1
        warm_stage = self.trace_stage[self.trace_stage != sample_id]
        warm_logp = self.trace_logp[:, self.trace_stage != sample_id]
        out = {}
        for i, st in enumerate(self.stage_names[:-1]):
            m = warm_stage == i
            out[st] = {n: np.ascontiguousarray(self.warmup[:, m, j]) for j, n in enumerate(names)}
            out[st]["logp"] = np.ascontiguousarray(warm_logp[:, m])
        out["sample"] = dict(self.draws(names), logp=self.logp)
        return out

    def _names(self, names):
        names = self.names if names is None else tuple(names)
        if names is None or len(names) != self.samples.shape[-1]:
            raise ValueError(f"names: need {self.samples.shape[-1]} column names for the samples, got "
                             f"{None if names is None else len(names)}")
        return names

    def draws(self, names=None):
        """Constrained draws as ``name -> (C, N)`` arrays (the ``draws`` of :mod:`.results`).

        Parameters
        ----------
        names : sequence of str, optional
            Column names of :attr:`samples` (default :attr:`names`).

        Returns
        -------
        dict
        """
        names = self._names(names)
        return {n: np.ascontiguousarray(self.samples[..., j]) for j, n in enumerate(names)}


def _stages(schedule):
    """[(name, kind, n_steps, candidate index)] of the run."""
    out = [(f"burn_in_{i}", "burn_in", int(n), None) for i, n in enumerate(schedule.burn_in)]
    out += [(f"step_size_{j}", "step_size", int(schedule.step_size_steps), j)
            for j in range(len(schedule.step_sizes))]
    out.append(("sample", "sample", int(schedule.n_draws) * int(schedule.thin), None))
    return out


def _atomic_write(path, write):
    """Write via ``write(fileobj)`` to a temp file beside ``path``, fsync, then os.replace."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _zero_moments(d, device):
    """[n, sum z (d,), sum z z^T (d, d)] of draws, float64: what :func:`_blend_sample_covariance` reads."""
    return [torch.zeros((), dtype=torch.float64, device=device), torch.zeros(d, dtype=torch.float64, device=device),
            torch.zeros((d, d), dtype=torch.float64, device=device)]


def _blend_sample_covariance(mass_matrix, moments, d, dtype, device):
    """``(n S + n0 F) / (n + n0)``, ``n0 = 5 d``: the draws' covariance S shrunk towards ``F``."""
    F = getattr(mass_matrix, "covariance", mass_matrix)
    F = torch.as_tensor(F, device=device).to(torch.float64)
    F = torch.diag(F) if F.shape == (d,) else F
    n = float(moments[0])
    if n < 2:
        return F.to(dtype)
    mean = moments[1] / n
    S = (moments[2] - n * torch.outer(mean, mean)) / (n - 1)
    S = 0.5 * (S + S.T)
    n0 = 5.0 * d
    return ((n * S + n0 * F) / (n + n0)).to(dtype)


def _to_cpu(x):
    return x.detach().cpu().clone() if isinstance(x, torch.Tensor) else x


def run_mala(logp_and_grad, z0, *, schedule=None, n_chains=None, mass_matrix=None, mass_matrix_fn=None,
             step_size=None, transform=None, names=None, seed=None, checkpoint_dir=None,
             checkpoint_every=100, resume=False, progress=True, callback=None):
    """Run the appendix-C schedule: burn-in with mass-matrix updates, step-size stage, sampling.

    Parameters
    ----------
    logp_and_grad : callable
        ``z (C, d) -> (logp (C,), grad (C, d))``, log-posterior (natural log) in the unconstrained
        space and its gradient for all chains in one call (see :func:`value_and_grad`).
    z0 : torch.Tensor, (C, d) or (d,)
        Starting positions (unconstrained); (d,) is repeated ``n_chains`` times. Dispersed starts
        (e.g. prior draws) make R-hat meaningful. dtype/device of the run are taken from it.
    schedule : MALASchedule or mapping, optional
        Stage lengths and tuning options (default ``MALASchedule()``; a mapping is passed to
        :meth:`MALASchedule.from_mapping`).
    n_chains : int, optional
        Number of chains C when ``z0`` is (d,).
    mass_matrix : torch.Tensor (d, d)/(d,) or FisherResult, optional
        Initial mass matrix (proposal covariance) [z^2]; default identity.
    mass_matrix_fn : callable, optional
        ``mass_matrix_fn(z_best (d,)) -> (d, d) tensor or FisherResult``, called after each
        burn-in stage at the best point sampled so far (e.g. a closure over
        :func:`~.fisher.empirical_fisher`). None: keep ``mass_matrix``.
    step_size : float, optional
        Initial step size (default :func:`optimal_step_size` (d)).
    transform : callable, optional
        ``z (N, d) -> theta (N, d')`` tensor, e.g. ``ParameterSpace.constrain``; applied to the
        draws for ``samples``.
    names : sequence of str, optional
        Column names of the constrained samples (stored in the result).
    seed : int, optional
        Seed of the run's generator (default: a random one, recorded in the result). On resume,
        None takes the checkpoint's seed.
    checkpoint_dir : str or os.PathLike, optional
        Directory for checkpoints (created if needed). Without it nothing is written.
    checkpoint_every : int
        Steps between checkpoints (each writes one chunk file and the state file).
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` (start afresh if there is none). With
        ``resume=False`` an existing checkpoint raises ``ValueError`` rather than being overwritten.
        A finished run is only reloaded.
    progress : bool
        Show a tqdm bar with stage, acceptance of the stage so far and mean log-posterior.
    callback : callable, optional
        ``callback(StepInfo)`` after every step and checkpoint; an exception it raises stops the run
        (what a kill does; the last checkpoint survives).

    Returns
    -------
    MALAResult

    Raises
    ------
    ValueError
        Bad arguments (named), a non-finite start, a checkpoint that does not match these arguments,
        or a ``mass_matrix_fn`` result that is not symmetric positive-definite.
    """
    schedule = MALASchedule() if schedule is None else schedule
    if isinstance(schedule, Mapping):
        schedule = MALASchedule.from_mapping(schedule)
    if not isinstance(schedule, MALASchedule):
        raise TypeError(f"schedule: expected a MALASchedule, got {type(schedule).__name__}")
    schedule.validate()
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, numbers.Integral) \
            or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if mass_matrix_fn is not None and not callable(mass_matrix_fn):
        raise TypeError("mass_matrix_fn must be callable: z_best (d,) -> (d, d) covariance")
    if transform is not None and not callable(transform):
        raise TypeError("transform must be callable: z (N, d) -> theta (N, d')")
    if step_size is not None:
        step_size = _check_step_size(step_size)

    z0 = torch.as_tensor(z0) if not isinstance(z0, torch.Tensor) else z0
    if not z0.is_floating_point():
        z0 = z0.to(torch.float64)
    if z0.ndim == 1:
        if n_chains is None:
            raise ValueError("n_chains is needed when z0 has shape (d,)")
        if isinstance(n_chains, bool) or not isinstance(n_chains, numbers.Integral) or n_chains < 1:
            raise ValueError(f"n_chains must be an integer >= 1, got {n_chains!r}")
        z0 = z0[None].expand(int(n_chains), -1).clone()
    elif z0.ndim == 2:
        if n_chains is not None and n_chains != z0.shape[0]:
            raise ValueError(f"n_chains = {n_chains} but z0 has {z0.shape[0]} rows")
    else:
        raise ValueError(f"z0: expected shape (C, d) or (d,), got {tuple(z0.shape)}")
    C, d = z0.shape
    if C < 1 or d < 1:
        raise ValueError(f"z0: need at least one chain and one dimension, got {tuple(z0.shape)}")
    dtype, device = z0.dtype, z0.device

    stages = _stages(schedule)
    stage_names = [s[0] for s in stages]
    n_burn = len(schedule.burn_in)
    total_steps = sum(s[2] for s in stages)
    eps0 = optimal_step_size(d) if step_size is None else step_size
    fingerprint = dict(n_chains=C, dim=d, dtype=str(dtype), schedule=schedule.as_dict(),
                       checkpoint_every=int(checkpoint_every), eps0=float(eps0),
                       has_mass_matrix_fn=mass_matrix_fn is not None, version=_FORMAT_VERSION)

    ckpt = None
    if checkpoint_dir is not None:
        checkpoint_dir = os.fspath(checkpoint_dir)
        os.makedirs(checkpoint_dir, exist_ok=True)
        state_path = os.path.join(checkpoint_dir, _STATE_FILE)
        if os.path.exists(state_path):
            if not resume:
                raise ValueError(f"checkpoint_dir {checkpoint_dir!r} already holds a run; pass resume=True "
                                 "to continue it or choose another directory")
            ckpt = torch.load(state_path, map_location="cpu", weights_only=True)
            bad = [k for k in fingerprint if ckpt["fingerprint"].get(k) != fingerprint[k]]
            if seed is not None and ckpt["seed"] != seed:
                bad.append("seed")
            if bad:
                raise ValueError(f"checkpoint in {checkpoint_dir!r} does not match this call: {', '.join(bad)} "
                                 "differ")
    elif resume:
        raise ValueError("resume=True needs a checkpoint_dir")

    kernel = MALA(logp_and_grad, mass_matrix=mass_matrix, step_size=eps0,
                  generator=(ckpt["seed"] if ckpt is not None else seed))
    run_seed = kernel.seed
    acc_tot = None  # per stage [n accepted, sum accept prob, n non-finite], float64 on device

    if ckpt is None:
        state = kernel.init_state(z0.detach().clone())
        M_hist = [("initial", kernel.M.detach().cpu().clone())]
        S = dict(global_step=0, stage_idx=0, step_in_stage=0, n_chunks=0, eps=float(eps0), eps_base=None,
                 chosen=None, trials=[], n_grad_calls=kernel.n_grad_calls, wall_time=0.0, done=False,
                 log_eps_sum=0.0, log_eps_n=0)
        i = int(torch.argmax(state.logp))
        best_logp, best_z = state.logp[i].clone(), state.z[i].clone()
        acc_tot = torch.zeros((len(stages), 3), dtype=torch.float64, device=device)
        moments = _zero_moments(d, device)
    else:
        S = {k: ckpt[k] for k in ("global_step", "stage_idx", "step_in_stage", "n_chunks", "eps", "eps_base",
                                  "chosen", "trials", "n_grad_calls", "wall_time", "done", "log_eps_sum",
                                  "log_eps_n")}
        S["trials"] = [tuple(t) for t in S["trials"]]
        kernel.M, kernel.L, kernel.Linv = _mass_factors(ckpt["M"].to(device), d, dtype, device)
        kernel.generator = torch.Generator(device=device)
        kernel.generator.set_state(ckpt["rng_state"])
        kernel.n_grad_calls = S["n_grad_calls"]
        state = MALAState(z=ckpt["z"].to(device), logp=ckpt["logp"].to(device), grad=ckpt["grad"].to(device))
        M_hist = [(n, m) for n, m in zip(ckpt["M_hist_names"], ckpt["M_hist"])]
        best_logp, best_z = ckpt["best_logp"].to(device), ckpt["best_z"].to(device)
        acc_tot = ckpt["acc_tot"].to(device)
        moments = [m.to(device) for m in ckpt["moments"]]

    memory_chunks = []   # chunks kept in memory when there is no checkpoint_dir
    buf = []             # per-step device tensors since the last flush

    def flush():
        if not buf:
            return None
        chunk = dict(z=torch.stack([b[0] for b in buf]).cpu().numpy(),
                     logp=torch.stack([b[1] for b in buf]).cpu().numpy(),
                     accepted=torch.stack([b[2] for b in buf]).cpu().numpy(),
                     accept_prob=torch.stack([b[3] for b in buf]).cpu().numpy(),
                     nonfinite=torch.stack([b[4] for b in buf]).cpu().numpy(),
                     step_size=np.array([b[5] for b in buf], dtype=np.float64),
                     stage=np.array([b[6] for b in buf], dtype=np.int32))
        buf.clear()
        if checkpoint_dir is None:
            memory_chunks.append(chunk)
        else:
            path = os.path.join(checkpoint_dir, _CHUNK_FMT.format(S["n_chunks"]))
            _atomic_write(path, lambda f: np.savez(f, **chunk))
        S["n_chunks"] += 1
        return chunk

    def write_state(wall):
        if checkpoint_dir is None:
            return
        rec = dict(S)
        rec.update(wall_time=wall, n_grad_calls=kernel.n_grad_calls, seed=run_seed, fingerprint=fingerprint,
                   stage_names=stage_names, rng_state=kernel.generator.get_state(),
                   z=_to_cpu(state.z), logp=_to_cpu(state.logp), grad=_to_cpu(state.grad),
                   M=_to_cpu(kernel.M), M_hist_names=[n for n, _ in M_hist], M_hist=[m for _, m in M_hist],
                   best_logp=_to_cpu(best_logp), best_z=_to_cpu(best_z), acc_tot=_to_cpu(acc_tot),
                   moments=[_to_cpu(m) for m in moments],
                   trials=[list(t) for t in S["trials"]])
        _atomic_write(os.path.join(checkpoint_dir, _STATE_FILE), lambda f: torch.save(rec, f))

    # ------------------------------------------------------------------ main loop
    from tqdm.auto import tqdm  # imported here: only the driver needs it

    wall0 = S["wall_time"]
    t0 = time.perf_counter()
    pbar = tqdm(total=total_steps, initial=S["global_step"], disable=not progress, dynamic_ncols=True,
                leave=True)
    target = schedule.target_accept
    shown = None
    try:
        while not S["done"] and S["stage_idx"] < len(stages):
            name, kind, n_steps, cand = stages[S["stage_idx"]]
            if S["step_in_stage"] == 0:
                # Stage start: idempotent (a resume may redo it), depends on saved state only.
                if S["stage_idx"] == 0:
                    moments = _zero_moments(d, device)
                if kind == "step_size":
                    if S["eps_base"] is None:
                        # the step the last burn-in stage adapted to (geometric mean of its second
                        # half), not the reset one: the Gaussian-optimal initial step can be 2-3x too
                        # long on a non-Gaussian posterior
                        S["eps_base"] = (math.exp(S["log_eps_sum"] / S["log_eps_n"]) if S["log_eps_n"]
                                         else S["eps"])
                    e = schedule.step_sizes[cand]
                    S["eps"] = float(S["eps_base"] * e) if schedule.relative_step_sizes else float(e)
                elif kind == "sample":
                    if S["chosen"] is None:
                        S["chosen"] = S["eps"]
                    S["eps"] = S["chosen"]
            if name != shown:
                pbar.set_description(name)
                shown = name
            eps = S["eps"]
            state = kernel.step(state, eps)
            si = S["stage_idx"]
            acc_tot[si, 0] += state.accepted.sum()
            acc_tot[si, 1] += state.accept_prob.sum()
            acc_tot[si, 2] += state.nonfinite.sum()
            i = torch.argmax(state.logp)
            better = state.logp[i] > best_logp
            best_logp = torch.where(better, state.logp[i], best_logp)
            best_z = torch.where(better, state.z[i], best_z)
            buf.append((state.z, state.logp, state.accepted, state.accept_prob, state.nonfinite, eps, si))
            if kind == "burn_in" and schedule.adapt_mass_matrix and (si > 0 or 2 * S["step_in_stage"] >= n_steps):
                # all burn-in draws from the first stage's second half on (the first half leaves the
                # start): on a weakly constrained posterior a stage's chains hold only a few
                # independent draws, too few for a d x d covariance
                zc = state.z.detach().to(torch.float64)
                moments[0] += C
                moments[1] += zc.sum(0)
                moments[2] += zc.T @ zc
            if kind == "burn_in" and schedule.adapt_burn_in and schedule.adapt_gain > 0:
                if si == n_burn - 1 and 2 * S["step_in_stage"] >= n_steps:
                    S["log_eps_sum"] += math.log(eps)
                    S["log_eps_n"] += 1
                S["eps"] = eps * math.exp(schedule.adapt_gain * (float(state.accept_prob.mean()) - target))
            S["step_in_stage"] += 1
            S["global_step"] += 1
            if S["step_in_stage"] == n_steps:
                # Stage end.
                if kind == "burn_in" and (mass_matrix_fn is not None or schedule.adapt_mass_matrix):
                    Mnew = kernel.M if mass_matrix_fn is None else mass_matrix_fn(best_z.detach().clone())
                    if schedule.adapt_mass_matrix:
                        Mnew = _blend_sample_covariance(Mnew, moments, d, dtype, device)
                    try:
                        kernel.set_mass_matrix(Mnew)
                    except ValueError as exc:
                        raise ValueError(f"mass_matrix_fn after {name}: {exc}") from None
                    M_hist.append((name, kernel.M.detach().cpu().clone()))
                    if schedule.reset_step_size:
                        S["eps"] = float(eps0)
                elif kind == "step_size":
                    ap = float(acc_tot[si, 1]) / (n_steps * C)
                    S["trials"].append((S["eps"], ap))
                    if cand == len(schedule.step_sizes) - 1:
                        S["chosen"] = min(S["trials"], key=lambda t: abs(t[1] - target))[0]
                S["stage_idx"] += 1
                S["step_in_stage"] = 0
                if S["stage_idx"] == len(stages):
                    S["done"] = True
            pbar.update(1)
            done_in_stage = S["step_in_stage"] or n_steps
            if progress and (S["global_step"] % 10 == 0 or S["done"]):
                # Host syncs only every 10 steps, and none at all without a bar.
                pbar.set_postfix(acc=f"{float(acc_tot[si, 0]) / (done_in_stage * C):.3f}",
                                 logp=f"{float(state.logp.mean()):.4g}", eps=f"{eps:.3g}")
            if S["global_step"] % checkpoint_every == 0 or S["done"]:
                flush()
                S["n_grad_calls"] = kernel.n_grad_calls
                write_state(wall0 + time.perf_counter() - t0)
            if callback is not None:
                callback(StepInfo(S["global_step"], name, done_in_stage, eps, state))
    finally:
        pbar.close()
    flush()
    wall = wall0 + time.perf_counter() - t0
    if checkpoint_dir is not None:
        # A finished run: the state already written at the last step is final; reload all chunks.
        chunks = [_load_chunk(checkpoint_dir, k) for k in range(S["n_chunks"])]
        if ckpt is not None and ckpt.get("done"):
            wall = S["wall_time"]
    else:
        chunks = memory_chunks
    return _assemble(chunks, stages, schedule, C, S, kernel, M_hist, best_z, best_logp, acc_tot, wall,
                     run_seed, transform, names, dtype, device)


def _load_chunk(checkpoint_dir, k):
    with np.load(os.path.join(checkpoint_dir, _CHUNK_FMT.format(k))) as f:
        return {key: f[key] for key in f.files}


def _assemble(chunks, stages, schedule, C, S, kernel, M_hist, best_z, best_logp, acc_tot, wall, seed,
              transform, names, dtype, device):
    cat = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
    stage = cat["stage"]
    stage_names = [s[0] for s in stages]
    sample_id = len(stages) - 1
    is_s = stage == sample_id
    thin = int(schedule.thin)
    take = np.nonzero(is_s)[0][thin - 1::thin]
    zs = np.ascontiguousarray(cat["z"][take].transpose(1, 0, 2))
    zw = np.ascontiguousarray(cat["z"][~is_s].transpose(1, 0, 2))

    def apply(a):
        if transform is None or a.shape[1] == 0:
            return a
        parts = []
        flat = a.reshape(-1, a.shape[-1])
        with torch.no_grad():
            for s in range(0, flat.shape[0], 1 << 16):
                out = transform(torch.as_tensor(flat[s:s + (1 << 16)], dtype=dtype, device=device))
                if not isinstance(out, torch.Tensor) or out.ndim != 2:
                    raise TypeError("transform must return a 2-D tensor (N, d')")
                parts.append(out.detach().cpu().numpy())
        return np.concatenate(parts).reshape(a.shape[0], a.shape[1], -1)

    theta = apply(zs)
    T = lambda a: np.ascontiguousarray(np.swapaxes(a, 0, 1))  # noqa: E731  (steps, C) -> (C, steps)
    acc = acc_tot.cpu().numpy()
    counts = {name: n * C for name, _, n, _ in stages}
    return MALAResult(
        samples=theta, samples_unconstrained=zs, logp=T(cat["logp"][take]),
        accepted=T(cat["accepted"][take]), accept_prob=T(cat["accept_prob"][take]),
        nonfinite=T(cat["nonfinite"][take]),
        trace_logp=T(cat["logp"]), trace_accepted=T(cat["accepted"]), trace_accept_prob=T(cat["accept_prob"]),
        trace_nonfinite=T(cat["nonfinite"]), trace_stage=stage, trace_step_size=cat["step_size"],
        warmup_unconstrained=zw, warmup=apply(zw),
        stage_names=stage_names,
        acceptance={n: float(acc[i, 0] / counts[n]) for i, n in enumerate(stage_names)},
        mean_accept_prob={n: float(acc[i, 1] / counts[n]) for i, n in enumerate(stage_names)},
        n_nonfinite={n: int(acc[i, 2]) for i, n in enumerate(stage_names)},
        step_size=float(S["chosen"]), step_size_trials=[tuple(t) for t in S["trials"]],
        mass_matrix=kernel.M.detach().cpu().numpy(),
        mass_matrix_history=[(n, m.numpy() if isinstance(m, torch.Tensor) else m) for n, m in M_hist],
        best_z=best_z.detach().cpu().numpy(), best_logp=float(best_logp), wall_time=float(wall),
        n_grad_calls=int(kernel.n_grad_calls), n_grad_evals=int(kernel.n_grad_calls) * C, seed=seed,
        names=None if names is None else tuple(names), schedule=schedule.as_dict())


def load_checkpoint_result(checkpoint_dir, *, transform=None, names=None):
    """Rebuild a :class:`MALAResult` from a finished run's checkpoint directory without the target.

    Parameters
    ----------
    checkpoint_dir : str or os.PathLike
        Directory written by :func:`run_mala`.
    transform, names
        As in :func:`run_mala`.

    Returns
    -------
    MALAResult

    Raises
    ------
    ValueError
        If the directory holds no checkpoint or an unfinished run (use ``run_mala(..., resume=True)``).
    """
    checkpoint_dir = os.fspath(checkpoint_dir)
    path = os.path.join(checkpoint_dir, _STATE_FILE)
    if not os.path.exists(path):
        raise ValueError(f"checkpoint_dir {checkpoint_dir!r} holds no {_STATE_FILE}")
    ck = torch.load(path, map_location="cpu", weights_only=True)
    if not ck["done"]:
        raise ValueError(f"the run in {checkpoint_dir!r} is unfinished ({ck['global_step']} steps); "
                         "continue it with run_mala(..., resume=True)")
    schedule = MALASchedule.from_mapping(ck["fingerprint"]["schedule"])
    stages = _stages(schedule)

    class _K:  # the two kernel attributes _assemble reads
        M = ck["M"]
        n_grad_calls = ck["n_grad_calls"]

    chunks = [_load_chunk(checkpoint_dir, k) for k in range(ck["n_chunks"])]
    M_hist = list(zip(ck["M_hist_names"], ck["M_hist"]))
    return _assemble(chunks, stages, schedule, ck["fingerprint"]["n_chains"], ck, _K, M_hist, ck["best_z"],
                     ck["best_logp"], ck["acc_tot"], ck["wall_time"], ck["seed"], transform, names,
                     ck["z"].dtype, torch.device("cpu"))
