"""docs/metrics.rst M1 / M1b / kappa: accuracy of a Nuker -> MGE backend over the Appendix-A box.

    python validation/emulator_accuracy.py --backend exact --n 10000 --seed 1

Prints one JSON document (M1 median/p90/p99/max overall and split by alpha, M1b median/p99,
kappa median/p99, wall time, threads) and writes a PNG (error distributions, worst profiles).
The Nuker truth is eq. (2) in log space; the projected mass inside 3 pc is checked against an
independent scipy.integrate.quad at epsrel 1e-10.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
from scipy.integrate import quad
from tqdm import tqdm

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from common import draw_m1_shapes  # noqa: E402
from nuker_mge_plugin.backends import BACKENDS, amplitudes  # noqa: E402
from nuker_mge_plugin.basis import MASS_R0_PC, SIGMA_GRID_PC  # noqa: E402
from nuker_mge_plugin.emulator.train import m1_per_draw  # noqa: E402
from nuker_mge_plugin.nuker import log_nuker  # noqa: E402
from nuker_mge_plugin.projector import exact_amplitudes, gaussian_enclosed_mass_2d  # noqa: E402


def quad_mass(R0, r_b, alpha, beta, gamma):
    """Independent projected mass inside R0 [pc] for Sigma_b = 1 (scipy quad in ln R)."""
    f = lambda u: 2 * math.pi * math.exp(2 * u + float(log_nuker(math.exp(u), 1.0, r_b, alpha, beta, gamma)))  # noqa
    lo = math.log(R0) - 60.0
    pts = [math.log(r_b)] if r_b < R0 else None
    return quad(f, lo, math.log(R0), epsrel=1e-10, epsabs=0, limit=400, points=pts)[0]


def evaluate(amp_fn, alpha, beta, gamma, r_b, chunk, n_mass_check):
    """M1 eps and kappa per draw (the training code's ``m1_per_draw``) and M1b against scipy quad."""
    m_basis = gaussian_enclosed_mass_2d(torch.tensor(SIGMA_GRID_PC), MASS_R0_PC)
    eps, kappa, m_mge, amps_all = [], [], [], []
    t_amp = 0.0
    for i in tqdm(range(0, len(alpha), chunk), desc="M1", unit="chunk", file=sys.stderr):
        s = slice(i, i + chunk)
        t0 = time.perf_counter()
        a = amp_fn(alpha[s], beta[s], gamma[s], r_b[s]).detach().to(torch.float64).cpu()
        t_amp += time.perf_counter() - t0
        e, _, k = m1_per_draw(a, torch.as_tensor(np.stack([alpha[s], beta[s], gamma[s], r_b[s]], axis=1)))
        eps.append(e)
        kappa.append(k)
        m_mge.append((a @ m_basis).numpy())
        amps_all.append(a)
    eps, kappa, m_mge = (np.concatenate(x) for x in (eps, kappa, m_mge))
    m_true = np.array([quad_mass(MASS_R0_PC, r_b[k], alpha[k], beta[k], gamma[k])
                       for k in tqdm(range(min(n_mass_check, len(alpha))), desc="M1b quad", file=sys.stderr)])
    m1b = np.abs(m_mge[: len(m_true)] / m_true - 1)
    return eps, kappa, m1b, torch.cat(amps_all).numpy(), t_amp


def pct(x):
    x = np.asarray(x)
    return {"median": float(np.median(x)), "p90": float(np.percentile(x, 90)),
            "p99": float(np.percentile(x, 99)), "max": float(np.max(x)), "n": int(x.size)}


def summarize(eps, kappa, m1b, alpha):
    out = {"M1": pct(eps), "M1_by_alpha": {}, "M1b": pct(m1b), "kappa": pct(kappa)}
    for lab, lo, hi in (("alpha<=1", 0, 1), ("1<alpha<=3", 1, 3), ("3<alpha<=10", 3, 10.0001)):
        sel = (alpha > lo) & (alpha <= hi)
        out["M1_by_alpha"][lab] = pct(eps[sel])
    return out


def figure(path, eps, alpha, beta, gamma, r_b, amps, label):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    bins = np.logspace(np.log10(max(eps.min(), 1e-9)), np.log10(eps.max()) + 0.1, 50)
    for lab, lo, hi in (("alpha<=1", 0, 1), ("1<alpha<=3", 1, 3), ("3<alpha<=10", 3, 11)):
        sel = (alpha > lo) & (alpha <= hi)
        ax.hist(eps[sel], bins=bins, histtype="step", lw=1.5, label=lab)
    ax.set_xscale("log")
    ax.set_xlabel("M1: max |MGE/Nuker - 1| over 3 pc-3 kpc")
    ax.set_ylabel("draws")
    ax.legend(fontsize=8)
    ax.set_title(f"{label}: N = {eps.size}")
    ax = axes[1]
    x3 = (3.0 / r_b) ** alpha
    slope3 = gamma + (beta - gamma) * x3 / (1 + x3)
    sc = ax.scatter(slope3, eps, c=np.log10(alpha), s=3, cmap="viridis")
    ax.set_yscale("log")
    ax.set_xlabel("local log-slope of the Nuker at R = 3 pc")
    ax.set_ylabel("M1 error")
    fig.colorbar(sc, ax=ax, label="log10 alpha")
    ax = axes[2]
    R = np.logspace(np.log10(3), np.log10(3000), 400)
    g = np.exp(-0.5 * (R[:, None] / SIGMA_GRID_PC) ** 2)
    for k in np.argsort(eps)[-5:]:
        nuk = np.exp(log_nuker(R, 1.0, r_b[k], alpha[k], beta[k], gamma[k]))
        ax.semilogx(R, g @ amps[k] / nuk - 1,
                    label=f"a={alpha[k]:.2f} b={beta[k]:.2f} g={gamma[k]:.2f} rb={r_b[k]:.0f}pc")
    ax.set_xlabel("R [pc]")
    ax.set_ylabel("MGE/Nuker - 1 (5 worst)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", choices=BACKENDS, default="exact")
    p.add_argument("--n", type=int, default=10000, help="number of shape draws")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=1000)
    p.add_argument("--mass-check", type=int, default=2000, help="draws whose M1b uses an independent quad")
    p.add_argument("--profile-only", action="store_true", help="exact backend without the mass row")
    p.add_argument("--out", default="validation/out")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    alpha, beta, gamma, r_b = draw_m1_shapes(np.random.default_rng(args.seed), args.n)
    if args.profile_only:
        if args.backend != "exact":
            p.error("--profile-only applies to the exact backend")
        amp_fn = lambda a, b, g, r: exact_amplitudes(a, b, g, r, conserve_mass=False)  # noqa: E731
    else:
        amp_fn = lambda a, b, g, r: amplitudes(args.backend, a, b, g, r)  # noqa: E731
    t0 = time.perf_counter()
    eps, kappa, m1b, amps, t_amp = evaluate(amp_fn, alpha, beta, gamma, r_b, args.chunk, args.mass_check)
    label = args.backend + (" (profile only)" if args.profile_only else "")
    tag = args.backend + ("_profile_only" if args.profile_only else "")
    fig_path = os.path.join(args.out, f"emulator_accuracy_{tag}.png")
    figure(fig_path, eps, alpha, beta, gamma, r_b, amps, label)
    x3 = (3.0 / r_b) ** alpha
    steep = gamma + (beta - gamma) * x3 / (1 + x3) >= 1.8
    result = {"metric": "M1", "backend": label, "n": args.n, "seed": args.seed, **summarize(eps, kappa, m1b, alpha),
              "M1_slope_at_3pc_below_1.8": pct(eps[~steep]), "M1_slope_at_3pc_at_least_1.8": pct(eps[steep]),
              "amplitude_time_s": t_amp, "wall_time_s": time.perf_counter() - t0,
              "torch_threads": torch.get_num_threads(), "figure": fig_path}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
