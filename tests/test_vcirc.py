"""Tests of the torch circular velocity (nuker_mge_plugin.dynamics.vcirc) against jampy and analytic truths."""

import importlib
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.special import gammainc

from nuker_mge_plugin.basis import SIGMA_GRID_PC, pc_per_arcsec
from nuker_mge_plugin.dynamics import vcirc, vcirc_qintr
from nuker_mge_plugin.dynamics.vcirc import G_KMS2_PC_PER_MSUN as G
from nuker_mge_plugin.dynamics.vcirc import shell_integral

pytest.importorskip("jampy")
from nuker_mge_plugin.adapters.jampy_shim import jampy_vcirc  # noqa: E402  (any jampy version)


def _random_table(rng, k=12, span_dex=1.5):
    """A positive MGE [Msun/pc^2, arcsec] with a moderate sigma span (where jampy is exact)."""
    sigma = np.sort(10 ** rng.uniform(-1.0, -1.0 + span_dex, k))
    surf = 10 ** rng.uniform(1.0, 4.0, k)
    qobs = rng.uniform(0.5, 1.0, k)
    return surf, sigma, qobs


# ----------------------------------------------------------------------------- reference agreement
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_jampy_inside_one_third_of_largest_sigma(seed):
    rng = np.random.default_rng(seed)
    surf, sigma, qobs = _random_table(rng)
    inc = float(np.degrees(np.arccos(qobs.min())) + rng.uniform(3, 30))
    inc = min(inc, 90.0)
    mbh, dist = 10 ** rng.uniform(6, 9), rng.uniform(2, 50)
    rad = np.geomspace(0.01, sigma.max() / 3, 25)
    ours = vcirc(surf, sigma, qobs, inc, mbh, dist, rad)
    ref = jampy_vcirc(surf, sigma, qobs, inc, mbh, dist, rad)
    assert np.max(np.abs(ours / ref - 1)) <= 2e-5


def test_jampy_example_mge_matches_quad_reference():
    """Cappellari (2020) Table 1 (q_intr down to 0.058) at i = 60 deg vs per-Gaussian scipy.quad."""
    from importlib import resources
    lg_dens, lg_sigma, qintr = np.loadtxt(resources.files("jampy") / "examples/cappellari2020_table1.txt").T
    dens, sigma, inc = 10**lg_dens, 10**lg_sigma, math.radians(60.0)
    qobs = np.sqrt((qintr * math.sin(inc)) ** 2 + math.cos(inc) ** 2)
    surf = np.sqrt(2 * np.pi) * dens * sigma * qintr / qobs
    dist = 0.648 / np.pi                       # 1 arcsec = 1 pc
    rad = np.geomspace(sigma.min() / 10, sigma.max() * 3, 7)
    e2 = (1 - qobs**2) / math.sin(inc) ** 2
    ref = []
    for R in rad:
        tot = 0.0
        for s, S, q, ee in zip(sigma, surf, qobs, e2):
            a = R * R / (2 * s * s)
            f = lambda u: u * u * np.exp(-a * u * u) / np.sqrt(1 - ee * u * u)  # noqa: E731
            tot += S * q / s * quad(f, 0, 1, epsabs=0, epsrel=1e-12, limit=400, points=[1 - 1e-3])[0]
        ref.append(math.sqrt(R * R * 2 * math.sqrt(2 * math.pi) * G * tot + G * 0.01 / R))
    ours = vcirc(surf, sigma, qobs, 60.0, 0.01, dist, rad)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    # and the analytic Satoh model the MGE approximates, to the MGE's own accuracy (~1% at 3 sigma_max)
    vtrue = np.sqrt(G * rad**2 / (3 + rad**2) ** 1.5 + G * 0.01 / rad)
    assert np.max(np.abs(ours / vtrue - 1)) < 1.5e-2


@pytest.mark.parametrize("e2", [0.0, 0.1, 0.5, 0.9, 0.99, 0.9999])
def test_shell_integral_against_quad(e2):
    for a in np.geomspace(1e-9, 1e9, 19):
        f = lambda u: u * u * np.exp(-a * u * u) / np.sqrt(1 - e2 * u * u)  # noqa: E731
        um = min(1.0, math.sqrt(60 / a))
        ref = quad(f, 0, um, epsabs=0, epsrel=1e-13, limit=400)[0]
        got = shell_integral(torch.tensor(a, dtype=torch.float64), torch.tensor(e2, dtype=torch.float64))
        assert abs(got.item() / ref - 1) < 1e-10, (a, e2)


def test_spherical_gaussian_matches_closed_form_enclosed_mass():
    """q = 1: v^2 = G M(<r)/r with M(<r)/M = erf(x/sqrt2) - sqrt(2/pi) x exp(-x^2/2) = P(3/2, x^2/2), x = r/sigma."""
    surf, sigma_pc, dist = 1e3, 50.0, 10.0
    pc = pc_per_arcsec(dist)
    rad = np.geomspace(1e-3, 50, 30)
    x = rad * pc / sigma_pc
    mtot = 2 * np.pi * surf * sigma_pc**2
    menc = mtot * gammainc(1.5, x * x / 2)  # the regularised form has no cancellation at small x
    vtrue = np.sqrt(G * menc / (rad * pc))
    for inc in (30.0, 90.0):
        ours = vcirc([surf], [sigma_pc / pc], [1.0], inc, 0.0, dist, rad)
        np.testing.assert_allclose(ours, vtrue, rtol=1e-10)


# ----------------------------------------------------------------------------- black hole
def test_black_hole_only_keplerian_and_plummer():
    dist, mbh = 20.0, 3e8
    pc = pc_per_arcsec(dist)
    rad = np.geomspace(0.01, 10, 20)
    v = vcirc([0.0], [1.0], [0.8], 60.0, mbh, dist, rad)
    np.testing.assert_allclose(v, np.sqrt(G * mbh / (rad * pc)), rtol=1e-12)
    soft = 0.3
    v = vcirc([0.0], [1.0], [0.8], 60.0, mbh, dist, rad, soft=soft)
    R, s = rad * pc, soft * pc
    np.testing.assert_allclose(v, np.sqrt(G * mbh * R**2 / (R**2 + s**2) ** 1.5), rtol=1e-12)


def test_bh_adds_in_quadrature_and_centre_is_zero():
    surf, sigma, qobs = _random_table(np.random.default_rng(3))
    rad = np.array([0.0, 0.1, 1.0])
    v_star = vcirc(surf, sigma, qobs, 80.0, 0.0, 10.0, rad)
    v_all = vcirc(surf, sigma, qobs, 80.0, 1e8, 10.0, rad)
    v_bh = vcirc([0.0], [1.0], 1.0, 80.0, 1e8, 10.0, rad)
    np.testing.assert_allclose(v_all[1:] ** 2, v_star[1:] ** 2 + v_bh[1:] ** 2, rtol=1e-12)
    assert v_all[0] == 0.0 and v_star[0] == 0.0


# ----------------------------------------------------------------------------- types, shapes, batching
def test_numpy_in_numpy_out_and_torch_dtypes():
    surf, sigma, qobs = _random_table(np.random.default_rng(4))
    rad = np.geomspace(0.05, 3, 9)
    v64 = vcirc(surf, sigma, qobs, 75.0, 1e8, 15.0, rad)
    assert isinstance(v64, np.ndarray) and v64.dtype == np.float64 and v64.shape == (9,)
    for dt, tol in ((torch.float64, 1e-14), (torch.float32, 1e-5)):
        args = [torch.tensor(x, dtype=dt) for x in (surf, sigma, qobs)]
        vt = vcirc(*args, torch.tensor(75.0, dtype=dt), 1e8, 15.0, torch.tensor(rad, dtype=dt))
        assert isinstance(vt, torch.Tensor) and vt.dtype == dt and vt.shape == (9,)
        np.testing.assert_allclose(vt.numpy(), v64, rtol=tol)
    v32 = vcirc(surf.astype(np.float32), sigma.astype(np.float32), qobs.astype(np.float32),
                75.0, 1e8, 15.0, rad.astype(np.float32))
    assert isinstance(v32, np.ndarray) and v32.dtype == np.float32
    assert np.ndim(vcirc(surf, sigma, qobs, 75.0, 1e8, 15.0, 0.5)) == 0


def test_batching_equals_looping():
    rng = np.random.default_rng(5)
    B, K = 4, 10
    tabs = [_random_table(rng, K) for _ in range(B)]
    surf = np.stack([t[0] for t in tabs])
    sigma = np.stack([t[1] for t in tabs])
    qobs = np.stack([t[2] for t in tabs])
    inc = rng.uniform(70, 90, B)
    mbh = 10 ** rng.uniform(6, 9, B)
    dist = rng.uniform(5, 50, B)
    rad = np.geomspace(0.02, 5, 11) * rng.uniform(0.5, 2, (B, 1))
    soft = rng.uniform(0, 0.05, B)
    vb = vcirc(torch.tensor(surf), sigma, qobs, inc, mbh, dist, rad, soft)
    assert vb.shape == (B, 11)
    for b in range(B):
        vl = vcirc(surf[b], sigma[b], qobs[b], inc[b], mbh[b], dist[b], rad[b], soft[b])
        np.testing.assert_allclose(vb[b].numpy(), vl, rtol=1e-14)
    # shared radii (R,) and a per-model scalar qobs given as (B, 1) broadcast too
    vs = vcirc(surf, sigma, qobs[:, :1], inc, mbh, dist, rad[0])
    for b in range(B):
        np.testing.assert_allclose(vs[b], vcirc(surf[b], sigma[b], qobs[b, 0], inc[b], mbh[b], dist[b], rad[0]),
                                   rtol=1e-14)


def test_qintr_variant_equals_qobs_variant():
    rng = np.random.default_rng(6)
    surf, sigma, _ = _random_table(rng)
    qintr = rng.uniform(0.1, 1.0, surf.size)
    inc = 78.0
    qobs = np.sqrt((qintr * np.sin(np.radians(inc))) ** 2 + np.cos(np.radians(inc)) ** 2)
    rad = np.geomspace(0.01, 10, 15)
    np.testing.assert_allclose(vcirc_qintr(surf, sigma, qintr, inc, 1e8, 12.0, rad),
                               vcirc(surf, sigma, qobs, inc, 1e8, 12.0, rad), rtol=1e-12)


# ----------------------------------------------------------------------------- gradients
def test_gradcheck_float64_small_case():
    t = lambda x: torch.tensor(x, dtype=torch.float64, requires_grad=True)  # noqa: E731
    inputs = (t([300.0, 80.0, -5.0]), t([0.1, 0.7, 3.0]), t([0.9, 0.55, 0.8]), t(70.0), t(2e7), t(8.0),
              t([0.05, 0.4, 2.0, 6.0]), t(0.02))
    assert torch.autograd.gradcheck(vcirc, inputs, eps=1e-7, atol=1e-6, rtol=1e-5)
    inputs_q = (inputs[0], inputs[1], t([0.3, 0.12, 0.9])) + inputs[3:]
    assert torch.autograd.gradcheck(vcirc_qintr, inputs_q, eps=1e-7, atol=1e-6, rtol=1e-5)


def test_finite_gradients_over_table1_box():
    from nuker_mge_plugin.projector import exact_amplitudes
    rng = np.random.default_rng(7)
    B = 200
    d = torch.float64
    alpha = torch.tensor(10 ** rng.uniform(-1, 1, B), dtype=d, requires_grad=True)
    gamma = torch.tensor(rng.uniform(0.001, 1.2, B), dtype=d, requires_grad=True)
    bmg = torch.tensor(rng.uniform(0.3, 3.0, B), dtype=d, requires_grad=True)
    r_b = torch.tensor(10 ** rng.uniform(np.log10(2), np.log10(2000), B), dtype=d, requires_grad=True)
    lg_sb = torch.tensor(rng.uniform(1, 5, B), dtype=d, requires_grad=True)
    inc = torch.tensor(rng.uniform(72, 89, B), dtype=d, requires_grad=True)
    qintr = torch.tensor(rng.uniform(0.1, 1.0, B), dtype=d, requires_grad=True)
    lg_mbh = torch.tensor(rng.uniform(6, 9.8, B), dtype=d, requires_grad=True)
    dist = torch.tensor(rng.uniform(1, 100, B), dtype=d, requires_grad=True)
    amp = exact_amplitudes(alpha, gamma + bmg, gamma, r_b)
    surf = amp * 10 ** lg_sb[:, None]
    sigma = torch.tensor(SIGMA_GRID_PC, dtype=d)[None, :] / (dist[:, None] * math.pi / 0.648)
    rad = torch.tensor(np.geomspace(0.01, 10, 30), dtype=d)
    v = vcirc_qintr(surf, sigma, qintr[:, None], inc, 10**lg_mbh, dist, rad)
    assert torch.isfinite(v).all() and (v > 0).all()
    params = (alpha, gamma, bmg, r_b, lg_sb, inc, qintr, lg_mbh, dist)
    grads = torch.autograd.grad(torch.log(v).sum(), params)
    for name, g in zip("alpha gamma bmg r_b lg_sb inc qintr lg_mbh dist".split(), grads):
        assert torch.isfinite(g).all(), name


# ----------------------------------------------------------------------------- bad input
def test_inclination_too_low_names_batch_members():
    surf = np.ones((3, 2))
    sigma = np.ones((3, 2))
    qobs = np.array([[0.9, 0.9], [0.3, 0.9], [0.9, 0.9]])
    with pytest.raises(ValueError, match=r"batch members \[1\]"):
        vcirc(surf, sigma, qobs, np.array([80.0, 60.0, 85.0]), 1e8, 10.0, [0.1, 1.0])
    with pytest.raises(ValueError, match="inclination too low"):
        vcirc([1.0], [1.0], [0.5], 30.0, 0.0, 10.0, [1.0])


@pytest.mark.parametrize("name, value, pattern", [
    ("sigma_arcsec", [-1.0], "sigma_arcsec.*> 0"),
    ("sigma_arcsec", [np.nan], "sigma_arcsec.*finite"),
    ("surf_pc", [np.inf], "surf_pc.*finite"),
    ("qobs", [1.2], "qobs.*<= 1"),
    ("qobs", [0.0], "qobs"),
    ("inc_deg", 0.0, "inc_deg.*0 < inc_deg <= 90"),
    ("inc_deg", 120.0, "inc_deg.*0 < inc_deg <= 90"),
    ("inc_deg", np.nan, "inc_deg"),
    ("mbh", -1.0, r"mbh.*>= 0"),
    ("distance", 0.0, r"distance.*> 0"),
    ("rad", [-0.1, 1.0], r"rad.*>= 0"),
    ("soft", -0.1, r"soft.*>= 0"),
])
def test_bad_values_raise_naming_parameter(name, value, pattern):
    args = dict(surf_pc=[100.0], sigma_arcsec=[1.0], qobs=[0.9], inc_deg=80.0, mbh=1e8, distance=10.0,
                rad=[0.5, 1.0], soft=0.0)
    args[name] = value
    with pytest.raises(ValueError, match=pattern):
        vcirc(**args)


def test_bad_qintr_and_mismatched_batches():
    with pytest.raises(ValueError, match="qintr"):
        vcirc_qintr([1.0], [1.0], [0.0], 80.0, 0.0, 10.0, [1.0])
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(5,\)"):
        vcirc(np.ones((3, 2)), np.ones(2), 0.9, np.full(5, 80.0), 0.0, 10.0, [1.0])
    with pytest.raises(ValueError, match=r"\(3, 2\).*\(4, 2\)"):
        vcirc(np.ones((3, 2)), np.ones((4, 2)), 0.9, 80.0, 0.0, 10.0, [1.0])


def test_negative_enclosed_mass_raises():
    with pytest.raises(ValueError, match="negative enclosed mass"):
        vcirc([-10.0], [1.0], [0.9], 80.0, 0.0, 10.0, [1.0])


# ----------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(8)
    B, K = 16, 64
    surf = 10 ** rng.uniform(1, 4, (B, K))
    sigma = SIGMA_GRID_PC[None, :] / pc_per_arcsec(rng.uniform(5, 50, (B, 1)))
    qintr = rng.uniform(0.1, 1, (B, 1))
    inc, mbh, dist = rng.uniform(72, 89, B), 10 ** rng.uniform(6, 9.8, B), rng.uniform(5, 50, B)
    dist = np.full(B, 1.0) * dist
    rad = np.geomspace(0.01, 10, 50)
    for dt, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        args = [torch.tensor(x, dtype=dt) for x in (surf, sigma, qintr, inc, mbh, dist, rad)]
        cpu = vcirc_qintr(*args)
        gpu = vcirc_qintr(*[a.cuda() for a in args])
        assert gpu.device.type == "cuda" and gpu.dtype == dt
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=tol, atol=0)


# ----------------------------------------------------------------------------- fast path (shared sigma and radii)
VC = importlib.import_module("nuker_mge_plugin.dynamics.vcirc")


def _nuker_batch(seed, B, dtype=torch.float64):
    """Random Table-1-box Nuker MGEs: shared sigma_arcsec (K,) and radii (R,), per-model everything else."""
    from nuker_mge_plugin.projector import exact_amplitudes
    rng = np.random.default_rng(seed)
    gamma = rng.uniform(0.001, 1.2, B)
    shape = [torch.tensor(x) for x in (10 ** rng.uniform(-1, 1, B), gamma + rng.uniform(0.3, 3.0, B), gamma,
                                       10 ** rng.uniform(np.log10(2), np.log10(2000), B))]
    with torch.no_grad():
        surf = exact_amplitudes(*shape) * torch.tensor(10 ** rng.uniform(1, 5, (B, 1)))
    sigma = torch.tensor(SIGMA_GRID_PC / pc_per_arcsec(rng.uniform(5, 50)))
    t = lambda x: torch.tensor(x, dtype=dtype)  # noqa: E731
    return dict(surf_pc=surf.to(dtype), sigma_arcsec=sigma.to(dtype), qintr=t(rng.uniform(0.1, 1.0, (B, 1))),
                inc_deg=t(rng.uniform(72, 89, B)), mbh=t(10 ** rng.uniform(6, 9.8, B)),
                distance=t(rng.uniform(1, 100, B)), rad=t(np.geomspace(0.01, 10, 40)), soft=t(rng.uniform(0, 0.02, B)))


def _qobs_of(qintr, inc_deg):
    inc = torch.deg2rad(inc_deg)[:, None]
    return torch.sqrt((qintr * torch.sin(inc)) ** 2 + torch.cos(inc) ** 2)


def _both_paths(monkeypatch, fn, *args, **kw):
    monkeypatch.setattr(VC, "_FORCE_PATH", "general")
    slow = fn(*args, **kw)
    assert VC._last_path == "general"
    monkeypatch.setattr(VC, "_FORCE_PATH", None)
    fast = fn(*args, **kw)
    assert VC._last_path == "fast"
    return fast, slow


@pytest.mark.parametrize("seed", [10, 11])
def test_fast_path_equals_general_path_on_nuker_batches(monkeypatch, seed):
    b = _nuker_batch(seed, 24)
    args = (b["inc_deg"], b["mbh"], b["distance"], b["rad"], b["soft"])
    fast, slow = _both_paths(monkeypatch, vcirc_qintr, b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    qobs = _qobs_of(b["qintr"], b["inc_deg"])
    fast, slow = _both_paths(monkeypatch, vcirc, b["surf_pc"], b["sigma_arcsec"], qobs, *args)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    # one scalar qobs for the whole batch, and per-Gaussian qobs (the table serves any q_intr per Gaussian)
    fast, slow = _both_paths(monkeypatch, vcirc, b["surf_pc"], b["sigma_arcsec"], 0.6, *args)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    rng = np.random.default_rng(seed)
    qk = torch.tensor(rng.uniform(0.4, 1.0, (24, SIGMA_GRID_PC.size)))
    fast, slow = _both_paths(monkeypatch, vcirc, b["surf_pc"].abs(), b["sigma_arcsec"], qk, *args)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=0)
    # float32 inputs: the fast path works in float64 inside, so it matches float64 to float32 rounding
    b32 = _nuker_batch(seed, 24, torch.float32)
    v32 = vcirc_qintr(b32["surf_pc"], b32["sigma_arcsec"], b32["qintr"], b32["inc_deg"], b32["mbh"],
                      b32["distance"], b32["rad"], b32["soft"])
    assert VC._last_path == "fast" and v32.dtype == torch.float32
    v64 = vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args)
    torch.testing.assert_close(v32.double(), v64, rtol=1e-4, atol=0)


def test_fast_path_gradients_equal_general_path(monkeypatch):
    b = _nuker_batch(12, 16)
    names = ("surf_pc", "qintr", "inc_deg", "mbh", "distance", "soft")
    grads = {}
    for path in ("general", "fast"):
        monkeypatch.setattr(VC, "_FORCE_PATH", path)
        x = {k: (v.clone().requires_grad_(True) if k in names else v) for k, v in b.items()}
        v = vcirc_qintr(**x)
        assert VC._last_path == path
        grads[path] = torch.autograd.grad(torch.log(v).sum(), [x[k] for k in names])
    for name, gf, gg in zip(names, grads["fast"], grads["general"]):
        torch.testing.assert_close(gf, gg, rtol=1e-8, atol=1e-12 * gg.abs().max().item(), msg=name)


def test_gradcheck_fast_path(monkeypatch):
    monkeypatch.setattr(VC, "_FORCE_PATH", "fast")
    t = lambda x: torch.tensor(x, dtype=torch.float64, requires_grad=True)  # noqa: E731
    # sigma and radii needing gradients: the table is built inside the graph
    inputs = (t([[300.0, 80.0, -5.0], [50.0, 20.0, 4.0]]), t([0.1, 0.7, 3.0]), t([[0.9], [0.6]]), t([70.0, 85.0]),
              t([2e7, 1e6]), t([8.0, 15.0]), t([0.05, 0.4, 2.0, 6.0]), t([0.02, 0.01]))
    assert torch.autograd.gradcheck(vcirc, inputs, eps=1e-7, atol=1e-6, rtol=1e-5)
    assert VC._last_path == "fast"
    inputs_q = (inputs[0], inputs[1], t([[0.3], [0.12]])) + inputs[3:]
    assert torch.autograd.gradcheck(vcirc_qintr, inputs_q, eps=1e-7, atol=1e-6, rtol=1e-5)
    # constant sigma and radii: the cached table, gradients through the Chebyshev weights
    sig, rad = inputs[1].detach(), inputs[6].detach()
    f = lambda s, q, i, m, d: vcirc_qintr(s, sig, q, i, m, d, rad)  # noqa: E731
    assert torch.autograd.gradcheck(f, (inputs[0], inputs_q[2], inputs[3], inputs[4], inputs[5]),
                                    eps=1e-7, atol=1e-6, rtol=1e-5)
    assert VC._last_path == "fast"


def test_fast_path_selection(monkeypatch):
    monkeypatch.setattr(VC, "_fast_cache", type(VC._fast_cache)())
    b = _nuker_batch(13, 16)
    args = (b["inc_deg"], b["mbh"], b["distance"], b["rad"])
    vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args)
    assert VC._last_path == "fast" and len(VC._fast_cache) == 1
    # one model on the same sigma and radii reuses the cached table
    v1 = vcirc_qintr(b["surf_pc"][0], b["sigma_arcsec"], b["qintr"][0], *(a[0] for a in args[:3]), b["rad"])
    assert VC._last_path == "fast"
    # a small batch with no cached table, per-model sigma or radii, q_intr below the table: general path
    other = b["rad"] * 1.5
    vcirc_qintr(b["surf_pc"][:2], b["sigma_arcsec"], b["qintr"][:2], *(a[:2] for a in args[:3]), other)
    assert VC._last_path == "general"
    sig2 = b["sigma_arcsec"].expand(16, -1) * torch.linspace(1, 2, 16, dtype=torch.float64)[:, None]
    vcirc_qintr(b["surf_pc"], sig2, b["qintr"], *args)
    assert VC._last_path == "general"
    per_model_rad = b["rad"].expand(16, -1) * torch.linspace(1, 2, 16, dtype=torch.float64)[:, None]
    vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args[:3], per_model_rad)
    assert VC._last_path == "general"
    q = b["qintr"].clone()
    q[3] = 0.005
    v = vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], q, *args)
    assert VC._last_path == "general" and torch.isfinite(v).all()
    # the single model agrees with the batched general path
    monkeypatch.setattr(VC, "_FORCE_PATH", "general")
    ref = vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args)
    torch.testing.assert_close(v1, ref[0], rtol=1e-9, atol=0)
    monkeypatch.setattr(VC, "_FORCE_PATH", "fast")
    with pytest.raises(RuntimeError, match="fast path does not apply"):
        vcirc_qintr(b["surf_pc"], sig2, b["qintr"], *args)


def test_fast_path_jampy_example_over_inclinations(monkeypatch):
    """Cappellari (2020) Table 1 (q_intr down to 0.058, per-Gaussian) at 8 inclinations: fast == general."""
    from importlib import resources
    lg_dens, lg_sigma, qintr = np.loadtxt(resources.files("jampy") / "examples/cappellari2020_table1.txt").T
    dens, sigma = 10**lg_dens, 10**lg_sigma
    inc = np.linspace(40, 90, 8)
    s, c = np.sin(np.radians(inc))[:, None], np.cos(np.radians(inc))[:, None]
    qobs = np.sqrt((qintr * s) ** 2 + c**2)
    surf = np.sqrt(2 * np.pi) * dens * sigma * qintr / qobs
    rad = np.concatenate([[0.0], np.geomspace(sigma.min() / 10, sigma.max() * 3, 30)])
    fast, slow = _both_paths(monkeypatch, vcirc, torch.tensor(surf), sigma, torch.tensor(qobs), torch.tensor(inc),
                             0.01, 0.648 / np.pi, rad)
    assert (fast[:, 0] == 0).all()
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=0)


def test_stacked_identical_rows_take_the_fast_path(monkeypatch):
    """np.stack of B MGE objects at one distance gives (B, K) sigma with identical rows: fast path."""
    monkeypatch.setattr(VC, "_fast_cache", type(VC._fast_cache)())
    b = _nuker_batch(21, 12)
    stacked_sigma = b["sigma_arcsec"].expand(12, -1).clone()
    stacked_rad = b["rad"].expand(12, -1).clone()
    args = (b["inc_deg"], b["mbh"], b["distance"])
    v = vcirc_qintr(b["surf_pc"], stacked_sigma.numpy(), b["qintr"], *args, stacked_rad.numpy())
    assert VC._last_path == "fast"
    monkeypatch.setattr(VC, "_FORCE_PATH", "general")
    ref = vcirc_qintr(b["surf_pc"], b["sigma_arcsec"], b["qintr"], *args, b["rad"])
    torch.testing.assert_close(v, ref, rtol=1e-9, atol=0)
    # rows that differ in one element, or sigma that needs a gradient per row, stay on the general path
    monkeypatch.setattr(VC, "_FORCE_PATH", None)
    bent = stacked_sigma.clone()
    bent[5, 3] *= 1.0 + 1e-12
    vcirc_qintr(b["surf_pc"], bent, b["qintr"], *args, b["rad"])
    assert VC._last_path == "general"
    vcirc_qintr(b["surf_pc"], stacked_sigma.requires_grad_(), b["qintr"], *args, b["rad"])
    assert VC._last_path == "general"


def test_vcirc_table_module_equals_vcirc_qintr_and_touches_no_global_cache(monkeypatch):
    """VcircTable (the fit's path: its table a buffer) gives vcirc_qintr's v_c and gradients."""
    monkeypatch.setattr(VC, "_fast_cache", type(VC._fast_cache)())
    gen = torch.Generator().manual_seed(3)
    for dt, tol in ((torch.float64, 1e-12), (torch.float32, 2e-5)):
        sig = torch.as_tensor(SIGMA_GRID_PC / pc_per_arcsec(16.5), dtype=dt)
        rad = torch.as_tensor(np.concatenate([[0.0], np.geomspace(0.01, 30.0, 63)]), dtype=dt)
        table = VC.VcircTable(sig, rad, 16.5)
        B = 4
        surf = (10 ** (4 * torch.rand(B, 64, generator=gen, dtype=dt))).requires_grad_(True)
        q = (0.2 + 0.8 * torch.rand(B, 1, generator=gen, dtype=dt)).requires_grad_(True)
        inc = (30 + 60 * torch.rand(B, generator=gen, dtype=dt)).requires_grad_(True)
        mbh = 10 ** (6 + 3 * torch.rand(B, generator=gen, dtype=dt))
        a, b = table(surf, q, inc, mbh, 0.01), VC.vcirc_qintr(surf, sig, q, inc, mbh, 16.5, rad, 0.01)
        assert a.shape == (B, 64) and a.dtype == dt and float(a[:, 0].abs().max()) == 0.0
        assert torch.allclose(a, b, rtol=tol, atol=0.0)
        for ga, gb in zip(torch.autograd.grad(a.sum(), (surf, q, inc)), torch.autograd.grad(b.sum(), (surf, q, inc))):
            assert float((ga - gb).abs().max()) <= 100 * tol * float(gb.abs().max())
        q_low = q.detach().clone()
        q_low[1] = 0.005                         # below the interpolation's range: the general path
        assert torch.allclose(table(surf, q_low, inc, mbh), VC.vcirc_qintr(surf, sig, q_low, inc, mbh, 16.5, rad),
                              rtol=tol, atol=0.0)
    assert len(VC._fast_cache) == 0   # the module keeps its table itself (vcirc_qintr at B = 4 caches none)
    assert "table" in dict(table.named_buffers())
