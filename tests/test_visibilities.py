"""Model visibilities: FFT on the uv grid against a direct Fourier sum; conventions; gradients."""

import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.cube import model_cube
from nuker_mge_plugin.dynamics.visibilities import (ARCSEC_RAD, UVGrid, alma_pb_fwhm_arcsec, cube_to_vis,
                                                    direct_ft, primary_beam)


def _grid_uv(g):
    U, V = np.meshgrid(g.u, g.v, indexing="ij")
    return U.ravel(), V.ravel()


@pytest.mark.parametrize("X,Y", [(32, 32), (33, 31), (32, 27)])
def test_fft_matches_direct_sum(X, Y):
    cell = 0.1
    rng = np.random.default_rng(X * Y)
    cube = np.zeros((X, Y, 3))
    cube[X // 2 + 5, Y // 2 - 3, 0] = 2.0  # off-centre point source
    ix, iy = np.meshgrid(np.arange(X) - X / 2, np.arange(Y) - Y / 2, indexing="ij")
    cube[:, :, 1] = np.exp(-0.5 * (((ix - 4.3) / 2.0) ** 2 + ((iy + 2.1) / 3.5) ** 2))  # offset Gaussian
    cube[:, :, 2] = rng.random((X, Y))
    pb = primary_beam(X, Y, cell, 2.0).numpy()
    g = UVGrid.from_image(X, Y, cell)
    u, v = _grid_uv(g)
    ref = direct_ft(cube, cell, u, v, pb=pb).reshape(3, X, Y)
    got = cube_to_vis(torch.tensor(cube), cell, pb=torch.tensor(pb)).numpy()
    assert got.shape == (3, X, Y)
    err = np.abs(got - ref).max(axis=(1, 2)) / np.abs(ref).max(axis=(1, 2))
    assert np.all(err < 1e-6), err


def test_point_source_phase_and_orientation():
    """A point at +x pixels (West, l < 0) and +y (North): V = F exp(-2 pi i (u l0 + v m0))."""
    X = Y = 16
    cell = 0.2
    cube = np.zeros((X, Y, 1))
    cube[X // 2 + 2, Y // 2 + 1, 0] = 1.5
    vis = cube_to_vis(torch.tensor(cube), cell).numpy()[0]
    g = UVGrid.from_image(X, Y, cell)
    l0, m0 = -2 * cell * ARCSEC_RAD, 1 * cell * ARCSEC_RAD
    ref = 1.5 * np.exp(-2j * np.pi * (g.u[:, None] * l0 + g.v[None, :] * m0))
    np.testing.assert_allclose(vis, ref, rtol=0, atol=1e-12)
    # the reference pixel is the phase centre: real, constant visibilities
    cube[:] = 0
    cube[X // 2, Y // 2, 0] = 1.0
    np.testing.assert_allclose(cube_to_vis(torch.tensor(cube), cell).numpy(), 1.0 + 0j, atol=1e-14)


def test_hermitian_and_half_plane_mask():
    X, Y = 16, 15
    g = UVGrid.from_image(X, Y, 0.1)
    c = torch.rand(X, Y, 1, dtype=torch.float64)
    vis = cube_to_vis(c, 0.1)[0].numpy()
    ku, kv = X // 2, Y // 2
    for a, b in [(3, 2), (1, -4), (0, 5)]:
        np.testing.assert_allclose(vis[ku + a, kv + b], np.conj(vis[ku - a, kv - b]), atol=1e-12)
    m = g.half_plane_mask()
    assert not m[ku, kv] and m[ku, kv + 1] and not m[ku, kv - 1] and not m[ku - 1, kv]
    # every non-DC cell with a conjugate partner on the grid is represented exactly once
    n_pairs = sum(1 for a in range(X) for b in range(Y)
                  if (a, b) != (ku, kv) and 0 <= 2 * ku - a < X and 0 <= 2 * kv - b < Y)
    assert m.sum() == n_pairs // 2


def test_gradients_and_float32():
    r = torch.linspace(0, 3, 31, dtype=torch.float64)
    inc = torch.tensor(50.0, dtype=torch.float64, requires_grad=True)
    c = model_cube(xs=3.2, ys=3.2, vs=12 * 40.0, cellSize=0.2, dv=40.0, beamSize=None, inc=inc, posAng=10.0,
                   gasSigma=20.0, sbProf=torch.exp(-r / 0.3) * (r < 1.2), sbRad=r, velRad=r,
                   velProf=200 * torch.tanh(r / 0.3),
                   intFlux=1.0, cleanOut=True)
    vis = cube_to_vis(c, 0.2, pb=primary_beam(16, 16, 0.2, 25.0))
    (vis.abs() ** 2).sum().backward()
    assert torch.isfinite(inc.grad) and inc.grad != 0
    v32 = cube_to_vis(c.detach().float(), 0.2)
    assert v32.dtype == torch.complex64
    np.testing.assert_allclose(v32.numpy(), cube_to_vis(c.detach(), 0.2).numpy(), atol=1e-6)
    # total flux: the zero-spacing cell holds sum(cube) per channel [Jy]
    v0 = cube_to_vis(c.detach(), 0.2)[:, 8, 8]
    np.testing.assert_allclose(v0.real.numpy(), c.detach().sum((0, 1)).numpy(), rtol=1e-12)


def test_uv_moment_correction():
    """Model at the weighted mean of V over sample offsets, to second order, for an offset point."""
    X = Y = 32
    cell = 0.2
    cube = np.zeros((X, Y, 1))
    cube[X // 2 - 3, Y // 2 + 4, 0] = 1.0
    g = UVGrid.from_image(X, Y, cell)
    rng = np.random.default_rng(0)
    off = rng.uniform(-0.5, 0.5, (6, 2)) * [g.du, g.dv]  # the same 6 offsets in every cell
    wts = rng.uniform(0.5, 1.5, 6)
    mom = np.array([np.average(q, weights=wts) for q in (off[:, 0], off[:, 1], off[:, 0] ** 2,
                                                        off[:, 0] * off[:, 1], off[:, 1] ** 2)])
    U, V = np.meshgrid(g.u, g.v, indexing="ij")
    uu = U.ravel()[:, None] + off[None, :, 0]
    vv = V.ravel()[:, None] + off[None, :, 1]
    exact = direct_ft(cube, cell, uu.ravel(), vv.ravel()).reshape(-1, 6) @ wts / wts.sum()
    mo = torch.tensor(np.broadcast_to(mom, (1, X, Y, 5)).copy())
    got = cube_to_vis(torch.tensor(cube), cell, uv_moments=mo).numpy().ravel()
    plain = cube_to_vis(torch.tensor(cube), cell).numpy().ravel()
    x = 2 * np.pi * 5 * cell * ARCSEC_RAD * 0.5 * g.du  # phase over half a cell at the source offset
    assert np.abs(got - exact).max() < x**3  # third-order remainder
    assert np.abs(plain - exact).max() > 10 * np.abs(got - exact).max()


def test_bad_input_and_pb():
    with pytest.raises(ValueError):
        cube_to_vis(torch.zeros(4, 4, 2), 0.0)
    with pytest.raises(ValueError, match="primary beam"):
        cube_to_vis(torch.zeros(4, 4, 2), 0.1, pb=torch.ones(5, 4))
    with pytest.raises(ValueError):
        UVGrid.from_image(8, 8, -1.0)
    with pytest.raises(ValueError):
        primary_beam(8, 8, 0.1, 0.0)
    assert abs(alma_pb_fwhm_arcsec(230.538e9) - 25.3) < 0.3  # ALMA 12 m at 1.3 mm
    g = UVGrid.from_image(128, 128, 0.1)
    assert math.isclose(g.du, 1 / (12.8 * ARCSEC_RAD))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda():
    c = torch.rand(16, 16, 2, dtype=torch.float64)
    np.testing.assert_allclose(cube_to_vis(c.cuda(), 0.1).cpu().numpy(), cube_to_vis(c, 0.1).numpy(), atol=1e-12)
