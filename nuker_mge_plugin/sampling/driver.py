"""The driver loop of a Hamiltonian sampler: warm-up, sampling until converged, checkpoints.

A kernel (:class:`HamiltonianKernel`: NUTS today) knows how to make one transition of ``C`` chains
for a step size and a metric; this loop does everything around it, the same for any kernel:

1. **Warm-up** (Stan's windowed adaptation, :mod:`.adaptation`): the first metric is the one the
   caller gives (the Fisher covariance at the MAP for a fit), the step size is found by Stan's
   doubling heuristic and adapted by dual averaging towards ``target_accept`` on the mean
   acceptance statistic of all chains; at the end of each slow window the dense metric becomes the
   regularised covariance of that window's draws (all chains pooled), and the step size is found
   and adapted afresh.
2. **Sampling in blocks**: ``draws`` transitions, then, while ``until_converged`` and the chains
   have not converged (R-hat <= ``rhat_max``, bulk and tail ESS >= ``ess_min`` for every
   coordinate; :func:`.diagnostics.convergence`), ``block_draws`` more, until ``max_draws`` or
   ``max_wall_s`` is spent. The result says why it stopped (``stopped``) and whether it converged.
3. **Checkpoints** (:class:`.backend.ChainStore`): every ``checkpoint_every`` transitions and at
   every block end, the new rows and the whole resumable state (RNG, chains, adaptation,
   counters). ``resume=True`` continues a killed run bitwise; a finished run that stopped short of
   convergence continues sampling when called again with a larger ``max_draws`` or ``max_wall_s``.
"""

from __future__ import annotations

import math
import numbers
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import numpy as np
import torch

from .._progress import progress_bar
from . import adaptation as ad
from .backend import ChainStore
from .diagnostics import ESS_MIN, RHAT_MAX, convergence
from .draws import NamedDraws, chains_first, constrain_draws
from .metric import mass_factors

__all__ = ["HamiltonianSettings", "HamiltonianKernel", "HamiltonianResult", "run_hamiltonian"]

_FORMAT_VERSION = 1
_WARMUP, _SAMPLE = 0, 1


@dataclass(frozen=True)
class HamiltonianSettings:
    """How long to warm up and sample, and what to aim at.

    Attributes
    ----------
    warmup : int
        Warm-up transitions per chain (>= 0; Stan's windows need >= 20 to adapt the metric).
    draws : int
        Draws per chain of the first sampling block (>= 1).
    target_accept : float
        Mean acceptance statistic the step size is adapted to, in (0, 1) (0.8: Stan's default;
        higher for posteriors with tight curvature, at the price of longer trajectories).
    max_tree_depth : int
        Most trajectory doublings of a NUTS transition (1..15; at most ``2^depth - 1`` leapfrog steps).
    max_energy_error : float
        Energy error [nats] above which a trajectory diverges (Stan: 1000).
    until_converged : bool
        Keep sampling in blocks of ``block_draws`` until the chains converge.
    block_draws : int
        Draws per chain added per block (>= 1).
    max_draws : int
        Most draws per chain in all (>= ``draws``).
    max_wall_s : float or None
        Seconds of sampling (warm-up included) after which no new block starts; None: no limit.
    rhat_max, ess_min : float
        Convergence thresholds (default R-hat <= 1.01, bulk and tail ESS >= 400).
    adapt_mass_matrix : bool
        Adapt the dense metric in Stan's slow windows (else keep the one given).
    init_buffer, term_buffer, base_window : int
        Stan's warm-up windows (:func:`.adaptation.warmup_windows`).
    step_size : float or None
        Initial step size; None finds one from the metric (Stan's heuristic).
    """

    warmup: int = 500
    draws: int = 1000
    target_accept: float = 0.8
    max_tree_depth: int = 10
    max_energy_error: float = 1000.0
    until_converged: bool = True
    block_draws: int = 250
    max_draws: int = 10000
    max_wall_s: Optional[float] = None
    rhat_max: float = RHAT_MAX
    ess_min: float = ESS_MIN
    adapt_mass_matrix: bool = True
    init_buffer: int = 75
    term_buffer: int = 50
    base_window: int = 25
    step_size: Optional[float] = None

    #: fields that only decide when to stop: a resumed run may change them
    RUN_LENGTH = ("draws", "until_converged", "block_draws", "max_draws", "max_wall_s", "rhat_max", "ess_min")

    def validate(self):
        """Raise ``ValueError`` naming the first bad field and its valid range."""
        def count(name, lo, hi=None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"in {lo}..{hi}"
                raise ValueError(f"settings.{name} must be an integer {rng}, got {v!r}")
        for name in ("warmup", "init_buffer", "term_buffer"):
            count(name, 0)
        for name in ("draws", "block_draws", "base_window"):
            count(name, 1)
        count("max_tree_depth", 1, 15)
        count("max_draws", self.draws)
        if not 0 < self.target_accept < 1:
            raise ValueError(f"settings.target_accept must be in (0, 1), got {self.target_accept!r}")
        if not self.max_energy_error > 0:
            raise ValueError(f"settings.max_energy_error must be > 0 [nats], got {self.max_energy_error!r}")
        if self.max_wall_s is not None and not self.max_wall_s > 0:
            raise ValueError(f"settings.max_wall_s must be > 0 [s] or None, got {self.max_wall_s!r}")
        if not self.rhat_max > 1:
            raise ValueError(f"settings.rhat_max must be > 1, got {self.rhat_max!r}")
        if not self.ess_min > 0:
            raise ValueError(f"settings.ess_min must be > 0, got {self.ess_min!r}")
        if self.step_size is not None and not (self.step_size > 0 and math.isfinite(self.step_size)):
            raise ValueError(f"settings.step_size must be a finite number > 0 or None, got {self.step_size!r}")
        return self

    def as_dict(self):
        """Plain-Python dict, for checkpoints and records."""
        return {k: v for k, v in asdict(self).items()}

    @classmethod
    def from_mapping(cls, mapping):
        """Build from a mapping; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        bad = sorted(set(mapping) - known)
        if bad:
            raise ValueError(f"settings: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        return cls(**dict(mapping)).validate()


class HamiltonianKernel:
    """What the driver needs of a kernel: ``name``, ``init(logp_and_grad, z) -> state``,
    ``step(logp_and_grad, state, step_size, metric, generator, settings) -> (state, info, (calls, rows))``
    and ``find_step_size(logp_and_grad, state, step_size, metric, generator, settings) -> (eps, (calls, rows))``.
    ``state`` has ``z``, ``logp``, ``grad``; ``info`` has (C,) ``accept_stat``, ``tree_depth``,
    ``n_leapfrog``, ``diverging``, ``energy``."""

    name = "hamiltonian"


@dataclass
class HamiltonianResult(NamedDraws):
    """Output of :func:`run_hamiltonian` (numpy arrays on the host).

    Attributes
    ----------
    samples : ndarray (C, N, d')
        Draws in the constrained space (``transform`` applied).
    samples_unconstrained : ndarray (C, N, d)
        Draws in the sampler's space.
    logp : ndarray (C, N)
        Log target at the draws [nats].
    accept_stat, energy : ndarray (C, N) float
        Mean acceptance probability of each transition's trajectory; Hamiltonian at the draw [nats].
    tree_depth, n_leapfrog : ndarray (C, N) int
        Doublings and leapfrog steps of each transition.
    diverging : ndarray (C, N) bool
        Divergent transitions.
    warmup_unconstrained, warmup : ndarray (C, W, d), (C, W, d')
        Warm-up positions; ``warmup_logp`` (C, W).
    step_size : float
        Step size of the sampling phase.
    mass_matrix : ndarray (d, d)
        Metric (inverse mass, covariance sense) of the sampling phase [z^2].
    n_grad_calls, n_grad_evals : int
        Batched model calls, and single-chain gradient evaluations in them (the cost unit).
    wall_time : float
        Seconds spent (summed over resumed calls).
    stopped : str
        Why sampling stopped: "converged", "draws" (fixed length), "max_draws" or "max_wall_s".
    convergence : dict
        :func:`.diagnostics.convergence` of the samples (on the constrained draws).
    kind, seed, names, settings
        The kernel's name, the run's seed, column names of ``samples``, the settings used.
    """

    samples: np.ndarray
    samples_unconstrained: np.ndarray
    logp: np.ndarray
    accept_stat: np.ndarray
    energy: np.ndarray
    tree_depth: np.ndarray
    n_leapfrog: np.ndarray
    diverging: np.ndarray
    warmup_unconstrained: np.ndarray
    warmup: np.ndarray
    warmup_logp: np.ndarray
    step_size: float
    mass_matrix: np.ndarray
    n_grad_calls: int
    n_grad_evals: int
    wall_time: float
    stopped: str
    convergence: dict
    kind: str
    seed: Optional[int]
    names: Optional[tuple] = None
    settings: dict = field(default_factory=dict)

    @property
    def converged(self):
        """Whether every coordinate met the convergence thresholds."""
        return bool(self.convergence.get("converged", False))

    @property
    def divergences_per_chain(self):
        """Divergent sampling transitions of each chain (list of C ints)."""
        return [int(n) for n in self.diverging.sum(axis=1)]

    @property
    def n_divergent(self):
        """Divergent sampling transitions, all chains."""
        return int(self.diverging.sum())

    @property
    def n_nonfinite_total(self):
        """Divergences (a non-finite density counts as one): the count MALA reports as rejected non-finite."""
        return self.n_divergent

    def sample_stats(self):
        """Per-draw statistics, each (C, N): ``logp`` [nats], ``step_size``, ``acceptance_rate`` (the
        trajectory's mean acceptance statistic), ``diverging``, ``tree_depth``, ``n_leapfrog``,
        ``energy`` [nats] (ArviZ's names)."""
        return {"logp": self.logp, "step_size": np.full(self.logp.shape, self.step_size),
                "acceptance_rate": self.accept_stat, "diverging": self.diverging, "tree_depth": self.tree_depth,
                "n_leapfrog": self.n_leapfrog, "energy": self.energy}

    def traces(self, names=None):
        """``{"warmup": {name: (C, W), "logp": ...}, "sample": {name: (C, N), "logp": ...}}`` (constrained)."""
        names = self._names(names)
        warm = {n: np.ascontiguousarray(self.warmup[..., j]) for j, n in enumerate(names)}
        warm["logp"] = self.warmup_logp
        return {"warmup": warm, "sample": dict(self.draws(names), logp=self.logp)}

    def energy_bfmi(self):
        """Energy Bayesian fraction of missing information per chain (C,) (Betancourt 2016); < 0.3 is poor."""
        e = self.energy
        de = np.diff(e, axis=1)
        return (de ** 2).mean(axis=1) / e.var(axis=1)


# ---------------------------------------------------------------------------- the loop
def _check_inputs(z0, n_chains, seed, checkpoint_every, transform):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, numbers.Integral) \
            or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if transform is not None and not callable(transform):
        raise TypeError("transform must be callable: z (N, d) -> theta (N, d')")
    z0 = torch.as_tensor(z0) if not isinstance(z0, torch.Tensor) else z0
    if not z0.is_floating_point():
        z0 = z0.to(torch.float64)
    if z0.ndim == 1:
        if isinstance(n_chains, bool) or not isinstance(n_chains, numbers.Integral) or n_chains < 1:
            raise ValueError(f"n_chains must be an integer >= 1 when z0 has shape (d,), got {n_chains!r}")
        z0 = z0[None].expand(int(n_chains), -1).clone()
    elif z0.ndim != 2:
        raise ValueError(f"z0: expected shape (C, d) or (d,), got {tuple(z0.shape)}")
    elif n_chains is not None and n_chains != z0.shape[0]:
        raise ValueError(f"n_chains = {n_chains} but z0 has {z0.shape[0]} rows")
    if z0.shape[0] < 1 or z0.shape[1] < 1:
        raise ValueError(f"z0: need at least one chain and one dimension, got {tuple(z0.shape)}")
    if not bool(torch.isfinite(z0).all()):
        raise ValueError("z0: starting positions have non-finite entries")
    return z0.detach()


class _Run:
    """The mutable bookkeeping of one run: what a checkpoint saves, and how it is restored."""

    SCALARS = ("iteration", "planned", "eps", "window", "n_grad_calls", "n_grad_evals", "wall_time", "stopped")

    def __init__(self, state, metric, gen, da, welford, **scalars):
        self.state, self.metric, self.gen, self.da, self.welford = state, metric, gen, da, welford
        for k in self.SCALARS:
            setattr(self, k, scalars[k])

    def record(self, seed, fingerprint):
        cpu = lambda t: t.detach().cpu().clone()  # noqa: E731
        return dict({k: getattr(self, k) for k in self.SCALARS}, seed=seed, fingerprint=fingerprint,
                    rng_state=self.gen.get_state(), z=cpu(self.state.z), logp=cpu(self.state.logp),
                    grad=cpu(self.state.grad), M=cpu(self.metric[0]), da=list(self.da),
                    welford_n=self.welford.n, welford_mean=cpu(self.welford.mean), welford_m2=cpu(self.welford.m2))


def run_hamiltonian(kernel, logp_and_grad, z0, *, settings=None, n_chains=None, mass_matrix=None, transform=None,
                    names=None, seed=None, checkpoint_dir=None, checkpoint_every=50, resume=False, progress=True,
                    callback=None):
    """Warm up and sample with ``kernel`` until converged (module docstring).

    Parameters
    ----------
    kernel : HamiltonianKernel
        E.g. :class:`.nuts.NUTSKernel`.
    logp_and_grad : callable
        ``z (B, d) -> (logp (B,), grad (B, d))``: log target [nats] in the unconstrained space and its
        gradient, for any batch of rows (chains must not interact).
    z0 : torch.Tensor (C, d) or (d,)
        Starting positions (dispersed, e.g. around the MAP); their dtype and device are the run's.
    settings : HamiltonianSettings or mapping, optional
    n_chains : int, optional
        Chains C when ``z0`` is (d,).
    mass_matrix : (d, d) or (d,) tensor, or object with ``.covariance``, optional
        First metric (inverse mass) [z^2], e.g. the Fisher covariance; default identity. Also the
        shrinkage target of the adapted metric.
    transform : callable, optional
        ``z (N, d) -> theta (N, d')``, e.g. ``ParameterSpace.constrain``: the draws' constrained values,
        on which convergence is judged.
    names : sequence of str, optional
        Column names of the constrained draws.
    seed : int, optional
        Seed of the run's generator (default random, recorded); on resume None takes the checkpoint's.
    checkpoint_dir : str or os.PathLike, optional
        Folder of the checkpoint; without it nothing is written.
    checkpoint_every : int
        Transitions between checkpoints.
    resume : bool
        Continue the run saved in ``checkpoint_dir`` (a new run if there is none).
    progress : bool
        A progress bar (phase, step size, mean tree depth, divergences).
    callback : callable, optional
        ``callback(iteration, phase, state, info)`` after each transition; an exception it raises
        stops the run (as a kill would; the last checkpoint survives).

    Returns
    -------
    HamiltonianResult
    """
    settings = HamiltonianSettings() if settings is None else settings
    if isinstance(settings, Mapping):
        settings = HamiltonianSettings.from_mapping(settings)
    settings.validate()
    z0 = _check_inputs(z0, n_chains, seed, checkpoint_every, transform)
    C, d = z0.shape
    dtype, device = z0.dtype, z0.device
    F0 = mass_factors(mass_matrix, d, dtype, device)[0]
    fingerprint = dict(kind=kernel.name, n_chains=C, dim=d, dtype=str(dtype), version=_FORMAT_VERSION,
                       checkpoint_every=int(checkpoint_every),
                       settings={k: v for k, v in settings.as_dict().items() if k not in settings.RUN_LENGTH},
                       mass_matrix=F0.detach().cpu().to(torch.float64).numpy().round(12).tolist(),
                       bounds=None if getattr(kernel, "bounds", None) is None else
                       [torch.as_tensor(b, dtype=torch.float64).tolist() for b in kernel.bounds])
    store = ChainStore(checkpoint_dir)
    ckpt = store.open(fingerprint, resume=resume, seed=seed)
    run_seed = int(ckpt["seed"]) if ckpt is not None else (secrets.randbits(63) if seed is None else int(seed))
    gen = torch.Generator(device=device)
    windows = ad.warmup_windows(settings.warmup, init_buffer=settings.init_buffer,
                                term_buffer=settings.term_buffer, base_window=settings.base_window) \
        if settings.adapt_mass_matrix else []

    if ckpt is None:
        gen.manual_seed(run_seed)
        state = kernel.init(logp_and_grad, z0)
        metric = mass_factors(F0, d, dtype, device)
        eps, cost = (settings.step_size, (0, 0)) if settings.step_size is not None else kernel.find_step_size(
            logp_and_grad, state, 1.0, metric, gen, settings)
        run = _Run(state, metric, gen, ad.dual_averaging_init(eps), ad.welford_init(d, device), iteration=0,
                   planned=settings.warmup + settings.draws, eps=eps, window=0, n_grad_calls=1 + cost[0],
                   n_grad_evals=C + cost[1], wall_time=0.0, stopped=None)
    else:
        gen.set_state(ckpt["rng_state"])
        state = kernel.state_type(ckpt["z"].to(device), ckpt["logp"].to(device), ckpt["grad"].to(device))
        run = _Run(state, mass_factors(ckpt["M"].to(device), d, dtype, device), gen,
                   ad.DualAveragingState(*ckpt["da"]),
                   ad.WelfordState(ckpt["welford_n"], ckpt["welford_mean"].to(device), ckpt["welford_m2"].to(device)),
                   **{k: ckpt[k] for k in _Run.SCALARS})
        if run.stopped not in (None, "converged"):   # a finished run asked to go further: continue sampling
            run.stopped = None

    rows = []

    def flush():
        if rows:
            store.append({k: np.stack([r[k] for r in rows]) for k in rows[0]})
            rows.clear()

    def checkpoint(wall):
        flush()
        run.wall_time = wall
        store.write_state(run.record(run_seed, fingerprint))

    def decide(wall):
        """At a block end: stop (and why) or plan another block."""
        n_draws = run.iteration - settings.warmup
        if not settings.until_converged:
            return "draws"
        report = _convergence(store, settings, transform, dtype, device)
        if report["converged"]:
            return "converged"
        if n_draws >= settings.max_draws:
            return "max_draws"
        if settings.max_wall_s is not None and wall + wall / max(run.iteration, 1) * settings.block_draws \
                > settings.max_wall_s:
            return "max_wall_s"
        run.planned += min(settings.block_draws, settings.max_draws - n_draws)
        return None

    t0, wall0 = time.perf_counter(), run.wall_time
    pbar = progress_bar(total=run.planned, initial=run.iteration, disable=not progress, dynamic_ncols=True, leave=True)
    n_div = 0
    try:
        while run.stopped is None:
            if run.iteration == run.planned and run.iteration >= settings.warmup + 1:
                wall = wall0 + time.perf_counter() - t0
                checkpoint(wall)
                run.stopped = decide(wall)
                if run.stopped is not None:
                    checkpoint(wall)
                    break
                pbar.total = run.planned
                pbar.refresh()
            it = run.iteration
            warm = it < settings.warmup
            eps = math.exp(run.da.log_step) if warm else run.eps
            run.state, info, cost = kernel.step(logp_and_grad, run.state, eps, run.metric, gen, settings)
            run.n_grad_calls += cost[0]
            run.n_grad_evals += cost[1]
            rows.append(dict(z=run.state.z.cpu().numpy(), logp=run.state.logp.cpu().numpy(),
                             accept_stat=info.accept_stat.cpu().numpy(), energy=info.energy.cpu().numpy(),
                             tree_depth=info.tree_depth.cpu().numpy().astype(np.int16),
                             n_leapfrog=info.n_leapfrog.cpu().numpy().astype(np.int32),
                             diverging=info.diverging.cpu().numpy(), step_size=np.float64(eps),
                             phase=np.int8(_WARMUP if warm else _SAMPLE)))
            if warm:
                _adapt(run, kernel, logp_and_grad, info, it, windows, F0, settings)
            run.iteration += 1
            n_div += int(info.diverging.sum())
            pbar.update(1)
            if progress and (run.iteration % 10 == 0):
                pbar.set_description("warm-up" if warm else "sampling")
                pbar.set_postfix(eps=f"{eps:.3g}", depth=f"{float(info.tree_depth.double().mean()):.1f}",
                                 acc=f"{float(info.accept_stat.mean()):.2f}", div=n_div)
            if run.iteration % checkpoint_every == 0:
                checkpoint(wall0 + time.perf_counter() - t0)
            if callback is not None:
                callback(run.iteration, "warmup" if warm else "sample", run.state, info)
    finally:
        pbar.close()
    return _assemble(store, run, kernel, settings, transform, names, run_seed, dtype, device)


def _adapt(run, kernel, logp_and_grad, info, it, windows, F0, settings):
    """Warm-up adaptation after transition ``it``: dual averaging, window moments, metric updates."""
    run.da = ad.dual_averaging_update(run.da, float(info.accept_stat.mean()), settings.target_accept)
    if run.window < len(windows):
        start, end = windows[run.window]
        if start <= it < end:
            run.welford = ad.welford_update(run.welford, run.state.z)
        if it + 1 == end:
            C, d = run.state.z.shape
            cov = ad.regularised_covariance(run.welford, F0.to(torch.float64))
            run.metric = mass_factors(cov.to(run.state.z.dtype), d, run.state.z.dtype, run.state.z.device)
            run.welford = ad.welford_init(d, run.state.z.device)
            run.window += 1
            eps, cost = kernel.find_step_size(logp_and_grad, run.state, math.exp(run.da.log_step), run.metric,
                                              run.gen, settings)
            run.n_grad_calls += cost[0]
            run.n_grad_evals += cost[1]
            run.da = ad.dual_averaging_init(eps)
    if it + 1 == settings.warmup:
        run.eps = ad.dual_averaging_final(run.da)


def _convergence(store, settings, transform, dtype, device):
    """:func:`.diagnostics.convergence` of the sampling draws stored so far."""
    cat = store.concatenated()
    is_s = cat["phase"] == _SAMPLE
    zs = np.ascontiguousarray(cat["z"][is_s].transpose(1, 0, 2))
    th = constrain_draws(zs, transform, dtype, device)
    return convergence({str(j): th[..., j] for j in range(th.shape[-1])}, rhat_max=settings.rhat_max,
                       ess_min=settings.ess_min)


def _assemble(store, run, kernel, settings, transform, names, seed, dtype, device):
    cat = store.concatenated()
    is_s = cat["phase"] == _SAMPLE
    T = chains_first
    zs, zw = T(cat["z"][is_s]), T(cat["z"][~is_s])
    theta = constrain_draws(zs, transform, dtype, device)
    names = None if names is None else tuple(names)
    keys = names if names is not None and len(names) == theta.shape[-1] else [str(j) for j in range(theta.shape[-1])]
    report = convergence({k: theta[..., j] for j, k in enumerate(keys)}, rhat_max=settings.rhat_max,
                         ess_min=settings.ess_min)
    return HamiltonianResult(
        samples=theta, samples_unconstrained=zs, logp=T(cat["logp"][is_s]), accept_stat=T(cat["accept_stat"][is_s]),
        energy=T(cat["energy"][is_s]), tree_depth=T(cat["tree_depth"][is_s]), n_leapfrog=T(cat["n_leapfrog"][is_s]),
        diverging=T(cat["diverging"][is_s]), warmup_unconstrained=zw,
        warmup=constrain_draws(zw, transform, dtype, device), warmup_logp=T(cat["logp"][~is_s]),
        step_size=float(run.eps),
        mass_matrix=run.metric[0].detach().cpu().numpy(), n_grad_calls=int(run.n_grad_calls),
        n_grad_evals=int(run.n_grad_evals), wall_time=float(run.wall_time), stopped=str(run.stopped),
        convergence=report, kind=kernel.name, seed=seed, names=names, settings=settings.as_dict())
