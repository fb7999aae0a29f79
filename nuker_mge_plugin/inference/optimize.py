"""Maximum a posteriori: multi-start Adam, then L-BFGS on the best start, in the unconstrained space.

The log-posterior of a gas-dynamical fit is multi-modal in PA (a disc and its counter-rotating
twin), in inclination and in the Nuker shape, and it is flat far from the data: one start is not
enough. All starts run as one batch through the forward model (one call per Adam step), then the
best one is polished by L-BFGS with a strong-Wolfe line search.
"""

import math
import time

import torch
from tqdm.auto import tqdm

__all__ = ["find_map"]


def find_map(log_prob, z0, *, adam_steps=300, adam_lr=0.05, lbfgs_steps=100, progress=True, desc="MAP"):
    """Maximise a batched log-posterior from several starting points.

    Parameters
    ----------
    log_prob : callable
        ``z (S, d) -> (S,)`` log-posterior [nats] in the unconstrained space; differentiable.
    z0 : (S, d) tensor
        Starting points (e.g. prior draws), one per start.
    adam_steps, adam_lr : int, float
        Adam iterations for all starts at once, and its step size [unconstrained units].
    lbfgs_steps : int
        L-BFGS iterations on the best start (0 to skip).
    progress : bool
        Show a tqdm bar with the best log-posterior.

    Returns
    -------
    dict with ``z`` (d,) the best point, ``log_prob`` its value, ``z_starts`` (S, d) and
    ``log_prob_starts`` (S,) after Adam, ``n_evals`` (forward calls) and ``wall_time_s``.
    Starts whose log-posterior is not finite are frozen at their last finite point.
    """
    t0 = time.perf_counter()
    z = z0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=adam_lr)
    best = torch.full((z.shape[0],), -math.inf, dtype=torch.float64, device=z.device)
    best_z = z.detach().clone()
    n_evals = 0
    bar = tqdm(range(adam_steps), desc=f"{desc} (Adam, {z.shape[0]} starts)", disable=not progress, leave=False)
    for _ in bar:
        opt.zero_grad()
        lp = log_prob(z)
        n_evals += 1
        ok = torch.isfinite(lp)
        with torch.no_grad():
            better = ok & (lp.detach().double() > best)
            best = torch.where(better, lp.detach().double(), best)
            best_z[better] = z.detach()[better]
        loss = -torch.where(ok, lp, torch.zeros_like(lp)).sum()
        loss.backward()
        with torch.no_grad():
            z.grad[~ok] = 0.0
            z.grad[~torch.isfinite(z.grad)] = 0.0
        opt.step()
        with torch.no_grad():
            z[~ok] = best_z[~ok]  # back to the last finite point
        bar.set_postfix(best=f"{float(best.max()):.6g}")
    bar.close()
    if not bool(torch.isfinite(best).any()):
        raise RuntimeError("MAP: the log-posterior was not finite at any start (check the data and priors)")
    i = int(torch.argmax(best))
    zb = best_z[i:i + 1].clone().requires_grad_(True)
    lp_best = float(best[i])
    if lbfgs_steps > 0:
        lbfgs = torch.optim.LBFGS([zb], lr=1.0, max_iter=lbfgs_steps, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-9, tolerance_change=1e-12)
        counter = [0]

        def closure():
            lbfgs.zero_grad()
            lp = log_prob(zb)[0]
            counter[0] += 1
            loss = -lp if torch.isfinite(lp) else torch.tensor(1e300, dtype=lp.dtype, requires_grad=True)
            loss.backward()
            return loss

        start = zb.detach().clone()
        try:
            lbfgs.step(closure)
        except RuntimeError:
            pass
        n_evals += counter[0]
        with torch.no_grad():
            lp_new = float(log_prob(zb)[0])
        n_evals += 1
        if math.isfinite(lp_new) and lp_new >= lp_best:
            lp_best = lp_new
        else:
            zb = start
    return dict(z=zb.detach()[0], log_prob=lp_best, z_starts=best_z, log_prob_starts=best, n_evals=n_evals,
                wall_time_s=time.perf_counter() - t0)
