"""CUDA checks and GPU timings that CI (no GPU) cannot do; prints one JSON document.

    PYTHONPATH=. python3 validation/gpu_check.py

Needs only torch, numpy and scipy (no jampy/KinMS): compares every CUDA result with the
same computation on the CPU, for vcirc (general and fast paths, float32 and float64), the
nn emulator (TorchScript and state_dict) and the gas cube -> visibilities chain, then times
vcirc for 256 models x 100 radii and a cube + visibility chi^2 + gradient at 256 x 256 x 64.
"""

import json
import math
import time

import numpy as np
import torch

from nuker_mge_plugin import emulator
from nuker_mge_plugin.basis import SIGMA_GRID_PC, pc_per_arcsec
from nuker_mge_plugin.dynamics import cube_to_vis, model_cube, vcirc_qintr
from nuker_mge_plugin.projector import exact_amplitudes


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return float(((a - b).abs() / b.abs().clamp_min(1e-300)).max())


def timed(fn, repeats=20):
    fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(ts))


def vcirc_inputs(B, dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)  # noqa: E731
    alpha, gamma = 10 ** u(-1, 1), u(0.001, 1.2)
    beta, r_b = gamma + u(0.3, 3.0), 10 ** u(math.log10(2), math.log10(2000))
    surf = 10 ** u(1, 5)[:, None] * exact_amplitudes(alpha, beta, gamma, r_b)
    dist = 11.4
    sigma = torch.tensor(SIGMA_GRID_PC / pc_per_arcsec(dist))
    rad = torch.logspace(-2, 1, 100, dtype=torch.float64)
    return dict(surf_pc=surf, sigma_arcsec=sigma, qintr=u(0.1, 1.0)[:, None], inc_deg=u(72, 89),
                mbh=10 ** u(6, 9.8), distance=torch.full((B,), dist, dtype=torch.float64), rad=rad)


def to(d, dtype, device):
    return {k: v.to(dtype=dtype, device=device) for k, v in d.items()}


def main():
    assert torch.cuda.is_available(), "no CUDA device"
    dev = torch.device("cuda")
    out = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}

    # vcirc: CUDA vs CPU, float64 and float32, fast (B=256) and general (B=4) paths.
    for B in (4, 256):
        base = vcirc_inputs(B, torch.float64, "cpu")
        ref = vcirc_qintr(**base)
        for dt in (torch.float64, torch.float32):
            v = vcirc_qintr(**to(base, dt, dev))
            out[f"vcirc_B{B}_{str(dt)[6:]}_cuda_vs_cpu64"] = rel(v, ref)
    base = to(vcirc_inputs(256, torch.float64, "cpu"), torch.float64, dev)
    out["vcirc_ms_256x100_float64"] = timed(lambda: vcirc_qintr(**base))
    base32 = to(vcirc_inputs(256, torch.float64, "cpu"), torch.float32, dev)
    out["vcirc_ms_256x100_float32"] = timed(lambda: vcirc_qintr(**base32))

    # emulator: TorchScript and state_dict fallback on CUDA vs CPU.
    # float64 inputs: Python floats would make float32 tensors and a spurious 1e-4 difference.
    x = torch.tensor([[0.5, 1.5, 0.2, 10.0], [2.0, 2.2, 0.9, 150.0], [8.0, 3.5, 1.1, 1500.0]], dtype=torch.float64)
    cpu = emulator.load(device="cpu")(x)
    R = torch.logspace(math.log10(3), math.log10(3000), 256, dtype=torch.float64)
    G = torch.exp(-0.5 * (R[:, None] / torch.tensor(SIGMA_GRID_PC)) ** 2)
    for prefer in ("torchscript", "state_dict"):
        m = emulator.load(device="cuda", prefer=prefer)
        out[f"emulator_{prefer}_cuda_vs_cpu_profile"] = rel(m(x.to(dev)).cpu() @ G.T, cpu @ G.T)
    big = torch.stack([torch.full((100_000,), v) for v in (1.5, 2.5, 0.5, 100.0)], 1).double().to(dev)
    m = emulator.load(device="cuda")
    ms = timed(lambda: m(big), repeats=10)
    out["emulator_profiles_per_s_float64_batch1e5"] = 1e5 / (ms / 1e3)

    # gas cube -> visibilities: CUDA vs CPU, then chi^2 + gradient timing at 256 x 256 x 64.
    rad = torch.linspace(0, 8, 200, dtype=torch.float64)
    common = dict(xs=12.8, ys=12.8, vs=640.0, cellSize=0.1, dv=20.0, beamSize=0.5, sbRad=rad,
                  sbProf=torch.exp(-rad / 1.5), velRad=rad, velProf=250 * torch.tanh(rad / 0.5), gasSigma=10.0,
                  intFlux=30.0, cleanOut=True)
    c_cpu = model_cube(inc=76.0, posAng=246.0, **common, dtype=torch.float64, device="cpu")
    c_gpu = model_cube(inc=76.0, posAng=246.0, **common, dtype=torch.float64, device=dev)
    out["cube_128x128x32_cuda_vs_cpu_maxabs_over_peak"] = float((c_gpu.cpu() - c_cpu).abs().max() / c_cpu.abs().max())
    v_cpu, v_gpu = cube_to_vis(c_cpu, 0.1), cube_to_vis(c_gpu, 0.1)
    out["vis_cuda_vs_cpu_maxabs_over_max"] = float((v_gpu.cpu() - v_cpu).abs().max() / v_cpu.abs().max())

    big_grid = dict(common, xs=25.6, ys=25.6, vs=1280.0)
    inc = torch.tensor(76.0, dtype=torch.float64, device=dev, requires_grad=True)
    data = cube_to_vis(model_cube(inc=75.0, posAng=246.0, **big_grid, dtype=torch.float64, device=dev), 0.1)

    def loglike_and_grad():
        cube = model_cube(inc=inc, posAng=246.0, **big_grid, dtype=torch.float64, device=dev, check=False)
        chi2 = ((cube_to_vis(cube, 0.1) - data).abs() ** 2).sum()
        (g,) = torch.autograd.grad(chi2, inc)
        return chi2, g
    out["cube_shape_for_timing"] = list(data.shape)
    out["loglike_plus_grad_ms_256x256x64_float64"] = timed(loglike_and_grad, repeats=5)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
