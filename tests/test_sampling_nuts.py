"""Batched NUTS and its driver: correctness on a Gaussian, adaptation, convergence-driven length, bitwise resume."""

import os

import numpy as np
import pytest
import torch

from nuker_mge_plugin.sampling import adaptation as ad
from nuker_mge_plugin.sampling.metric import mass_factors
from nuker_mge_plugin.sampling.nuts import NUTSSettings, nuts_init, nuts_step, run_nuts

DT = torch.float64


def _gaussian(d, cond=100.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    Sig = (Q * torch.logspace(0, np.log10(cond), d, dtype=DT)) @ Q.T
    Sig = 0.5 * (Sig + Sig.T)
    P = torch.linalg.inv(Sig)
    P = 0.5 * (P + P.T)
    mu = torch.linspace(-1, 1, d, dtype=DT)

    def lg(z):
        r = z - mu
        Pr = r @ P
        return -0.5 * (r * Pr).sum(-1), -Pr
    return lg, mu, Sig


def _small(tmp=None, seed=3, callback=None, resume=False, calls=None, **kw):
    """4 chains in 3-D: 60 warm-up transitions (two slow windows), 40 draws, checkpoints every 7."""
    lg0, _, _ = _gaussian(3, cond=30.0, seed=4)

    def lg(z):
        if calls is not None:
            calls.append(z.shape[0])
        return lg0(z)
    s = dict(warmup=60, draws=40, until_converged=False, init_buffer=10, term_buffer=10, base_window=10)
    s.update(kw)
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=DT)
    return run_nuts(lg, z0, settings=NUTSSettings(**s), seed=seed, checkpoint_dir=tmp, checkpoint_every=7,
                    resume=resume, progress=False, callback=callback, transform=torch.sigmoid)


_ARRAYS = ("samples", "samples_unconstrained", "logp", "accept_stat", "energy", "tree_depth", "n_leapfrog",
           "diverging", "warmup_unconstrained", "mass_matrix")


def _assert_same(a, b):
    for k in _ARRAYS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.step_size == b.step_size and a.n_grad_evals == b.n_grad_evals and a.stopped == b.stopped


def test_recovers_ill_conditioned_gaussian_from_identity_metric():
    # cond 1e3 in 6-D from the identity: the windowed dense metric must learn the covariance
    lg, mu, Sig = _gaussian(6, cond=1e3)
    z0 = torch.randn(4, 6, generator=torch.Generator().manual_seed(1), dtype=DT)
    res = run_nuts(lg, z0, settings=NUTSSettings(warmup=300, draws=400, until_converged=False), seed=0,
                   progress=False)
    s = res.samples_unconstrained.reshape(-1, 6)
    sd = np.sqrt(np.diag(Sig.numpy()))
    ess = min(res.convergence["ess_bulk"].values())
    assert np.all(np.abs(s.mean(0) - mu.numpy()) / sd < 4.5 / np.sqrt(ess))
    assert np.all(np.abs(s.var(0) / sd ** 2 - 1) < 6 / np.sqrt(ess))
    # the adapted metric is the covariance, up to the sampling noise of the windows' draws
    w = np.linalg.eigvalsh(np.linalg.solve(np.linalg.cholesky(Sig.numpy()), np.linalg.solve(
        np.linalg.cholesky(Sig.numpy()), res.mass_matrix).T))
    assert 0.5 < w.min() and w.max() < 2.0
    assert 0.65 < res.accept_stat.mean() < 0.95
    assert res.n_divergent == 0 and res.convergence["max_r_hat"] < 1.02


def test_one_transition_conserves_the_stationary_law_of_a_standard_gaussian():
    # exact reversibility check: many chains started from the target stay distributed as it, for a
    # step size far from the adapted one (where an error in the tree's bookkeeping would show)
    d, C = 2, 4000
    lg = lambda z: (-0.5 * (z * z).sum(-1), -z)  # noqa: E731
    g = torch.Generator().manual_seed(0)
    st = nuts_init(lg, torch.randn(C, d, generator=g, dtype=DT))
    metric = mass_factors(None, d, DT, "cpu")
    for _ in range(5):
        st, info, _ = nuts_step(lg, st, 0.9, metric, g, max_tree_depth=6)
    z = st.z.numpy()
    assert np.all(np.abs(z.mean(0)) < 4 / np.sqrt(C))
    assert np.all(np.abs(z.var(0) - 1) < 4 * np.sqrt(2 / C))
    assert int(info.tree_depth.max()) <= 6 and bool((info.n_leapfrog >= 1).all())


def test_reproducible_with_seed_and_different_across_seeds():
    a, b, c = _small(), _small(), _small(seed=4)
    _assert_same(a, b)
    assert not np.array_equal(a.samples, c.samples)


class _KilledError(RuntimeError):
    pass


def _killer(at):
    def cb(iteration, phase, state, info):
        if iteration == at:
            raise _KilledError
    return cb


@pytest.mark.parametrize("kill_at", [5, 23, 66])   # before the first window, inside warm-up, in sampling
def test_kill_and_resume_is_bitwise_identical(tmp_path, kill_at):
    ref = _small()
    ck = tmp_path / "ck"
    with pytest.raises(_KilledError):
        _small(ck, callback=_killer(kill_at))
    calls = []
    _assert_same(ref, _small(ck, resume=True, calls=calls))
    assert calls  # it did continue (from the last checkpoint, a multiple of 7)


def test_sigkill_subprocess_and_resume(tmp_path):
    import signal
    import subprocess
    import sys
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    ck = tmp_path / "ck"
    code = ("import os, signal, sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]);"
            "import test_sampling_nuts as t;"
            "cb = lambda i, *a: os.kill(os.getpid(), signal.SIGKILL) if i == 45 else None;"
            "t._small(sys.argv[2], callback=cb)")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(ck)], capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(ck / "state.pt", weights_only=True)["iteration"] == 42
    _assert_same(_small(), _small(ck, resume=True))


def test_checkpoint_guards(tmp_path):
    ck = tmp_path / "ck"
    _small(ck)
    with pytest.raises(ValueError, match="resume=True"):
        _small(ck)
    with pytest.raises(ValueError, match="settings differ"):
        _small(ck, resume=True, target_accept=0.9)
    with pytest.raises(ValueError, match="needs a checkpoint_dir"):
        _small(None, resume=True)


def test_until_converged_adds_blocks_and_stops_at_the_thresholds():
    lg, _, _ = _gaussian(2, cond=4.0)
    z0 = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=DT)
    res = run_nuts(lg, z0, settings=NUTSSettings(warmup=100, draws=50, block_draws=50, max_draws=2000,
                                                 init_buffer=20, term_buffer=20, base_window=20),
                   seed=0, progress=False)
    assert res.stopped == "converged" and res.converged
    n = res.samples.shape[1]
    assert n > 50 and (n - 50) % 50 == 0        # it took extra blocks, whole ones
    rep = res.convergence
    assert rep["max_r_hat"] <= 1.01 and rep["min_ess_bulk"] >= 400 and rep["min_ess_tail"] >= 400


def test_max_draws_stops_unconverged_and_a_rerun_continues(tmp_path):
    ck = tmp_path / "ck"
    first = _small(ck, until_converged=True, draws=40, block_draws=20, max_draws=60)
    assert first.stopped == "max_draws" and not first.converged and first.samples.shape[1] == 60
    more = _small(ck, resume=True, until_converged=True, draws=40, block_draws=20, max_draws=100)
    assert more.samples.shape[1] == 100
    np.testing.assert_array_equal(more.samples[:, :60], first.samples)


def test_nonfinite_region_counts_as_divergence_and_never_enters_the_chain():
    # a wall: log density -inf for z0 > 1.5 (a NaN gradient there); the chain must stay below it
    def lg(z):
        lp = -0.5 * (z * z).sum(-1)
        g = -z.clone()
        bad = z[:, 0] > 1.5
        return torch.where(bad, torch.full_like(lp, float("nan")), lp), torch.where(bad[:, None], np.nan, g)
    z0 = torch.zeros(4, 2, dtype=DT)
    res = run_nuts(lg, z0, settings=NUTSSettings(warmup=100, draws=200, until_converged=False, init_buffer=20,
                                                 term_buffer=20, base_window=20), seed=1, progress=False)
    assert np.all(res.samples_unconstrained[..., 0] <= 1.5)
    assert res.n_divergent > 0 and sum(res.divergences_per_chain) == res.n_divergent
    assert np.isfinite(res.logp).all()


def test_settings_errors_name_the_field():
    with pytest.raises(ValueError, match="settings.max_tree_depth"):
        NUTSSettings(max_tree_depth=0).validate()
    with pytest.raises(ValueError, match="settings.max_draws"):
        NUTSSettings(draws=100, max_draws=50).validate()
    with pytest.raises(ValueError, match="settings.target_accept"):
        NUTSSettings(target_accept=1.0).validate()
    with pytest.raises(ValueError, match="unknown key"):
        NUTSSettings.from_mapping({"warmups": 3})


def test_warmup_windows_follow_stans_schedule():
    assert ad.warmup_windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]
    assert ad.warmup_windows(10) == []
    w = ad.warmup_windows(100)              # 15% / 75% / 10%
    assert w[0][0] == 15 and w[-1][1] == 90


def test_dual_averaging_converges_to_the_step_of_the_target_acceptance():
    # acceptance exp(-eps): the fixed point for target 0.8 is eps = -log 0.8
    s = ad.dual_averaging_init(1.0)
    for _ in range(2000):
        s = ad.dual_averaging_update(s, np.exp(-np.exp(s.log_step)), 0.8)
    assert abs(ad.dual_averaging_final(s) + np.log(0.8)) < 0.01


def test_welford_matches_numpy():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    st = ad.welford_init(4)
    for i in range(0, 50, 5):
        st = ad.welford_update(st, x[i:i + 5])
    np.testing.assert_allclose(ad.welford_covariance(st).numpy(), np.cov(x.numpy().T), rtol=1e-12)


def test_reflective_drift_stays_in_the_box_keeps_energy_and_reverses():
    from nuker_mge_plugin.sampling.nuts import kinetic_energy, reflective_drift
    g = torch.Generator().manual_seed(0)
    d, C = 3, 64
    A = torch.randn(d, d, generator=g, dtype=DT)
    M = A @ A.T + 0.5 * torch.eye(d, dtype=DT)
    L = torch.linalg.cholesky(M)
    lo, hi = torch.zeros(d, dtype=DT), torch.ones(d, dtype=DT)
    z = torch.rand(C, d, generator=g, dtype=DT)
    p = 3.0 * torch.randn(C, d, generator=g, dtype=DT)         # long steps: up to ~130 bounces
    h = torch.where(torch.rand(C, generator=g) > 0.5, 1.0, -1.0).to(DT)
    z1, p1 = reflective_drift(z, p, h, M, lo, hi)
    assert bool(((z1 >= 0) & (z1 <= 1)).all())
    np.testing.assert_allclose(kinetic_energy(p1, L).numpy(), kinetic_energy(p, L).numpy(), rtol=1e-10)
    z2, p2 = reflective_drift(z1, p1, -h, M, lo, hi)           # the same time backwards: back to the start
    np.testing.assert_allclose(z2.numpy(), z.numpy(), atol=1e-9)
    np.testing.assert_allclose(p2.numpy(), p.numpy(), atol=1e-9)
    assert not torch.allclose(p1, p)                            # it did bounce
    z3, _ = reflective_drift(z, p, h, M, lo, hi, max_bounces=4)  # too few bounces allowed: NaN, not a wrong point
    bad = torch.isnan(z3).any(-1)
    assert bool(bad.any()) and bool(torch.isnan(z3[bad]).all()) and torch.equal(z3[~bad], z1[~bad])


def test_nuts_in_a_box_recovers_truncated_normals_piled_at_the_walls():
    from scipy import stats
    mu, sd = torch.tensor([0.03, 0.5, 0.99], dtype=DT), torch.tensor([0.1, 0.15, 0.05], dtype=DT)

    def lg(u):
        r = (u - mu) / sd
        return -0.5 * (r * r).sum(-1), -r / sd
    exact = stats.truncnorm(((0 - mu) / sd).numpy(), ((1 - mu) / sd).numpy(), loc=mu.numpy(), scale=sd.numpy())
    res = run_nuts(lg, torch.full((4, 3), 0.5, dtype=DT), bounds=(torch.zeros(3, dtype=DT), torch.ones(3, dtype=DT)),
                   settings=NUTSSettings(warmup=200, draws=500, until_converged=False), seed=2, progress=False)
    s = res.samples_unconstrained.reshape(-1, 3)
    assert s.min() >= 0 and s.max() <= 1
    ess = np.array([res.convergence["ess_bulk"][str(j)] for j in range(3)])
    assert np.all(np.abs(s.mean(0) - exact.mean()) < 4 * exact.std() / np.sqrt(ess))
    assert np.all(np.abs(s.var(0) / exact.var() - 1) < 6 / np.sqrt(ess))
    assert res.n_divergent == 0 and res.convergence["max_r_hat"] < 1.02


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="bounds"):
        run_nuts(lambda z: (-(z * z).sum(-1), -2 * z), torch.zeros(2, 2, dtype=DT),
                 bounds=(torch.ones(2, dtype=DT), torch.zeros(2, dtype=DT)), progress=False)
    with pytest.raises(ValueError, match="outside the bounds"):
        run_nuts(lambda z: (-(z * z).sum(-1), -2 * z), torch.full((2, 2), 2.0, dtype=DT),
                 bounds=(torch.zeros(2, dtype=DT), torch.ones(2, dtype=DT)), progress=False)
