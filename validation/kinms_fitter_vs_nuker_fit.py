"""The traditional kinms_fitter route beside ours, on one KinMS mock cube (docs/kinms_fitter.rst).

    python validation/kinms_fitter_vs_nuker_fit.py [--out validation/out/] [--niters 600]
                                                   [--numatonce 150] [--nsamps 50000] [--quick]
                                                   [--routes nuker_vcirc,fixed_mge,image_plane] [--nsub 3]

The mock: :func:`nuker_mge_plugin.adapters.kinms_fitter.write_mock_fits`, a 64 x 64 pixel x 30
channel KinMS cube (0.1" pixels, 25 km/s channels, 0.3" round beam, peak S/N 30) of the
NGC 4697-like truth of ``nuker_mge_plugin/examples/ngc4697_mock_quick.toml`` (inc 76 deg, log10
M_BH 8.11, Nuker MGE through jampy's v_c), centred on the cube.

Routes, each a kinms_fitter MCMC (GAStimator, one process) through
:class:`~nuker_mge_plugin.adapters.kinms_fitter.CompatKinmsFitter` with the same disc
parameters free (centre within 0.2", Vsys, total flux, dispersion, PA, inclination, exponential
scale length) and
the same start (log10 M_BH = 7.8, inc 74 deg, PA 240 deg):

* ``kinms_fitter_nuker_vcirc``: our ``nuker_vcirc`` profile with ``intensity_rb``, ``gamma`` and
  ``logMBH`` free and the Nuker break, ``alpha``, ``gamma_minus_beta`` and ``qintr`` fixed at truth
  (as ``examples/ngc4697_fit.toml`` does);
* ``kinms_fitter_fixed_mge``: the traditional route, kinms_fitter's own
  ``velocity_profs.mge_vcirc`` with a fixed MGE of the *true* Nuker profile (``nuker_to_mge`` at the
  true inclination's qobs) and a free M/L and ``logMBH``;
* ``nuker_mge_image_plane``: ``nuker-mge fit`` of the same FITS cube in the image plane
  (nuker_mge_plugin/image/: the Fourier modes of the cube's pixels, noise per mode measured in
  the line-free channels 0-3), the same parameters free within the same ranges, screened
  multi-start MAP, Fisher-preconditioned MALA (4 chains); its 68% HDI and R-hat.

Per route: log10 M_BH (median of the final chain), its 16-84 per cent interval, the number of
chain samples, wall time [s] of ``run`` and of one model, and the acceptance warnings kinms_fitter
recorded. Chains this short are not converged: the numbers show that both routes run and
roughly where they land, not a measurement (for that: ``--niters 3000 --numatonce 0``, about
an hour per route on one core). JSON to stdout and ``--out``/kinms_fitter_vs_nuker_fit.json.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402

TRUTH = dict(scale_length=0.8, log10_mbh=8.11, inclination=76.0, qintr=0.57, alpha=1.5, gamma_minus_beta=-1.55,
             gamma=0.25, break_r=1.5, intensity_rb=4.78, pa=246.0, line_broadening=8.0, systemic_velocity=1246.0,
             x=0.0, y=0.0, flux=10.0)
DISTANCE_MPC = 11.4
LOGMBH_START = 7.8


def make_fit(path, args, vel_profile):
    from nuker_mge_plugin.adapters.kinms_fitter import CompatKinmsFitter

    fit = CompatKinmsFitter(str(path), linefree_chans=[0, 3])
    fit.silent = True
    fit.show_plots = fit.interactive = fit.pdf = fit.text_output = fit.save_all_accepted = fit.show_corner = False
    fit.nSamps = args.nsamps
    fit.niters = args.niters
    fit.nprocesses = 1
    fit.mcmc_numatonce = args.numatonce or None
    half = 0.2 / 3600.0  # centre free within +-0.2" (fixing it exactly trips GAStimator on round-off)
    half_ra = half / np.cos(np.radians(fit.yc_guess))
    fit.xcent_range = [fit.xc_guess - half_ra, fit.xc_guess + half_ra]
    fit.ycent_range = [fit.yc_guess - half, fit.yc_guess + half]
    fit.vsys_range = [TRUTH["systemic_velocity"] - 60.0, TRUTH["systemic_velocity"] + 60.0]
    fit.inc_guess, fit.inc_range = 74.0, [65.0, 89.0]
    fit.pa_guess, fit.pa_range = 240.0, [200.0, 290.0]
    fit.velDisp_guess, fit.velDisp_range = 8.0, [1.0, 30.0]
    fit.vel_profile = [vel_profile]
    return fit


def run_route(name, path, args, vel_profile, savepath):
    fit = make_fit(path, args, vel_profile)
    t0 = time.perf_counter()
    best, errs, chain, chain_ll, fixed = fit.run(method="mcmc", savepath=savepath, pdf=False)
    wall = time.perf_counter() - t0
    labels = [str(s) for s in fit.labels]
    i = labels.index("logMBH")
    lo, med, hi = np.percentile(chain[i], [15.87, 50.0, 84.13])
    out = {"log10_mbh": float(med), "interval_16_84": [float(lo), float(hi)],
           "log10_mbh_best_of_chain": float(chain[i][int(np.argmax(chain_ll))]) if np.size(chain_ll) else None,
           "log10_mbh_start": LOGMBH_START, "chain_samples": int(chain.shape[1]), "wall_s": round(wall, 1),
           "one_model_s": round(float(fit.timetaken), 3), "niters": fit.niters, "numatonce": fit.mcmc_numatonce,
           "free": [lab for lab, f in zip(labels, fixed) if not f],
           "best": {lab: float(v) for lab, v in zip(labels, best) if lab not in ("Xc", "Yc")},
           "chi2_correct_fac": float(fit.chi2_correct_fac), "warnings": list(fit.errors_warnings)}
    print(f"{name}: log10 M_BH {med:.3f} [{lo:.3f}, {hi:.3f}] in {wall:.0f} s", file=sys.stderr)
    return out


def image_route_config(path, nsub, quick=False):
    """The ``nuker-mge fit`` configuration (a dict) of our image-plane route on the mock cube."""
    t = TRUTH
    schedule = dict(burn_in_stages=1, burn_in_steps=40, n_step_trials=2, step_trial_steps=20, draws=60) if quick else \
        dict(burn_in_stages=2, burn_in_steps=200, n_step_trials=4, step_trial_steps=80, draws=500)
    return {"data": {"path": str(path), "linefree_channels": [0, 1, 2, 3]}, "galaxy": {"distance_mpc": DISTANCE_MPC},
           "model": {"nsub": nsub},
           "priors": {"x": [-0.2, 0.2], "y": [-0.2, 0.2],
                      "systemic_velocity": [t["systemic_velocity"] - 60.0, t["systemic_velocity"] + 60.0],
                      "inclination": [65.0, 89.0], "pa": [200.0, 290.0], "line_broadening": [1.0, 30.0],
                      "break_r": t["break_r"], "alpha": t["alpha"], "gamma_minus_beta": t["gamma_minus_beta"],
                      "qintr": t["qintr"]},
           "map": {"n_starts": 2}, "sampler": {"kind": "mala", "chains": 4, "seed": 5, "threads": 1,
                                               "checkpoint_every": 0, **schedule},
           "output": {"figures": False}}


#: The mock cube of every route: 64 x 64 pixels x 30 channels (the --quick one 32 x 32 x 20).
CUBE = dict(n_pix=64, cell_arcsec=0.1, n_chan=30, dv_kms=25.0, beam_arcsec=(0.3, 0.3, 0.0))
CUBE_QUICK = dict(n_pix=32, cell_arcsec=0.15, n_chan=20, dv_kms=40.0, beam_arcsec=(0.45, 0.45, 0.0))


def write_mock(path, quick=False):
    """The routes' KinMS mock cube (peak S/N 30, 2e5 clouds, seed 0) at ``path``; write_mock_fits's info."""
    from nuker_mge_plugin.adapters.kinms_fitter import write_mock_fits

    return write_mock_fits(path, TRUTH, DISTANCE_MPC, peak_snr=30.0, nsamps=200_000, seed=0,
                           **(CUBE_QUICK if quick else CUBE))


def run_image_route(path, args, out_dir):
    """Our image-plane fit of the cube (``run_fit``), the kinms_fitter routes' parameters free."""
    from nuker_mge_plugin.inference.config import config_from_dict
    from nuker_mge_plugin.inference.fit import run_fit

    t = TRUTH
    cfg = config_from_dict(image_route_config(path, args.nsub, args.quick), base_dir=str(out_dir))
    t0 = time.perf_counter()
    s = run_fit(cfg, out_dir, progress=False, log=lambda *_: None)
    wall = time.perf_counter() - t0
    p = s["parameters"]["log10_mbh"]
    out = {"log10_mbh": p["median"], "hdi_68": p["hdi_68"], "std": p["std"],
           "offset_sigma": (p["median"] - t["log10_mbh"]) / p["std"], "r_hat": p["r_hat"], "ess_bulk": p["ess_bulk"],
           "max_r_hat": s["diagnostics"]["max_r_hat"], "chains": s["chains"], "draws": s["draws"],
           "wall_s": round(wall, 1), "n_modes": s["n_cells"], "free": list(s["parameters"]),
           "noise_power_over_beam_model": s["gridding"].get("noise_power_over_beam_model"), "nsub": args.nsub}
    print(f"nuker_mge_image_plane: log10 M_BH {p['median']:.3f} [{p['hdi_68'][0]:.3f}, {p['hdi_68'][1]:.3f}] "
          f"in {wall:.0f} s", file=sys.stderr)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="validation/out")
    ap.add_argument("--niters", type=int, default=600)
    ap.add_argument("--numatonce", type=int, default=150, help="GAStimator burn-in chunk (0: its 50 x n_params)")
    ap.add_argument("--nsamps", type=int, default=50_000, help="KinMS clouds per model")
    ap.add_argument("--quick", action="store_true", help="32 x 32 x 20 cube, 60 iterations (a smoke run)")
    ap.add_argument("--routes", default="nuker_vcirc,fixed_mge,image_plane",
                    help="which routes to run (comma-separated: nuker_vcirc, fixed_mge, image_plane)")
    ap.add_argument("--nsub", type=int, default=3, help="sub-pixels per pixel side of our image-plane fit's cube")
    args = ap.parse_args(argv)

    from kinms_fitter.velocity_profs import velocity_profs

    from nuker_mge_plugin.adapters.kinms_fitter import nuker_vcirc, qobs_from_qintr
    from nuker_mge_plugin.mge import nuker_to_mge

    cube = CUBE_QUICK if args.quick else CUBE
    if args.quick:
        args.niters, args.numatonce, args.nsamps = 60, 30, 20_000
    t = TRUTH
    report = {"script": "validation/kinms_fitter_vs_nuker_fit.py", "truth": t, "distance_mpc": DISTANCE_MPC,
              "cube": {**cube, "peak_snr": 30.0, "kinms_nsamps_mock": 200_000}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mock.fits"
        info = write_mock(path, args.quick)
        report["cube"]["rms_jy_beam"] = info["rms"]
        savepath = tmp + os.sep
        routes = {}
        which = set(args.routes.split(","))
        if "nuker_vcirc" in which:
            nuker = nuker_vcirc(DISTANCE_MPC, guesses=[4.6, t["break_r"], t["alpha"], t["gamma_minus_beta"], 0.4,
                                                       t["qintr"], LOGMBH_START],
                                fixed=[False, True, True, True, False, True, False])
            routes["kinms_fitter_nuker_vcirc"] = run_route("kinms_fitter_nuker_vcirc", path, args, nuker, savepath)
        if "fixed_mge" in which:
            qobs = float(qobs_from_qintr(t["qintr"], t["inclination"]))
            mge = nuker_to_mge(sigma_b=10 ** t["intensity_rb"], r_b=t["break_r"], alpha=t["alpha"],
                               beta=t["gamma"] - t["gamma_minus_beta"], gamma=t["gamma"], qobs=qobs,
                               distance=DISTANCE_MPC)
            trad = velocity_profs.mge_vcirc(mge.surf_pc, mge.sigma_arcsec, mge.qobs, DISTANCE_MPC,
                                            guesses=[0.8, LOGMBH_START], minimums=[0.1, 6.0],
                                            maximums=[10.0, 9.79934])
            routes["kinms_fitter_fixed_mge"] = run_route("kinms_fitter_fixed_mge", path, args, trad, savepath)
            routes["kinms_fitter_fixed_mge"]["note"] = ("MGE of the true Nuker profile at the true inclination's "
                                                        "qobs (M/L = 1 is the truth)")
        if "image_plane" in which:
            routes["nuker_mge_image_plane"] = run_image_route(path, args, Path(tmp) / "image_fit")
    report["routes"] = routes
    report["versions"] = {"python": platform.python_version(),
                          **{name: version(name) for name in ("numpy", "matplotlib", "kinms", "kinms_fitter",
                                                              "gastimator", "jampy")}}
    report["load_average"] = os.getloadavg()[0]
    text = json.dumps(report, indent=1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "kinms_fitter_vs_nuker_fit" + ("" if which == {"nuker_vcirc", "fixed_mge", "image_plane"} else
                                           "_" + "_".join(sorted(which)) + f"_nsub{args.nsub}")
    (out / f"{stem}.json").write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
