"""Tests of the nn backend: training data, model, a few-second training run, export, shipped weights."""

import json
import math

import numpy as np
import pytest
import torch

from nuker_mge_plugin import emulator
from nuker_mge_plugin.emulator import data, export, model, train
from nuker_mge_plugin.nuker import ALPHA_RANGE, BETA_MINUS_GAMMA_RANGE, GAMMA_RANGE, R_B_PC_RANGE


def _in_box(p):
    alpha, beta, gamma, r_b = p.unbind(-1)
    tol = 1e-9
    return bool(((alpha >= ALPHA_RANGE[0] * (1 - tol)) & (alpha <= ALPHA_RANGE[1] * (1 + tol))
                 & (gamma >= GAMMA_RANGE[0] - tol) & (gamma <= GAMMA_RANGE[1] + tol)
                 & (beta - gamma >= BETA_MINUS_GAMMA_RANGE[0] - tol) & (beta - gamma <= BETA_MINUS_GAMMA_RANGE[1] + tol)
                 & (r_b >= R_B_PC_RANGE[0] * (1 - tol)) & (r_b <= R_B_PC_RANGE[1] * (1 + tol))).all())


def test_paper_grid_is_appendix_a():
    a, g, bg, rb = data.paper_grid_axes()
    assert all(len(x) == 50 for x in (a, g, bg, rb))
    assert (a[0], a[-1], rb[0], rb[-1]) == pytest.approx((0.1, 10.0, 2.0, 2000.0))
    assert (g[0], g[-1], bg[0], bg[-1]) == pytest.approx((0.001, 1.2, 0.3, 3.0))
    assert np.allclose(np.diff(np.log(a)), np.log(a[1] / a[0]))  # log-spaced alpha
    first, last = data.paper_grid_params(torch.tensor([0, 50**4 - 1]))
    assert first.tolist() == pytest.approx([0.1, 0.301, 0.001, 2.0])
    assert last.tolist() == pytest.approx([10.0, 4.2, 1.2, 2000.0])


def test_paper_sampler_covers_grid_without_repeats_per_epoch():
    s = data.PaperGridSampler(seed=0, n=3)
    p = s(81)
    assert len({tuple(np.round(r, 12)) for r in p.tolist()}) == 81 and _in_box(p)


def test_random_sampler_in_box_and_seeded():
    p1, p2 = data.RandomBoxSampler(3)(1000), data.RandomBoxSampler(3)(1000)
    assert torch.equal(p1, p2) and _in_box(p1)


def test_symexp_eq3():
    h = torch.tensor([-13.0, 0.0, 12.0], dtype=torch.float64)
    assert model.symexp(h).tolist() == pytest.approx([-(10.0 - 1e-12), 0.0, 1.0 - 1e-12])


@pytest.mark.parametrize("output, n_fourier", [(o, 0) for o in model.OUTPUTS] + [("nuker_scaled", 3)])
def test_torchscript_matches_eager(output, n_fourier):
    m = model.NukerMGEEmulator(width=16, depth=2, output=output, n_fourier=n_fourier).double()
    x = data.sample_box(32, 0)
    with export._quiet_torchscript():
        s = torch.jit.script(m)
    assert torch.equal(s(x), m(x))


def _tiny_cfg(out, steps=40):
    cfg = dict(train.DEFAULTS, out=str(out), device="cpu", seed=0, steps=steps, minutes=None, width=32, depth=2,
               batch=128, warmup=5, lr=3e-3, n_radii=32, eval_n=128, n_evals=2, ckpt_every_s=1e9)
    return cfg


def test_tiny_training_loss_drops_and_export_round_trips(tmp_path):
    log = train.train(_tiny_cfg(tmp_path), progress=False)
    assert np.mean(log["loss"][-3:]) < 0.5 * np.mean(log["loss"][:3])
    for f in (train.LOG_FILE, train.PLOT_FILE, export.TORCHSCRIPT_FILE, export.STATE_FILE, export.META_FILE):
        assert (tmp_path / f).exists(), f
    meta = json.loads((tmp_path / export.META_FILE).read_text())
    assert meta["config"]["width"] == 32 and "held_out_m1" in meta
    ts = export.load_torchscript_module(tmp_path)
    eager = export.load_state_module(tmp_path)
    x = data.sample_box(64, 5)
    assert torch.equal(ts(x), eager(x))
    m, kind = export.load_module(tmp_path, prefer="state_dict")
    assert kind == "state_dict" and torch.equal(m(x), eager(x))


@pytest.mark.parametrize("hard_fraction", [0.0, 0.25])
def test_resume_is_exact(tmp_path, hard_fraction):
    cfg = dict(_tiny_cfg(tmp_path / "a", steps=12), hard_fraction=hard_fraction, hard_pool=256, hard_keep=16,
               hard_every=4)
    straight = train.Trainer(cfg)
    straight.total_steps = 12
    for _ in range(12):
        straight.train_step()
    first = train.Trainer(dict(cfg, out=str(tmp_path / "b")))
    first.total_steps = 12
    for _ in range(6):
        first.train_step()
    first.save_checkpoint()
    resumed = train.Trainer(dict(cfg, out=str(tmp_path / "b")))
    resumed.load_checkpoint(tmp_path / "b" / train.CHECKPOINT_FILE)
    for _ in range(6):
        resumed.train_step()
    for (k, v1), v2 in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_fourier_features_layout_and_range():
    m = model.NukerMGEEmulator(width=16, depth=2, n_fourier=2).double()
    x = data.sample_box(5, 1)
    f = m.features(x)
    z = f[:, :4]
    assert f.shape == (5, 4 * (1 + 2 * 2)) and bool((z.abs() <= 1).all())
    # sin(pi 2^k z) for k = 0, 1, coordinate-major, then the cosines
    assert torch.allclose(f[:, 4:12], torch.sin(math.pi * z[:, :, None] * torch.tensor([1.0, 2.0])).flatten(1))
    assert torch.allclose(f[:, 12:], torch.cos(math.pi * z[:, :, None] * torch.tensor([1.0, 2.0])).flatten(1))
    assert "n_fourier" not in model.NukerMGEEmulator(width=8, depth=1).config()  # old configs unchanged
    with pytest.raises(ValueError, match="n_fourier"):
        model.NukerMGEEmulator(n_fourier=13)


def test_miner_keeps_the_hardest_shapes_and_draws_inside_the_box():
    torch.manual_seed(0)
    net = model.NukerMGEEmulator(width=16, depth=2).double()
    sigma = torch.tensor(train.SIGMA_GRID_PC, dtype=torch.float64)
    m_basis = train.gaussian_enclosed_mass_2d(sigma, train.MASS_R0_PC)
    miner = train.HardExampleMiner(seed=7, device="cpu", pool=512, keep=32, every=10, jitter=0.01)
    assert miner.due(3)
    miner.refresh(net, sigma, m_basis, n_radii=32)
    assert not miner.due(3) and miner.due(20)
    pool = torch.rand(512, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    r = data.training_radii_pc(32, 0.5)
    design = train.gaussian_design(r, sigma)
    h_pool = train.hardness_of(net, data.unit_to_params(pool), r, design, m_basis)
    h_kept = train.hardness_of(net, data.unit_to_params(miner.unit), r, design, m_basis)
    assert torch.equal(h_kept.sort().values, h_pool.sort().values[-32:])
    drawn = miner.draw(200, torch.float64)
    assert drawn.shape == (200, 4) and _in_box(drawn)
    with pytest.raises(ValueError, match="hard_keep"):
        train.HardExampleMiner(0, "cpu", pool=8, keep=16, every=1, jitter=0.0)


def test_learning_rate_schedule():
    lrs = [train.learning_rate(s, 100, 1e-3, 1e-6, 10) for s in range(101)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[100] == pytest.approx(1e-6) and max(lrs) <= 1e-3


def test_cli_registers_train():
    import argparse
    parser = argparse.ArgumentParser()
    train.add_cli(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["train", "--out", "x", "--minutes", "1", "--grid", "paper"])
    assert args.func is train._cli_train and args.grid == "paper" and args.device == "cpu"


# --- shipped weights ---------------------------------------------------------------------------

def test_shipped_weights_small_and_described():
    files = list(emulator.WEIGHTS_DIR.glob("*"))
    assert sum(f.stat().st_size for f in files) <= 5e6
    meta = json.loads((emulator.WEIGHTS_DIR / export.META_FILE).read_text())
    assert meta["held_out_m1"]["eps"]["median"] < 0.005


def test_shipped_amplitudes_accuracy():
    p = data.sample_box(400, 11)
    amp = emulator.amplitudes(*p.unbind(1), device="cpu")
    assert amp.shape == (400, 64) and amp.dtype == torch.float64 and torch.isfinite(amp).all()
    eps, m1b, _ = train.m1_per_draw(amp, p)
    assert np.median(eps) < 0.005 and np.percentile(eps, 90) < 0.03 and np.percentile(m1b, 99) < 0.01


def test_amplitudes_scalars_arrays_and_gradients():
    a1 = emulator.amplitudes(2.0, 3.0, 0.5, 100.0, device="cpu")
    a2 = emulator.amplitudes(np.array([2.0, 1.0]), np.array([3.0, 2.0]), np.array([0.5, 0.2]),
                             np.array([100.0, 10.0]), device="cpu")
    assert a1.shape == (1, 64) and a2.shape == (2, 64) and torch.allclose(a1[0], a2[0])
    x = torch.tensor([2.0, 3.0, 0.5, 100.0], dtype=torch.float64, requires_grad=True)
    emulator.amplitudes(*x, device="cpu").sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()


def test_shipped_torchscript_and_fallback_agree():
    x = data.sample_box(16, 2)
    ts = emulator.load(device="cpu", prefer="torchscript")
    sd = emulator.load(device="cpu", prefer="state_dict")
    assert torch.allclose(ts(x), sd(x), rtol=1e-12, atol=0)
    assert emulator.load(device="cpu") is ts  # cached


@pytest.mark.parametrize("kwargs, name", [
    (dict(alpha=20.0), "alpha"), (dict(gamma=1.5, beta=2.0), "gamma"),
    (dict(beta=5.0), "beta - gamma"), (dict(r_b_pc=1.0), "r_b"), (dict(alpha=math.nan), "alpha"),
])
def test_outside_box_raises_naming_parameter(kwargs, name):
    p = dict(alpha=2.0, beta=3.0, gamma=0.5, r_b_pc=100.0, **{})
    p.update(kwargs)
    with pytest.raises(ValueError, match=name.replace("-", r"\-").replace(" ", r"\s*")):
        emulator.amplitudes(**p, device="cpu")


def test_clamp_opt_in_clips_to_box():
    a = emulator.amplitudes(20.0, 5.0, 1.5, 5000.0, device="cpu", clamp=True)
    b = emulator.amplitudes(10.0, 4.2, 1.2, 2000.0, device="cpu")
    assert torch.allclose(a, b, rtol=1e-12)
    with pytest.raises(ValueError):
        emulator.amplitudes(math.inf, 3.0, 0.5, 100.0, device="cpu", clamp=True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_load_and_amplitudes_match_cpu():
    assert next(emulator.load("cuda").parameters()).device.type == "cuda"
    assert next(emulator.load().parameters()).device.type == "cpu"  # one device rule: CPU unless asked
    p = data.sample_box(256, 4)
    gpu = emulator.amplitudes(*p.cuda().unbind(1))
    assert gpu.device.type == "cuda"
    cpu = emulator.amplitudes(*p.unbind(1), device="cpu")
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-9, atol=1e-12 * cpu.abs().max().item())


def test_model_nuker_formula_matches_package():
    # The module restates log_nuker for TorchScript; the two must not drift apart.
    from nuker_mge_plugin.basis import SIGMA_GRID_PC
    from nuker_mge_plugin.emulator.model import NukerMGEEmulator
    from nuker_mge_plugin.nuker import log_nuker

    x = torch.tensor([[0.1, 0.4, 0.001, 2.0], [3.0, 2.5, 0.7, 90.0], [10.0, 4.2, 1.2, 2000.0]], dtype=torch.float64)
    got = NukerMGEEmulator().double().log_nuker_at_sigma(x)
    ref = log_nuker(torch.tensor(SIGMA_GRID_PC)[None, :], 1.0, x[:, 3:4], x[:, 0:1], x[:, 1:2], x[:, 2:3])
    assert torch.allclose(got, ref, rtol=1e-13, atol=1e-12)
