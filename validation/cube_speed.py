"""Cube side of docs/metrics.rst M4 / M4b: KinMS forward vs our cube forward and forward + backward.

    python validation/cube_speed.py [--repeats 7] [--threads N] [--nsamps 1000000] [--quick]
                                    [--cases ngc4697,expdisc]

Grid 128 x 128 pixels x 64 channels (0.1" pixels, 20 km/s channels), two discs:

* ``ngc4697``: the case of validation/cube_vs_kinms.py (inc 76 deg, Nuker MGE + 1.3e8 Msun black
  hole rotation curve, 10 km/s dispersion, exponential surface brightness cut at 4.5"): most of the
  field is dark, and our renderer skips dark sub-pixels after the sub-pixel stage;
* ``expdisc``: the same without the cut-off (exponential to the 8" edge of the profile, like the
  inference model's callable ``exp(-r / h)``): nearly every sub-pixel carries flux, the harder case.

Side by side in one run, interleaved call by call (KinMS, ours, KinMS, ...) so that load from
other processes on a shared machine hits every variant alike:

* KinMS 3.x ``model_cube`` with ``nSamps`` (default 1e6) clouds, with the 0.53" beam (KinMS's
  default use) and with ``cleanOut=True`` (no beam, as a visibility fit would call it); the clouds
  are drawn once in ``KinMS(...)``, as kinms_fitter does, so only ``model_cube`` is timed;
* ours, ``GasCube(..., cleanOut=True, check=False)`` (the likelihood path: no image-plane beam),
  float32 and float64, batch 1 and batch 4 parameter sets: ``forward`` under ``torch.no_grad``, and
  ``fwd_bwd`` = cube -> a fixed random linear functional of it (the vector-Jacobian product a
  chi^2's backward needs, without the chi^2's own cost, which the visibility side owns)
  -> gradient w.r.t. inc, posAng, velProf and intFlux.

Reported (JSON): median and best-of-repeats seconds per call; ratios ``kinms_time / ours_time``
against both KinMS variants (targets: forward + backward >= 5x faster than one KinMS forward with
1e6 clouds, goal 10x); ``batch4_over_batch1`` (target <= 4); torch's thread count and the load
average (a shared machine's medians can be dominated by other processes; best-of-repeats ratios are
less sensitive to that), and the same again with one torch thread (``one_thread``). Absolute times
mean nothing across machines: quote the ratios.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from common import interleaved_timings  # noqa: E402
from cube_vs_kinms import cases  # noqa: E402

from nuker_mge_plugin.dynamics.cube import GasCube  # noqa: E402


def _ours(case, dtype, B, backward):
    g, p = case["geom"], case["par"]
    m = GasCube(**g, nsub=case["nsub"], cleanOut=True, check=False)
    vp0 = torch.as_tensor(p["velProf"], dtype=dtype)
    common = dict(gasSigma=p["gasSigma"], sbProf=torch.as_tensor(p["sbProf"], dtype=dtype),
                  sbRad=torch.as_tensor(p["sbRad"], dtype=dtype), velRad=torch.as_tensor(p["velRad"], dtype=dtype))
    # a batch of B nearby parameter sets (what a sampler's proposals look like)
    d = torch.linspace(-1.0, 1.0, B, dtype=dtype) if B > 1 else torch.zeros(1, dtype=dtype)

    def args():
        inc = (p["inc"] + 2.0 * d).requires_grad_(backward)
        pa = (p["posAng"] + 3.0 * d).requires_grad_(backward)
        vp = (vp0 * (1.0 + 0.05 * d).unsqueeze(-1)).requires_grad_(backward)
        fl = (p["intFlux"] * (1.0 + 0.1 * d)).requires_grad_(backward)
        if B == 1:
            inc, pa, vp, fl = (t.detach()[0].requires_grad_(backward) for t in (inc, pa, vp, fl))
        return inc, pa, vp, fl

    # the loss is a fixed linear functional of the cube (a vector-Jacobian product: what a chi^2's
    # backward costs on the cube side, without the chi^2's own cost, which the visibility side owns)
    shape = (B,) * (B > 1) + (m.x_size, m.y_size, m.v_size)
    w = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))

    if not backward:
        def fn():
            with torch.no_grad():
                inc, pa, vp, fl = args()
                return m.model_cube(inc, pa, velProf=vp, intFlux=fl, **common)
        return fn

    def fn():
        inc, pa, vp, fl = args()
        c = m.model_cube(inc, pa, velProf=vp, intFlux=fl, **common)
        loss = (c * w).sum()
        return torch.autograd.grad(loss, (inc, pa, vp, fl))
    return fn


def speed_cases():
    cs = cases()
    c = cs["ngc4697"]
    r = np.asarray(c["par"]["sbRad"])
    return {"ngc4697": c, "expdisc": dict(c, par=dict(c["par"], sbProf=np.exp(-r / 1.0)))}


def run(case, repeats, nsamps):
    from kinms import KinMS

    g, p = case["geom"], case["par"]
    fns = {}
    for clean in (False, True):
        km = KinMS(g["xs"], g["ys"], g["vs"], g["cellSize"], g["dv"], g["beamSize"], nSamps=nsamps, seed=1,
                   cleanOut=clean)
        fns["kinms_beam" if not clean else "kinms_cleanOut"] = (lambda km=km: km.model_cube(**p))
    for dtype, tag in ((torch.float32, "f32"), (torch.float64, "f64")):
        for B in (1, 4):
            fns[f"ours_forward_{tag}_B{B}"] = _ours(case, dtype, B, backward=False)
            fns[f"ours_fwd_bwd_{tag}_B{B}"] = _ours(case, dtype, B, backward=True)
    for fn in fns.values():  # warm-up (caches, allocator, KinMS's first-call set-up)
        fn()
    ts = interleaved_timings(fns, repeats)
    med = {k: float(np.median(v)) for k, v in ts.items()}
    best = {k: float(np.min(v)) for k, v in ts.items()}
    out = dict(grid=[128, 128, 64], cellSize=g["cellSize"], dv=g["dv"], nsub=case["nsub"], kinms_nsamps=nsamps,
               torch_threads=torch.get_num_threads(), repeats=repeats,
               seconds_median=med, seconds_best=best)
    for ref in ("kinms_beam", "kinms_cleanOut"):
        out[f"speedup_vs_{ref}_median"] = {k: med[ref] / v for k, v in med.items() if k.startswith("ours")}
        out[f"speedup_vs_{ref}_best"] = {k: best[ref] / v for k, v in best.items() if k.startswith("ours")}
    out["batch4_over_batch1_median"] = {k.replace("_B1", ""): med[k.replace("_B1", "_B4")] / med[k]
                                        for k in med if k.startswith("ours") and k.endswith("_B1")}
    out["batch4_over_batch1_best"] = {k.replace("_B1", ""): best[k.replace("_B1", "_B4")] / best[k]
                                      for k in best if k.startswith("ours") and k.endswith("_B1")}
    fb = out["speedup_vs_kinms_cleanOut_best"]["ours_fwd_bwd_f32_B1"]
    out["targets"] = dict(fwd_bwd_f32_B1_vs_kinms_cleanOut_best_ge_5=bool(fb >= 5.0),
                          fwd_bwd_f32_batch4_over_batch1_best_le_4=bool(
                              out["batch4_over_batch1_best"]["ours_fwd_bwd_f32"] <= 4.0))
    out["load_average_1min"] = os.getloadavg()[0]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timing repeats (median and best)")
    ap.add_argument("--nsamps", type=int, default=1_000_000, help="KinMS clouds")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="3 repeats (smoke test)")
    ap.add_argument("--cases", default="ngc4697,expdisc", help="comma-separated subset of ngc4697,expdisc")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    reps = 3 if a.quick else a.repeats
    cs = speed_cases()
    res = {}
    for name in a.cases.split(","):
        res[name] = run(cs[name], reps, a.nsamps)
        if torch.get_num_threads() > 1:
            # one torch thread as well: immune to the OpenMP stalls that other processes on a shared,
            # small machine cause (multi-thread torch times can then be dominated by them)
            nt = torch.get_num_threads()
            torch.set_num_threads(1)
            res[name]["one_thread"] = run(cs[name], reps, a.nsamps)
            torch.set_num_threads(nt)
    res["wall_s"] = time.perf_counter() - t0
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
