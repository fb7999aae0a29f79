"""The No-U-Turn Sampler (multinomial, generalised U-turn criterion), batched over chains.

One transition of ``C`` chains (Hoffman & Gelman 2014, JMLR 15, 1593; Betancourt 2017,
arXiv:1701.02434, appendix A; the variant Stan runs):

1. momentum ``p = L^{-T} xi``, ``xi ~ N(0, I)``, for the metric ``M = L L^T`` (inverse mass,
   :mod:`.metric`): kinetic energy ``K = p^T M p / 2``, Hamiltonian ``H = -log p(z) + K``;
2. the trajectory doubles, each time in a random direction, by a subtree of ``2^depth`` leapfrog
   steps of size ``eps``; within subtrees the proposal is drawn with probability proportional to
   ``exp(-H)`` (multinomial), across doublings by biased progressive sampling;
3. it stops at a U-turn (``p_sharp^T rho <= 0`` at either end, ``p_sharp = M p``, ``rho`` the sum
   of momenta), checked on every merged subtree and across each pair of merged subtrees (Stan's
   extra checks), at a divergence (``H - H0 > max_energy_error``) or at ``max_tree_depth``.

Batching: all chains take their doublings together, each in its own direction; a chain whose
trajectory has ended is left out of the model's evaluations (its rows are not computed), so one
call of ``logp_and_grad`` per leapfrog step serves every chain still moving. The cost of a
transition is that of the longest trajectory among the chains.

Random numbers come from one ``torch.Generator`` in a fixed order (``xi`` (C, d), then per
doubling a direction (C,), per subtree merge a uniform (C,), per doubling a uniform (C,)), so a
seed and a restored generator state replay a run exactly.

The driver (warm-up, convergence-driven run length, checkpoints) is :mod:`.driver`.
"""

from typing import NamedTuple

import torch

from .driver import HamiltonianSettings, run_hamiltonian

__all__ = ["NUTSState", "NUTSInfo", "nuts_init", "nuts_step", "find_reasonable_step_size", "kinetic_energy",
           "NUTSKernel", "NUTSSettings", "run_nuts"]


class NUTSState(NamedTuple):
    """Positions of ``C`` chains: ``z`` (C, d) unconstrained, ``logp`` (C,) the log target density
    there [nats] (finite), ``grad`` (C, d) its gradient (finite)."""

    z: torch.Tensor
    logp: torch.Tensor
    grad: torch.Tensor


class NUTSInfo(NamedTuple):
    """What one transition did, per chain (C,): ``accept_stat`` (mean Metropolis acceptance
    probability over the trajectory, what step-size adaptation reads), ``tree_depth`` (doublings
    kept), ``n_leapfrog`` (leapfrog steps = gradient evaluations of this chain), ``diverging``
    (an energy error above the limit, or a non-finite density), ``energy`` (H at the new state
    [nats], for the energy BFMI)."""

    accept_stat: torch.Tensor
    tree_depth: torch.Tensor
    n_leapfrog: torch.Tensor
    diverging: torch.Tensor
    energy: torch.Tensor


class _Point(NamedTuple):
    """A phase-space point of every chain: z, p, grad (C, d), logp (C,), p_sharp = M p (C, d)."""

    z: torch.Tensor
    p: torch.Tensor
    grad: torch.Tensor
    logp: torch.Tensor
    p_sharp: torch.Tensor


class _Subtree(NamedTuple):
    beg: _Point          # the point next to where the subtree started
    end: _Point          # its far end (where the next subtree would continue)
    rho: torch.Tensor    # sum of its momenta (C, d)
    log_w: torch.Tensor  # log sum of exp(H0 - H) over its points (C,)
    prop: _Point         # its multinomial proposal
    valid: torch.Tensor  # no divergence and no U-turn inside (C,) bool
    sum_metro: torch.Tensor
    n_leapfrog: torch.Tensor
    diverging: torch.Tensor


def _where(mask, a, b):
    """Row-wise select between two NamedTuples of (C, ...) tensors."""
    m1 = mask[:, None]
    return type(a)(*(torch.where(m1 if x.ndim == 2 else mask, x, y) for x, y in zip(a, b)))


def kinetic_energy(p, L):
    """``p^T M p / 2`` for momenta ``p`` (C, d) and the metric's Cholesky factor ``L`` (d, d) [nats]."""
    u = p @ L
    return 0.5 * (u * u).sum(-1)


def _criterion(p_sharp_a, p_sharp_b, rho):
    """Generalised no-U-turn criterion: the trajectory still extends at both ends (C,) bool."""
    return ((p_sharp_a * rho).sum(-1) > 0) & ((p_sharp_b * rho).sum(-1) > 0)


class _Integrator:
    """Leapfrog steps of the rows that still move; counts the batched model calls."""

    def __init__(self, logp_and_grad, M, L, max_energy_error, bounds=None):
        self.logp_and_grad, self.M, self.L = logp_and_grad, M, L
        self.max_energy_error = float(max_energy_error)
        self.bounds = bounds
        self.n_calls = 0   # batched model calls
        self.n_rows = 0    # rows evaluated in them: gradient evaluations of single chains

    def evaluate(self, z, rows):
        """logp (C,), grad (C, d) at the rows of ``z`` marked in ``rows``; -inf / 0 elsewhere and
        wherever ``z`` is not finite (a non-finite point is never handed to the model)."""
        C, d = z.shape
        ok = rows & torch.isfinite(z).all(-1)
        lp = torch.full((C,), -torch.inf, dtype=z.dtype, device=z.device)
        g = torch.zeros_like(z)
        idx = ok.nonzero().reshape(-1)
        if idx.numel():
            full = idx.numel() == C
            lpi, gi = self.logp_and_grad(z if full else z[idx])
            self.n_calls += 1
            self.n_rows += idx.numel()
            if lpi.shape != (idx.numel(),) or gi.shape != (idx.numel(), d):
                raise ValueError(f"logp_and_grad returned shapes {tuple(lpi.shape)}, {tuple(gi.shape)}; expected "
                                 f"({idx.numel()},) and ({idx.numel()}, {d})")
            lpi, gi = lpi.detach().to(z.dtype), gi.detach().to(z.dtype)
            if full:
                lp, g = lpi, gi
            else:
                lp, g = lp.index_copy(0, idx, lpi), g.index_copy(0, idx, gi)
        return lp, g

    def leapfrog(self, pt, h, rows):
        """One leapfrog step of size ``h`` (C,) (signed: the direction of each chain)."""
        hc = h[:, None]
        p_half = pt.p + 0.5 * hc * pt.grad
        if self.bounds is None:
            z = pt.z + hc * (p_half @ self.M)
        else:
            z, p_half = reflective_drift(pt.z, p_half, h, self.M, *self.bounds)
        lp, g = self.evaluate(z, rows)
        p = p_half + 0.5 * hc * g
        return _Point(z, p, g, lp, p @ self.M)

    def hamiltonian(self, pt):
        H = -pt.logp + kinetic_energy(pt.p, self.L)
        return torch.where(torch.isnan(H), torch.full_like(H, torch.inf), H)


def reflective_drift(z, p, h, M, lower, upper, max_bounces=256):
    """The leapfrog's drift ``z += h M p`` inside the box ``lower <= z <= upper``, reflecting off its walls.

    The path is straight until it meets a wall ``z_i = lower_i`` or ``upper_i``; there the momentum
    is reflected, ``p -= 2 (v_i / M_ii) e_i`` with ``v = M p`` (which reverses ``v_i`` and keeps
    ``p^T M p``), and the path goes on for the rest of the step. The map is an involution up to the
    sign of ``h`` and preserves volume, so the leapfrog stays reversible and NUTS stays exact for a
    density with support on the box (a product of uniform priors needs no Jacobian: Neal 2011,
    *MCMC using Hamiltonian dynamics*, section 5.1).

    Parameters
    ----------
    z, p : (C, d) tensors
        Positions (inside the box) and momenta.
    h : (C,) tensor
        Signed step of each chain.
    M : (d, d) tensor
        Metric (inverse mass).
    lower, upper : (d,) tensors
        The box [z units].
    max_bounces : int
        Most reflections in one step; a step that needs more (its path crosses the box hundreds of
        times: the step size is far too long) ends at a NaN position, which the leapfrog counts as
        a divergence, rather than at a point that would break reversibility.

    Returns
    -------
    (z, p) : (C, d) tensors
    """
    z, p = z.clone(), p.clone()
    left = torch.ones_like(h)                       # fraction of the step still to go
    diag = torch.diagonal(M)
    hits = torch.zeros_like(h, dtype=torch.bool)
    for _ in range(int(max_bounces) + 1):
        w = h[:, None] * (p @ M)                    # displacement of the whole step
        with torch.no_grad():
            t_up = torch.where(w > 0, (upper - z) / w, torch.inf)
            t_lo = torch.where(w < 0, (lower - z) / w, torch.inf)
            t = torch.minimum(t_up, t_lo).clamp(min=0.0)
            t_hit, i_hit = t.min(-1)
        hits = t_hit < left
        if not bool(hits.any()) or _ == max_bounces:
            break
        step = torch.where(hits, t_hit, left)
        z = z + step[:, None] * w
        left = left - step
        # land exactly on the wall that was hit, and reflect the momentum off it
        onehot = torch.nn.functional.one_hot(i_hit, z.shape[1]).to(z.dtype) * hits[:, None]
        at_upper = t_up.gather(1, i_hit[:, None])[:, 0] <= t_lo.gather(1, i_hit[:, None])[:, 0]
        wall = torch.where(at_upper, upper[i_hit], lower[i_hit])
        z = torch.where(onehot > 0, wall[:, None].expand_as(z), z)
        v_i = (p @ M).gather(1, i_hit[:, None])
        p = p - onehot * (2.0 * v_i / diag[i_hit][:, None])
    z = torch.minimum(torch.maximum(z + left[:, None] * (h[:, None] * (p @ M)), lower), upper)
    return torch.where(hits[:, None], torch.nan, z), p


def _build_tree(integ, start, depth, h, H0, rows, gen):
    """A subtree of ``2^depth`` leapfrog steps from ``start`` for the chains in ``rows`` (recursive)."""
    C = H0.shape[0]
    if depth == 0:
        pt = integ.leapfrog(start, h, rows)
        H = integ.hamiltonian(pt)
        log_w = H0 - H
        diverging = rows & ~(H - H0 <= integ.max_energy_error)   # NaN/inf energies diverge too
        metro = torch.exp(torch.clamp(log_w, max=0.0))
        one = torch.ones(C, dtype=torch.long, device=H0.device)
        return _Subtree(pt, pt, pt.p, log_w, pt, ~diverging, metro, one, diverging)
    left = _build_tree(integ, start, depth - 1, h, H0, rows, gen)
    go_on = rows & left.valid
    if not bool(go_on.any()):
        return left
    right = _build_tree(integ, left.end, depth - 1, h, H0, go_on, gen)
    log_w = torch.logaddexp(left.log_w, right.log_w)
    u = torch.rand((C,), generator=gen, dtype=H0.dtype, device=H0.device)
    take_right = torch.log(u) < right.log_w - log_w            # multinomial within the subtree
    rho = left.rho + right.rho
    persist = (_criterion(left.beg.p_sharp, right.end.p_sharp, rho)
               & _criterion(left.beg.p_sharp, right.beg.p_sharp, left.rho + right.beg.p)
               & _criterion(left.end.p_sharp, right.end.p_sharp, right.rho + left.end.p))
    merged = _Subtree(left.beg, right.end, rho, log_w, _where(take_right, right.prop, left.prop),
                      right.valid & persist, left.sum_metro + right.sum_metro, left.n_leapfrog + right.n_leapfrog,
                      left.diverging | right.diverging)
    return _Subtree(*(_where(go_on, a, b) if isinstance(a, _Point) else torch.where(
        go_on[:, None] if a.ndim == 2 else go_on, a, b) for a, b in zip(merged, left)))


def nuts_init(logp_and_grad, z):
    """Evaluate the target at starting points ``z`` (C, d); raises ``ValueError`` naming the chains
    where it is not finite."""
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or not z.is_floating_point():
        raise ValueError(f"z: expected a floating tensor of shape (C, d), got {getattr(z, 'shape', type(z))}")
    lp, g = logp_and_grad(z.detach())
    lp, g = lp.detach().to(z.dtype), g.detach().to(z.dtype)
    bad = ~(torch.isfinite(lp) & torch.isfinite(g).all(-1))
    if bool(bad.any()):
        idx = bad.nonzero().reshape(-1).tolist()
        raise ValueError(f"z: log density or gradient is non-finite at the start of chain(s) {idx[:10]}")
    return NUTSState(z.detach().clone(), lp, g)


def nuts_step(logp_and_grad, state, step_size, metric, generator, *, max_tree_depth=10, max_energy_error=1000.0,
              bounds=None):
    """One NUTS transition of every chain.

    Parameters
    ----------
    logp_and_grad : callable
        ``z (B, d) -> (logp (B,), grad (B, d))`` for any batch of rows (B <= C): the log target
        [nats] in the unconstrained space and its gradient.
    state : NUTSState
    step_size : float
        Leapfrog step ``eps`` [z units, scaled by the metric].
    metric : tuple (M, L, Linv)
        From :func:`.metric.mass_factors`.
    generator : torch.Generator
        On the chains' device.
    max_tree_depth : int
        Most doublings (at most ``2^max_tree_depth - 1`` leapfrog steps).
    max_energy_error : float
        Energy error [nats] above which a trajectory counts as divergent (Stan: 1000).
    bounds : (lower (d,), upper (d,)) tensors, optional
        A box the target lives in: trajectories reflect off its walls (:func:`reflective_drift`).

    Returns
    -------
    (NUTSState, NUTSInfo, (int, int))
        The new state, what the transition did, and the numbers of batched ``logp_and_grad`` calls
        and of rows (single-chain gradient evaluations) in them.
    """
    M, L, Linv = metric
    z0 = state.z
    C, d = z0.shape
    dt, dev = z0.dtype, z0.device
    integ = _Integrator(logp_and_grad, M, L, max_energy_error, bounds)
    xi = torch.randn((C, d), generator=generator, dtype=dt, device=dev)
    p0 = xi @ Linv                                                  # covariance M^-1
    start = _Point(z0, p0, state.grad, state.logp, p0 @ M)
    H0 = integ.hamiltonian(start)
    bck = fwd = sample = start
    log_w = torch.zeros(C, dtype=dt, device=dev)
    rho = p0.clone()
    active = torch.ones(C, dtype=torch.bool, device=dev)
    depth = torch.zeros(C, dtype=torch.long, device=dev)
    n_leap = torch.zeros(C, dtype=torch.long, device=dev)
    sum_metro = torch.zeros(C, dtype=dt, device=dev)
    diverging = torch.zeros(C, dtype=torch.bool, device=dev)
    for j in range(int(max_tree_depth)):
        if not bool(active.any()):
            break
        forward = torch.rand((C,), generator=generator, dtype=dt, device=dev) > 0.5
        h = torch.where(forward, step_size, -step_size).to(dt)
        near = _where(forward, fwd, bck)          # the end the subtree grows from
        far = _where(forward, bck, fwd)
        sub = _build_tree(integ, near, j, h, H0, active, generator)
        u = torch.rand((C,), generator=generator, dtype=dt, device=dev)
        n_leap = n_leap + torch.where(active, sub.n_leapfrog, 0)
        sum_metro = sum_metro + torch.where(active, sub.sum_metro, 0.0)
        diverging = diverging | (active & sub.diverging)
        keep = active & sub.valid
        # biased progressive sampling: the new subtree's proposal with probability min(1, w_new / w_old)
        take = keep & (torch.log(u) < sub.log_w - log_w)
        sample = _where(take, sub.prop, sample)
        log_w = torch.where(keep, torch.logaddexp(log_w, sub.log_w), log_w)
        fwd = _where(keep & forward, sub.end, fwd)
        bck = _where(keep & ~forward, sub.end, bck)
        rho_new = rho + sub.rho
        persist = (_criterion(far.p_sharp, sub.end.p_sharp, rho_new)
                   & _criterion(far.p_sharp, sub.beg.p_sharp, rho + sub.beg.p)
                   & _criterion(near.p_sharp, sub.end.p_sharp, sub.rho + near.p))
        rho = torch.where(keep[:, None], rho_new, rho)
        depth = depth + keep.long()
        active = keep & persist
    energy = integ.hamiltonian(sample)
    accept = sum_metro / n_leap.clamp(min=1).to(dt)
    new = NUTSState(sample.z, sample.logp, sample.grad)
    return new, NUTSInfo(accept, depth, n_leap, diverging, energy), (integ.n_calls, integ.n_rows)


def find_reasonable_step_size(logp_and_grad, state, step_size, metric, generator, *, target=0.8, max_iter=30,
                              bounds=None):
    """Stan's step-size initialisation: double or halve ``step_size`` until one leapfrog step's mean
    acceptance probability (over chains) crosses ``target``.

    Returns
    -------
    (float, (int, int))
        The step size [z units] and the numbers of batched ``logp_and_grad`` calls and of rows in them.
    """
    M, L, Linv = metric
    C, d = state.z.shape
    integ = _Integrator(logp_and_grad, M, L, 1000.0, bounds)
    xi = torch.randn((C, d), generator=generator, dtype=state.z.dtype, device=state.z.device)
    p0 = xi @ Linv
    start = _Point(state.z, p0, state.grad, state.logp, p0 @ M)
    H0 = integ.hamiltonian(start)
    rows = torch.ones(C, dtype=torch.bool, device=state.z.device)
    eps = float(step_size)
    direction = 0
    for _ in range(int(max_iter)):
        pt = integ.leapfrog(start, torch.full((C,), eps, dtype=state.z.dtype, device=state.z.device), rows)
        acc = float(torch.exp(torch.clamp(H0 - integ.hamiltonian(pt), max=0.0)).mean())
        up = acc > target
        if direction == 0:
            direction = 1 if up else -1
        elif (direction == 1) != up:
            break
        eps = eps * 2.0 if direction == 1 else eps / 2.0
        if not (1e-12 < eps < 1e7):
            break
    return eps, (integ.n_calls, integ.n_rows)


# ---------------------------------------------------------------------------- the kernel for the driver
class NUTSKernel:
    """NUTS as a :class:`.driver.HamiltonianKernel`: reads ``max_tree_depth`` and ``max_energy_error``
    from the driver's settings.

    Parameters
    ----------
    bounds : (lower (d,), upper (d,)) tensors, optional
        A box the target lives in, off whose walls the trajectories reflect; None: all of R^d.
    """

    state_type = NUTSState

    def __init__(self, bounds=None):
        if bounds is not None:
            lower, upper = (torch.as_tensor(b) for b in bounds)
            if lower.shape != upper.shape or lower.ndim != 1 or not bool((lower < upper).all()):
                raise ValueError("bounds: expected (lower (d,), upper (d,)) with lower < upper everywhere")
            bounds = (lower, upper)
        self.bounds = bounds
        self.name = "nuts" if bounds is None else "nuts-reflective"

    def _bounds(self, z):
        return None if self.bounds is None else tuple(b.to(z.dtype).to(z.device) for b in self.bounds)

    def init(self, logp_and_grad, z):
        b = self._bounds(z)
        if b is not None and not bool(((z >= b[0]) & (z <= b[1])).all()):
            raise ValueError("z: starting positions outside the bounds")
        return nuts_init(logp_and_grad, z)

    def step(self, logp_and_grad, state, step_size, metric, generator, settings):
        return nuts_step(logp_and_grad, state, step_size, metric, generator, max_tree_depth=settings.max_tree_depth,
                         max_energy_error=settings.max_energy_error, bounds=self._bounds(state.z))

    def find_step_size(self, logp_and_grad, state, step_size, metric, generator, settings):
        return find_reasonable_step_size(logp_and_grad, state, step_size, metric, generator,
                                         bounds=self._bounds(state.z))


#: The driver's settings under the name a NUTS user looks for.
NUTSSettings = HamiltonianSettings


def run_nuts(logp_and_grad, z0, *, bounds=None, **kwargs):
    """Warm up and sample with NUTS until converged: :func:`.driver.run_hamiltonian` with :class:`NUTSKernel`.

    Parameters
    ----------
    logp_and_grad : callable
        ``z (B, d) -> (logp (B,), grad (B, d))``, the log target [nats] in the unconstrained space.
    z0 : torch.Tensor (C, d) or (d,)
        Starting positions.
    bounds : (lower (d,), upper (d,)) tensors, optional
        A box the target lives in (e.g. uniform priors, sampled in their own coordinates): the
        trajectories reflect off its walls, so no bijection (and no Jacobian) is needed.
    **kwargs
        ``settings`` (:class:`NUTSSettings`), ``n_chains``, ``mass_matrix``, ``transform``, ``names``,
        ``seed``, ``checkpoint_dir``, ``checkpoint_every``, ``resume``, ``progress``, ``callback``: as in
        :func:`.driver.run_hamiltonian`.

    Returns
    -------
    HamiltonianResult
    """
    return run_hamiltonian(NUTSKernel(bounds), logp_and_grad, z0, **kwargs)
