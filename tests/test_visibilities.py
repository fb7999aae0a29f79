"""Model visibilities: FFT on the uv grid against a direct Fourier sum; conventions; gradients.

The gridded-cell model (GriddedModel) is tested in tests/test_gridded_model.py.
"""

import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.coords import SkyGrid
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


def test_skygrid_and_cell_size_agree():
    """cube_to_vis / direct_ft take the SkyGrid (the one owner of the conventions) or a cell size."""
    X, Y = 15, 12
    sky = SkyGrid(X, Y, 0.3)
    c = torch.rand(X, Y, 2, dtype=torch.float64)
    np.testing.assert_array_equal(cube_to_vis(c, sky).numpy(), cube_to_vis(c, 0.3).numpy())
    np.testing.assert_array_equal(cube_to_vis(c, cellSize=0.3).numpy(), cube_to_vis(c, 0.3).numpy())
    with pytest.raises(TypeError, match="not both"):
        cube_to_vis(c, sky, cellSize=0.3)
    u, v = _grid_uv(sky.uv)
    np.testing.assert_array_equal(direct_ft(c, sky, u, v), direct_ft(c, 0.3, u, v))
    with pytest.raises(ValueError, match="SkyGrid of"):
        cube_to_vis(c, SkyGrid(X + 1, Y, 0.3))
    with pytest.raises(TypeError, match="SkyGrid or a cell size"):
        cube_to_vis(c, "0.3")


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
