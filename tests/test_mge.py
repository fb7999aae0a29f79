import math

import numpy as np
import pytest

from nuker_mge_plugin import MGE, nuker_to_mge
from nuker_mge_plugin.adapters.jampy_shim import jampy_vcirc, jampy_vcirc_function
from nuker_mge_plugin.basis import SIGMA_GRID_PC, pc_per_arcsec
from nuker_mge_plugin.mge import profile_error, r_b_range_arcsec
from nuker_mge_plugin.nuker import nuker_surface_density

P = dict(sigma_b=5.0e4, r_b=1.2, alpha=2.0, beta=1.9, gamma=0.3, qobs=0.7, distance=11.4)


@pytest.fixture(scope="module")
def mge():
    return nuker_to_mge(**P)


def test_table_shape_and_units(mge):
    assert len(mge) == 64
    for a in (mge.surf_pc, mge.sigma_arcsec, mge.qobs):
        assert a.dtype == np.float64 and a.shape == (64,)
    assert np.allclose(mge.sigma_arcsec * pc_per_arcsec(11.4), SIGMA_GRID_PC)
    assert np.all(mge.qobs == 0.7)
    assert profile_error(mge) < 1e-3


def test_surface_density_matches_nuker(mge):
    R = np.array([0.2, 1.0, 1.2, 5.0, 20.0])  # arcsec
    ref = nuker_surface_density(R, P["sigma_b"], P["r_b"], P["alpha"], P["beta"], P["gamma"])
    assert np.allclose(mge.surface_density(R), ref, rtol=1e-3)


def test_linear_in_sigma_b(mge):
    other = nuker_to_mge(**{**P, "sigma_b": 10 * P["sigma_b"]})
    assert np.allclose(other.surf_pc, 10 * mge.surf_pc, rtol=1e-12, atol=0)


def test_projected_mass(mge):
    # Total mass of a Gaussian of peak S, width s, axis ratio q: 2 pi S s^2 q.
    s_pc = mge.sigma_arcsec * mge.pc_per_arcsec
    assert mge.projected_mass(np.inf) == pytest.approx(np.sum(2 * math.pi * mge.surf_pc * s_pc**2 * 0.7))
    m = mge.projected_mass([0.5, 1.0, 10.0])
    assert np.all(np.diff(m) > 0)


def test_jampy_accepts_table_and_shim(mge):
    vc = jampy_vcirc_function()
    rad = np.array([0.1, 0.5, 1.0, 3.0])
    v = vc(mge.surf_pc, mge.sigma_arcsec, mge.qobs, 70.0, 1e8, 11.4, rad)
    assert np.all(np.isfinite(v)) and np.all(v > 0)
    assert np.allclose(mge.vcirc(rad, 70.0, 1e8), v)
    assert np.allclose(jampy_vcirc(mge.surf_pc, mge.sigma_arcsec, mge.qobs, 70.0, 1e8, 11.4, rad), v)
    # the BH dominates at small radii: v -> sqrt(G M / r)
    G = 0.004301
    r_pc = 1e-3 * mge.pc_per_arcsec
    v_bh_only = np.sqrt(v[0] ** 2 - mge.vcirc([0.1], 70.0, 0.0)[0] ** 2)
    assert v_bh_only == pytest.approx(np.sqrt(G * 1e8 / (0.1 * mge.pc_per_arcsec)), rel=1e-3)
    assert r_pc > 0


def test_spherical_vcirc_against_enclosed_mass():
    # For qobs = 1 the MGE is spherical and v_c^2 = G M3D(<r)/r with M3D of Gaussians analytic.
    m = nuker_to_mge(**{**P, "qobs": 1.0})
    rad = np.array([0.3, 1.0, 4.0])
    from scipy.special import erf
    s_pc = m.sigma_arcsec * m.pc_per_arcsec
    M = 2 * math.pi * m.surf_pc * s_pc**2
    r = rad[:, None] * m.pc_per_arcsec
    x = r / (math.sqrt(2) * s_pc)
    m3d = (M * (erf(x) - 2 / math.sqrt(math.pi) * x * np.exp(-x**2))).sum(1)
    assert np.allclose(m.vcirc(rad, 60.0, 0.0), np.sqrt(0.004301 * m3d / r[:, 0]), rtol=2e-5)


def test_kinms_velocity_and_model_cube(mge):
    from nuker_mge_plugin.adapters.kinms_shim import kinms_model_cube
    velRad, velProf = mge.kinms_velocity(np.linspace(0.01, 8, 100), 70.0, 1e8)
    assert velRad.shape == velProf.shape == (100,)
    sbRad = np.linspace(0, 8, 100)
    cube = kinms_model_cube(8, 8, 800, 0.25, 20, 0.5, 70.0, 90.0, nSamps=20000, seed=[1, 2, 3, 4],
                            sbProf=np.exp(-sbRad / 1.5), sbRad=sbRad, velRad=velRad, velProf=velProf,
                            intFlux=10.0, gasSigma=10.0)
    assert cube.shape == (32, 32, 40)
    assert np.isfinite(cube).all() and cube.sum() > 0
    beam_pixels = np.pi * 0.5**2 / (4 * np.log(2)) / 0.25**2   # KinMS cubes are in Jy/beam
    assert cube.sum() * 20 / beam_pixels == pytest.approx(10.0, rel=0.01)
    with pytest.raises(ValueError, match="increasing"):
        mge.kinms_velocity([1.0, 0.5], 70.0, 1e8)


def test_save_load_roundtrip(mge, tmp_path):
    path = tmp_path / "mge.txt"
    mge.save(path)
    assert np.loadtxt(path).shape == (64, 3)
    back = MGE.load(path)
    assert np.array_equal(back.table, mge.table) and back.distance == mge.distance
    assert back.meta["backend"] == "exact" and back.meta["alpha"] == P["alpha"]
    head = path.read_text().splitlines()[:4]
    assert any("Msun/pc^2" in h for h in head) and any("distance_mpc" in h for h in head)


@pytest.mark.parametrize("kw,match", [
    (dict(sigma_b=0.0), r"sigma_b = 0 .*> 0"), (dict(r_b=-1.0), "r_b"), (dict(distance=0.0), r"distance.*> 0"),
    (dict(alpha=0.0), "alpha"), (dict(beta=0.2), "beta"), (dict(gamma=-0.5), "gamma"),
    (dict(qobs=1.5), r"qobs.*\(0, 1\]"), (dict(qobs=0.0), "qobs"), (dict(alpha=math.nan), "alpha.*finite"),
    (dict(distance=math.inf), "distance.*finite"), (dict(r_b=300.0), r"r_b = 300 arcsec.*must be in \["),
    (dict(r_b=1e-4), r"outside the exact backend's range"),
])
def test_bad_inputs(kw, match):
    with pytest.raises(ValueError, match=match):
        nuker_to_mge(**{**P, **kw})


def test_bad_types_and_backend():
    with pytest.raises(TypeError, match="alpha"):
        nuker_to_mge(**{**P, "alpha": "2"})
    with pytest.raises(ValueError, match="backend"):
        nuker_to_mge(**P, backend="magic")


def test_r_b_range_scales_with_distance():
    lo10, hi10 = r_b_range_arcsec(10.0)
    lo20, hi20 = r_b_range_arcsec(20.0)
    assert lo20 == pytest.approx(lo10 / 2) and hi20 == pytest.approx(hi10 / 2)


def test_low_inclination_refused(mge):
    with pytest.raises(ValueError, match="arccos"):
        mge.vcirc([1.0], 40.0, 1e8)   # cos(40) = 0.77 > qobs = 0.7


# ---------------------------------------------------------------- issue 11, defect 6
def _demo_mge():
    return nuker_to_mge(sigma_b=6e4, r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4)


def test_kinms_velocity_is_zero_at_the_centre():
    rad, v = _demo_mge().kinms_velocity(np.linspace(0, 6.4, 500), 76.0, 1.3e8)
    assert v[0] == 0.0 and np.all(np.isfinite(v)) and np.all(v[1:] > 0)


@pytest.mark.parametrize("kw, match", [
    (dict(mbh=-5.0), "mbh"), (dict(mbh=np.nan), "mbh"), (dict(soft=-0.1), "soft"),
    (dict(rad=[-1.0, 1.0]), "rad_arcsec"), (dict(rad=[np.nan]), "rad_arcsec"),
    (dict(inc=120.0), "0 < inc_deg <= 90"), (dict(inc=np.nan), "inc_deg"), (dict(inc=0.0), "0 < inc_deg <= 90"),
])
def test_mge_vcirc_validates_like_dynamics_vcirc(kw, match):
    args = dict(rad=[0.5, 1.0], inc=76.0, mbh=1e8, soft=0.0)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        _demo_mge().vcirc(args["rad"], args["inc"], args["mbh"], soft=args["soft"])


def test_one_inclination_rule_for_mge_and_dynamics():
    from nuker_mge_plugin.dynamics import vcirc
    m = _demo_mge()
    for inc in (120.0, 0.0):
        with pytest.raises(ValueError, match="0 < inc_deg <= 90"):
            vcirc(m.surf_pc, m.sigma_arcsec, m.qobs, inc, 1e8, m.distance, [1.0])
        with pytest.raises(ValueError, match="0 < inc_deg <= 90"):
            m.vcirc([1.0], inc, 1e8)
    v90 = vcirc(m.surf_pc, m.sigma_arcsec, m.qobs, 90.0, 1e8, m.distance, np.array([1.0]))
    np.testing.assert_allclose(v90, m.vcirc([1.0], 90.0, 1e8), rtol=1e-4)


def test_nuker_to_mge_accepts_numpy_scalars():
    m = nuker_to_mge(sigma_b=np.array(6e4), r_b=np.float32(1.5), alpha=1.5, beta=1.8, gamma=np.float64(0.25),
                     qobs=0.6, distance=11.4)
    np.testing.assert_allclose(m.surf_pc, _demo_mge().surf_pc, rtol=1e-6)
    with pytest.raises(TypeError, match="sigma_b"):
        nuker_to_mge(sigma_b=np.array([6e4, 1.0]), r_b=1.5, alpha=1.5, beta=1.8, gamma=0.25, qobs=0.6, distance=11.4)


def test_backends_own_their_checks():
    from nuker_mge_plugin.backends import amplitudes, get_backend
    with pytest.raises(ValueError, match="r_b = 20000 pc is outside the exact backend's range"):
        amplitudes("exact", 1.5, 1.8, 0.25, 2e4)
    with pytest.raises(ValueError, match="gamma"):
        amplitudes("exact", 1.5, 3.0, 2.5, 100.0)
    with pytest.raises(ValueError, match="training box"):
        amplitudes("nn", 20.0, 1.8, 0.25, 100.0)
    with pytest.raises(ValueError, match="choose one of 'exact', 'nn'"):
        get_backend("fast")
    for name in ("exact", "nn"):  # one device rule: CPU unless a tensor or device= says otherwise
        assert amplitudes(name, 1.5, 1.8, 0.25, 100.0).device.type == "cpu"
