"""Mock ALMA observation (KinMS sky) -> loader -> gridder -> our model: conventions end to end."""


import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.cube import model_cube
from nuker_mge_plugin.dynamics.gridder import grid_visibilities
from nuker_mge_plugin.dynamics.coords import SkyGrid
from nuker_mge_plugin.dynamics.visibilities import GriddedModel, alma_pb_fwhm_arcsec, cube_to_vis
from nuker_mge_plugin.mock import (alma_like_layout, baselines, channel_freqs, load_observation, mock_observation,
                                   uvw_tracks, validate_observation)

R = np.arange(0.0, 6.0 + 1e-9, 0.05)
SB = np.exp(-R / 0.6)
SB[R > 2.0] = 0.0
VEL = 220.0 * (2 / np.pi) * np.arctan(R / 0.3)
GEOM = dict(xs=12.8, ys=12.8, vs=16 * 40.0, cellSize=0.2, dv=40.0)
# off-centre, inclined, PA far from 0/90/180: any mirroring of the sky shows
SKY = dict(inc=60.0, posAng=35.0, gasSigma=15.0, sbProf=SB, sbRad=R, velRad=R, velProf=VEL, intFlux=5.0,
           phaseCent=[1.0, 0.6])


@pytest.fixture(scope="module")
def obs(tmp_path_factory):
    p = tmp_path_factory.mktemp("mock") / "obs.npz"
    d = mock_observation(p, geom=GEOM, sky=SKY, n_ant=16, n_times=30, sigma_jy=0.002, nsamps=1_000_000, seed=5)
    return p, d


def test_geometry_helpers():
    enu = alma_like_layout(20, 300.0, 15.0, seed=1)
    d = np.hypot(*(enu[:, None, :2] - enu[None, :, :2]).transpose(2, 0, 1))
    assert d[np.triu_indices(20, 1)].min() >= 15.0
    bl, a1, a2 = baselines(enu)
    assert len(bl) == 190 and np.all(a1 < a2)
    # a north-south baseline seen from the pole at transit has u = 0 and |v| = its length
    uvw = uvw_tracks(np.array([[0.0, 100.0, 0.0]]), dec_deg=90.0, ha_h=[0.0], lat_deg=-90.0)
    np.testing.assert_allclose(np.abs(uvw[0, 0, :2]), [0.0, 100.0], atol=1e-9)
    # |uvw| is conserved by Earth rotation
    uvw = uvw_tracks(bl, -5.8, np.linspace(-3, 3, 7))
    np.testing.assert_allclose(np.linalg.norm(uvw, axis=-1), np.linalg.norm(bl, axis=-1)[None].repeat(7, 0))
    f = channel_freqs(8, 20.0, 1252.0)
    assert np.all(np.diff(f) < 0)  # higher velocity -> lower frequency


def test_roundtrip_and_format(obs):
    p, d = obs
    o = load_observation(p)
    n = o["u"].size
    assert n == 16 * 120 * 30
    assert o["vis"].dtype == np.complex128 and o["chan"].dtype == np.int64
    np.testing.assert_array_equal(o["freq"], o["chan_freq"][o["chan"]])
    assert o["meta"]["n_ant"] == 16 and o["meta"]["sky"]["inc"] == 60.0
    # the sky cube came from KinMS, normalised to intFlux [Jy km/s]
    assert abs(d["sky_cube"].sum() * GEOM["dv"] - 5.0) < 1e-9
    # u, v scale with frequency: same baseline/time in two channels
    r0 = (o["chan"] == 0) & (o["time_idx"] == 3)
    r9 = (o["chan"] == 9) & (o["time_idx"] == 3)
    np.testing.assert_allclose(o["u"][r0] / o["freq"][r0], o["u"][r9] / o["freq"][r9], rtol=1e-12)


def test_loader_refuses_bad_files(obs, tmp_path):
    p, _ = obs
    with np.load(p) as f:
        base = {k: f[k] for k in f.files}

    def bad(mod, match):
        d = dict(base)
        mod(d)
        q = tmp_path / "bad.npz"
        np.savez(q, **d)
        with pytest.raises(ValueError, match=match):
            load_observation(q)

    def nan_vis(d):
        d["vis"] = d["vis"].copy()
        d["vis"][[1, 7, 9]] = np.nan

    def neg_w(d):
        d["weight"] = d["weight"].copy()
        d["weight"][:4] = -1.0

    bad(nan_vis, "3 of 57600 rows have non-finite vis")
    bad(neg_w, "4 of 57600 rows have weight <= 0")
    bad(lambda d: d.update(u=d["u"][:-2]), "row counts differ")
    bad(lambda d: d.update(vis=d["vis"].real), "vis must be complex")
    bad(lambda d: d.update(chan=d["chan"] + 1), "rows have chan outside")
    bad(lambda d: d.pop("freq"), "lacks")
    bad(lambda d: d.update(meta=np.array("not json")), "meta")
    with pytest.raises(ValueError, match="row counts differ"):
        validate_observation({**base, "weight": base["weight"][:10]})


def test_mirror_sky_end_to_end(obs):
    """KinMS mock -> our gridder -> our model: right orientation fits, mirrored skies do not."""
    p, _ = obs
    o = load_observation(p)
    sky = SkyGrid.from_kinms(GEOM["xs"], GEOM["ys"], GEOM["cellSize"])
    X = sky.n_x
    gv = grid_visibilities(o["u"], o["v"], o["vis"], o["weight"], o["chan"], sky, o["chan_freq"].size)
    assert gv.report["n_unused"] < 0.01 * gv.report["n_input"]  # counted, and few
    m = gv.mask
    assert m.sum() > 2000
    pb = sky.primary_beam(alma_pb_fwhm_arcsec(o["chan_freq"]))
    cells = GriddedModel(gv, pb=pb)  # the exact window average of the model over each cell's samples

    sig_true = 0.002 / np.sqrt(cells.n_eff.numpy())  # the mock's thermal noise, propagated
    h = cells.halfwidth.numpy()
    inner = h == 0.5

    def chi2(true_sigma=False, centre=False, **over):
        c = model_cube(**GEOM, beamSize=None, cleanOut=True, **{**SKY, **over}, dtype=torch.float64)
        if centre:  # V at the cell centres (no window averaging)
            mv = cube_to_vis(c, sky, pb=pb).numpy()[m]
        else:
            mv = cells(c).numpy()
        r = (cells.vis.numpy() - mv) / (sig_true if true_sigma else cells.sigma.numpy())
        return (r.real**2 + r.imag**2) / 2

    # our model of KinMS's sky, window-averaged like the data, fits to the noise level in every
    # window-size bin (grown windows included); what remains is KinMS's Monte Carlo noise
    q = chi2(true_sigma=True)
    for hw in np.unique(h):
        assert abs(q[h == hw].mean() - 1) < 0.15, (hw, q[h == hw].mean(), int((h == hw).sum()))
    assert abs(q.mean() - 1) < 0.1, q.mean()
    assert chi2(true_sigma=True, centre=True)[inner].mean() > 1.3  # cell-centre model is biased
    good = chi2().mean()
    assert good < 1.5, good
    assert chi2(phaseCent=[-1.0, 0.6]).mean() > 5 * good  # East-West mirrored position
    assert chi2(posAng=-35.0).mean() > 5 * good  # mirrored position angle
    assert chi2(posAng=35.0 + 180.0).mean() > 5 * good  # reversed rotation sense (velocity sign)
    # dirty image of the gridded data peaks where the disc is (+x = West, +y = North)
    img = np.zeros((X, X))
    vis_full = np.where(m, gv.vis, 0).sum(0)
    f = np.fft.ifftshift(vis_full)
    img = np.real(np.fft.ifft(np.fft.fft(f, axis=0) / X, axis=1))  # inverse of cube_to_vis's transforms
    img = np.fft.fftshift(img)
    ix, iy = np.unravel_index(np.argmax(img), img.shape)
    assert abs(ix - (X // 2 + 1.0 / 0.2)) <= 1 and abs(iy - (X // 2 + 0.6 / 0.2)) <= 1, (ix, iy)


def test_kinms_velocity_grid_resolves_the_black_hole_rise():
    """KinMS interpolates velProf linearly between velRad nodes: the mock's grid must be fine where
    the black hole's v ~ r^-1/2 rises, or the inner clouds move far too slowly."""
    from nuker_mge_plugin.mge import nuker_to_mge
    from nuker_mge_plugin.mock import kinms_sky_from_parameters

    truth = dict(scale_length=0.8, log10_mbh=7.8, inclination=84.0, qintr=0.57, alpha=1.5, gamma_minus_beta=-1.55,
                 gamma=0.25, break_r=1.5, intensity_rb=4.78, pa=120.0, line_broadening=8.0,
                 systemic_velocity=1246.0, x=0.0, y=0.0, flux=6.0)
    sky = kinms_sky_from_parameters(truth, 11.4, field_arcsec=6.4)
    inc = truth["inclination"]
    qobs = np.hypot(truth["qintr"] * np.sin(np.radians(inc)), np.cos(np.radians(inc)))
    mge = nuker_to_mge(sigma_b=10 ** 4.78, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=qobs, distance=11.4)
    r = np.array([0.005, 0.02, 0.05, 0.1, 0.3, 1.0, 3.0])
    exact = mge.vcirc(r, inc, 10 ** 7.8)
    kinms = np.interp(r, sky["velRad"], sky["velProf"])  # what KinMS does between the nodes
    np.testing.assert_allclose(kinms, exact, rtol=1e-3)
    assert sky["velRad"][0] == 0.0 and sky["velProf"][0] == 0.0
