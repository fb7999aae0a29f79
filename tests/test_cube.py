"""Gas cube: KinMS conventions, normalisation, batching, gradients, bad input."""

import math
import warnings

import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.cube import GasCube, exponential_sb, interp1d, model_cube

R = np.arange(0.0, 6.0 + 1e-9, 0.05)
SB = np.exp(-R / 0.8)
SB[R > 3.0] = 0.0
VEL = 200.0 * (2 / np.pi) * np.arctan(R / 0.3)
GEOM = dict(xs=6.4, ys=6.4, vs=32 * 20.0, cellSize=0.2, dv=20.0, beamSize=0.6)
PAR = dict(inc=60.0, posAng=30.0, gasSigma=12.0, sbProf=SB, sbRad=R, velRad=R, velProf=VEL, intFlux=5.0)


def _mom(cube, dv):
    V = cube.shape[-1]
    vel = (np.arange(V) - V / 2.0) * dv
    m0 = cube.sum(-1)
    return m0, (cube * vel).sum(-1) / np.where(m0 > 0, m0, np.nan)


def test_matches_kinms():
    from nuker_mge_plugin.adapters.kinms_shim import kinms_model_cube

    p = dict(PAR, phaseCent=[0.4, -0.2], vOffset=30.0)
    ck = kinms_model_cube(**GEOM, nSamps=400_000, seed=3, **p)
    co = model_cube(**GEOM, **p, dtype=torch.float64).numpy()
    assert co.shape == ck.shape == (32, 32, 32)
    assert np.corrcoef(co.ravel(), ck.ravel())[0, 1] > 0.995
    m0k, m1k = _mom(ck, GEOM["dv"])
    m0o, m1o = _mom(co, GEOM["dv"])
    mask = m0k > 0.1 * m0k.max()
    assert np.sqrt(np.mean((m1o - m1k)[mask] ** 2)) < 0.2 * GEOM["dv"]


def test_orientation_and_offsets():
    """PA = 0: redshifted side at +y; PA = 90: at -x; vOffset > 0 -> higher channels; phaseCent moves the disc."""
    g = dict(GEOM, beamSize=None)
    for pa, idx in ((0.0, (16, 24)), (90.0, (8, 16))):
        c = model_cube(**g, **dict(PAR, posAng=pa), cleanOut=True).numpy()
        _, m1 = _mom(c, g["dv"])
        assert m1[idx] > 50.0, (pa, m1[idx])
    c0 = model_cube(**g, **PAR, cleanOut=True).numpy()
    c1 = model_cube(**g, **dict(PAR, vOffset=40.0), cleanOut=True).numpy()
    np.testing.assert_allclose(c1[:, :, 2:], c0[:, :, :-2], atol=1e-6 * c0.max())  # 40 km/s = 2 channels
    c2 = model_cube(**g, **dict(PAR, phaseCent=[0.4, -0.6]), cleanOut=True).numpy()
    np.testing.assert_allclose(c2[2:, :-3], c0[:-2, 3:], atol=1e-6 * c0.max())  # 2 px in x, -3 px in y


def test_normalisation_and_faceon_line_profile():
    # intFlux: sum(cube) dv / psf_sum = intFlux (Jy/beam), and without beam sum(cube) dv = intFlux
    m = GasCube(**GEOM)
    c = m.model_cube(**PAR, dtype=torch.float64)
    _, psf_sum = m._kernel(torch.float64, "cpu")
    assert math.isclose(float(c.sum()) * GEOM["dv"] / psf_sum, 5.0, rel_tol=1e-10)
    assert abs(psf_sum / (2 * np.pi * (0.6 / 0.2 / 2.3548) ** 2) - 1) < 1e-3  # beam area in pixels
    c = model_cube(**GEOM, **PAR, cleanOut=True, dtype=torch.float64)
    assert math.isclose(float(c.sum()) * GEOM["dv"], 5.0, rel_tol=1e-10)
    assert math.isclose(float(model_cube(**GEOM, **dict(PAR, intFlux=None)).sum()), 1.0, rel_tol=1e-6)
    # face-on: every spectrum is the erf-integrated Gaussian, even for sigma >> dv (no comb)
    from scipy.special import ndtr

    sig = 45.0
    c = model_cube(**dict(GEOM, dv=5.0, vs=64 * 5.0), **dict(PAR, inc=0.0, gasSigma=sig), cleanOut=True,
                   dtype=torch.float64).numpy()
    spec = c[16, 16] / c[16, 16].sum()
    e = (np.arange(65) - 0.5 - 32) * 5.0
    ref = np.diff(ndtr(e / sig))
    np.testing.assert_allclose(spec, ref / ref.sum(), atol=1e-10)


def test_batch_dtype_and_gradients():
    incs = torch.tensor([40.0, 70.0], dtype=torch.float64)
    cb = model_cube(**GEOM, **dict(PAR, inc=incs))
    assert cb.shape == (2, 32, 32, 32) and cb.dtype == torch.float64
    for i in range(2):
        ci = model_cube(**GEOM, **dict(PAR, inc=float(incs[i])), dtype=torch.float64)
        torch.testing.assert_close(cb[i], ci, rtol=1e-9, atol=1e-12)
    # batched phase centres move the refined centre patch per model
    pcs = torch.tensor([[0.0, 0.0], [-0.5, 0.3]], dtype=torch.float64)
    cb2 = model_cube(**GEOM, **dict(PAR, phaseCent=pcs))
    for i in range(2):
        ci = model_cube(**GEOM, **dict(PAR, phaseCent=pcs[i].tolist()), dtype=torch.float64)
        torch.testing.assert_close(cb2[i], ci, rtol=1e-9, atol=1e-12)
    c32 = model_cube(**GEOM, **PAR, dtype=torch.float32)
    assert c32.dtype == torch.float32
    torch.testing.assert_close(c32.double(), cb[0] * 0 + model_cube(**GEOM, **PAR, dtype=torch.float64),
                               rtol=0, atol=1e-5 * float(cb.max()))
    # gradients w.r.t. geometry, rotation curve, exponential scale and dispersion: finite and right
    g = GasCube(xs=1.6, ys=1.6, vs=8 * 40.0, cellSize=0.2, dv=40.0, beamSize=0.5, check=False)
    r = torch.linspace(0, 3, 31, dtype=torch.float64)

    wts = torch.randn(8, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(inc, pa, v0, h, sig):  # a random projection of the cube: one backward pass per check
        return (wts * g.model_cube(inc, pa, gasSigma=sig, sbProf=exponential_sb(r, h), sbRad=r, velRad=r,
                            velProf=v0 * torch.tanh(r / 0.4), intFlux=2.0)).sum()

    args = tuple(torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (55.0, 20.0, 180.0, 0.7, 30.0))
    assert torch.autograd.gradcheck(f, args, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_interp1d_matches_numpy():
    rng = np.random.default_rng(0)
    xp = np.sort(rng.uniform(0, 5, 20))
    fp = rng.normal(size=20)
    x = rng.uniform(-1, 6, 100)
    y = interp1d(torch.tensor(x)[None], torch.tensor(xp)[None], torch.tensor(fp)[None])[0].numpy()
    np.testing.assert_allclose(y, np.interp(x, xp, fp), rtol=1e-12)
    yz = interp1d(torch.tensor(x)[None], torch.tensor(xp)[None], torch.tensor(fp)[None], outside="zero")[0].numpy()
    assert np.all(yz[(x < xp[0]) | (x > xp[-1])] == 0)


def test_bad_input():
    with pytest.raises(ValueError, match="cellSize"):
        model_cube(**dict(GEOM, cellSize=0.0), **PAR)
    with pytest.raises(ValueError, match="dv"):
        model_cube(**dict(GEOM, dv=-5.0), **PAR)
    with pytest.raises(ValueError, match="lengths differ"):
        model_cube(**GEOM, **dict(PAR, velProf=VEL[:-1]))
    with pytest.raises(ValueError, match="strictly increasing"):
        model_cube(**GEOM, **dict(PAR, sbRad=R[::-1], velRad=R[::-1]))
    with pytest.raises(ValueError, match="channel"):
        model_cube(**GEOM, **dict(PAR, vOffset=5000.0))
    with pytest.raises(ValueError, match="not supported"):
        model_cube(**GEOM, **PAR, diskThick=0.3)
    with pytest.raises(ValueError, match="inc"):
        model_cube(**GEOM, **dict(PAR, inc=float("nan")))
    with pytest.raises(ValueError, match="gasSigma"):
        model_cube(**GEOM, **dict(PAR, gasSigma=-1.0))
    with pytest.raises(ValueError, match="batch sizes"):
        model_cube(**GEOM, **dict(PAR, inc=[30.0, 40.0], posAng=[1.0, 2.0, 3.0]))
    big = np.exp(-R / 3.0)  # disc much larger than the 6.4" field
    with pytest.warns(UserWarning, match="outside the field"):
        model_cube(**GEOM, **dict(PAR, sbProf=big))
    with pytest.warns(UserWarning, match="outside the channel range"):
        model_cube(**dict(GEOM, vs=8 * 20.0), **PAR)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model_cube(**GEOM, **PAR)  # the nominal case warns nothing


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    c = model_cube(**GEOM, **PAR, dtype=torch.float64)
    cg = model_cube(**GEOM, **PAR, dtype=torch.float64, device="cuda")
    assert cg.device.type == "cuda"
    torch.testing.assert_close(cg.cpu(), c, rtol=1e-9, atol=1e-12)


def test_property_random_inputs():
    """Random (valid or not) parameters: a finite, normalised cube, or a clear ValueError/warning."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    g = GasCube(xs=3.2, ys=3.2, vs=16 * 30.0, cellSize=0.2, dv=30.0, beamSize=0.5)
    fl = st.floats(allow_nan=True, allow_infinity=True, width=64)

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(inc=fl, pa=fl, sig=fl, h=st.floats(1e-3, 1e3), v0=fl, voff=fl)
    def run(inc, pa, sig, h, v0, voff):
        r = np.linspace(0, 5, 26)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                c = g.model_cube(inc, pa, gasSigma=sig, sbProf=np.exp(-r / h), sbRad=r, velRad=r,
                                 velProf=v0 * np.tanh(r), intFlux=1.0, vOffset=voff, dtype=torch.float64)
        except ValueError:
            return
        assert torch.isfinite(c).all()
        assert abs(float(c.sum()) * 30.0 / g._kernel(torch.float64, "cpu")[1] - 1.0) < 1e-9

    run()
