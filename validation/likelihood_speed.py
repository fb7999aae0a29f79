"""docs/metrics.rst M4b: the likelihood path (cube -> gridded model -> chi^2 -> gradient) against KinMS.

    python validation/likelihood_speed.py [--repeats 3] [--n-ant 30] [--n-times 10] [--threads N]

Side by side in one run, interleaved call by call (so that load from other processes on a shared
machine hits every side alike), on 128 x 128 pixels x 64 channels of 0.1" and 20 km/s:

* ``kinms``: one ``KinMS(...).model_cube`` forward with 1e6 clouds, ``cleanOut=True`` (through
  ``adapters.kinms_shim``);
* ``ours_b1``: ``GasCube(..., cleanOut=True).model_cube`` (the object behind
  ``dynamics.model_cube``, built once) in float32 -> :class:`GriddedModel` (the exact window
  average on every usable cell, primary beam folded in) -> chi^2 (float64) -> backward with
  respect to inc, posAng, velProf and intFlux;
* ``ours_b4``: the same for a batch of 4 parameter sets.

Each of ours is split into cube forward, model forward, model backward (chi^2 -> dL/dcube) and cube
backward (dL/dcube -> parameters) by staging the backward pass with ``torch.autograd.grad``.

The data are an ALMA-like observation (``mock.alma_like_layout``/``uvw_tracks``, CO(2-1)) of the
same disc: our cube summed directly at the true (u, v) plus noise, gridded with the default
Kaiser-Bessel gridder. Prints JSON: medians and best-of-repeats, the ratios the issue asks for
(KinMS forward / our forward+backward, goal >= 5 (10); batch-4 / batch-1 cost, goal <= 4), the
split, the operator's size, the torch thread count and the load average.
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from nuker_mge_plugin.constants import C_M_S, CO21_REST_HZ  # noqa: E402
from nuker_mge_plugin.dynamics.coords import SkyGrid  # noqa: E402
from nuker_mge_plugin.dynamics.cube import GasCube  # noqa: E402
from nuker_mge_plugin.dynamics.gridder import grid_visibilities  # noqa: E402
from nuker_mge_plugin.dynamics.visibilities import GriddedModel, alma_pb_fwhm_arcsec, direct_ft  # noqa: E402
from nuker_mge_plugin.mock import alma_like_layout, baselines, channel_freqs, uvw_tracks  # noqa: E402

GEOM = dict(xs=12.8, ys=12.8, vs=64 * 20.0, cellSize=0.1, dv=20.0)
RAD = np.arange(0.0, 8.0 + 1e-9, 0.02)
SB = np.exp(-RAD / 1.0) * (RAD <= 4.5)
VEL = 240.0 * (2 / np.pi) * np.arctan(RAD / 0.4)
PAR = dict(inc=60.0, posAng=246.0, gasSigma=10.0, intFlux=30.0)


def observation(n_ant, max_radius_m, n_times, sigma, seed=0):
    """(u, v, chan) of an ALMA-like track at CO(2-1), 64 channels of 20 km/s around 1252 km/s."""
    enu = alma_like_layout(n_ant, max_radius_m, seed=seed)
    bl = baselines(enu)[0]
    uvw = uvw_tracks(bl, -5.8, np.linspace(-2.0, 2.0, n_times))
    freqs = channel_freqs(64, GEOM["dv"], 1252.0, CO21_REST_HZ)
    lam = C_M_S / freqs
    u = uvw[..., 0].ravel()[None, :] / lam[:, None]
    v = uvw[..., 1].ravel()[None, :] / lam[:, None]
    return u, v, freqs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n-ant", type=int, default=30)
    ap.add_argument("--max-radius-m", type=float, default=400.0)
    ap.add_argument("--n-times", type=int, default=10)
    ap.add_argument("--tol", type=float, default=1e-6, help="GriddedModel accuracy")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--nsamps", type=int, default=1_000_000, help="KinMS clouds")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t_start = time.perf_counter()
    from nuker_mge_plugin.adapters.kinms_shim import kinms_model_cube

    sky = SkyGrid.from_kinms(GEOM["xs"], GEOM["ys"], GEOM["cellSize"])
    gc = GasCube(**GEOM, beamSize=None, cleanOut=True)
    sb32 = torch.tensor(SB, dtype=torch.float32)
    rad32 = torch.tensor(RAD, dtype=torch.float32)

    # --- data: our cube (float64) at the true (u, v), noise, default gridding
    u, v, freqs = observation(a.n_ant, a.max_radius_m, a.n_times, 0.005)
    pb = sky.primary_beam(alma_pb_fwhm_arcsec(freqs)).numpy()
    with torch.no_grad():
        truth = gc.model_cube(PAR["inc"], PAR["posAng"], gasSigma=PAR["gasSigma"], sbProf=SB, sbRad=RAD,
                              velRad=RAD, velProf=VEL, intFlux=PAR["intFlux"], dtype=torch.float64).numpy()
    vis = direct_ft(truth, sky, u, v, pb=pb)
    rng = np.random.default_rng(1)
    vis = vis + 0.005 * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    chan = np.repeat(np.arange(64), u.shape[1])
    t0 = time.perf_counter()
    gv = grid_visibilities(u.ravel(), v.ravel(), vis.ravel(), np.ones(u.size), chan, sky, 64)
    t_grid = time.perf_counter() - t0
    t0 = time.perf_counter()
    gm = GriddedModel(gv, pb=pb, tol=a.tol)
    t_build = time.perf_counter() - t0
    data = gm.vis
    w = 1.0 / gm.sigma**2

    def params(B, requires_grad=True):
        def leaf(x):
            return torch.tensor(x, dtype=torch.float32).requires_grad_(requires_grad)
        if B == 1:
            return dict(inc=leaf(PAR["inc"]), posAng=leaf(PAR["posAng"]), velProf=leaf(VEL),
                        intFlux=leaf(PAR["intFlux"]))
        k = np.arange(B)
        return dict(inc=leaf(PAR["inc"] + 2.0 * k), posAng=leaf(PAR["posAng"] - k),
                    velProf=leaf(VEL * (1 + 0.01 * k[:, None])), intFlux=leaf(PAR["intFlux"] * (1 + 0.02 * k)))

    def ours(B):
        p = params(B)
        t = [time.perf_counter()]
        vp = p["velProf"]
        cube = gc.model_cube(p["inc"], p["posAng"], gasSigma=PAR["gasSigma"], sbProf=sb32, sbRad=rad32,
                             velRad=rad32, velProf=vp, intFlux=p["intFlux"], dtype=torch.float32)
        t.append(time.perf_counter())
        cin = cube.detach().requires_grad_(True)  # stage the graph: cube | model
        m = gm(cin)
        chi2 = ((m.to(torch.complex128) - data).abs() ** 2 * w).sum()  # float64 reduction
        t.append(time.perf_counter())
        (g_cube,) = torch.autograd.grad(chi2, cin)
        t.append(time.perf_counter())
        torch.autograd.backward(cube, g_cube)
        t.append(time.perf_counter())
        assert all(bool(torch.isfinite(x.grad).all()) for x in p.values())
        return np.diff(t)

    def kinms():
        kinms_model_cube(GEOM["xs"], GEOM["ys"], GEOM["vs"], GEOM["cellSize"], GEOM["dv"], [0.5, 0.5, 0.0],
                         PAR["inc"], PAR["posAng"], nSamps=a.nsamps, seed=1, cleanOut=True, sbProf=SB, sbRad=RAD,
                         velRad=RAD, velProf=VEL, gasSigma=PAR["gasSigma"], intFlux=PAR["intFlux"])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        kinms()  # warm-up (imports, caches)
        ours(1)
        ours(4)
        ts = {"kinms": [], "ours_b1": [], "ours_b4": []}
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            kinms()
            ts["kinms"].append(np.array([time.perf_counter() - t0]))
            ts["ours_b1"].append(ours(1))
            ts["ours_b4"].append(ours(4))
    med = {k: np.median(np.stack(v), axis=0) for k, v in ts.items()}
    best = {k: np.min(np.stack(v), axis=0) for k, v in ts.items()}
    stages = ("cube_forward", "model_forward", "model_backward", "cube_backward")

    def summary(stat):
        k = float(stat["kinms"][0])
        out = dict(kinms_forward_s=k)
        for b in ("b1", "b4"):
            s = stat[f"ours_{b}"]
            tot = float(s.sum())
            model = float(s[1] + s[2])
            out[f"ours_{b}"] = dict(total_s=tot, **{st + "_s": float(x) for st, x in zip(stages, s)},
                                    model_fwd_bwd_s=model, cube_fwd_bwd_s=float(s[0] + s[3]),
                                    model_share=model / tot)
        out["ratio_kinms_over_ours_fwd_bwd_b1"] = k / out["ours_b1"]["total_s"]
        out["ratio_kinms_over_model_fwd_bwd_b1"] = k / out["ours_b1"]["model_fwd_bwd_s"]
        out["batch4_over_batch1_total"] = out["ours_b4"]["total_s"] / out["ours_b1"]["total_s"]
        out["batch4_over_batch1_model"] = out["ours_b4"]["model_fwd_bwd_s"] / out["ours_b1"]["model_fwd_bwd_s"]
        out["batch4_over_batch1_cube"] = out["ours_b4"]["cube_fwd_bwd_s"] / out["ours_b1"]["cube_fwd_bwd_s"]
        return out

    res = dict(metric="M4b", grid=[128, 128, 64], cell_arcsec=GEOM["cellSize"], dv_kms=GEOM["dv"], dtype="float32",
               torch_threads=torch.get_num_threads(), kinms_nsamps=a.nsamps, repeats=a.repeats,
               n_vis=int(u.size), gridding_s=t_grid, model_build_s=t_build,
               cells_usable=gv.report["cells_usable"], cells_grown=gv.report["cells_grown"], operator=gm.report,
               targets="kinms/ours >= 5 (goal 10); batch4/batch1 <= 4",
               median=summary(med), best_of_repeats=summary(best), load_average_1min=os.getloadavg()[0],
               wall_s=time.perf_counter() - t_start)
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
