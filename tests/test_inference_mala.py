"""Batched MALA and the appendix-C driver on analytic Gaussian targets."""

import os

import numpy as np
import pytest
import torch

from nuker_mge_plugin.inference import (MALA, MALASchedule, empirical_fisher,
                                        load_checkpoint_result, optimal_step_size, run_mala, value_and_grad)

DT = torch.float64


def _gaussian(d, seed=0, cond=10.0, device="cpu"):
    """Correlated Gaussian N(mu, Sigma): logp_and_grad, mu, Sigma, and whitened residuals r = U^T (z - mu)."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=DT))
    ev = torch.logspace(0, np.log10(cond), d, dtype=DT)
    Sig = (Q * ev) @ Q.T
    Sig = 0.5 * (Sig + Sig.T)
    P = torch.linalg.inv(Sig)
    P = 0.5 * (P + P.T)
    U = torch.linalg.cholesky(P)
    mu = torch.linspace(-1, 1, d, dtype=DT)
    mu, Sig, P, U = (t.to(device) for t in (mu, Sig, P, U))

    def logp_and_grad(z):
        r = z - mu
        Pr = r @ P
        return -0.5 * (Pr * r).sum(-1), -Pr

    return logp_and_grad, mu, Sig, (lambda z: (z - mu) @ U)


def _mc_check(samples, mu, Sig, nsig=4.5):
    """Mean and covariance within nsig standard errors, the errors from the spread between chains."""
    C = samples.shape[0]
    means = samples.mean(1)                                          # (C, d)
    se = means.std(0, ddof=1) / np.sqrt(C)
    assert np.all(np.abs(means.mean(0) - mu) < nsig * se + 1e-12), (means.mean(0) - mu) / se
    covs = np.stack([np.cov(s.T) for s in samples])                  # (C, d, d)
    se_c = covs.std(0, ddof=1) / np.sqrt(C)
    assert np.all(np.abs(covs.mean(0) - Sig) < nsig * se_c + 1e-12), (covs.mean(0) - Sig) / se_c


@pytest.mark.parametrize("d", [2, 5])
def test_recovers_mean_and_covariance_with_fisher_mass_matrix(d):
    lg, mu, Sig, resid = _gaussian(d, seed=d, cond=30.0)
    # Fisher of the whitened residuals at any point is the exact precision of this Gaussian.
    mm = lambda zb: empirical_fisher(resid, zb, ridge_frac=0.0, ridge_min=1e-12)  # noqa: E731
    sched = MALASchedule(burn_in=(60, 60), step_size_steps=40, n_draws=600)
    z0 = torch.randn(16, d, generator=torch.Generator().manual_seed(1), dtype=DT) * 3
    res = run_mala(lg, z0, schedule=sched, mass_matrix_fn=mm, seed=11, progress=False)
    assert res.samples.shape == (16, 600, d) and res.logp.shape == (16, 600)
    assert np.allclose(res.mass_matrix, Sig.numpy(), rtol=1e-8)
    assert [n for n, _ in res.mass_matrix_history] == ["initial", "burn_in_0", "burn_in_1"]
    _mc_check(res.samples_unconstrained, mu.numpy(), Sig.numpy())
    assert res.n_nonfinite_total == 0
    total = sum(sched.burn_in) + sched.step_size_steps * len(sched.step_sizes) + sched.n_draws
    assert res.trace_logp.shape == (16, total) and res.trace_stage.shape == (total,)
    assert res.n_grad_calls == total + 1 and res.n_grad_evals == 16 * (total + 1)
    assert res.wall_time > 0


def test_tuned_acceptance_near_optimum_with_true_covariance():
    d = 5
    lg, mu, Sig, _ = _gaussian(d, seed=2, cond=100.0)
    grid = tuple(np.linspace(0.6, 1.6, 11))
    sched = MALASchedule(burn_in=(), step_sizes=grid, relative_step_sizes=True, step_size_steps=60, n_draws=400)
    z0 = mu + torch.randn(32, d, generator=torch.Generator().manual_seed(0), dtype=DT) @ torch.linalg.cholesky(Sig).T
    res = run_mala(lg, z0, schedule=sched, mass_matrix=Sig, seed=3, progress=False)
    accs = np.array([a for _, a in res.step_size_trials])
    assert np.all(np.diff(accs) < 0.05)          # acceptance falls as the step grows
    assert abs(res.mean_accept_prob["sample"] - 0.574) < 0.06
    assert abs(res.acceptance["sample"] - 0.574) < 0.07
    # the chosen step is the Roberts-Rosenthal one within the grid spacing
    assert abs(res.step_size / optimal_step_size(d) - 1) < 0.25
    _mc_check(res.samples, mu.numpy(), Sig.numpy())


def test_identity_mass_adapts_step_in_burn_in():
    lg, mu, Sig, _ = _gaussian(3, seed=4, cond=4.0)
    sched = MALASchedule(burn_in=(150,), step_size_steps=30, n_draws=50)
    res = run_mala(lg, torch.zeros(8, 3, dtype=DT), schedule=sched, step_size=20.0, seed=0, progress=False)
    assert res.trace_step_size[0] == 20.0 and res.trace_step_size[149] < 5.0   # shrunk by the adaptation
    assert np.allclose(res.mass_matrix, np.eye(3))
    assert 0.3 < res.mean_accept_prob["sample"] < 0.85


def test_adapted_mass_matrix_learns_the_covariance_from_the_draws():
    # no mass_matrix_fn: the identity, 30x off in variance, is replaced by the burn-in draws' covariance
    d = 4
    lg, mu, Sig, _ = _gaussian(d, seed=6, cond=30.0)
    sched = MALASchedule(burn_in=(100, 150, 200), step_size_steps=40, n_draws=400, adapt_mass_matrix=True)
    z0 = mu + 0.3 * torch.randn(16, d, generator=torch.Generator().manual_seed(3), dtype=DT)
    res = run_mala(lg, z0, schedule=sched, seed=4, progress=False)
    assert [n for n, _ in res.mass_matrix_history] == ["initial", "burn_in_0", "burn_in_1", "burn_in_2"]
    Li = torch.linalg.inv(torch.linalg.cholesky(Sig)).numpy()
    ev = np.linalg.eigvalsh(Li @ res.mass_matrix @ Li.T)        # 1 everywhere for M = Sigma
    assert ev.min() > 0.5 and ev.max() < 1.6, ev
    ev0 = np.linalg.eigvalsh(Li @ np.eye(d) @ Li.T)
    assert ev0.max() / ev0.min() > 25                           # what it started from
    _mc_check(res.samples, mu.numpy(), Sig.numpy())
    # the step-size stage is centred on the step the last burn-in stage adapted to
    last = np.flatnonzero(res.trace_stage == 2)
    base = np.exp(np.mean(np.log(res.trace_step_size[last[len(last) // 2:]])))
    for (eps, _), mult in zip(res.step_size_trials, sched.step_sizes):
        assert eps == pytest.approx(base * mult, rel=1e-12)


def test_step_size_trials_start_from_the_adapted_step_not_the_reset_one():
    # a posterior 10x narrower than the identity mass matrix: the adapted step is ~10x below the
    # Gaussian-optimal start, and the trials must bracket it (the reset start would put all of them
    # at acceptance ~0)
    lg, mu, Sig, _ = _gaussian(3, seed=4, cond=2.0)
    lg_narrow = lambda z: tuple(t * s for t, s in zip(lg(mu + (z - mu) * 10.0), (1.0, 10.0)))  # noqa: E731
    sched = MALASchedule(burn_in=(150,), step_sizes=(0.5, 1.0, 2.0), step_size_steps=40, n_draws=50)
    res = run_mala(lg_narrow, mu.expand(8, 3).clone(), schedule=sched, seed=2, progress=False,
                   mass_matrix_fn=lambda zb: torch.eye(3, dtype=DT))
    assert res.step_size < 0.3 * optimal_step_size(3)
    assert 0.35 < res.mean_accept_prob["sample"] < 0.8


def _small_run(tmp=None, seed=5, callback=None, resume=False, every=7, calls=None, device="cpu", **kw):
    """90 steps of 4 chains in 3-D (12 + 10 burn-in, 3 x 6 step-size trials, 25 x 2 sampling).

    ``calls``: a list that receives one entry per logp_and_grad call of this session."""
    lg0, mu, Sig, resid = _gaussian(3, seed=9, cond=20.0, device=device)

    def lg(z):
        if calls is not None:
            calls.append(1)
        return lg0(z)
    sched = MALASchedule(burn_in=(12, 10), step_sizes=(0.5, 1.0, 2.0), step_size_steps=6, n_draws=25, thin=2,
                         adapt_mass_matrix=kw.pop("adapt_mass_matrix", False))
    mm = lambda zb: empirical_fisher(resid, zb, ridge_frac=1e-3)  # noqa: E731
    transform = lambda z: torch.sigmoid(z)  # noqa: E731
    z0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=DT).to(device)
    return run_mala(lg, z0, schedule=sched, mass_matrix_fn=mm, seed=seed, checkpoint_dir=tmp,
                    checkpoint_every=every, resume=resume, progress=False, callback=callback,
                    transform=transform, **kw)


_ARRAYS = ("samples", "samples_unconstrained", "logp", "accepted", "accept_prob", "nonfinite", "trace_logp",
           "trace_accepted", "trace_accept_prob", "trace_nonfinite", "trace_stage", "trace_step_size",
           "warmup_unconstrained", "warmup", "mass_matrix", "best_z")


def _assert_same(a, b):
    for k in _ARRAYS:
        assert np.array_equal(getattr(a, k), getattr(b, k)), k
    for k in ("step_size", "step_size_trials", "acceptance", "mean_accept_prob", "n_nonfinite", "best_logp",
              "n_grad_calls", "seed", "stage_names"):
        assert getattr(a, k) == getattr(b, k), k
    assert len(a.mass_matrix_history) == len(b.mass_matrix_history)
    for (n1, m1), (n2, m2) in zip(a.mass_matrix_history, b.mass_matrix_history):
        assert n1 == n2 and np.array_equal(m1, m2)


def test_reproducible_with_seed():
    a, b = _small_run(seed=5), _small_run(seed=5)
    _assert_same(a, b)
    assert a.samples.shape == (4, 25, 3)
    assert np.allclose(a.samples, 1 / (1 + np.exp(-a.samples_unconstrained)), rtol=1e-14, atol=0)
    c = _small_run(seed=6)
    assert not np.array_equal(a.samples, c.samples)
    d = a.draws(("p", "q", "r"))
    assert list(d) == ["p", "q", "r"] and d["q"].shape == (4, 25) and np.array_equal(d["r"], a.samples[..., 2])
    tr = a.traces(("p", "q", "r"))
    assert list(tr) == a.stage_names and tr["burn_in_0"]["p"].shape == (4, 12)
    assert tr["step_size_2"]["logp"].shape == (4, 6) and tr["sample"]["r"].shape == (4, 25)
    assert np.allclose(tr["burn_in_1"]["q"], 1 / (1 + np.exp(-a.warmup_unconstrained[:, 12:22, 1])), rtol=1e-14)
    ss = a.sample_stats()
    assert set(ss) >= {"logp", "accepted", "step_size"} and all(v.shape == (4, 25) for v in ss.values())


class _KilledError(RuntimeError):
    pass


def _killer(step):
    """A callback that 'kills' the run (raises) right after global step ``step``."""
    def cb(info):
        if info.global_step == step:
            raise _KilledError(step)
    return cb


# total steps 12 + 10 + 3*6 + 50 = 90; kill points inside burn-in, just after a mass-matrix update,
# inside the step-size stage, on a checkpoint boundary and inside sampling
@pytest.mark.parametrize("kill_at", [5, 13, 30, 35, 77])
def test_kill_and_resume_is_bitwise_identical(tmp_path, kill_at):
    ref = _small_run()

    ck = tmp_path / "ck"
    with pytest.raises(_KilledError):
        _small_run(ck, callback=_killer(kill_at))
    assert (ck / "state.pt").exists() or kill_at < 7
    calls = []
    res = _small_run(ck, resume=True, calls=calls)
    _assert_same(ref, res)
    # it really continued from the last checkpoint (steps 7, 14, ...), it did not start again
    last = (kill_at // 7) * 7
    assert len(calls) == (90 - last if last else 91)
    # the chunk files hold every step exactly once: 90 steps in chunks of 7
    chunks = sorted(p.name for p in ck.iterdir() if p.name.startswith("chunk_"))
    assert len(chunks) == 13
    # a finished run is reloaded without sampling, also without the target
    _assert_same(ref, _small_run(ck, resume=True))
    _assert_same(ref, load_checkpoint_result(ck, transform=lambda z: torch.sigmoid(z)))


@pytest.mark.parametrize("kill_at", [9, 16, 30])
def test_kill_and_resume_bitwise_with_adapted_mass_matrix(tmp_path, kill_at):
    # the burn-in's draw moments are part of the checkpoint: killed inside both burn-in stages and
    # in the step-size stage, the resumed run is the uninterrupted one
    ref = _small_run(adapt_mass_matrix=True)
    assert not np.array_equal(ref.mass_matrix, _small_run().mass_matrix)
    ck = tmp_path / "ck"
    with pytest.raises(_KilledError):
        _small_run(ck, callback=_killer(kill_at), adapt_mass_matrix=True)
    _assert_same(ref, _small_run(ck, resume=True, adapt_mass_matrix=True))


@pytest.mark.cuda
def test_kill_and_resume_bitwise_on_cuda(tmp_path):
    ref = _small_run(device="cuda")
    ck = tmp_path / "ck"
    with pytest.raises(_KilledError):
        _small_run(ck, callback=_killer(40), device="cuda")
    _assert_same(ref, _small_run(ck, resume=True, device="cuda"))


def test_twice_killed_and_leftover_chunk(tmp_path):
    ref = _small_run()
    ck = tmp_path / "ck"
    for k in (20, 50):
        with pytest.raises(_KilledError):
            _small_run(ck, resume=True, callback=_killer(k))
    # simulate a kill between writing a chunk and the state file: a garbage chunk beyond the count
    n = torch.load(ck / "state.pt", weights_only=True)["n_chunks"]
    (ck / f"chunk_{n:06d}.npz").write_bytes(b"partial")
    calls = []
    _assert_same(ref, _small_run(ck, resume=True, calls=calls))
    assert len(calls) == 90 - 49


def test_sigkill_subprocess_and_resume(tmp_path):
    # A real hard kill (SIGKILL: no exception handling, no cleanup) in a child process mid-run.
    import signal
    import subprocess
    import sys
    if not hasattr(signal, "SIGKILL"):
        pytest.skip("no SIGKILL on this platform")
    ck = tmp_path / "ck"
    code = (
        "import os, signal, sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]);"
        "import test_inference_mala as t;"
        "cb = lambda i: os.kill(os.getpid(), signal.SIGKILL) if i.global_step == 60 else None;"
        "t._small_run(sys.argv[2], callback=cb)")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(ck)],
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert torch.load(ck / "state.pt", weights_only=True)["global_step"] == 56
    calls = []
    _assert_same(_small_run(), _small_run(ck, resume=True, calls=calls))
    assert len(calls) == 90 - 56


def test_checkpoint_guards(tmp_path):
    ck = tmp_path / "ck"
    _small_run(ck)
    with pytest.raises(ValueError, match="resume=True"):
        _small_run(ck)
    with pytest.raises(ValueError, match="checkpoint_every"):
        _small_run(ck, resume=True, every=8)
    with pytest.raises(ValueError, match="seed"):
        _small_run(ck, resume=True, seed=99)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        _small_run(None, resume=True)
    # no temp files left behind
    assert not [p for p in os.listdir(ck) if ".tmp" in p]


def test_nan_region_rejected_and_counted():
    lg, mu, Sig, _ = _gaussian(2, seed=1, cond=3.0)

    def lg_nan(z):
        lp, g = lg(z)
        bad = z[:, 0] > 0.0                                       # a region where the model "fails"
        lp = torch.where(bad, torch.full_like(lp, float("nan")), lp)
        g = torch.where(bad[:, None], torch.full_like(g, float("inf")), g)
        return lp, g

    sched = MALASchedule(burn_in=(50,), step_size_steps=20, step_sizes=(1.0,), n_draws=200)
    z0 = torch.full((8, 2), -1.0, dtype=DT)
    res = run_mala(lg_nan, z0, schedule=sched, seed=0, progress=False)
    assert res.n_nonfinite_total > 0 and res.n_nonfinite["sample"] > 0
    assert res.n_nonfinite_total == int(res.trace_nonfinite.sum())
    assert np.all(res.samples[..., 0] <= 0.0) and np.all(res.warmup_unconstrained[..., 0] <= 0.0)
    assert np.all(np.isfinite(res.trace_logp)) and np.all(np.isfinite(res.samples))
    assert not np.any(res.trace_accepted & res.trace_nonfinite)
    assert np.all(res.trace_accept_prob[res.trace_nonfinite] == 0)


def test_kernel_generator_and_errors():
    lg, mu, Sig, _ = _gaussian(2, seed=0)
    k = MALA(lg, mass_matrix=Sig, step_size=0.8, generator=1)
    states = list(k.sample(torch.zeros(3, 2, dtype=DT), 5))
    assert len(states) == 5 and states[-1].z.shape == (3, 2) and states[-1].accepted.dtype == torch.bool
    assert k.n_grad_calls == 6
    k2 = MALA(lg, mass_matrix=Sig, step_size=0.8, generator=1)
    assert torch.equal(list(k2.sample(torch.zeros(3, 2, dtype=DT), 5))[-1].z, states[-1].z)
    with pytest.raises(ValueError, match="non-finite .* chain"):
        MALA(lambda z: (torch.full((z.shape[0],), float("nan"), dtype=DT), z), generator=0).init_state(
            torch.zeros(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="positive-definite"):
        MALA(lg, mass_matrix=-Sig, generator=0).init_state(torch.zeros(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="shapes"):
        MALA(lambda z: (z, z), generator=0).init_state(torch.zeros(2, 2, dtype=DT))
    with pytest.raises(ValueError, match="step_size"):
        run_mala(lg, torch.zeros(2, 2, dtype=DT), step_size=-1.0, progress=False)
    with pytest.raises(ValueError, match="n_draws"):
        run_mala(lg, torch.zeros(2, 2, dtype=DT), schedule=MALASchedule(n_draws=0), progress=False)
    with pytest.raises(ValueError, match="n_chains"):
        run_mala(lg, torch.zeros(2, dtype=DT), progress=False)
    with pytest.raises(ValueError, match="unknown key.*n_draw"):
        run_mala(lg, torch.zeros(2, 2, dtype=DT), schedule={"n_draw": 10}, progress=False)
    # numpy scalars in a schedule survive the weights_only checkpoint round trip
    sch = MALASchedule.from_mapping({"burn_in": [np.int64(3)], "step_sizes": np.array([1.0]), "step_size_steps": 2,
                                     "n_draws": 4, "adapt_gain": np.float64(0.1)})
    assert all(type(v) in (int, float, bool, list) for v in sch.as_dict().values())


def test_value_and_grad_helper():
    lg, mu, Sig, _ = _gaussian(4, seed=3)
    P = torch.linalg.inv(Sig)
    f = value_and_grad(lambda z: -0.5 * (((z - mu) @ P) * (z - mu)).sum(-1))
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(0), dtype=DT)
    lp, g = f(z)
    lp0, g0 = lg(z)
    assert torch.allclose(lp, lp0) and torch.allclose(g, g0, atol=1e-12)
    assert not lp.requires_grad and not g.requires_grad


def test_progress_bar_runs(capsys):
    lg, _, _, _ = _gaussian(2)
    res = run_mala(lg, torch.zeros(2, 2, dtype=DT), n_chains=2,
                   schedule=MALASchedule(burn_in=(15,), step_size_steps=5, step_sizes=(1.0,), n_draws=12),
                   seed=0, progress=True)
    err = capsys.readouterr().err
    assert "sample" in err and "acc=" in err and "logp=" in err
    assert res.samples.shape == (2, 12, 2)
