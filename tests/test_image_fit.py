"""A whole image-plane fit of a FITS cube, and the Gaussian-ring surface brightness."""

import json

import numpy as np
import pytest
import torch
from astropy.io import fits

from nuker_mge_plugin.dynamics.coords import SkyGrid
from nuker_mge_plugin.inference.config import ConfigError, config_from_dict
from nuker_mge_plugin.inference.fit import build_problem, run_fit
from nuker_mge_plugin.inference.forward import NukerDiscModel
from nuker_mge_plugin.inference.parameters import ParameterSpace

TRUTH = dict(scale_length=0.8, log10_mbh=8.11, inclination=76.0, qintr=0.57, alpha=1.5, gamma_minus_beta=-1.55,
             gamma=0.25, break_r=1.5, intensity_rb=4.78, pa=246.0, line_broadening=8.0, systemic_velocity=1246.0,
             x=0.0, y=0.0, flux=10.0)
FIXED = ("qintr", "alpha", "gamma_minus_beta", "gamma", "break_r", "intensity_rb", "scale_length", "line_broadening")


@pytest.fixture(scope="module")
def mock_cube(tmp_path_factory):
    pytest.importorskip("kinms")
    from nuker_mge_plugin.adapters.kinms_fitter import write_mock_fits

    path = tmp_path_factory.mktemp("image_fit") / "mock.fits"
    write_mock_fits(path, TRUTH, 11.4, n_pix=24, cell_arcsec=0.2, n_chan=12, dv_kms=60.0,
                    beam_arcsec=(0.5, 0.45, 10.0), peak_snr=15.0, nsamps=50_000, seed=2, noise="beam")
    return path


def _config(path, tmp_path, **sampler):
    raw = {"data": {"path": str(path), "linefree_channels": [0, 1, 10, 11]}, "galaxy": {"distance_mpc": 11.4},
           "model": {"nsub": 2}, "priors": {**{k: TRUTH[k] for k in FIXED}, "pa": [200.0, 290.0]},
           "map": {"n_starts": 1, "screen_grid": 6, "screen_sweeps": 1, "adam_steps": 20, "lbfgs_steps": 5},
           "sampler": {"kind": "mala", "chains": 2, "seed": 3, "threads": 1, "burn_in_stages": 1, "burn_in_steps": 10,
                       "n_step_trials": 2, "step_trial_steps": 5, "draws": 20, "checkpoint_every": 0, **sampler},
           "output": {"dir": str(tmp_path / "out"), "figures": False}}
    return config_from_dict(raw)


def test_image_problem_matches_the_cube_at_the_truth(mock_cube, tmp_path):
    prob = build_problem(_config(mock_cube, tmp_path))
    assert prob.config.model.cell_arcsec == pytest.approx(0.2) and prob.config.model.n_pix == 24
    assert prob.cells.n_cells == prob.likelihood.n_cells > 100
    theta = torch.tensor([[TRUTH[n] for n in prob.space.free_names]], dtype=torch.float64)
    z = prob.space.unconstrain(theta)
    chi2_truth = prob.chi2_per_cell(z[0])
    assert 0.7 < chi2_truth < 1.3  # the KinMS mock's noise, as the Fourier modes see it
    off = theta.clone()
    off[0, prob.space.free_names.index("pa")] = 266.0  # the disc turned by 20 deg
    with torch.no_grad():
        assert float(prob.log_prob(z)[0] - prob.log_prob(prob.space.unconstrain(off))[0]) > 50.0
    # the Fisher matrix of the image likelihood is finite and positive definite
    fish = prob.fisher(z[0])
    cov = torch.as_tensor(fish.covariance)
    assert bool(torch.isfinite(cov).all()) and bool((torch.linalg.eigvalsh(cov) > 0).all())


def test_run_fit_on_a_fits_cube_writes_results_and_image_products(mock_cube, tmp_path):
    s = run_fit(_config(mock_cube, tmp_path), tmp_path / "out", progress=False, log=lambda *_: None)
    out = tmp_path / "out"
    assert set(s["parameters"]) == {"log10_mbh", "inclination", "pa", "systemic_velocity", "x", "y", "flux"}
    assert s["gridding"]["noise_model"] == "empirical" and s["gridding"]["n_pix"] == 24
    assert json.loads((out / "summary.json").read_text())["n_cells"] == s["n_cells"]
    data = fits.getdata(out / "data_cube.fits")
    model = fits.getdata(out / "model_cube.fits")
    resid = fits.getdata(out / "residual_cube.fits")
    assert data.shape == model.shape == resid.shape == (12, 24, 24)
    assert np.allclose(data - model, resid, atol=1e-6)
    # the data product is the cube's cut-out, in the file's orientation
    assert np.allclose(data, fits.getdata(mock_cube), atol=1e-6)
    h = fits.getheader(out / "data_cube.fits")
    assert h["CRVAL1"] == pytest.approx(192.0) and h["CRVAL2"] == pytest.approx(-5.8) and h["CTYPE3"] == "VRAD"
    assert (out / "results.ecsv").is_file() and (out / "model_sky.fits").is_file()
    # reloading the finished fit rewrites its results with the fit's own compute time, not the reload's
    again = run_fit(_config(mock_cube, tmp_path), out, resume=True, progress=False, log=lambda *_: None)
    assert again["parameters"] == s["parameters"]
    assert again["wall_time_s"] >= s["map"]["wall_time_s"] and again["wall_time_s"] > 0.8 * s["wall_time_s"]


def test_gaussian_ring_surface_brightness_peaks_at_ring_radius():
    grid = SkyGrid(64, 64, 0.5)
    freq = 230.538e9 * (1 - (1246.0 + 20.0 * (np.arange(24) - 12)) / 299792.458)
    ring = NukerDiscModel(grid, freq, 230.538e9, 11.4, nsub=2, surface_brightness="ring")
    spec = {**TRUTH, "inclination": 30.0, "pa": 90.0, "scale_length": 1.0, "ring_radius": 8.0, "flux": 5.0}
    space = ParameterSpace(spec)
    assert space.names[-1] == "ring_radius" and space.n_free == 0
    with torch.no_grad():
        sky = ring.sky_cube(space.to_dict(torch.zeros(1, 0, dtype=torch.float64)))[0].numpy()
    mom0 = sky.sum(-1)
    assert mom0.sum() * 20.0 == pytest.approx(5.0, rel=0.02)  # Jy km/s
    # along the major axis (PA 90: East-West, the x axis) the ring peaks at 8" from the centre
    cut = mom0[:, 32]
    peak_x = abs(grid.x_arcsec[int(np.argmax(cut))])
    assert peak_x == pytest.approx(8.0, abs=0.5) and cut[32] < 0.01 * cut.max()
    with pytest.raises(ValueError, match="surface_brightness"):
        NukerDiscModel(grid, freq, 230.538e9, 11.4, surface_brightness="spiral")


def test_ring_radius_prior_only_with_the_ring(tmp_path):
    npz = tmp_path / "obs.npz"
    npz.write_bytes(b"")
    base = {"data": {"path": str(npz)}, "galaxy": {"distance_mpc": 16.5}, "model": {"cell_arcsec": 1.0, "n_pix": 64}}
    with pytest.raises(ConfigError, match="priors.ring_radius: applies to model.surface_brightness = \"ring\""):
        config_from_dict({**base, "priors": {"ring_radius": [5.0, 30.0]}}, check_files=False)
    ring = config_from_dict({**base, "model": {**base["model"], "surface_brightness": "ring"}}, check_files=False)
    assert ring.priors["ring_radius"].low == 0.0 and ring.priors["ring_radius"].high == 32.0
    assert "ring_radius" not in config_from_dict(base, check_files=False).priors.names
    given = config_from_dict({**base, "model": {**base["model"], "surface_brightness": "ring"},
                              "priors": {"ring_radius": [10.0, 25.0]}}, check_files=False)
    assert (given.priors["ring_radius"].low, given.priors["ring_radius"].high) == (10.0, 25.0)
    assert config_from_dict(given.to_dict(), check_files=False).priors["ring_radius"].high == 25.0
