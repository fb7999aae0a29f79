"""docs/metrics.rst M7 on an analytic target: ESS per second of Fisher-preconditioned vs identity-mass MALA.

Target: a correlated Gaussian in ``d`` dimensions (default 15, like Table 1) with a random rotation
and covariance eigenvalues log-spaced over ``--cond`` (condition number). Both samplers run the
same appendix-C schedule and budget side by side in one process, seeded:

* ``fisher``: ``mass_matrix_fn`` = the empirical Fisher covariance (appendix C.1) of the whitened
  residuals ``r = U^T (z - mu)`` (``U U^T`` = precision) at the best point after each burn-in stage;
* ``identity``: identity mass matrix, step size adapted in burn-in and picked from the same
  relative grid (its best step for acceptance 0.574).

Reported per sampler: bulk and tail ESS (``arviz.ess``) of coordinate 0 (the role of log10 M_BH)
and of the slowest-mixing direction (the top principal axis, smallest ESS over the eigen-directions),
the tuned step size and acceptance, wall time, gradient evaluations; ESS per second and per
gradient evaluation, and the fisher / identity ratios. Absolute times are machine-dependent: quote
the ratios (docs/metrics.rst); wall times are the best of ``--repeats`` interleaved runs. The fisher
run's wall time includes its Fisher evaluations (the one-time torch.func warm-up is paid before
either run). With an ESS of order 10 (identity mass, large ``--cond``) and R-hat >> 1 the ratio is
an order of magnitude only.

    .venv/bin/python validation/mala_efficiency_gaussian.py [--dim 15] [--cond 1e4] [--chains 8]
        [--draws 2000] [--seed 0] [--threads 2] [--repeats 3]
"""

import argparse
import json
import math

import numpy as np
import torch

from nuker_mge_plugin.inference import MALASchedule, empirical_fisher, run_mala


def make_target(d, cond, seed):
    """(logp_and_grad, residual_fn, mu, Sigma, eigenvectors) of a rotated ill-conditioned Gaussian."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    ev = torch.logspace(0.0, math.log10(cond), d, dtype=torch.float64)
    Sig = (Q * ev) @ Q.T
    Sig = 0.5 * (Sig + Sig.T)
    P = (Q / ev) @ Q.T
    P = 0.5 * (P + P.T)
    U = torch.linalg.cholesky(P)
    mu = torch.randn(d, generator=g, dtype=torch.float64)

    def logp_and_grad(z):
        r = z - mu
        Pr = r @ P
        return -0.5 * (Pr * r).sum(-1), -Pr

    return logp_and_grad, (lambda z: (z - mu) @ U), mu, Sig, Q


def ess_summary(samples, Q):
    """Bulk/tail ESS of coordinate 0 and the minimum bulk ESS over the eigen-directions."""
    import arviz as az
    x0 = samples[..., 0]
    proj = samples @ Q.numpy()                       # (C, N, d) coordinates along the eigenvectors
    ess_dirs = np.array([float(az.ess(proj[..., j], method="bulk")) for j in range(proj.shape[-1])])
    return dict(ess_bulk_coord0=float(az.ess(x0, method="bulk")), ess_tail_coord0=float(az.ess(x0, method="tail")),
                ess_bulk_min_direction=float(ess_dirs.min()),
                rhat_coord0=float(az.rhat(x0)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=15)
    ap.add_argument("--cond", type=float, default=1e4)
    ap.add_argument("--chains", type=int, default=8)
    ap.add_argument("--draws", type=int, default=2000)
    ap.add_argument("--burn", type=int, default=300, help="steps per burn-in stage (2 stages)")
    ap.add_argument("--trial-steps", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved timing repeats (best of)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    lg, resid, mu, Sig, Q = make_target(a.dim, a.cond, a.seed)
    sched = MALASchedule(burn_in=(a.burn, a.burn), step_size_steps=a.trial_steps, n_draws=a.draws)
    # dispersed starts: the prior-like box N(mu, 3^2 I), not the posterior scale
    z0 = mu + 3.0 * torch.randn(a.chains, a.dim, generator=torch.Generator().manual_seed(a.seed + 1),
                                dtype=torch.float64)
    # One-time costs (torch.func tracing, allocator) out of the timed runs, paid by neither sampler.
    lg(z0)
    empirical_fisher(resid, mu)
    out = dict(metric="M7 analytic (Gaussian)", dim=a.dim, condition_number=a.cond, chains=a.chains,
               draws=a.draws, burn_in=list(sched.burn_in), torch_threads=torch.get_num_threads(), runs={})
    samplers = (("fisher", dict(mass_matrix_fn=lambda zb: empirical_fisher(resid, zb, ridge_frac=1e-6))),
                ("identity", {}))
    # Interleaved repeats, best wall time of each: the chains are identical (same seed), only the
    # shared machine's noise differs between repeats.
    results, walls = {}, {n: [] for n, _ in samplers}
    for _ in range(a.repeats):
        for name, kw in samplers:
            results[name] = run_mala(lg, z0, schedule=sched, seed=a.seed + 2, progress=False, **kw)
            walls[name].append(results[name].wall_time)
    out["repeats"] = a.repeats
    for name, _ in samplers:
        res = results[name]
        res.wall_time = min(walls[name])
        e = ess_summary(res.samples_unconstrained, Q)
        cov_err = float(np.abs(np.cov(res.samples_unconstrained.reshape(-1, a.dim).T) - Sig.numpy()).max()
                        / Sig.diagonal().max())
        out["runs"][name] = dict(
            **e, step_size=res.step_size, acceptance_sample=res.acceptance["sample"],
            mean_accept_prob_sample=res.mean_accept_prob["sample"], wall_time_s=res.wall_time,
            n_grad_evals=res.n_grad_evals, n_nonfinite=res.n_nonfinite_total,
            ess_coord0_per_s=e["ess_bulk_coord0"] / res.wall_time,
            ess_min_per_s=e["ess_bulk_min_direction"] / res.wall_time,
            ess_coord0_per_grad_eval=e["ess_bulk_coord0"] / res.n_grad_evals,
            ess_min_per_grad_eval=e["ess_bulk_min_direction"] / res.n_grad_evals,
            max_cov_error_rel=cov_err)
    f, i = out["runs"]["fisher"], out["runs"]["identity"]
    out["ratio_fisher_over_identity"] = {
        k: f[k] / i[k] if i[k] > 0 else math.inf
        for k in ("ess_coord0_per_s", "ess_min_per_s", "ess_coord0_per_grad_eval", "ess_min_per_grad_eval")}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
