"""Kaiser-Bessel gridder: noise estimate, point source, Hermitian folding, growth, bad input."""

import numpy as np
import pytest

from nuker_mge_plugin.dynamics.coords import SkyGrid, UVGrid
from nuker_mge_plugin.dynamics.gridder import (CellSamples, cell_overlap, check_visibilities, grid_visibilities,
                                               kaiser_bessel)
from nuker_mge_plugin.dynamics.visibilities import ARCSEC_RAD


def _uniform_uv(rng, n, g, frac=0.45):
    return (rng.uniform(-frac, frac, n) * g.nu * g.du, rng.uniform(-frac, frac, n) * g.nv * g.dv)


def test_kaiser_bessel():
    assert kaiser_bessel(0.0, 2.0) == 1.0
    assert kaiser_bessel(1.0, 2.0) == 0.0 and kaiser_bessel(1.5, 2.0) == 0.0
    x = np.linspace(-0.99, 0.99, 11)
    np.testing.assert_allclose(kaiser_bessel(x, 3.0), kaiser_bessel(-x, 3.0))


def test_noise_sigma_unbiased():
    """Pure noise of known sigma: the KB-weighted sample variance is unbiased within 3%."""
    rng = np.random.default_rng(1)
    g = UVGrid.from_image(48, 48, 0.2)
    n, sig = 14_000, 0.7
    u, v = _uniform_uv(rng, n, g)
    vis = sig * (rng.normal(size=n) + 1j * rng.normal(size=n))
    w = rng.uniform(0.5, 2.0, n)  # relative weights do not bias the estimate
    gv = grid_visibilities(u, v, vis, w, np.zeros(n, int), g, 1)
    m = gv.mask
    assert m.sum() > 500
    s_one = np.sqrt(np.mean(gv.sigma[m] ** 2 * gv.n_eff[m]))  # per-visibility sigma, rms over cells
    assert abs(s_one / sig - 1) < 0.03, s_one / sig
    # the standard error matches the actual scatter of the gridded means (zero signal)
    z2 = np.mean((gv.vis[m].real ** 2 + gv.vis[m].imag ** 2) / 2 / (sig**2 / gv.n_eff[m]))
    assert abs(z2 - 1) < 0.06, z2
    assert gv.report["cells_usable"] == int(m.sum())
    assert np.all(gv.n_vis[m] >= 5)


def test_point_source():
    rng = np.random.default_rng(2)
    g = UVGrid.from_image(64, 64, 0.1)
    l0, m0 = 3 * 0.1 * ARCSEC_RAD, -2 * 0.1 * ARCSEC_RAD
    F = 2.5

    def point(u, v):
        return F * np.exp(-2j * np.pi * (u * l0 + v * m0))

    # samples exactly at cell centres (and their mirror images): gridded value = analytic value
    U, V = np.meshgrid(g.u, g.v, indexing="ij")
    u = np.repeat(U.ravel(), 5)
    v = np.repeat(V.ravel(), 5)
    with pytest.warns(UserWarning, match="no usable"):  # zero scatter everywhere: all masked
        gv = grid_visibilities(u, v, point(u, v), np.ones(u.size), np.zeros(u.size, int), g, 1)
    hp = g.half_plane_mask()
    np.testing.assert_allclose(gv.vis[0][hp], point(U, V)[hp], rtol=1e-12)
    assert gv.report["cells_bad_sigma"] == hp.sum()  # noise-free: zero variance -> masked, counted
    # scattered samples, source at the phase centre: constant visibility, gridded exactly
    u, v = _uniform_uv(rng, 40_000, g, 0.2)
    vis_c = np.full(u.size, F + 0j)
    vis_c += 1e-3 * (rng.normal(size=u.size) + 1j * rng.normal(size=u.size))  # a little noise: cells usable
    gv = grid_visibilities(u, v, vis_c, np.ones(u.size), np.zeros(u.size, int), g, 1)
    m = gv.mask[0]
    assert m.sum() > 200
    assert np.abs(gv.vis[0][m] - F).max() < 6 * gv.sigma[0][m].max() * np.sqrt(2)
    # offset source: each sample's phase differs from the cell centre's by at most
    # pi (|l0| du + |m0| dv), which bounds the difference of the KB mean from the analytic value
    gv = grid_visibilities(u, v, point(u, v), np.ones(u.size), np.zeros(u.size, int), g, 1)
    inner = (np.abs(U) < 11 * g.du) & (np.abs(V) < 11 * g.dv)
    m = gv.mask[0] & (gv.halfwidth[0] == 0.5) & inner
    assert m.sum() > 200
    bound = np.pi * (abs(l0) * g.du + abs(m0) * g.dv)
    err = np.abs(gv.vis[0][m] - point(U, V)[m]) / F
    assert err.max() < bound and np.median(err) < bound / 4, (err.max(), np.median(err), bound)


def test_hermitian_folding_and_no_double_count():
    rng = np.random.default_rng(3)
    g = UVGrid.from_image(32, 32, 0.2)
    n = 6000
    u, v = _uniform_uv(rng, n, g, 0.4)
    vis = rng.normal(size=n) + 1j * rng.normal(size=n)
    a = grid_visibilities(u, v, vis, np.ones(n), np.zeros(n, int), g, 1)
    b = grid_visibilities(-u, -v, np.conj(vis), np.ones(n), np.zeros(n, int), g, 1)
    np.testing.assert_allclose(a.vis[a.mask], b.vis[a.mask], rtol=1e-10)
    assert not a.mask[0, 16, 16]  # zero spacing never produced
    assert not a.mask[0, :16].any()  # only the half plane
    # without growth each visibility enters exactly one cell
    d = grid_visibilities(u, v, vis, np.ones(n), np.zeros(n, int), g, 1, max_halfwidth=0.5)
    assert d.report["overlap_factor"] == 1.0 and d.report["cells_grown"] == 0
    # every visibility (or its conjugate) lands in a half-plane cell, except those in the DC cell
    n_dc = int(np.sum((np.abs(u / g.du) < 0.5) & (np.abs(v / g.dv) < 0.5)))
    assert d.report["n_used"] == n - n_dc and d.report["n_unused"] == n_dc
    # chunking does not change anything
    c = grid_visibilities(u, v, vis, np.ones(n), np.zeros(n, int), g, 1, chunk=777)
    np.testing.assert_allclose(c.vis[a.mask], a.vis[a.mask], rtol=1e-12)
    np.testing.assert_array_equal(c.n_vis, a.n_vis)


def test_window_growth_and_counts():
    rng = np.random.default_rng(4)
    g = UVGrid.from_image(32, 32, 0.2)
    n = 800  # sparse: most cells have < 5 samples in one cell
    u, v = _uniform_uv(rng, n, g, 0.3)
    vis = rng.normal(size=n) + 1j * rng.normal(size=n)
    gv = grid_visibilities(u, v, vis, np.ones(n), rng.integers(0, 2, n), g, 2, max_halfwidth=2.0)
    r = gv.report
    assert r["cells_grown"] > 0 and r["overlap_factor"] > 1
    assert np.all(gv.n_vis[gv.mask] >= 5)
    assert np.all(gv.halfwidth[gv.mask] <= 2.0)
    hp = r["cells_half_plane"]
    assert r["cells_usable"] + r["cells_empty"] + r["cells_too_few"] + r["cells_bad_sigma"] == hp
    assert np.all(np.isnan(gv.sigma[~gv.mask]))
    assert sum(r["usable_cells_per_channel"]) == r["cells_usable"]
    with pytest.warns(UserWarning, match="no usable gridded cell"):
        grid_visibilities(u, v, vis, np.ones(n), np.zeros(n, int), g, 2)  # channel 1 empty


def test_bad_input():
    g = UVGrid.from_image(16, 16, 0.2)
    u = np.zeros(10)
    vis = np.ones(10, complex)
    w = np.ones(10)
    ch = np.zeros(10, int)
    bad = vis.copy()
    bad[[2, 5]] = np.nan
    with pytest.raises(ValueError, match="2 of 10 rows have non-finite vis"):
        grid_visibilities(u, u, bad, w, ch, g, 1)
    w0 = w.copy()
    w0[3] = 0.0
    with pytest.raises(ValueError, match="1 of 10 rows have weight <= 0"):
        grid_visibilities(u, u, vis, w0, ch, g, 1)
    with pytest.raises(ValueError, match="row counts differ"):
        grid_visibilities(u, u[:9], vis, w, ch, g, 1)
    with pytest.raises(ValueError, match="outside"):
        grid_visibilities(u, u, vis, w, ch + 3, g, 2)
    with pytest.raises(ValueError, match="complex"):
        check_visibilities(u, u, vis.real, w)
    with pytest.raises(TypeError):
        grid_visibilities(u, u, vis, w, ch, (16, 16), 1)


def test_samples_record_and_skygrid():
    """``samples`` reproduces each usable cell's KB-weighted mean from where its samples were used."""
    rng = np.random.default_rng(6)
    sky = SkyGrid(24, 24, 0.25)
    g = sky.uv
    n = 1500  # sparse: many grown windows, overlaps and conjugates
    u, v = _uniform_uv(rng, n, g, 0.4)
    w = rng.uniform(0.5, 2.0, n)
    ch = rng.integers(0, 2, n)
    gv = grid_visibilities(u, v, rng.normal(size=n) + 1j * rng.normal(size=n), w, ch, sky, 2, chunk=333)
    assert gv.sky is sky and gv.grid == g and gv.report["cells_grown"] > 50
    s = gv.samples
    m = gv.mask.ravel()
    assert s.n_cells == m.sum() and s.ptr[-1] == gv.report["n_pairs"]
    np.testing.assert_array_equal(s.counts, gv.n_vis.ravel()[m])
    cell = np.repeat(np.arange(s.n_cells), s.counts)
    np.testing.assert_allclose(np.bincount(cell, s.weight), 1.0, rtol=1e-12)
    # each sample lies inside its cell's window
    ch_, ku, kv = np.unravel_index(np.flatnonzero(m), gv.mask.shape)
    du = s.u / g.du - (ku - g.nu // 2)[cell]
    dv = s.v / g.dv - (kv - g.nv // 2)[cell]
    assert np.all(np.maximum(np.abs(du), np.abs(dv)) < gv.halfwidth.ravel()[m][cell])

    # the record is all a model needs: gridding a Hermitian signal on the same (u, v, weight) gives
    # means equal to sum_i w_i f(u_i, v_i) over the recorded samples
    def f(uu, vv):
        return np.exp(-2j * np.pi * (uu * 1.3 - vv * 0.7) * ARCSEC_RAD) * (1 + 0.3 * np.cos(uu * 2e-6))

    clean = grid_visibilities(u, v, f(u, v), w, ch, sky, 2)
    got = np.bincount(cell, s.weight * f(s.u, s.v).real) + 1j * np.bincount(cell, s.weight * f(s.u, s.v).imag)
    np.testing.assert_allclose(got, clean.vis.ravel()[m], rtol=0, atol=1e-12)


def test_overlap_is_one_without_overlapping_windows():
    """width = 1 without growth: windows tile the plane, every usable cell has m_c = 1 exactly."""
    rng = np.random.default_rng(3)
    g = UVGrid.from_image(32, 32, 0.2)
    n = 6000
    u, v = _uniform_uv(rng, n, g, 0.4)
    vis = rng.normal(size=n) + 1j * rng.normal(size=n)
    d = grid_visibilities(u, v, vis, np.ones(n), np.zeros(n, int), g, 1, max_halfwidth=0.5, chunk=777)
    assert d.report["cells_grown"] == 0 and d.report["cells_usable"] > 100
    assert d.overlap.shape == d.mask.shape
    assert np.all(d.overlap[d.mask] == 1.0) and np.all(np.isnan(d.overlap[~d.mask]))
    r = d.report
    assert r["overlap_max"] == r["overlap_mean"] == r["overlap_weight_mean"] == 1.0
    assert r["cells_overlapping"] == 0 and np.isnan(r["overlap_mean_grown"])
    # rows: each sample comes from a distinct input row (no visibility enters two cells)
    assert np.unique(d.samples.row).size == d.samples.row.size


def _brute_overlap(u, v, weight, chan, g, gv):
    """m_c = sum_j A_cj n_j from scratch: which usable cell windows contain visibility j (or its
    conjugate, counted once per cell), and each cell's normalised KB weights."""
    from nuker_mge_plugin.dynamics.gridder import kaiser_bessel as kb
    cells = np.argwhere(gv.mask)
    n = len(u)
    A = np.zeros((len(cells), n))
    for c, (ch, ku, kv) in enumerate(cells):
        h = gv.halfwidth[ch, ku, kv]
        cu, cv = ku - g.nu // 2, kv - g.nv // 2
        for j in range(n):
            if chan[j] != ch:
                continue
            for sgn in (1, -1):  # the visibility first; its conjugate only if the visibility is not in
                du, dv = cu - sgn * u[j] / g.du, cv - sgn * v[j] / g.dv
                if max(abs(du), abs(dv)) < h:
                    A[c, j] = weight[j] * kb(du / h, 2.0) * kb(dv / h, 2.0)
                    break
    assert np.all(A.sum(1) > 0)
    A /= A.sum(1, keepdims=True)
    n_j = (A > 0).sum(0)
    return A @ n_j, A


def test_overlap_matches_brute_force_on_sparse_grid():
    rng = np.random.default_rng(11)
    g = UVGrid.from_image(12, 12, 0.5)
    n = 90  # sparse: windows grow to 2.5 cells and share most samples; some near the origin see
    u, v = _uniform_uv(rng, n, g, 0.35)  # a visibility and its own conjugate
    w = rng.uniform(0.5, 2.0, n)
    ch = rng.integers(0, 2, n)
    gv = grid_visibilities(u, v, rng.normal(size=n) + 1j * rng.normal(size=n), w, ch, g, 2, chunk=17)
    assert gv.report["cells_grown"] > 10 and gv.report["cells_usable"] > 20
    m_ref, A = _brute_overlap(u, v, w, ch, g, gv)
    np.testing.assert_allclose(gv.overlap[gv.mask], m_ref, rtol=1e-12)
    assert gv.report["overlap_max"] == pytest.approx(m_ref.max(), rel=1e-12)
    assert gv.report["overlap_mean"] == pytest.approx(m_ref.mean(), rel=1e-12)
    assert np.all(gv.overlap[gv.mask] >= 1.0) and m_ref.max() > 3
    # the samples record agrees with the brute-force weights, row by row
    s = gv.samples
    for c in range(s.n_cells):
        sl = slice(s.ptr[c], s.ptr[c + 1])
        np.testing.assert_allclose(np.sort(s.weight[sl]), np.sort(A[c][A[c] > 0]), rtol=1e-12)
        np.testing.assert_allclose(A[c, s.row[sl]], s.weight[sl], rtol=1e-12)


def test_cell_overlap_duplicates_and_no_rows():
    # two cells with the same two samples, and a third with a sample of its own
    s = CellSamples(ptr=np.array([0, 2, 4, 5]), u=np.zeros(5), v=np.zeros(5),
                    weight=np.array([0.25, 0.75, 0.25, 0.75, 1.0]), row=np.array([0, 1, 0, 1, 2]))
    np.testing.assert_array_equal(cell_overlap(s), [2.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="row"):
        cell_overlap(CellSamples(ptr=s.ptr, u=s.u, v=s.v, weight=s.weight))
