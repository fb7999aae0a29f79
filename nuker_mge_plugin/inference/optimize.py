"""Maximum a posteriori: a coordinate screen of the prior box, multi-start Adam, then L-BFGS.

The log-posterior of a gas-dynamical fit is multi-modal in PA (a disc and its counter-rotating
twin), in inclination and in the Nuker shape, and it is flat far from the data: gradient steps from
random prior draws stall in the wrong mode (on the demo mock with 3x its noise, 8 prior draws x 200
Adam steps all ended >= 2,870 nats below the truth, the best at log10 M_BH = 9.4). So the starts are first
*screened*: for one parameter at a time, in :data:`SCREEN_ORDER` (the systemic velocity and flux, then
the centre and PA, then what they leave), the log-posterior is evaluated on a grid across the prior
range with the other parameters held, and the best grid value kept; later sweeps narrow the grid
around the current value. Each grid is one batched, gradient-free forward call, and a sweep of
11 parameters x 24 values costs ~5 s on the demo. On that mock one screened start reaches the
truth's basin (screen + Adam + L-BFGS: 27 s, log-posterior 3 nats above the truth's).
All screened starts then run as one batch of Adam (cosine-decayed step), and the best is polished
by L-BFGS with a strong-Wolfe line search.
"""

import math
import time

import torch
from .._progress import progress_bar

__all__ = ["SCREEN_ORDER", "screen_starts", "find_map"]

#: Order of the coordinate screen: what the data fix most directly first (where the line sits in
#: velocity, how bright it is, where it is), then the geometry, then the mass model.
SCREEN_ORDER = ("systemic_velocity", "flux", "x", "y", "pa", "inclination", "scale_length",
                "line_broadening", "log10_mbh", "intensity_rb", "gamma", "break_r", "alpha",
                "gamma_minus_beta", "qintr")


def screen_starts(log_prob, space, theta0, *, n_grid=24, sweeps=3, progress=True, desc="MAP screen"):
    """Coordinate-wise grid screen of starting points across the prior box.

    For each free parameter in :data:`SCREEN_ORDER` (then any others, in ``space`` order), every
    start's value is replaced by the best of ``n_grid`` values (and its current one) at fixed other
    parameters. Sweep 0 spans the whole prior range; sweep ``s`` spans ``(high - low) / 2**s``
    centred on the current value, clipped to the range. The log-posterior of a start never drops.

    Parameters
    ----------
    log_prob : callable
        ``z (N, d) -> (N,)`` log-posterior [nats] in the unconstrained space of ``space``.
    space : ParameterSpace
        Supplies the prior ranges [parameter units] and the bijection.
    theta0 : (S, d) tensor
        Starting points in parameter units (e.g. the prior midpoint and prior draws).
    n_grid : int
        Grid values per parameter and sweep (>= 2).
    sweeps : int
        Number of sweeps over all free parameters (>= 1).

    Returns
    -------
    theta : (S, d) tensor
        The screened starts [parameter units].
    log_prob : (S,) float64 tensor
        Their log-posteriors [nats].
    n_evals : int
        Points evaluated.
    """
    if n_grid < 2 or sweeps < 1:
        raise ValueError(f"screen_starts: expects n_grid >= 2 and sweeps >= 1, got {n_grid} and {sweeps}")
    names = list(space.free_names)
    order = [n for n in SCREEN_ORDER if n in names] + [n for n in names if n not in SCREEN_ORDER]
    lo = space.low.to(theta0.device, theta0.dtype)
    hi = space.high.to(theta0.device, theta0.dtype)
    eps = 1e-4 * (hi - lo)  # stay off the bounds, where the bijection is infinite
    theta = theta0.detach().clone()
    S = theta.shape[0]
    frac = (torch.arange(n_grid, dtype=theta.dtype, device=theta.device) + 0.5) / n_grid

    def evaluate(th):
        with torch.no_grad():
            lp = log_prob(space.unconstrain(th, check=False)).double()
        return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -math.inf))

    best = evaluate(theta)
    n_evals = S
    bar = progress_bar(total=sweeps * len(order), desc=desc, disable=not progress, leave=False)
    for sweep in range(sweeps):
        for name in order:
            k = names.index(name)
            if sweep == 0:
                vals = lo[k] + frac * (hi[k] - lo[k])                                  # (G,)
                vals = vals.expand(S, n_grid)
            else:
                width = (hi[k] - lo[k]) / 2 ** sweep
                vals = theta[:, k:k + 1] + (frac - 0.5) * width                        # (S, G)
            vals = vals.clamp(lo[k] + eps[k], hi[k] - eps[k])
            cand = theta[:, None, :].repeat(1, n_grid, 1)                              # (S, G, d)
            cand[:, :, k] = vals
            lp = evaluate(cand.reshape(S * n_grid, -1)).reshape(S, n_grid)
            n_evals += S * n_grid
            g = torch.argmax(lp, dim=1)
            lp_g = lp[torch.arange(S), g]
            better = lp_g > best
            theta[better, k] = vals[torch.arange(S), g][better]
            best = torch.where(better, lp_g, best)
            bar.update(1)
            bar.set_postfix(sweep=sweep, best=f"{float(best.max()):.6g}")
    bar.close()
    return theta, best, n_evals


def find_map(log_prob, z0, *, adam_steps=300, adam_lr=0.05, lbfgs_steps=100, progress=True, desc="MAP"):
    """Maximise a batched log-posterior from several starting points (screen them first, see above).

    Parameters
    ----------
    log_prob : callable
        ``z (S, d) -> (S,)`` log-posterior [nats] in the unconstrained space; differentiable.
    z0 : (S, d) tensor
        Starting points (e.g. prior draws), one per start.
    adam_steps, adam_lr : int, float
        Adam iterations for all starts at once, and its initial step size [unconstrained units];
        the step decays as a cosine to a tenth of it.
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
    # the decay lets the starts settle into their optimum instead of circling it at the last step size
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(adam_steps, 1), eta_min=adam_lr / 10)
    best = torch.full((z.shape[0],), -math.inf, dtype=torch.float64, device=z.device)
    best_z = z.detach().clone()
    n_evals = 0
    bar = progress_bar(range(adam_steps), desc=f"{desc} (Adam, {z.shape[0]} starts)", disable=not progress, leave=False)
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
        sched.step()
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
