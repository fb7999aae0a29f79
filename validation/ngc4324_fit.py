"""The real CARMA CO(1-0) cube of NGC 4324 fitted in the image plane, beside KinMS's own example.

Runs ``nuker-mge fit validation/ngc4324_fit.toml`` (the cube is read in place from
../shared/data/NGC4324_CO10_CARMA.fits) and prints one JSON object: the posterior median, std and
68% HDI of every free parameter, R-hat and ESS, the noise diagnostics of the Fourier-mode
likelihood, and the comparison with the geometry of KinMSpy's example ``KinMStest_ngc4324``
(KinMS_testsuite.py, github TimothyADavis/KinMSpy: inc 65 deg, posAng 230 deg, a Gaussian ring at
20" of dispersion 2", phaseCen [-1, -1]", vOffset 0 from the band centre, gasSigma 10 km/s,
intFlux 27.2 Jy km/s, v_flat 175 km/s). Those are the example's chosen values (set by hand to
reproduce the data, no uncertainties), so the comparison is a consistency check, not a test.

    .venv/bin/python validation/ngc4324_fit.py [--out validation/out/ngc4324] [--resume]

``make docs-figures`` (docs/make_figures.py, group ``real``) runs it and copies its moment maps
and PV diagram into docs/ for README.rst.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nuker_mge_plugin.constants import C_KMS  # noqa: E402
from nuker_mge_plugin.inference.config import load_config  # noqa: E402
from nuker_mge_plugin.inference.fit import run_fit  # noqa: E402

HERE = Path(__file__).resolve().parent
#: KinMStest_ngc4324's values. Its band centre (KinMS: v = 0 at channel n/2 = 10.5 of 21) is
#: 1450 + 10.5 x 20 = 1660 km/s on the file's VELO-LSR axis.
KINMS_EXAMPLE = dict(inclination=65.0, pa=230.0, ring_radius=20.0, scale_length=2.0, x=-1.0, y=-1.0,
                     line_broadening=10.0, flux=27.2, systemic_velocity_file_axis=1660.0, v_flat_kms=175.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="validation/out/ngc4324")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted fit in --out, or rewrite a finished one's results from its chains")
    a = ap.parse_args()
    cfg = load_config(HERE / "ngc4324_fit.toml")
    if not Path(cfg.data.path).is_file():
        sys.exit(f"ngc4324_fit: {cfg.data.path} not found (the real-data cube lives in ../shared/data)")
    t0 = time.perf_counter()
    s = run_fit(cfg, a.out, resume=a.resume, progress=False, log=lambda *m: print(*m, file=sys.stderr, flush=True))
    p = s["parameters"]
    res = {k: dict(median=v["median"], std=v["std"], hdi_68=v["hdi_68"], r_hat=v["r_hat"], ess_bulk=v["ess_bulk"])
           for k, v in p.items()}
    vr = p["systemic_velocity"]["median"]
    # our systemic velocity is radio (c (1 - f / f0)); on the file's axis as astropy reads it
    # (optical: VELO-LSR without VELREF) that is v_opt = v_rad / (1 - v_rad / c)
    comparison = {k: dict(kinms_example=KINMS_EXAMPLE[k], fit=p[k]["median"],
                          offset_sigma=(p[k]["median"] - KINMS_EXAMPLE[k]) / p[k]["std"])
                  for k in ("inclination", "pa", "ring_radius", "scale_length", "x", "y", "line_broadening", "flux")}
    comparison["systemic_velocity"] = dict(kinms_example_file_axis=KINMS_EXAMPLE["systemic_velocity_file_axis"],
                                           fit_radio=vr, fit_optical=vr / (1 - vr / C_KMS),
                                           std=p["systemic_velocity"]["std"])
    g = s.get("gridding", {})
    out = dict(metric="NGC 4324 image-plane fit", data=cfg.data.path, wall_time_s=round(time.perf_counter() - t0, 1),
               max_r_hat=s["diagnostics"]["max_r_hat"], min_ess_bulk=s["diagnostics"]["min_ess_bulk"],
               acceptance=s["acceptance"], chi2_per_mode_at_map=s.get("map", {}).get("chi2_per_cell"),
               n_modes=g.get("cells_usable"), noise=dict((k, g.get(k)) for k in (
                   "noise_model", "rms_jy_beam", "noise_power_over_beam_model", "noise_n_eff", "beam_fwhm_arcsec",
                   "spectral_axis", "max_channel_shift")),
               parameters=res, kinms_example=comparison)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
