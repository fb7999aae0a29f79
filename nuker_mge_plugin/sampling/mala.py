"""The tuning schedule of the seed paper's appendix C around the batched MALA kernel.

The kernel (Metropolis-adjusted Langevin with a mass matrix, Besag 1994; ``init_state``/``step`` on
a :class:`MALAState`) is :class:`MALA` of :mod:`.mala_kernel`; the result is :class:`MALAResult`
of :mod:`.mala_result`; both are re-exported here, with everything else of the sampler.

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

A proposal with a non-finite ``logp``, ``grad`` or position is rejected and counted per stage (as
a "divergence").

Reproducibility: one ``torch.Generator`` seeded once per run on the device of the chains; each
step draws ``xi`` (C, d) then ``u`` (C,) from it, so one seed gives identical chains on one device
type. Checkpoints (every ``checkpoint_every`` steps) append one chunk file of the new steps and
atomically replace a small state file holding everything needed to continue (RNG state, chain
state, step size, mass matrix, stage and step counters, accumulators); ``resume=True`` continues
a killed run and gives bitwise the same chains as an uninterrupted run with the same seed. All
file I/O is the :class:`~.backend.ChainStore`'s.

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

Its length (~640 lines) is the appendix-C schedule (burn-in stages, step-size trials, draws) with
its checkpoint fingerprint, kept in one file so that the bitwise-resume contract is read in one
place.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple, Optional, Sequence

import numpy as np
import torch

from .backend import STATE_FILE, ChainStore
from .mala_kernel import MALA, TARGET_ACCEPT, MALAState, _check_step_size, optimal_step_size, value_and_grad
from .mala_result import MALAResult, _result_from_state

__all__ = ["TARGET_ACCEPT", "optimal_step_size", "value_and_grad", "MALAState", "MALA", "MALASchedule",
           "StepInfo", "MALAResult", "run_mala", "load_checkpoint_result"]

_FORMAT_VERSION = 2  # 2: burn-in moments for adapt_mass_matrix


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

    Attributes
    ----------
    global_step : int
        Steps done so far in the whole run.
    stage : str
        Stage name.
    step_in_stage : int
        Steps done in it.
    step_size : float
        The step size used.
    state : MALAState
        The chains after the step.
    """

    global_step: int
    stage: str
    step_in_stage: int
    step_size: float
    state: MALAState


# ====================================================================== stages and adaptation rules
class _Stage(NamedTuple):
    name: str          # burn_in_<i>, step_size_<j> or sample
    kind: str          # "burn_in", "step_size" or "sample"
    n_steps: int
    candidate: Optional[int]   # index into schedule.step_sizes (step-size stages only)


def _stages(schedule):
    """The run's stages, in order: burn-in, one per candidate step size, sampling."""
    out = [_Stage(f"burn_in_{i}", "burn_in", int(n), None) for i, n in enumerate(schedule.burn_in)]
    out += [_Stage(f"step_size_{j}", "step_size", int(schedule.step_size_steps), j)
            for j in range(len(schedule.step_sizes))]
    out.append(_Stage("sample", "sample", int(schedule.n_draws) * int(schedule.thin), None))
    return out


def _adapted_step_size(eps, mean_accept_prob, gain, target):
    """The burn-in rule after one step: ``eps * exp(gain * (mean accept prob - target))``."""
    return eps * math.exp(gain * (mean_accept_prob - target))


def _closest_to_target(trials, target):
    """The step size of the ``(step size, mean accept prob)`` trial whose acceptance is closest to ``target``."""
    return min(trials, key=lambda t: abs(t[1] - target))[0]


def _zero_moments(d, device):
    """[n, sum z (d,), sum z z^T (d, d)] of draws, float64: what :func:`_blend_sample_covariance` reads."""
    return [torch.zeros((), dtype=torch.float64, device=device), torch.zeros(d, dtype=torch.float64, device=device),
            torch.zeros((d, d), dtype=torch.float64, device=device)]


def _add_moments(moments, z):
    """Add the rows of ``z`` (C, d) to the moments of :func:`_zero_moments` (in place)."""
    zc = z.detach().to(torch.float64)
    moments[0] += z.shape[0]
    moments[1] += zc.sum(0)
    moments[2] += zc.T @ zc


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


# ====================================================================== one run
@dataclass
class _Counters:
    """A run's plain-Python progress and tuning (saved as is in the checkpoint)."""

    global_step: int = 0            # steps done in the whole run
    stage_idx: int = 0              # current stage
    step_in_stage: int = 0          # steps done in it
    eps: float = 0.0                # step size of the next step
    eps_base: Optional[float] = None  # the step the step-size candidates multiply
    chosen: Optional[float] = None  # step size of the sampling stage
    trials: list = field(default_factory=list)  # (step size, mean accept prob) per candidate
    n_grad_calls: int = 0           # as of the last checkpoint
    wall_time: float = 0.0          # seconds stepped before this session
    done: bool = False
    log_eps_sum: float = 0.0        # sum and count of log step sizes over the last burn-in stage's
    log_eps_n: int = 0              # second half (their mean is the adapted step)

    def adapted_base(self):
        """The step the last burn-in stage adapted to: the geometric mean of its second half, else ``eps``.

        Not the reset one: the Gaussian-optimal initial step can be 2-3x too long on a
        non-Gaussian posterior.
        """
        return math.exp(self.log_eps_sum / self.log_eps_n) if self.log_eps_n else self.eps


class _Run:
    """One :func:`run_mala` call: the chains, the counters, the adaptation and the per-stage totals.

    Everything but the kernel's callable, the store and the schedule is what :meth:`state_dict`
    saves and :meth:`resume` restores.
    """

    def __init__(self, kernel, store, schedule, *, fingerprint, eps0, mass_matrix_fn, dtype, device):
        self.kernel, self.store, self.schedule = kernel, store, schedule
        self.stages = _stages(schedule)
        self.n_burn = len(schedule.burn_in)
        self.fingerprint = fingerprint
        self.C, self.d = int(fingerprint["n_chains"]), int(fingerprint["dim"])
        self.eps0 = float(eps0)
        self.mass_matrix_fn = mass_matrix_fn
        self.dtype, self.device = dtype, device
        self.buffer = []   # per-step device tensors since the last chunk

    # ------------------------------------------------------------------ start / continue / save
    def begin(self, z0):
        """A fresh run from starting positions ``z0`` (C, d)."""
        k = self.kernel
        self.chains = k.init_state(z0.detach().clone())
        self.counters = _Counters(eps=self.eps0, n_grad_calls=k.n_grad_calls)
        self.M_hist = [("initial", _to_cpu(k.M))]
        i = int(torch.argmax(self.chains.logp))
        self.best_logp, self.best_z = self.chains.logp[i].clone(), self.chains.z[i].clone()
        # per stage [n accepted, sum accept prob, n non-finite], float64 on the device
        self.acc_tot = torch.zeros((len(self.stages), 3), dtype=torch.float64, device=self.device)
        self.moments = _zero_moments(self.d, self.device)

    def resume(self, saved):
        """Continue from a :meth:`state_dict` (as the store loaded it)."""
        k, dev = self.kernel, self.device
        self.counters = _Counters(**{f.name: saved[f.name] for f in fields(_Counters)})
        self.counters.trials = [tuple(t) for t in self.counters.trials]
        k.set_mass_matrix(saved["M"].to(dev), self.d, self.dtype, dev)
        k.set_rng_state(saved["rng_state"], dev)
        k.n_grad_calls = self.counters.n_grad_calls
        self.chains = MALAState(z=saved["z"].to(dev), logp=saved["logp"].to(dev), grad=saved["grad"].to(dev))
        self.M_hist = list(zip(saved["M_hist_names"], saved["M_hist"]))
        self.best_logp, self.best_z = saved["best_logp"].to(dev), saved["best_z"].to(dev)
        self.acc_tot = saved["acc_tot"].to(dev)
        self.moments = [m.to(dev) for m in saved["moments"]]

    def state_dict(self, wall_time):
        """Everything needed to continue (or to build the result), on the CPU, ``torch.load``-safe."""
        k = self.kernel
        return dict(asdict(self.counters), wall_time=wall_time, n_grad_calls=k.n_grad_calls, seed=k.seed,
                    fingerprint=self.fingerprint, stage_names=[s.name for s in self.stages],
                    rng_state=k.rng_state(), z=_to_cpu(self.chains.z), logp=_to_cpu(self.chains.logp),
                    grad=_to_cpu(self.chains.grad), M=_to_cpu(k.M), M_hist_names=[n for n, _ in self.M_hist],
                    M_hist=[m for _, m in self.M_hist], best_logp=_to_cpu(self.best_logp),
                    best_z=_to_cpu(self.best_z), acc_tot=_to_cpu(self.acc_tot),
                    moments=[_to_cpu(m) for m in self.moments], trials=[list(t) for t in self.counters.trials])

    def checkpoint(self, wall_time):
        """Store the steps since the last checkpoint as one chunk, then the state (in that order)."""
        if self.buffer:
            z, logp, accepted, accept_prob, nonfinite, eps, stage = zip(*self.buffer)
            self.buffer = []
            self.store.append(dict(z=torch.stack(z).cpu().numpy(), logp=torch.stack(logp).cpu().numpy(),
                                   accepted=torch.stack(accepted).cpu().numpy(),
                                   accept_prob=torch.stack(accept_prob).cpu().numpy(),
                                   nonfinite=torch.stack(nonfinite).cpu().numpy(),
                                   step_size=np.array(eps, dtype=np.float64), stage=np.array(stage, dtype=np.int32)))
        self.counters.n_grad_calls = self.kernel.n_grad_calls
        if self.store.directory is not None:   # in memory there is no state to save (nor host syncs)
            self.store.write_state(self.state_dict(wall_time))

    # ------------------------------------------------------------------ one step
    def step(self, stage):
        """One kernel step of all chains in the current ``stage``, with its start, bookkeeping, adaptation and end.

        Returns
        -------
        float
            The step size the step used.
        """
        c = self.counters
        if c.step_in_stage == 0:
            self._start_stage(stage)
        eps = c.eps
        self.chains = self.kernel.step(self.chains, eps)
        self._record(eps)
        if stage.kind == "burn_in":
            self._adapt(stage, eps)
        c.step_in_stage += 1
        c.global_step += 1
        if c.step_in_stage == stage.n_steps:
            self._end_stage(stage)
        return eps

    def _start_stage(self, stage):
        """Set the stage's step size. Idempotent (a resume may redo it): it reads saved state only."""
        c, sch = self.counters, self.schedule
        if c.stage_idx == 0:
            self.moments = _zero_moments(self.d, self.device)
        if stage.kind == "step_size":
            if c.eps_base is None:
                c.eps_base = c.adapted_base()
            e = sch.step_sizes[stage.candidate]
            c.eps = float(c.eps_base * e) if sch.relative_step_sizes else float(e)
        elif stage.kind == "sample":
            if c.chosen is None:
                c.chosen = c.eps
            c.eps = c.chosen

    def _record(self, eps):
        """Per-step bookkeeping: the stage's totals, the best point so far, the chunk buffer."""
        s, si = self.chains, self.counters.stage_idx
        self.acc_tot[si, 0] += s.accepted.sum()
        self.acc_tot[si, 1] += s.accept_prob.sum()
        self.acc_tot[si, 2] += s.nonfinite.sum()
        i = torch.argmax(s.logp)
        better = s.logp[i] > self.best_logp
        self.best_logp = torch.where(better, s.logp[i], self.best_logp)
        self.best_z = torch.where(better, s.z[i], self.best_z)
        self.buffer.append((s.z, s.logp, s.accepted, s.accept_prob, s.nonfinite, eps, si))

    def _adapt(self, stage, eps):
        """Burn-in adaptation after a step: the draws' moments and the step-size rule."""
        c, sch = self.counters, self.schedule
        second_half = 2 * c.step_in_stage >= stage.n_steps
        if sch.adapt_mass_matrix and (c.stage_idx > 0 or second_half):
            # all burn-in draws from the first stage's second half on (the first half leaves the
            # start): on a weakly constrained posterior a stage's chains hold only a few
            # independent draws, too few for a d x d covariance
            _add_moments(self.moments, self.chains.z)
        if sch.adapt_burn_in and sch.adapt_gain > 0:
            if c.stage_idx == self.n_burn - 1 and second_half:
                c.log_eps_sum += math.log(eps)
                c.log_eps_n += 1
            c.eps = _adapted_step_size(eps, float(self.chains.accept_prob.mean()), sch.adapt_gain,
                                       sch.target_accept)

    def _end_stage(self, stage):
        """A burn-in stage updates the mass matrix; the last step-size candidate picks the step."""
        c, sch = self.counters, self.schedule
        if stage.kind == "burn_in" and (self.mass_matrix_fn is not None or sch.adapt_mass_matrix):
            self._update_mass_matrix(stage.name)
        elif stage.kind == "step_size":
            c.trials.append((c.eps, float(self.acc_tot[c.stage_idx, 1]) / (stage.n_steps * self.C)))
            if stage.candidate == len(sch.step_sizes) - 1:
                c.chosen = _closest_to_target(c.trials, sch.target_accept)
        c.stage_idx += 1
        c.step_in_stage = 0
        c.done = c.stage_idx == len(self.stages)

    def _update_mass_matrix(self, after):
        """``mass_matrix_fn`` at the best point (or the current matrix), blended with the draws if asked."""
        k = self.kernel
        new = k.M if self.mass_matrix_fn is None else self.mass_matrix_fn(self.best_z.detach().clone())
        if self.schedule.adapt_mass_matrix:
            new = _blend_sample_covariance(new, self.moments, self.d, self.dtype, self.device)
        try:
            k.set_mass_matrix(new)
        except ValueError as exc:
            raise ValueError(f"mass_matrix_fn after {after}: {exc}") from None
        self.M_hist.append((after, _to_cpu(k.M)))
        if self.schedule.reset_step_size:
            self.counters.eps = self.eps0

    def postfix(self, stage_idx, done_in_stage, eps):
        """The progress bar's numbers: acceptance of the stage so far, mean log target, step size."""
        return dict(acc=f"{float(self.acc_tot[stage_idx, 0]) / (done_in_stage * self.C):.3f}",
                    logp=f"{float(self.chains.logp.mean()):.4g}", eps=f"{eps:.3g}")


# ====================================================================== the driver
def _as_schedule(schedule):
    """A validated :class:`MALASchedule` from None (the default), a mapping or a schedule."""
    schedule = MALASchedule() if schedule is None else schedule
    if isinstance(schedule, Mapping):
        schedule = MALASchedule.from_mapping(schedule)
    if not isinstance(schedule, MALASchedule):
        raise TypeError(f"schedule: expected a MALASchedule, got {type(schedule).__name__}")
    schedule.validate()
    return schedule


def _is_count(v, minimum):
    return not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= minimum


def _chain_starts(z0, n_chains):
    """Starting positions as a floating (C, d) tensor: ``z0`` (C, d), or (d,) repeated ``n_chains`` times."""
    z0 = torch.as_tensor(z0) if not isinstance(z0, torch.Tensor) else z0
    if not z0.is_floating_point():
        z0 = z0.to(torch.float64)
    if z0.ndim == 1:
        if n_chains is None:
            raise ValueError("n_chains is needed when z0 has shape (d,)")
        if not _is_count(n_chains, 1):
            raise ValueError(f"n_chains must be an integer >= 1, got {n_chains!r}")
        z0 = z0[None].expand(int(n_chains), -1).clone()
    elif z0.ndim == 2:
        if n_chains is not None and n_chains != z0.shape[0]:
            raise ValueError(f"n_chains = {n_chains} but z0 has {z0.shape[0]} rows")
    else:
        raise ValueError(f"z0: expected shape (C, d) or (d,), got {tuple(z0.shape)}")
    if z0.shape[0] < 1 or z0.shape[1] < 1:
        raise ValueError(f"z0: need at least one chain and one dimension, got {tuple(z0.shape)}")
    return z0


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
        :func:`~nuker_mge_plugin.inference.fisher.empirical_fisher`). None: keep ``mass_matrix``.
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
    schedule = _as_schedule(schedule)
    if not _is_count(checkpoint_every, 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every!r}")
    if seed is not None and not _is_count(seed, 0):
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if mass_matrix_fn is not None and not callable(mass_matrix_fn):
        raise TypeError("mass_matrix_fn must be callable: z_best (d,) -> (d, d) covariance")
    if transform is not None and not callable(transform):
        raise TypeError("transform must be callable: z (N, d) -> theta (N, d')")
    if step_size is not None:
        step_size = _check_step_size(step_size)
    z0 = _chain_starts(z0, n_chains)
    C, d = z0.shape
    dtype, device = z0.dtype, z0.device
    eps0 = optimal_step_size(d) if step_size is None else step_size
    fingerprint = dict(n_chains=C, dim=d, dtype=str(dtype), schedule=schedule.as_dict(),
                       checkpoint_every=int(checkpoint_every), eps0=float(eps0),
                       has_mass_matrix_fn=mass_matrix_fn is not None, version=_FORMAT_VERSION)

    store = ChainStore(checkpoint_dir)
    saved = store.open(fingerprint, resume=resume, seed=seed)
    stages = _stages(schedule)

    def as_result(state):
        return _result_from_state(state, store.concatenated(), [(s.name, s.n_steps) for s in stages],
                                  transform=transform, names=names, dtype=dtype, device=device)
    if saved is not None and saved["done"]:
        return as_result(saved)   # a finished run is only reloaded

    kernel = MALA(logp_and_grad, mass_matrix=mass_matrix, step_size=eps0,
                  generator=(saved["seed"] if saved is not None else seed))
    run = _Run(kernel, store, schedule, fingerprint=fingerprint, eps0=eps0, mass_matrix_fn=mass_matrix_fn,
               dtype=dtype, device=device)
    if saved is None:
        run.begin(z0)
    else:
        run.resume(saved)
    c = run.counters

    from tqdm.auto import tqdm  # imported here: only the driver needs it

    t0 = time.perf_counter()
    elapsed = lambda: c.wall_time + time.perf_counter() - t0  # noqa: E731  (summed over sessions)
    shown = None
    with tqdm(total=sum(s.n_steps for s in stages), initial=c.global_step, disable=not progress,
              dynamic_ncols=True, leave=True) as bar:
        while not c.done:
            si = c.stage_idx
            stage = stages[si]
            if stage.name != shown:
                bar.set_description(stage.name)
                shown = stage.name
            eps = run.step(stage)
            bar.update(1)
            done_in_stage = c.step_in_stage or stage.n_steps
            if progress and (c.global_step % 10 == 0 or c.done):
                # Host syncs only every 10 steps, and none at all without a bar.
                bar.set_postfix(**run.postfix(si, done_in_stage, eps))
            if c.global_step % checkpoint_every == 0 or c.done:
                run.checkpoint(elapsed())
            if callback is not None:
                callback(StepInfo(c.global_step, stage.name, done_in_stage, eps, run.chains))
    return as_result(run.state_dict(elapsed()))


def load_checkpoint_result(checkpoint_dir, *, transform=None, names=None):
    """Rebuild a :class:`MALAResult` from a finished run's checkpoint directory without the target.

    Built from the saved state and the chunks alone (no kernel is made).

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
    if not os.path.isdir(checkpoint_dir):   # ChainStore would create the folder; a reload must not
        raise ValueError(f"checkpoint_dir {checkpoint_dir!r} holds no {STATE_FILE}")
    store = ChainStore(checkpoint_dir)
    saved = store.load_state()
    if not saved["done"]:
        raise ValueError(f"the run in {checkpoint_dir!r} is unfinished ({saved['global_step']} steps); "
                         "continue it with run_mala(..., resume=True)")
    stages = _stages(MALASchedule.from_mapping(saved["fingerprint"]["schedule"]))
    return _result_from_state(saved, store.concatenated(), [(s.name, s.n_steps) for s in stages],
                              transform=transform, names=names, dtype=saved["z"].dtype, device=torch.device("cpu"))
