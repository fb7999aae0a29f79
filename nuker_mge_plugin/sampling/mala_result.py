"""What :func:`~.mala.run_mala` returns, and how it is built from a run's saved state and draws.

A :class:`MALAResult` is made from two things only, the same whether the run has just finished or
is reloaded from its checkpoint directory (:func:`~.mala.load_checkpoint_result`, no target
needed): the state dict the run keeps in its :class:`~.backend.ChainStore` (``state.pt``) and the
per-step arrays of its chunks, joined along the step axis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .draws import NamedDraws, chains_first as _chains_first, constrain_draws as _constrain

__all__ = ["MALAResult"]

@dataclass
class MALAResult(NamedDraws):
    """Output of :func:`~.mala.run_mala` (numpy arrays on the host).

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
        """Per-draw statistics, each (C, N), in the form :mod:`~nuker_mge_plugin.pipeline.results` takes.

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
        :mod:`~nuker_mge_plugin.pipeline.results` takes for its trace figure. ``names`` as in :meth:`draws`.
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


def _numpy(x):
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _result_from_state(saved, steps, stages, *, transform, names, dtype, device):
    """Build the :class:`MALAResult` of a finished run.

    Parameters
    ----------
    saved : dict
        The run's state, as :func:`~.mala.run_mala` checkpoints it: ``fingerprint`` (``n_chains``,
        ``schedule``), ``acc_tot`` (stages, 3) [accepted, sum of accept probs, non-finite], ``chosen``,
        ``trials``, ``M``, ``M_hist_names``, ``M_hist``, ``best_z``, ``best_logp``, ``wall_time``,
        ``n_grad_calls``, ``seed``.
    steps : dict of ndarray
        Every step's arrays, leading axis = step (``ChainStore.concatenated``): ``z``, ``logp``,
        ``accepted``, ``accept_prob``, ``nonfinite``, ``step_size``, ``stage``.
    stages : sequence of (name, n_steps)
        The run's stages in order; the last one is the sampling stage.
    transform, names
        As in :func:`~.mala.run_mala`; ``transform`` gets tensors of ``dtype`` on ``device``.

    Returns
    -------
    MALAResult
    """
    C = int(saved["fingerprint"]["n_chains"])
    schedule = dict(saved["fingerprint"]["schedule"])
    stage_names = [name for name, _ in stages]
    thin = int(schedule["thin"])
    is_sample = steps["stage"] == len(stages) - 1
    take = np.nonzero(is_sample)[0][thin - 1::thin]
    zs = np.ascontiguousarray(steps["z"][take].transpose(1, 0, 2))
    zw = np.ascontiguousarray(steps["z"][~is_sample].transpose(1, 0, 2))
    acc = _numpy(saved["acc_tot"])
    counts = [n * C for _, n in stages]
    n_grad_calls = int(saved["n_grad_calls"])
    return MALAResult(
        samples=_constrain(zs, transform, dtype, device), samples_unconstrained=zs,
        logp=_chains_first(steps["logp"][take]), accepted=_chains_first(steps["accepted"][take]),
        accept_prob=_chains_first(steps["accept_prob"][take]), nonfinite=_chains_first(steps["nonfinite"][take]),
        trace_logp=_chains_first(steps["logp"]), trace_accepted=_chains_first(steps["accepted"]),
        trace_accept_prob=_chains_first(steps["accept_prob"]), trace_nonfinite=_chains_first(steps["nonfinite"]),
        trace_stage=steps["stage"], trace_step_size=steps["step_size"],
        warmup_unconstrained=zw, warmup=_constrain(zw, transform, dtype, device),
        stage_names=stage_names,
        acceptance={n: float(acc[i, 0] / counts[i]) for i, n in enumerate(stage_names)},
        mean_accept_prob={n: float(acc[i, 1] / counts[i]) for i, n in enumerate(stage_names)},
        n_nonfinite={n: int(acc[i, 2]) for i, n in enumerate(stage_names)},
        step_size=float(saved["chosen"]), step_size_trials=[tuple(t) for t in saved["trials"]],
        mass_matrix=_numpy(saved["M"]),
        mass_matrix_history=[(n, _numpy(m)) for n, m in zip(saved["M_hist_names"], saved["M_hist"])],
        best_z=_numpy(saved["best_z"]), best_logp=float(saved["best_logp"]), wall_time=float(saved["wall_time"]),
        n_grad_calls=n_grad_calls, n_grad_evals=n_grad_calls * C, seed=saved["seed"],
        names=None if names is None else tuple(names), schedule=schedule)
