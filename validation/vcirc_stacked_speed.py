"""docs/metrics.rst M4 (vcirc), the stacked form: ``np.stack`` of B Nuker MGE objects at one distance.

Side by side in one run: jampy's ``vcirc`` looped over B = 256 models, ours on the stacked
(B, 64) ``sigma_arcsec`` (identical rows) and on the shared (64,) row, 100 radii. Prints JSON with
the ratios, the path our call took and the torch thread count.

    .venv/bin/python validation/vcirc_stacked_speed.py [--B 256] [--repeats 5]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import importlib  # noqa: E402,I001

VC = importlib.import_module("nuker_mge_plugin.dynamics.vcirc")
from nuker_mge_plugin import nuker_to_mge  # noqa: E402
from nuker_mge_plugin.adapters.jampy_shim import jampy_vcirc  # noqa: E402


def best(f, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--B", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    mges = [nuker_to_mge(sigma_b=10 ** rng.uniform(2, 5), r_b=rng.uniform(0.5, 3), alpha=10 ** rng.uniform(-0.5, 0.8),
                         beta=2.0, gamma=rng.uniform(0.0, 1.0), qobs=rng.uniform(0.5, 1.0), distance=16.5)
             for _ in range(a.B)]
    surf = np.stack([m.surf_pc for m in mges])
    sigma = np.stack([m.sigma_arcsec for m in mges])        # (B, 64), identical rows
    qobs = np.stack([m.qobs for m in mges])
    inc = np.full(a.B, 80.0)
    mbh = 10 ** rng.uniform(6, 9, a.B)
    rad = np.geomspace(0.01, 10, 100)

    def jam():
        for b in range(a.B):
            jampy_vcirc(surf[b], sigma[b], qobs[b], inc[b], mbh[b], 16.5, rad)

    ours_stacked = lambda: VC.vcirc(surf, sigma, qobs, inc, mbh, 16.5, rad)  # noqa: E731
    ours_shared = lambda: VC.vcirc(surf, sigma[0], qobs, inc, mbh, 16.5, rad)  # noqa: E731
    ours_stacked()
    path = VC._last_path
    t_j = best(jam, max(1, a.repeats // 2))
    t_st = best(ours_stacked, a.repeats)
    t_sh = best(ours_shared, a.repeats)
    ref = np.stack([jampy_vcirc(surf[b], sigma[b], qobs[b], inc[b], mbh[b], 16.5, rad) for b in range(8)])
    err = float(np.max(np.abs(ours_stacked()[:8] / ref - 1)))
    print(json.dumps(dict(metric="M4 vcirc, stacked tables", B=a.B, n_radii=rad.size, threads=torch.get_num_threads(),
                          path_stacked=path, jampy_s=t_j, ours_stacked_s=t_st, ours_shared_s=t_sh,
                          speedup_stacked=t_j / t_st, speedup_shared=t_j / t_sh,
                          max_rel_diff_vs_jampy_first8=err), indent=1))


if __name__ == "__main__":
    main()
