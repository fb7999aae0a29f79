"""Cleaned FITS cubes: the reader (image/cube.py), the Fourier-domain cells (image/fourier.py) and
their configuration ([data] path = "cube.fits")."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from nuker_mge_plugin.dynamics.coords import SkyGrid
from nuker_mge_plugin.image import BeamFourierCells, beam_image, image_cube_grid, is_image_cube, read_image_cube
from nuker_mge_plugin.inference.config import ConfigError, config_from_dict
from nuker_mge_plugin.inference.likelihood import GriddedLikelihood

NGC4324_CUTOUT = Path(__file__).parent / "data" / "ngc4324_cutout.fits"
CELL, BEAM = 0.5, (2.0, 1.4, 30.0)


def _header(n_x, n_y, cell=CELL, *, ctype3="VRAD", crval3=1300e3, cdelt3=-20e3, beam=BEAM, stokes=False):
    h = fits.Header()
    h["CTYPE1"], h["CDELT1"], h["CRPIX1"], h["CRVAL1"] = "RA---SIN", -cell / 3600, n_x // 2 + 1, 180.0
    h["CTYPE2"], h["CDELT2"], h["CRPIX2"], h["CRVAL2"] = "DEC--SIN", cell / 3600, n_y // 2 + 1, 10.0
    h["CTYPE3"], h["CRPIX3"], h["CRVAL3"], h["CDELT3"] = ctype3, 1.0, crval3, cdelt3
    h["CUNIT3"] = "Hz" if ctype3 == "FREQ" else "m/s"
    if stokes:
        h["CTYPE4"], h["CRPIX4"], h["CRVAL4"], h["CDELT4"] = "STOKES", 1.0, 1.0, 1.0
    h["SPECSYS"], h["RESTFRQ"], h["BUNIT"] = "LSRK", 230.538e9, "Jy/beam"
    if beam is not None:
        h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600, beam[1] / 3600, beam[2]
    return h


def _write(path, cube_xyv, **kw):
    """Write an (x, y, v) cube (+x West) as FITS (v, y, x), optionally with a Stokes axis."""
    arr = np.asarray(cube_xyv, dtype=np.float32).transpose(2, 1, 0)
    if kw.get("stokes"):
        arr = arr[None]
    fits.PrimaryHDU(arr, _header(cube_xyv.shape[0], cube_xyv.shape[1], **kw)).writeto(path, overwrite=True)
    return path


def _convolve(sky, grid, beam=BEAM):
    B = np.fft.fft2(beam_image(grid, *beam, wrapped=True)).real
    return np.fft.ifft2(np.fft.fft2(sky, axes=(0, 1)) * B[:, :, None], axes=(0, 1)).real


def _beam_noise(shape, grid, rms, seed, beam=BEAM):
    b = beam_image(grid, *beam, wrapped=True)
    w = np.random.default_rng(seed).normal(size=shape)
    return rms * _convolve(w, grid, beam) / np.sqrt((b * b).sum())


def test_point_source_lands_west_and_north_where_the_header_says(tmp_path):
    """A source 3 pixels West and 2 North of the reference, written with CDELT1 < 0, comes out at
    x = +1.5", y = +1.0" (+x West as in KinMS); the Stokes axis is dropped."""
    n = 16
    grid = SkyGrid(n, n, CELL)
    cube = np.zeros((n, n, 4))
    ix, iy = grid.pixel_of(1.5, 1.0)
    cube[ix, iy, 1] = 1.0
    path = _write(tmp_path / "pt.fits", cube, stokes=True)
    # where astropy puts that pixel on the sky: West = smaller RA, North = larger Dec
    from astropy.wcs import WCS
    ra, dec = WCS(fits.getheader(path)).celestial.all_pix2world([[ix, iy]], 0)[0]
    assert ra < 180.0 and dec > 10.0
    c = read_image_cube(path, rms_jy_beam=0.1)
    assert c.data.shape == (n, n, 4) and c.n_pix == n
    got = np.unravel_index(np.argmax(c.data), c.data.shape)
    assert (grid.x_arcsec[got[0]], grid.y_arcsec[got[1]], got[2]) == (1.5, 1.0, 1)
    assert (c.ref_ra_deg, c.ref_dec_deg) == pytest.approx((180.0, 10.0))
    # decreasing velocity channels stay in the file's order
    assert np.allclose(c.vel_kms, 1300.0 - 20.0 * np.arange(4))


def test_flipped_ra_axis_is_turned_to_west(tmp_path):
    n = 16
    cube = np.zeros((n, n, 3))
    cube[11, 8, 0] = 1.0
    arr = cube.transpose(2, 1, 0)[:, :, ::-1].astype(np.float32)  # RA now grows with the index
    h = _header(n, n)
    h["CDELT1"] = CELL / 3600
    h["CRPIX1"] = n - n // 2  # the same sky pixel as reference
    fits.PrimaryHDU(arr, h).writeto(tmp_path / "flip.fits")
    c = read_image_cube(tmp_path / "flip.fits", rms_jy_beam=0.1)
    assert np.unravel_index(np.argmax(c.data), c.data.shape) == (11, 8, 0)


def test_cutout_around_a_given_centre(tmp_path):
    n = 32
    cube = np.zeros((n, n, 3))
    cube[20, 12, 1] = 1.0
    path = _write(tmp_path / "c.fits", cube)
    from astropy.wcs import WCS
    ra, dec = WCS(fits.getheader(path)).celestial.all_pix2world([[20, 12]], 0)[0]
    c = read_image_cube(path, n_pix=8, centre_radec_deg=(ra, dec), rms_jy_beam=0.1)
    assert c.data.shape == (8, 8, 3) and c.data[4, 4, 1] == 1.0
    assert (c.ref_ra_deg, c.ref_dec_deg) == pytest.approx((ra, dec), abs=1e-9)
    assert c.report["cutout_origin"] == [16, 8]
    with pytest.raises(ValueError, match="does not fit"):
        read_image_cube(path, n_pix=30, centre_radec_deg=(ra, dec), rms_jy_beam=0.1)


def test_frequency_axis_and_optical_velocities_become_one_uniform_radio_axis(tmp_path):
    n = 8
    f0 = 230.538e9
    path = _write(tmp_path / "f.fits", np.zeros((n, n, 5)), ctype3="FREQ", crval3=f0 * (1 - 1000 / 299792.458),
                  cdelt3=-1e6)
    c = read_image_cube(path, rms_jy_beam=0.1)
    assert np.allclose(c.vel_kms[0], 1000.0) and np.allclose(np.diff(c.vel_kms), 1e6 / f0 * 299792.458)
    assert np.allclose(c.chan_freq_hz, f0 * (1 - 1000 / 299792.458) - 1e6 * np.arange(5))
    # 21 channels of 20 km/s from 1450 km/s in optical velocity (NGC 4324's axis): radio 1443.0 ...
    path = _write(tmp_path / "o.fits", np.zeros((n, n, 21)), ctype3="VOPT", crval3=1450e3, cdelt3=20e3)
    c = read_image_cube(path, rms_jy_beam=0.1)
    vrad = 299792.458 * (1 - 1 / (1 + (1450 + 20 * np.arange(21)) / 299792.458))
    assert np.max(np.abs(c.vel_kms - vrad)) < 0.03 * 20 and c.report["max_channel_shift"] < 0.03
    assert np.allclose(np.diff(c.vel_kms), np.diff(c.vel_kms)[0])
    r = read_image_cube(path, rms_jy_beam=0.1, velocity_convention="radio")
    assert np.allclose(r.vel_kms, 1450 + 20 * np.arange(21))
    # a wide band in optical velocity cannot be put on a uniform radio axis
    path = _write(tmp_path / "w.fits", np.zeros((n, n, 200)), ctype3="VOPT", crval3=30000e3, cdelt3=200e3)
    with pytest.raises(ValueError, match="not uniformly spaced"):
        read_image_cube(path, rms_jy_beam=0.1)


def test_ngc4324_cutout_header_is_read_as_the_kinms_example_has_it():
    """The real CARMA cube's Miriad header: VELO-LSR (astropy: optical, VELREF absent), 1" pixels,
    the 4.68" x 3.85" beam at PA 15.5 deg, rest frequency 115.27 GHz, RMS keyword 3.1 mJy/beam."""
    assert is_image_cube(NGC4324_CUTOUT)
    cell, n_max, rest = image_cube_grid(NGC4324_CUTOUT)
    assert cell == pytest.approx(1.0, rel=1e-6) and n_max == 32 and rest == pytest.approx(115.271202e9)
    c = read_image_cube(NGC4324_CUTOUT)
    assert c.data.shape == (32, 32, 21)
    assert c.beam_fwhm_arcsec == pytest.approx((4.683, 3.851), abs=1e-3) and c.beam_pa_deg == pytest.approx(15.54, 1e-3)
    assert c.report["spectral_axis"] == "VOPT" and c.spec_frame == "LSRK"
    assert c.vel_kms[0] == pytest.approx(1450 / (1 + 1450 / 299792.458), abs=0.3)
    # line-free end channels: the header's RMS keyword is 3.12 mJy/beam over the whole field
    assert 0.002 < c.rms_jy_beam < 0.006 and c.n_eff_noise > 100
    radio = read_image_cube(NGC4324_CUTOUT, velocity_convention="radio")
    assert radio.vel_kms[0] == pytest.approx(1450.0) and radio.vel_kms[-1] == pytest.approx(1850.0)


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(CTYPE3="LINEAR"), "no spectral axis"),
    (lambda h: [h.remove("BMAJ"), h.remove("BMIN")], "no restoring beam"),
    (lambda h: h.update(BUNIT="K"), "Jy/beam"),
    (lambda h: h.update(CDELT2=2 * CELL / 3600), "square"),
    (lambda h: h.remove("RESTFRQ"), "rest frequency"),
    (lambda h: h.update(PC1_2=0.1, PC2_1=-0.1), "rotated"),
])
def test_bad_cubes_fail_in_one_line_naming_the_file(tmp_path, edit, message):
    h = _header(8, 8)
    edit(h)
    path = tmp_path / "bad.fits"
    fits.PrimaryHDU(np.zeros((4, 8, 8), np.float32), h).writeto(path)
    with pytest.raises(ValueError, match=message) as e:
        read_image_cube(path, rms_jy_beam=0.1)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_fourier_modes_of_the_true_sky_fit_beam_correlated_noise_to_chi2_one(tmp_path):
    """At the truth, chi^2 per mode is 1 within its scatter for noise correlated over the beam, from
    far fewer independent modes than pixels; the model image is the sky convolved with the beam."""
    n, n_chan, rms = 64, 6, 0.01
    grid = SkyGrid(n, n, CELL)
    sky = np.zeros((n, n, n_chan))
    sky[40, 30, 2], sky[20, 25, 3] = 1.0, 0.5
    data = _convolve(sky, grid) + _beam_noise(sky.shape, grid, rms, seed=1)
    c = read_image_cube(_write(tmp_path / "t.fits", data), rms_jy_beam=rms)
    cells = BeamFourierCells(c, grid, noise="beam")
    like = GriddedLikelihood(cells.vis, cells.sigma, cells.n_eff, kind="gaussian", sigma_scale=1.0)
    chi2 = float(like.chi2(cells(torch.as_tensor(sky)[None])).mean())
    assert abs(chi2 - 1.0) < 4 * np.sqrt(1.0 / cells.n_cells)
    # fewer modes than pixels: about the number of beams in the field, over half the plane
    assert cells.n_cells < n * n * n_chan / 4
    img = cells.image(torch.as_tensor(sky)).numpy()
    assert np.abs(img - _convolve(sky, grid)).max() < 1e-12
    # a wrong sky is much less likely
    wrong = sky.copy()
    wrong[40, 30, 2] = 0.9
    assert float(like(cells(torch.as_tensor(wrong)[None]))[0]) < float(like(cells(torch.as_tensor(sky)[None]))[0]) - 10


def test_noise_power_of_line_free_channels_matches_the_model(tmp_path):
    n, rms = 48, 0.02
    grid = SkyGrid(n, n, CELL)
    noise = _beam_noise((n, n, 8), grid, rms, seed=4)
    c = read_image_cube(_write(tmp_path / "n.fits", noise), linefree_channels=list(range(8)))
    assert c.rms_jy_beam == pytest.approx(rms, rel=0.1) and c.linefree_channels == tuple(range(8))
    beam = BeamFourierCells(c, grid, noise="beam")
    assert beam.noise_power_ratio(c, range(8)) == pytest.approx(1.0, abs=0.1)
    # measured per mode from four channels, it predicts the other four (held out)
    half = BeamFourierCells(dataclasses.replace(c, linefree_channels=(0, 1, 2, 3)), grid)
    assert half.noise_power_ratio(c, range(4, 8)) == pytest.approx(1.0, abs=0.1)
    assert half.report["noise_power_over_beam_model"] == pytest.approx(1.0, abs=0.15)
    assert float(half.n_eff[0]) == 4 * 25 and half.report["noise_model"] == "empirical"


def test_empirical_noise_follows_noise_that_the_restoring_beam_does_not_describe(tmp_path):
    """Noise correlated by a beam narrower than the restoring one (more high-k power, as a dirty
    beam gives): the beam model underestimates it, the empirical model does not."""
    n, n_chan, rms = 48, 10, 0.01
    grid = SkyGrid(n, n, CELL)
    noise = _beam_noise((n, n, n_chan), grid, rms, seed=7, beam=(1.2, 0.9, 30.0))
    c = read_image_cube(_write(tmp_path / "e.fits", noise), linefree_channels=[0, 1, 2, 3, 4])
    emp, beam = BeamFourierCells(c, grid), BeamFourierCells(c, grid, noise="beam")
    held_out = range(5, n_chan)
    assert emp.noise_power_ratio(c, held_out) == pytest.approx(1.0, abs=0.1)
    assert beam.noise_power_ratio(c, held_out) > 1.5
    with pytest.raises(ValueError, match="needs line-free channels"):
        BeamFourierCells(read_image_cube(tmp_path / "e.fits", rms_jy_beam=rms), grid)


def test_masked_pixels_are_left_out_of_data_and_model(tmp_path):
    n, n_chan = 32, 3
    grid = SkyGrid(n, n, CELL)
    sky = np.zeros((n, n, n_chan))
    sky[16, 16, 1] = 1.0
    data = _convolve(sky, grid)
    data[:4] = np.nan  # a masked strip
    c = read_image_cube(_write(tmp_path / "m.fits", data), rms_jy_beam=0.01)
    cells = BeamFourierCells(c, grid, noise="beam")
    assert cells.masked and c.report["masked_pixels"] == 4 * n * n_chan
    m = cells(torch.as_tensor(sky)[None])[0]
    assert torch.allclose(m, cells.vis.to(m.dtype), atol=1e-9)  # noise-free data = model, mask and all
    assert bool(torch.isfinite(cells.vis).all())


def test_fourier_cells_are_differentiable_and_batched(tmp_path):
    n = 16
    grid = SkyGrid(n, n, CELL)
    c = read_image_cube(_write(tmp_path / "d.fits", np.zeros((n, n, 3))), rms_jy_beam=0.01)
    cells = BeamFourierCells(c, grid, noise="beam")
    sky = torch.rand(2, n, n, 3, dtype=torch.float64, requires_grad=True)
    out = cells(sky)
    assert out.shape == (2, cells.n_cells)
    assert torch.allclose(out[1], cells(sky[1].detach()))
    out.abs().pow(2).sum().backward()
    assert bool(torch.isfinite(sky.grad).all()) and float(sky.grad.abs().sum()) > 0
    f32 = cells(sky.detach().float())
    assert f32.dtype == torch.complex64


def _fit_toml(path, **data):
    return {"data": {"path": str(path), **data}, "galaxy": {"distance_mpc": 16.5}}


def test_config_takes_the_grid_and_rest_frequency_from_the_cube(tmp_path):
    path = _write(tmp_path / "cfg.fits", np.zeros((20, 16, 4)))
    cfg = config_from_dict(_fit_toml(path, linefree_channels=[0, 3]))
    assert cfg.data.is_image and cfg.model.cell_arcsec == pytest.approx(CELL) and cfg.model.n_pix == 16
    assert cfg.data.rest_freq_hz == pytest.approx(230.538e9) and cfg.data.linefree_channels == (0, 3)
    again = config_from_dict(cfg.to_dict())  # the resolved configuration reads back
    assert again.data == cfg.data and again.model == cfg.model
    with pytest.raises(ConfigError, match=r"model.cell_arcsec: expects the cube's pixel size 0.5"):
        config_from_dict({**_fit_toml(path), "model": {"cell_arcsec": 0.25}})
    with pytest.raises(ConfigError, match="model.n_pix: expects an even cut-out size <= 16"):
        config_from_dict({**_fit_toml(path), "model": {"n_pix": 18}})
    with pytest.raises(ConfigError, match="data.fourier_threshold"):
        config_from_dict(_fit_toml(path, fourier_threshold=1.5))
    with pytest.raises(ConfigError, match="data.centre_radec_deg"):
        config_from_dict(_fit_toml(path, centre_radec_deg=[400.0, 0.0]))
    assert cfg.data.noise == "empirical"
    assert config_from_dict(_fit_toml(path, rms_jy_beam=0.01)).data.noise == "beam"
    with pytest.raises(ConfigError, match="data.noise: expects \"beam\" when data.rms_jy_beam is given"):
        config_from_dict(_fit_toml(path, rms_jy_beam=0.01, noise="empirical"))
    with pytest.raises(ConfigError, match="data.path: expects an existing FITS cube"):
        config_from_dict(_fit_toml(tmp_path / "missing.fits"))


def test_image_keys_are_refused_for_visibilities(tmp_path):
    npz = tmp_path / "obs.npz"
    npz.write_bytes(b"")
    raw = {**_fit_toml(npz, rms_jy_beam=0.01), "model": {"cell_arcsec": 0.1, "n_pix": 32}}
    with pytest.raises(ConfigError, match="data.rms_jy_beam: applies to a FITS image cube only"):
        config_from_dict(raw)
    ok = config_from_dict({**_fit_toml(npz), "model": {"cell_arcsec": 0.1, "n_pix": 32}})
    assert not ok.data.is_image and "fourier_threshold" not in ok.to_dict()["data"]


def test_primary_beam_image_is_cut_out_with_the_cube(tmp_path):
    n = 16
    cube = _write(tmp_path / "c.fits", np.zeros((n, n, 3)))
    gain = np.linspace(0.2, 1.0, n)[:, None] * np.ones((1, n))  # falls towards -x (East)
    h = _header(n, n)
    fits.PrimaryHDU(gain.T[None].astype(np.float32), h).writeto(tmp_path / "pb.fits")
    c = read_image_cube(cube, n_pix=8, rms_jy_beam=0.01, pb_path=tmp_path / "pb.fits")
    assert c.pb.shape == (8, 8) and np.allclose(c.pb, gain[4:12, 4:12], atol=1e-6)
    fits.PrimaryHDU((2 * gain.T[None]).astype(np.float32), h).writeto(tmp_path / "bad.fits")
    with pytest.raises(ValueError, match=r"bad\.fits: primary-beam values must lie in \[0, 1\]"):
        read_image_cube(cube, rms_jy_beam=0.01, pb_path=tmp_path / "bad.fits")
    fits.PrimaryHDU(np.ones((3, 8, 8), np.float32), _header(8, 8)).writeto(tmp_path / "small.fits")
    with pytest.raises(ValueError, match="does not match the cube"):
        read_image_cube(cube, rms_jy_beam=0.01, pb_path=tmp_path / "small.fits")
    with pytest.raises(ValueError, match="must be FITS"):
        read_image_cube(cube, rms_jy_beam=0.01, pb_path=tmp_path / "pb.img")


@pytest.mark.parametrize("damage, message", [("corrupt", "not a readable FITS file"),
                                             ("truncated", "the file is truncated")])
def test_damaged_cube_fit_is_one_line_exit_2_and_leaves_no_output(tmp_path, capfd, monkeypatch, damage, message):
    """astropy's multi-line warnings stay out; the error names the file; no output folder is made."""
    from nuker_mge_plugin.cli import main

    good = _write(tmp_path / "good.fits", np.ones((8, 8, 6)))
    blob = good.read_bytes()
    path = tmp_path / "bad.fits"
    path.write_bytes(blob[:2000] if damage == "corrupt" else blob[:len(blob) - 2880])
    (tmp_path / "fit.toml").write_text('[data]\npath = "bad.fits"\nrms_jy_beam = 0.1\n[galaxy]\ndistance_mpc = 16.5\n'
                                       '[output]\ndir = "out"\n')
    monkeypatch.chdir(tmp_path)
    rc = main(["fit", "fit.toml"])
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("nuker-mge: error: "), (rc, out, err)
    assert str(path) in lines[0] and message in lines[0]
    assert not (tmp_path / "out").exists()
