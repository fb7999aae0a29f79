"""docs/metrics.rst M4, Nuker -> MGE part: mgefit.mge_fit_1d per profile vs the nn and exact backends batched.

Side by side in one run: ``mge_fit_1d`` on a few dozen M1 profiles (one call each, quiet,
no plot) against one batched call of each backend over 10,000 profiles. Prints JSON
with profiles per second, their ratios, and the torch thread count.

    .venv/bin/python validation/emulator_speed.py [--n-fit 24] [--n-batch 10000] [--threads N]
"""

import argparse
import contextlib
import json
import math
import sys
import time

import torch

from nuker_mge_plugin.basis import metric_radii_pc
from nuker_mge_plugin.emulator import amplitudes as nn_amplitudes
from nuker_mge_plugin.emulator import load
from nuker_mge_plugin.emulator.data import sample_box
from nuker_mge_plugin.nuker import nuker_surface_density
from nuker_mge_plugin.projector import exact_amplitudes


def mgefit_rate(params, ngauss=20):
    """Profiles per second of ``mgefit.mge_fit_1d`` on the M1 radii, one profile per call."""
    from mgefit.mge_fit_1d import mge_fit_1d
    r = metric_radii_pc()
    t0 = time.perf_counter()
    # mge_fit_1d prints residual warnings even when quiet; keep stdout for the JSON alone.
    with contextlib.redirect_stdout(sys.stderr):
        for alpha, beta, gamma, r_b in params.tolist():
            mge_fit_1d(r, nuker_surface_density(r, 1.0, r_b, alpha, beta, gamma), ngauss=ngauss, quiet=True,
                       plot=False)
    return len(params) / (time.perf_counter() - t0)


def batched_rate(fn, params, repeats=3):
    """Best-of-``repeats`` profiles per second of one batched call ``fn(alpha, beta, gamma, r_b)``."""
    cols = params.unbind(1)
    with torch.no_grad():
        fn(*cols)  # warm-up (module load, allocator)
        best = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(*cols)
            best = min(best, time.perf_counter() - t0)
    return len(params) / best



def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-fit", type=int, default=24)
    ap.add_argument("--n-batch", type=int, default=10000)
    ap.add_argument("--n-exact", type=int, default=2000, help="exact backend batch (memory: B x 385 x 64)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    params = sample_box(max(args.n_batch, args.n_fit), args.seed)
    res = {"threads": torch.get_num_threads(), "torch": torch.__version__, "n_fit": args.n_fit,
           "n_batch": args.n_batch, "n_exact": args.n_exact}
    res["mge_fit_1d_profiles_per_s"] = mgefit_rate(params[:args.n_fit].double())
    for dt in (torch.float64, torch.float32):
        load(device="cpu", dtype=dt)
        name = f"nn_{str(dt).replace('torch.', '')}_profiles_per_s"
        res[name] = batched_rate(lambda *c, dt=dt: nn_amplitudes(*c, device="cpu", dtype=dt),
                                 params[:args.n_batch].to(dt))
    res["exact_profiles_per_s"] = batched_rate(lambda *c: exact_amplitudes(*c), params[:args.n_exact], repeats=1)
    base = res["mge_fit_1d_profiles_per_s"]
    res["ratio_nn_float64_vs_mge_fit_1d"] = res["nn_float64_profiles_per_s"] / base
    res["ratio_nn_float32_vs_mge_fit_1d"] = res["nn_float32_profiles_per_s"] / base
    res["ratio_exact_vs_mge_fit_1d"] = res["exact_profiles_per_s"] / base
    if torch.cuda.is_available():
        p = params[:args.n_batch].cuda()
        sync = torch.cuda.synchronize

        def gpu(*c):
            out = nn_amplitudes(*c)
            sync()
            return out
        res["gpu"] = torch.cuda.get_device_name()
        res["nn_float64_cuda_profiles_per_s"] = batched_rate(gpu, p, repeats=10)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
