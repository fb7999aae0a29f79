"""Warm-up adaptation of a Hamiltonian sampler, each piece as ``init`` / ``update`` / ``final``.

* Step size: Nesterov dual averaging of ``log eps`` towards a target mean acceptance statistic
  (Hoffman & Gelman 2014, JMLR 15, 1593, section 3.2; Stan's defaults gamma = 0.05, t0 = 10,
  kappa = 0.75, mu = log(10 eps0)).
* Mass matrix: the covariance of the draws of each slow window, all chains pooled (Welford's
  running moments in float64), regularised as Stan regularises it, ``(n S + 5 F) / (n + 5)``,
  except that the shrinkage target ``F`` is the metric the run started from (the Fisher
  covariance at the MAP) rather than ``1e-3 I``: the sampler's unconstrained coordinates have
  posterior widths from 1e-3 to 1, so no fixed multiple of the identity is small for all of them.
* Schedule: Stan's windowed warm-up (an initial fast buffer, slow windows doubling from
  ``base_window``, a terminal fast buffer), :func:`warmup_windows`.

All states are NamedTuples of Python floats and tensors, so that a checkpoint stores them exactly
and a resumed run continues bitwise.
"""

import math
from typing import NamedTuple

import torch

__all__ = ["DualAveragingState", "dual_averaging_init", "dual_averaging_update", "dual_averaging_final",
           "WelfordState", "welford_init", "welford_update", "welford_covariance", "regularised_covariance",
           "warmup_windows"]


# ---------------------------------------------------------------------------- step size
class DualAveragingState(NamedTuple):
    """Dual-averaging state: ``log_step`` (the step to use now), ``log_step_avg`` (its weighted
    average, the step to keep), ``h_avg`` (running mean of target - accept), ``mu`` (shrinkage
    point, log of 10 x the initial step) and ``count`` (updates so far)."""

    log_step: float
    log_step_avg: float
    h_avg: float
    mu: float
    count: int


def dual_averaging_init(step_size):
    """Start dual averaging at ``step_size`` (> 0) [z units]; ``mu = log(10 step_size)``."""
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size!r}")
    return DualAveragingState(math.log(step_size), 0.0, 0.0, math.log(10.0 * step_size), 0)


def dual_averaging_update(state, accept_stat, target, *, gamma=0.05, t0=10.0, kappa=0.75):
    """One dual-averaging update after a transition whose mean acceptance statistic was ``accept_stat``.

    Parameters
    ----------
    state : DualAveragingState
    accept_stat : float
        Mean Metropolis acceptance probability over the trajectory (and chains), in [0, 1]; a
        non-finite value counts as 0.
    target : float
        Acceptance statistic aimed at, in (0, 1) (0.8: Stan's default).
    gamma, t0, kappa : float
        Hoffman & Gelman's (2014) constants.

    Returns
    -------
    DualAveragingState
    """
    a = float(accept_stat)
    a = min(max(a, 0.0), 1.0) if math.isfinite(a) else 0.0
    count = state.count + 1
    eta = 1.0 / (count + t0)
    h_avg = (1.0 - eta) * state.h_avg + eta * (target - a)
    log_step = state.mu - math.sqrt(count) / gamma * h_avg
    w = count ** (-kappa)
    log_step_avg = w * log_step + (1.0 - w) * state.log_step_avg
    return DualAveragingState(log_step, log_step_avg, h_avg, state.mu, count)


def dual_averaging_final(state):
    """The step size to keep after warm-up: ``exp`` of the averaged log step [z units]."""
    return math.exp(state.log_step_avg if state.count else state.log_step)


# ---------------------------------------------------------------------------- mass matrix
class WelfordState(NamedTuple):
    """Running moments of pooled draws: ``n`` (draws), ``mean`` (d,), ``m2`` (d, d) sum of outer
    products of deviations; float64."""

    n: int
    mean: torch.Tensor
    m2: torch.Tensor


def welford_init(d, device=None):
    """Empty moments of ``d``-dimensional draws (float64 on ``device``)."""
    return WelfordState(0, torch.zeros(d, dtype=torch.float64, device=device),
                        torch.zeros((d, d), dtype=torch.float64, device=device))


def welford_update(state, z):
    """Add the draws ``z`` (C, d) (one per chain) to the moments (Chan et al.'s batched update)."""
    z = z.detach().to(torch.float64)
    nb = z.shape[0]
    if nb == 0:
        return state
    mb = z.mean(0)
    db = z - mb
    m2b = db.T @ db
    n = state.n + nb
    delta = mb - state.mean
    mean = state.mean + delta * (nb / n)
    m2 = state.m2 + m2b + torch.outer(delta, delta) * (state.n * nb / n)
    return WelfordState(n, mean, m2)


def welford_covariance(state):
    """Sample covariance (d, d) of the draws so far (needs >= 2 draws)."""
    if state.n < 2:
        raise ValueError(f"need at least 2 draws for a covariance, got {state.n}")
    S = state.m2 / (state.n - 1)
    return 0.5 * (S + S.T)


def regularised_covariance(state, target, *, n_prior=5.0):
    """``(n S + n_prior F) / (n + n_prior)``: the draws' covariance shrunk towards ``target`` (d, d).

    Stan's weights (``n_prior = 5`` draws) with the starting metric as the target (module
    docstring). Returns a float64 (d, d) tensor.
    """
    F = torch.as_tensor(target, dtype=torch.float64, device=state.mean.device)
    if F.ndim == 1:
        F = torch.diag(F)
    if state.n < 2:
        return F.clone()
    n = float(state.n)
    return (n * welford_covariance(state) + n_prior * F) / (n + n_prior)


# ---------------------------------------------------------------------------- schedule
def warmup_windows(n_warmup, *, init_buffer=75, term_buffer=50, base_window=25):
    """Stan's slow windows of a warm-up of ``n_warmup`` iterations: a list of ``(start, end)``.

    The mass matrix is estimated from the draws of iterations ``start <= i < end`` of each window
    and set at its end. The first ``init_buffer`` iterations (reaching the typical set) and the last
    ``term_buffer`` (the step size settling on the final metric) adapt the step size only. Windows
    double from ``base_window``; the last one is stretched to end where the terminal buffer starts.
    When the three do not fit, Stan's 15% / 75% / 10% split is used. Fewer than 20 iterations: no
    window (step size only).
    """
    n = int(n_warmup)
    if n < 20:
        return []
    if init_buffer + base_window + term_buffer > n:
        init_buffer, term_buffer = int(0.15 * n), int(0.1 * n)
        base_window = n - init_buffer - term_buffer
    end_slow = n - term_buffer
    out, start, size = [], init_buffer, base_window
    while start < end_slow:
        end = start + size
        if end + 2 * size > end_slow:  # the next window would not fit: stretch this one
            end = end_slow
        out.append((start, end))
        start, size = end, 2 * size
    return out
