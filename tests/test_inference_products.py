"""Standard products of a fit (inference/products.py): FITS WCS, PV diagram, moment maps, ECSV."""

import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.coords import SkyGrid
from nuker_mge_plugin.inference.forward import NukerDiscModel
from nuker_mge_plugin.inference.parameters import PARAMETER_NAMES
from nuker_mge_plugin.inference.products import pv_diagram, results_table, sky_header, write_products
from nuker_mge_plugin.mock import channel_freqs

fits = pytest.importorskip("astropy.io.fits")
TRUTH = dict(scale_length=0.8, log10_mbh=8.11, inclination=60.0, qintr=0.57, alpha=1.5, gamma_minus_beta=-1.55,
             gamma=0.25, break_r=1.5, intensity_rb=4.78, pa=90.0, line_broadening=8.0, systemic_velocity=1246.0,
             x=0.0, y=0.0, flux=10.0)


@pytest.fixture(scope="module")
def disc():
    """The model's own sky cube of a disc, (chan, y, x), for PA 90 (receding half to the East) and 0 (North)."""
    freqs = channel_freqs(16, 40.0, 1246.0, 230.538e9)
    mod = NukerDiscModel(SkyGrid(32, 32, 0.2), freqs, 230.538e9, 11.4, nsub=2)
    out = {}
    for pa in (90.0, 0.0):
        p = {n: torch.tensor([float(pa if n == "pa" else TRUTH[n])], dtype=torch.float64) for n in PARAMETER_NAMES}
        with torch.no_grad():
            out[pa] = mod.sky_cube(p)[0].numpy().transpose(2, 1, 0)
    return out, mod.axis["vel_kms"]


def test_sky_header_orientation_and_axes():
    from astropy.wcs import WCS

    v = 1200.0 + 20.0 * np.arange(8)
    h = sky_header(32, 24, 0.1, ra_deg=150.0, dec_deg=-5.8, velocity_kms=v, rest_freq_hz=230.538e9)
    w = WCS(h)
    ra0, dec0, vel0 = w.all_pix2world(16, 12, 0, 0)            # 0-based phase-centre pixel
    assert (float(ra0), float(dec0)) == pytest.approx((150.0, -5.8))
    assert float(vel0) == pytest.approx(1200.0e3)
    ra1, dec1, _ = w.all_pix2world(17, 13, 3, 0)                # +ix is West: RA decreases
    assert float(ra1) < 150.0 and float(dec1) > -5.8
    assert h["CTYPE3"] == "VRAD" and h["CUNIT3"] == "m/s" and h["RESTFRQ"] == 230.538e9
    with pytest.raises(ValueError, match="uniformly spaced"):
        sky_header(8, 8, 0.1, velocity_kms=[1.0, 2.0, 4.0])
    assert "phase centre not known" in str(sky_header(8, 8, 0.1, position_known=False)["COMMENT"])


def test_pv_positive_offsets_are_the_receding_side(disc):
    cubes, vel = disc
    for pa in (90.0, 0.0):
        off, pv = pv_diagram(cubes[pa], 0.2, pa)
        vsys = 1246.0

        def mean_v(sel):
            w = np.nan_to_num(pv[sel])
            return float((w * vel).sum() / w.sum())

        assert mean_v(off > 0.5) > vsys + 50.0
        assert mean_v(off < -0.5) < vsys - 50.0
        # the slit at the opposite PA swaps the sides
        off2, pv2 = pv_diagram(cubes[pa], 0.2, pa + 180.0)
        np.testing.assert_allclose(np.nan_to_num(pv2[::-1][1:]), np.nan_to_num(pv[1:]), atol=1e-12)


def test_pv_refuses_bad_input():
    with pytest.raises(ValueError, match="n_chan, ny, nx"):
        pv_diagram(np.zeros((4, 4)), 0.1, 10.0)
    with pytest.raises(ValueError, match="width_pix"):
        pv_diagram(np.zeros((2, 4, 4)), 0.1, float("nan"))


def _summary(truth=True):
    p = dict(median=8.1, mean=8.1, std=0.01, hdi_68=[8.09, 8.11], hdi_997=[8.07, 8.13], r_hat=1.001, ess_bulk=500.0,
             ess_tail=400.0)
    s = dict(parameters={"log10_mbh": p, "pa": {**p, "median": 246.0, "r_hat": None}}, chains=4, draws=600,
             acceptance=0.7)
    if truth:
        s["truth"] = {"log10_mbh": {"value": 8.11, "z": 1.0}}
    return s


def test_results_table_ecsv_roundtrip(tmp_path):
    from astropy.table import Table

    tab = results_table(_summary())
    tab.write(tmp_path / "r.ecsv", format="ascii.ecsv")
    back = Table.read(tmp_path / "r.ecsv", format="ascii.ecsv")
    assert list(back["name"]) == ["log10_mbh", "pa"]
    assert back["unit"][0] == "log10 Msun" and back["unit"][1] == "deg"
    assert back["truth"][0] == pytest.approx(8.11) and np.isnan(back["truth"][1])
    assert np.isnan(back["r_hat"][1]) and back["hdi68_hi"][0] == pytest.approx(8.11)


def test_write_products_files_and_consistency(tmp_path, disc):
    cubes, vel = disc
    data = cubes[90.0] + 1e-4 * np.random.default_rng(0).normal(size=cubes[90.0].shape)
    model = cubes[90.0]
    maps = dict(data=data, model=model, residual=data - model, velocity_kms=vel, cell_arcsec=0.2)
    paths = write_products(tmp_path, maps, _summary(), model_sky=model, pa_deg=90.0, centre_arcsec=(0.0, 0.0),
                           vsys_kms=1246.0, meta={"dec_deg": -5.8}, rest_freq_hz=230.538e9)
    for key in ("data_cube", "model_cube", "residual_cube", "model_sky", "data_mom0", "model_mom0", "residual_mom0",
                "data_mom1", "model_mom1", "pv_data", "pv_model", "pv_residual", "pv_png", "results_ecsv"):
        assert paths[key].exists(), key
    d0 = fits.getdata(paths["data_mom0"])
    m0 = fits.getdata(paths["model_mom0"])
    r0 = fits.getdata(paths["residual_mom0"])
    np.testing.assert_allclose(r0, d0 - m0, atol=1e-5 * np.abs(d0).max())   # one mask for all three
    h = fits.getheader(paths["data_cube"])
    assert h["CDELT1"] < 0 and h["CRVAL2"] == pytest.approx(-5.8) and "not known" in str(h["COMMENT"])
    assert fits.getdata(paths["data_cube"]).shape == data.shape
    assert not list(tmp_path.glob(".*.part"))
