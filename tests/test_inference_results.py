"""The results writer: diagnostics against ArviZ 0.23, the netCDF round trip through ArviZ, the
summary on synthetic draws of known moments, prior-bound detection, dirty images and every figure."""

import json
import warnings

import numpy as np
import pytest
import torch

from nuker_mge_plugin.dynamics.coords import SkyGrid
from nuker_mge_plugin.dynamics.visibilities import cube_to_vis
from nuker_mge_plugin.inference import plots
from nuker_mge_plugin.inference.results import (at_bound, ess_bulk, ess_tail, hdi, read_posterior_netcdf, rhat,
                                                summarize, thin_draws, validate_draws, write_posterior_netcdf,
                                                write_results, write_summary_json)

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # arviz 0.23 announces its refactor with a FutureWarning
    az = pytest.importorskip("arviz")

C, N = 4, 500
TRUE = {"log10_mbh": (8.2, 0.05), "inclination": (80.0, 1.5), "flux": (20.0, 2.0)}


@pytest.fixture
def posterior():
    rng = np.random.default_rng(7)
    draws = {k: m + s * rng.standard_normal((C, N)) for k, (m, s) in TRUE.items()}
    stats = dict(logp=-0.5 * sum(((draws[k] - m) / s) ** 2 for k, (m, s) in TRUE.items()),
                 accepted=rng.random((C, N)) < 0.57, step_size=0.3)
    return draws, stats


def _ar1(rng, phi, shape):
    x = np.zeros(shape)
    e = rng.standard_normal(shape)
    for t in range(1, shape[1]):
        x[:, t] = phi * x[:, t - 1] + e[:, t]
    return x


def test_diagnostics_match_arviz():
    rng = np.random.default_rng(3)
    for x in (_ar1(rng, 0.9, (4, 400)), rng.standard_t(3, size=(3, 301)), rng.standard_normal((2, 50)) + [[0], [2]]):
        assert rhat(x) == pytest.approx(float(az.rhat(x)), rel=1e-10)
        assert ess_bulk(x) == pytest.approx(float(az.ess(x, method="bulk")), rel=1e-10)
        assert ess_tail(x) == pytest.approx(float(az.ess(x, method="tail")), rel=1e-10)
        for p in (0.68, 0.997):
            assert hdi(x, p) == pytest.approx(az.hdi(x.ravel(), hdi_prob=p).tolist(), rel=1e-12)


def test_summary_of_known_normals(posterior, tmp_path):
    draws, stats = posterior
    s = summarize(draws, stats, truth={"log10_mbh": 8.2, "qintr": 0.7}, wall_time_s=12.5,
                  priors={"log10_mbh": (6.0, 9.79934), "inclination": (72.0, 89.0), "flux": (1.0, 50.0)})
    for k, (m, sd) in TRUE.items():
        p = s["parameters"][k]
        assert set(p) >= {"mean", "std", "median", "hdi_68", "hdi_997", "r_hat", "ess_bulk", "ess_tail"}
        assert abs(p["mean"] - m) < 4 * sd / np.sqrt(C * N)
        assert p["std"] == pytest.approx(sd, rel=0.06)
        assert p["r_hat"] < 1.01 and p["ess_bulk"] > 1000 and p["ess_tail"] > 1000
        lo, hi = p["hdi_68"]
        assert (hi - lo) / (2 * sd) == pytest.approx(0.994, rel=0.06)
        lo, hi = p["hdi_997"]
        assert lo < p["hdi_68"][0] < p["median"] < p["hdi_68"][1] < hi
    assert s["parameters"]["flux"]["unit"] == "Jy km/s"
    assert (s["chains"], s["draws"], s["wall_time_s"], s["step_size"]) == (C, N, 12.5, 0.3)
    assert s["acceptance"] == pytest.approx(0.57, abs=0.03) and len(s["acceptance_per_chain"]) == C
    assert s["truth"]["log10_mbh"]["in_hdi_997"] and abs(s["truth"]["log10_mbh"]["z"]) < 0.2
    assert s["truth"]["qintr"] == {"value": 0.7}
    assert s["at_bound"] == {}
    d = s["diagnostics"]
    assert d["converged"] and d["max_r_hat"] <= 1.01 and d["min_ess"] >= 400 and d["failing"] == []
    assert (d["r_hat_max"], d["ess_min"]) == (1.01, 400.0) and "1.01" in d["criteria"] and "400" in d["criteria"]
    path = write_summary_json(tmp_path / "out" / "summary.json", s)
    assert json.loads(open(path).read()) == s
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.json"]  # no temporary file left


def test_shifted_chain_is_not_converged(posterior):
    draws, stats = posterior
    draws = dict(draws)
    draws["flux"] = draws["flux"].copy()
    draws["flux"][0] += 2.0 * TRUE["flux"][1]
    s = summarize(draws, stats)
    assert s["parameters"]["flux"]["r_hat"] > 1.1
    assert s["parameters"]["log10_mbh"]["r_hat"] < 1.01
    assert not s["diagnostics"]["converged"] and s["diagnostics"]["worst_r_hat"] == "flux"
    assert s["diagnostics"]["failing"] == ["flux"]


def test_converged_needs_rhat_1_01_and_ess_400():
    """The thresholds careful users apply: draws that passed the old R-hat < 1.05 / ESS >= 200 do not."""
    from nuker_mge_plugin.inference.results import CONVERGED_ESS, CONVERGED_RHAT
    from nuker_mge_plugin.sampling.diagnostics import ESS_MIN, RHAT_MAX
    assert (CONVERGED_RHAT, CONVERGED_ESS) == (RHAT_MAX, ESS_MIN) == (1.01, 400.0)
    rng = np.random.default_rng(5)
    stats = dict(logp=np.zeros((4, 400)), accepted=np.ones((4, 400), bool), step_size=0.1)
    # AR(1) chains, phi 0.8: ESS ~ 1600 / 9 ~ 180-350, R-hat < 1.05
    x = _ar1(rng, 0.8, (4, 400))
    s = summarize({"log10_mbh": x, "flux": rng.standard_normal((4, 400))}, stats)
    p, d = s["parameters"]["log10_mbh"], s["diagnostics"]
    assert p["r_hat"] < 1.05 and 150 < p["ess_bulk"] < 400, p
    assert not d["converged"] and d["failing"] == ["log10_mbh"]
    # a chain offset by 0.4 sd: R-hat between 1.01 and 1.05 (and a bulk ESS of ~240: both flag it)
    y = rng.standard_normal((4, 4000))
    y[0] += 0.4
    d = summarize({"x": y}, dict(stats, logp=np.zeros((4, 4000)), accepted=np.ones((4, 4000), bool)))["diagnostics"]
    assert 1.01 < d["max_r_hat"] < 1.05 and d["min_ess"] > 200 and not d["converged"], d


def test_nuts_sample_stats_without_accepted(posterior, tmp_path):
    """NUTS reports a per-draw acceptance_rate (and diverging, tree_depth, ...) instead of accepted."""
    draws, stats = posterior
    rng = np.random.default_rng(2)
    nuts = dict(logp=stats["logp"], step_size=np.full(C, 0.4), acceptance_rate=rng.uniform(0.6, 1.0, (C, N)),
                diverging=rng.random((C, N)) < 0.01, tree_depth=rng.integers(1, 5, (C, N)),
                n_leapfrog=rng.integers(1, 32, (C, N)), energy=-stats["logp"] + 1.0)
    s = summarize(draws, nuts)
    assert s["acceptance"] == pytest.approx(0.8, abs=0.01) and len(s["acceptance_per_chain"]) == C
    assert s["step_size"] == 0.4 and s["diagnostics"]["converged"]
    path = write_posterior_netcdf(tmp_path / "posterior.nc", draws, nuts)
    d2, s2, _ = read_posterior_netcdf(path)
    assert "accepted" not in s2 and s2["diverging"].dtype == bool
    assert np.array_equal(s2["diverging"], nuts["diverging"]) and np.array_equal(s2["tree_depth"], nuts["tree_depth"])
    assert np.array_equal(s2["acceptance_rate"], nuts["acceptance_rate"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_netcdf(path)
    assert idata.sample_stats["diverging"].values.sum() == nuts["diverging"].sum()
    with pytest.raises(ValueError, match="accepted or acceptance_rate"):
        validate_draws(draws, dict(logp=stats["logp"], step_size=0.1))


def test_vcirc_band_from_array_and_callable(posterior):
    draws, stats = posterior
    r = np.geomspace(0.05, 5.0, 7)
    seen = {}

    def vc(thinned, radius):
        seen["n"] = len(thinned["flux"])
        return 100.0 + thinned["flux"][:, None] * 0 + np.arange(len(thinned["flux"]))[:, None] + 0 * radius

    s = summarize(draws, stats, vcirc=vc, radius_arcsec=r, vcirc_draws=101)
    assert seen["n"] == 101
    assert s["vcirc"]["median"] == pytest.approx([150.0] * 7)
    assert s["vcirc"]["p16"] == pytest.approx([116.0] * 7) and s["vcirc"]["p84"] == pytest.approx([184.0] * 7)
    arr = np.tile(np.linspace(200, 300, 11)[:, None], (1, 7))
    s2 = summarize(draws, stats, vcirc=arr, radius_arcsec=r)
    assert s2["vcirc"]["radius_arcsec"] == pytest.approx(r.tolist()) and s2["vcirc"]["median"][0] == 250.0
    t = thin_draws(draws, 50, seed=1)
    assert all(v.shape == (50,) for v in t.values())


def test_at_bound():
    rng = np.random.default_rng(11)
    shape = (4, 1000)
    draws = {
        "break_r": 5.0 - np.abs(rng.normal(0, 0.6, shape)),         # cut off at the upper bound 5
        "gamma": 0.001 + np.abs(rng.normal(0, 0.05, shape)),       # cut off at the lower bound
        "log10_mbh": rng.normal(8.0, 0.1, shape),                  # well inside
        "alpha": rng.uniform(0.1, 10.0, shape),                    # flat: prior-dominated, not piled up
        "pa": rng.normal(3.0, 0.05, shape),                        # narrow, 1% of the range from 0 but 60 sigma
    }
    priors = {"break_r": (0.41, 5.0), "gamma": (0.001, 1.2), "log10_mbh": (6.0, 9.79934), "alpha": (0.1, 10.0),
              "pa": (0.0, 359.9)}
    out = at_bound(draws, priors)
    assert set(out) == {"break_r", "gamma"}
    assert [f["side"] for f in out["break_r"]] == ["high"] and out["break_r"][0]["bound"] == 5.0
    assert [f["side"] for f in out["gamma"]] == ["low"] and out["gamma"][0]["fraction_within_1pct"] > 0.1
    s = summarize({"break_r": draws["break_r"]}, dict(logp=np.zeros(shape), accepted=np.ones(shape, bool),
                                                       step_size=np.full(4, 0.1)), priors=priors)
    assert list(s["at_bound"]) == ["break_r"]


def test_bad_inputs():
    with pytest.raises(ValueError, match="not finite"):
        validate_draws({"x": np.full((2, 10), np.nan)})
    with pytest.raises(ValueError, match="differs"):
        validate_draws({"x": np.zeros((2, 10)), "y": np.zeros((2, 9))})
    with pytest.raises(ValueError, match="missing"):
        validate_draws({"x": np.zeros((2, 10))}, {"logp": np.zeros((2, 10))})
    s = summarize({"x": np.ones((2, 10))}, dict(logp=np.zeros((2, 10)), accepted=np.zeros((2, 10)), step_size=0.1))
    assert s["parameters"]["x"]["r_hat"] is None and not s["diagnostics"]["converged"]
    json.dumps(s, allow_nan=False)


def test_netcdf_round_trip_through_arviz(posterior, tmp_path):
    draws, stats = posterior
    path = write_posterior_netcdf(tmp_path / "posterior.nc", draws, stats, attrs={"galaxy": "mock"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_netcdf(path)
        r = az.rhat(idata)
        e = az.ess(idata, method="bulk")
    assert set(idata.groups()) >= {"posterior", "sample_stats"}
    post = idata.posterior
    assert dict(post.sizes) == {"chain": C, "draw": N}
    for k in draws:
        assert np.array_equal(post[k].values, draws[k])
    assert post["inclination"].attrs["units"] == "deg" and post["log10_mbh"].attrs["units"] == "log10 Msun"
    assert post.attrs["galaxy"] == "mock"
    assert np.array_equal(idata.sample_stats["lp"].values, stats["logp"])
    assert idata.sample_stats["step_size"].shape == (C, N)
    s = summarize(draws, stats)
    for k in draws:
        assert s["parameters"][k]["r_hat"] == pytest.approx(float(r[k]), rel=1e-10)
        assert s["parameters"][k]["ess_bulk"] == pytest.approx(float(e[k]), rel=1e-10)
    d2, s2, attrs = read_posterior_netcdf(path)
    assert all(np.array_equal(d2[k], draws[k]) for k in draws)
    assert s2["accepted"].dtype == bool and np.array_equal(s2["accepted"], stats["accepted"])
    assert np.array_equal(s2["logp"], stats["logp"]) and attrs["galaxy"] == "mock"


def test_dirty_image_orientation_and_direct_sum():
    for nx, ny in ((16, 16), (15, 12)):
        cube = np.zeros((nx, ny, 2))
        cube[3, ny - 3, 0] = 1.0   # East-of-centre... x index 3 < nx/2 is East, y index high is North
        cube[nx - 4, 2, 1] = 2.0
        V = cube_to_vis(torch.tensor(cube), 0.1).numpy()
        mask = np.broadcast_to(SkyGrid(nx, ny, 0.1).uv.half_plane_mask(), V.shape)
        idx = np.nonzero(mask)
        img = plots.dirty_image(V[mask], idx, (nx, ny), 2)
        assert img.shape == (2, ny, nx)
        assert np.unravel_index(np.argmax(img[0]), img[0].shape) == (ny - 3, 3)
        assert np.unravel_index(np.argmax(img[1]), img[1].shape) == (2, nx - 4)
        assert img[0].max() == pytest.approx(1.0) and img[1].max() == pytest.approx(2.0)
        # the other index forms give the same image
        flat = np.ravel_multi_index(idx, V.shape)
        assert np.allclose(plots.dirty_image(V[mask], flat, (nx, ny), 2), img)
        assert np.allclose(plots.dirty_image(V[mask], np.stack(idx, 1), (nx, ny), 2), img)
        # direct Fourier sum (cells + conjugates) of channel 0
        g = SkyGrid(nx, ny, 0.1)
        sel = idx[0] == 0
        u, v = g.uv.u[idx[1][sel]], g.uv.v[idx[2][sel]]
        ph = np.exp(2j * np.pi * (u[:, None, None] * g.l_rad[None, :, None]
                                  + v[:, None, None] * g.m_rad[None, None, :]))
        Vs = V[mask][sel][:, None, None]
        direct = (Vs * ph + np.conj(Vs * ph)).sum(0).real / (2 * sel.sum())
        assert np.allclose(direct.T, img[0], atol=1e-12)


def _png_ok(path):
    with open(path, "rb") as f:
        head = f.read(8)
    return head == b"\x89PNG\r\n\x1a\n"


def _fig_inputs(posterior):
    draws, stats = posterior
    rng = np.random.default_rng(5)
    r = np.geomspace(0.05, 5.0, 20)
    vdraws = 250 * np.sqrt(r / (r + 0.5))[None, :] * (1 + 0.02 * rng.standard_normal((40, 1)))
    traces = {"burn_in_1": {k: v[:, :50] for k, v in draws.items()} | {"logp": stats["logp"][:, :50]},
              "step_trials": {"log10_mbh": draws["log10_mbh"][:, :30]}}
    n_chan, ny, nx = 6, 16, 16
    yy, xx = np.mgrid[:ny, :nx]
    model = np.stack([np.exp(-((xx - 5 - k) ** 2 + (yy - 8) ** 2) / 4.0) for k in range(n_chan)])
    data = model + 0.05 * rng.standard_normal(model.shape)
    maps = dict(data=data, model=model, residual=data - model, velocity_kms=1240 + 20 * np.arange(n_chan),
                cell_arcsec=0.15, vsys_kms=1290.0)
    return r, vdraws, traces, maps


FIGURES = {
    "corner": lambda d, r, v, tr, mp: plots.plot_corner(d, {k: m for k, (m, _) in TRUE.items()}),
    "vcirc": lambda d, r, v, tr, mp: plots.plot_vcirc(r, v, components={"stars": 0.9 * v, "bh": 0.3 * v},
                                                     truth=v[0], distance_mpc=16.5),
    "mbh": lambda d, r, v, tr, mp: plots.plot_mbh(d["log10_mbh"], truth=8.2, comparisons=[
        dict(label="MGE w/o AGN", median=8.1, hdi_68=[8.05, 8.15], hdi_997=[7.9, 8.3])]),
    "traces": lambda d, r, v, tr, mp: plots.plot_traces(tr),
    "maps": lambda d, r, v, tr, mp: plots.plot_maps(mp["data"], mp["model"], mp["residual"], mp["velocity_kms"],
                                                    0.15, vsys_kms=1290.0),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_function(posterior, tmp_path, name):
    draws, _ = posterior
    r, vdraws, traces, maps = _fig_inputs(posterior)
    fig = FIGURES[name](draws, r, vdraws, traces, maps)
    p = tmp_path / f"{name}.png"
    fig.savefig(p, dpi=30)
    plt_close(fig)
    assert p.stat().st_size > 1000 and _png_ok(p)


def test_moment_maps():
    v = 1240 + 20 * np.arange(6)
    yy, xx = np.mgrid[:16, :16]
    model = np.stack([np.exp(-((xx - 5 - k) ** 2 + (yy - 8) ** 2) / 4.0) for k in range(6)])
    mom0, mom1 = plots.moment_maps(model, v, mask=model > 0.1)
    assert mom0.shape == (16, 16) and np.nanmin(mom1) >= 1240 and np.nanmax(mom1) <= 1340
    # velocity rises with x index (towards West): the moment-1 map must too
    row = mom1[8][np.isfinite(mom1[8])]
    assert np.all(np.diff(row) > 0)
    assert mom0[8, 7] == pytest.approx(20 * model[:, 8, 7][model[:, 8, 7] > 0.1].sum())


def plt_close(fig):
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_write_results(posterior, tmp_path):
    from nuker_mge_plugin.inference.config import config_from_dict
    draws, stats = posterior
    r, vdraws, traces, _ = _fig_inputs(posterior)
    truth = {k: m for k, (m, _) in TRUE.items()}
    (tmp_path / "obs.npz").write_bytes(b"")
    cfg = config_from_dict({"data": {"path": "obs.npz"}, "galaxy": {"distance_mpc": 16.5},
                            "model": {"cell_arcsec": 0.15, "n_pix": 16}}, base_dir=tmp_path)
    out = write_results(tmp_path / "fit", draws, stats, priors={"flux": (1.0, 50.0)}, vcirc=vdraws,
                        radius_arcsec=r, truth=truth, wall_time_s=3.0, traces=traces, config=cfg, dpi=30)
    assert set(out["figures"]) == {"corner", "mbh", "vcirc", "traces"}  # maps: test_every_figure_function
    for p in out["figures"].values():
        assert _png_ok(p)
    summary = json.loads(open(out["summary"]).read())
    assert summary["vcirc"]["median"][0] == pytest.approx(np.median(vdraws[:, 0]))
    assert summary["truth"]["flux"]["value"] == 20.0
    assert "config_toml" in read_posterior_netcdf(out["posterior"])[2]
    assert open(out["config"]).read() == cfg.to_toml_str()
