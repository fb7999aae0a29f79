"""Coverage of the image-plane likelihood (nuker_mge_plugin/image/fourier.py) on KinMS mocks.

Pixels of a cleaned cube are correlated over the beam. Over ``--mocks`` noise realisations of one
small KinMS mock cube with beam-correlated noise (``write_mock_fits(noise="beam")``; the sky is
KinMS's clouds moving with jampy's v_c, none of the fit's model), each fitted by the fit's own
problem (``build_problem``: the Fourier-mode likelihood of ``[data] path = "cube.fits"``), this
measures the fraction of truths inside the 68% and 95% intervals of every free parameter, and the
mean squared offset z^2 (1 for calibrated intervals), for

* ``fourier``: the package's likelihood (``--noise``: the noise of each mode measured in the
  line-free channels, the default, or the restoring-beam model; intervals from the posterior
  curvature at the MAP, i.e. the Fisher matrix the sampler uses, mapped through the prior
  bijection), and
* ``pixels``: the same MAP with a chi^2 over independent pixels of the pixel rms, the naive
  alternative (what kinms_fitter's chi^2 is before its correction factor).

The fit's model is not KinMS's (a deterministic sub-pixel cube against KinMS's clouds), so the
best fit to a *noise-free* KinMS cube of the same truth (3 million clouds) is not exactly the
truth (``pseudo_truth_minus_truth`` in the output). Coverage is reported both of the truth and of that
noise-free best fit (``pseudo_truth``): the second isolates what the likelihood is responsible for,
intervals that match the scatter the noise causes.

With ``--mala N`` the first N mocks are also fitted by the whole pipeline (``run_fit``: MAP, Fisher,
MALA) with a short sampler, and the MALA intervals' coverage is reported beside the Laplace ones.

    .venv/bin/python validation/image_coverage.py [--mocks 40] [--mala 0] [--out validation/out/image_coverage]

Prints one JSON object.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nuker_mge_plugin.adapters.kinms_fitter import write_mock_fits  # noqa: E402
from nuker_mge_plugin.inference.config import config_from_dict  # noqa: E402
from nuker_mge_plugin.inference.fit import build_problem, run_fit  # noqa: E402
from nuker_mge_plugin.inference.optimize import find_map  # noqa: E402

TRUTH = dict(scale_length=0.8, log10_mbh=8.11, inclination=76.0, qintr=0.57, alpha=1.5, gamma_minus_beta=-1.55,
             gamma=0.25, break_r=1.5, intensity_rb=4.78, pa=246.0, line_broadening=8.0, systemic_velocity=1246.0,
             x=0.0, y=0.0, flux=10.0)
CUBE = dict(n_pix=40, cell_arcsec=0.1, n_chan=20, dv_kms=30.0, beam_arcsec=(0.35, 0.28, 20.0), peak_snr=12.0,
            nsamps=300_000)
FIXED = ("qintr", "alpha", "gamma_minus_beta", "gamma", "break_r", "intensity_rb")
Z68, Z95 = 0.994458, 1.959964  # |z| of a Gaussian's central 68.0% (HDI_68 of the summaries) and 95%


NOISE = "empirical"


def fit_config(path, out=None, rms=None):
    data = ({"linefree_channels": [0, 1, 18, 19], "noise": NOISE} if rms is None else
            {"rms_jy_beam": rms, "noise": "beam"})
    raw = {"data": {"path": str(Path(path).resolve()), **data},
           "galaxy": {"distance_mpc": 11.4},
           "model": {"nsub": 3}, "priors": {**{k: TRUTH[k] for k in FIXED}, "pa": [200.0, 290.0],
                                            "inclination": [60.0, 89.0]},
           "sampler": {"kind": "mala", "chains": 4, "seed": 3, "threads": 1, "burn_in_stages": 2, "burn_in_steps": 150,
                       "n_step_trials": 4, "step_trial_steps": 60, "draws": 400, "checkpoint_every": 0},
           "map": {"n_starts": 2}, "output": {"figures": False}}
    if out is not None:
        raw["output"]["dir"] = str(out)
    return config_from_dict(raw, base_dir=str(Path(path).resolve().parent))


def laplace(prob, z, precision):
    """(median, std) [parameter units] per free parameter of the Gaussian N(z, precision^-1) in z."""
    space = prob.space
    cov = torch.linalg.inv(precision)
    sd_z = torch.sqrt(torch.diagonal(cov))
    theta = space.constrain(z[None])[0]
    lo, hi = space.low.to(z), space.high.to(z)
    u = (theta - lo) / (hi - lo)
    dtheta_dz = (hi - lo) * u * (1 - u)
    return theta.numpy(), (sd_z * dtheta_dz).numpy()


def pixel_precision(prob, z):
    """Posterior precision in z of the naive likelihood: independent pixels of the pixel rms."""
    t = prob.sky_tangents(z)                                # (d, n_x, n_y, n_chan)
    with torch.no_grad():
        img = prob.cells.image(t) * prob.cells.pixel_mask.to(t.dtype)
    J = img.reshape(img.shape[0], -1).T / prob.observation["image"].rms_jy_beam
    F = J.T @ J
    return F + torch.diag(prob.space.prior_precision_unconstrained(z[None])[0])


def _map_from_truth(prob):
    space = prob.space
    truth = np.array([TRUTH[n] for n in space.free_names])
    z0 = space.unconstrain(torch.as_tensor(truth)[None].to(torch.float64))
    m = find_map(prob.log_prob, z0, adam_steps=150, adam_lr=0.02, lbfgs_steps=60, progress=False)
    return truth, m["z"].detach()


def pseudo_truth(out):
    """MAP of a noise-free KinMS cube (3e6 clouds) of the truth, (n_free,) [parameter units].

    Weighted as the noisy mocks are (the restoring-beam noise model at their rms, a Gaussian in
    effect): with the noise measured in its own, noise-free line-free channels, the Student-t
    would treat KinMS's cloud noise as outliers.
    """
    cached = out / "pseudo_truth.json"
    if cached.exists():
        return np.array(json.loads(cached.read_text()))
    path = out / "noise_free.fits"
    info = write_mock_fits(path, TRUTH, 11.4, seed=1, noise="beam",
                           **{**CUBE, "nsamps": 3_000_000, "peak_snr": 1e6})
    prob = build_problem(fit_config(path, rms=info["peak"] / CUBE["peak_snr"]), progress=False)
    _, z = _map_from_truth(prob)
    star = prob.space.constrain(z[None])[0].numpy()
    cached.write_text(json.dumps(star.tolist()))
    return star


def one_mock(i, out):
    path = out / f"mock_{i:03d}.fits"
    write_mock_fits(path, TRUTH, 11.4, seed=1000 + i, noise="beam", **CUBE)
    cfg = fit_config(path)
    prob = build_problem(cfg, progress=False)
    truth, z = _map_from_truth(prob)
    fish = prob.fisher(z)
    res = {"fourier": laplace(prob, z, torch.as_tensor(fish.precision)),
           "pixels": laplace(prob, z, pixel_precision(prob, z))}
    rep = prob.gridded.report
    return truth, res, dict(chi2_per_mode=prob.chi2_per_cell(z), n_modes=prob.cells.n_cells,
                            n_pixels=int(rep["n_pix"] ** 2 * rep["n_chan"]), beam_area_pix=rep["beam_area_pix"],
                            rms=rep["rms_jy_beam"], noise_power_ratio=prob.cells.noise_power_ratio(
                                prob.observation["image"], [0, 1, 18, 19]))


def coverage(zs, names):
    zs = np.asarray(zs)
    per = {n: dict(in_68=float(np.mean(np.abs(zs[:, j]) <= Z68)), in_95=float(np.mean(np.abs(zs[:, j]) <= Z95)),
                   mean_z2=float(np.mean(zs[:, j] ** 2))) for j, n in enumerate(names)}
    return dict(all_parameters=dict(in_68=float(np.mean(np.abs(zs) <= Z68)), in_95=float(np.mean(np.abs(zs) <= Z95)),
                                    mean_z2=float(np.mean(zs ** 2))), per_parameter=per)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mocks", type=int, default=40)
    ap.add_argument("--mala", type=int, default=0, help="also run the full fit (MALA) on the first N mocks")
    ap.add_argument("--out", default="validation/out/image_coverage")
    ap.add_argument("--noise", default="empirical", choices=("empirical", "beam"),
                    help="the fit's [data] noise: measured in the line-free channels, or the restoring-beam model")
    a = ap.parse_args()
    global NOISE
    NOISE = a.noise
    torch.set_num_threads(1)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    star = pseudo_truth(out)
    # one JSON line per mock (medians and stds), so that an interrupted run resumes
    records = out / f"mocks_{a.noise}.jsonl"
    done = [json.loads(x) for x in records.read_text().splitlines()] if records.exists() else []
    with open(records, "a") as f:
        for i in range(len(done), a.mocks):
            truth, res, d = one_mock(i, out)
            rec = dict(mock=i, truth=truth.tolist(), **{k: dict(median=m.tolist(), std=sd.tolist())
                                                       for k, (m, sd) in res.items()}, **d)
            f.write(json.dumps(rec) + "\n")
            f.flush()
            done.append(rec)
            print(json.dumps(dict(mock=i, chi2_per_mode=round(d["chi2_per_mode"], 4))), file=sys.stderr, flush=True)
    done = done[:a.mocks]
    names = list(build_problem(fit_config(out / "mock_000.fits"), progress=False).space.free_names)
    zs = {k: [(np.array(r[k]["median"]) - np.array(r["truth"])) / np.array(r[k]["std"]) for r in done]
          for k in ("fourier", "pixels")}
    zs_star = {k: [(np.array(r[k]["median"]) - star) / np.array(r[k]["std"]) for r in done]
               for k in ("fourier", "pixels")}
    diag = done
    result = dict(metric="image-plane coverage", mocks=a.mocks, noise=a.noise, cube=CUBE, free=names,
                  pseudo_truth_minus_truth=dict(zip(names, (star - np.array([TRUTH[n] for n in names])).tolist())),
                  n_modes=diag[0]["n_modes"], n_pixels=diag[0]["n_pixels"], beam_area_pix=diag[0]["beam_area_pix"],
                  chi2_per_mode_at_map=dict(mean=float(np.mean([d["chi2_per_mode"] for d in diag])),
                                            sd=float(np.std([d["chi2_per_mode"] for d in diag]))),
                  noise_power_ratio=float(np.mean([d["noise_power_ratio"] for d in diag])),
                  nominal=dict(in_68=0.68, in_95=0.95, mean_z2=1.0),
                  binomial_sd_68=math.sqrt(0.68 * 0.32 / a.mocks),
                  fourier=coverage(zs["fourier"], names), pixels=coverage(zs["pixels"], names),
                  fourier_vs_pseudo_truth=coverage(zs_star["fourier"], names),
                  pixels_vs_pseudo_truth=coverage(zs_star["pixels"], names),
                  pixel_over_fourier_interval_width=float(np.median(
                      [np.median(np.abs(zf / zp)) for zf, zp in zip(zs["fourier"], zs["pixels"])])))
    if a.mala:
        zm = []
        for i in range(a.mala):
            s = run_fit(fit_config(out / f"mock_{i:03d}.fits", out / f"fit_{i:03d}"), out / f"fit_{i:03d}",
                        progress=False, log=lambda *_: None)
            p = s["parameters"]
            zm.append([(p[n]["median"] - TRUTH[n]) / p[n]["std"] for n in names])
            result.setdefault("mala_r_hat_max", []).append(s["diagnostics"]["max_r_hat"])
        result["mala"] = coverage(zm, names)
        result["mala"]["mocks"] = a.mala
    result["wall_time_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
