"""The ``nn`` backend: a neural emulator of the Nuker -> MGE map (seed paper section 2.1).

``amplitudes(alpha, beta, gamma, r_b_pc)`` returns the (B, 64) peak amplitudes
[Msun/pc^2 per unit Sigma_b] on ``basis.SIGMA_GRID_PC`` in one batched forward pass of
the shipped network (``weights/``), on CPU or CUDA, differentiable with respect to the
inputs. It is valid inside the Appendix-A training box only: outside it a ValueError
names the parameter, unless ``clamp=True`` asks for the inputs to be clipped to the box.

Sub-modules: ``data`` (training data), ``model`` (the network), ``train`` (the
``nuker-mge train`` command), ``export`` (TorchScript + state_dict files).

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

from pathlib import Path

import numpy as np
import torch

from ..nuker import ALPHA_RANGE, BETA_MINUS_GAMMA_RANGE, GAMMA_RANGE, R_B_PC_RANGE, check_training_box
from .export import load_module

#: Folder of the shipped weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

_CACHE = {}


def _default_device():
    # the package's one device rule (backends.py): a tensor's device, else what was asked, else CPU
    return torch.device("cpu")


def load(device=None, dtype=None, weights_dir=None, prefer="torchscript"):
    """The emulator module on ``device`` (default CPU) in ``dtype``.

    ``dtype`` defaults to float64. The module maps (B, 4) tensors with columns
    (alpha, beta, gamma, r_b_pc) to (B, 64) amplitudes. Loaded once per (folder, device,
    dtype, prefer) and cached; TorchScript first, the state_dict fallback otherwise.
    """
    device = _default_device() if device is None else torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    dtype = torch.float64 if dtype is None else dtype
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    key = (str(folder), str(device), dtype, prefer)
    if key not in _CACHE:
        module, _kind = load_module(folder, device=device, dtype=dtype, prefer=prefer)
        for p in module.parameters():
            p.requires_grad_(False)
        _CACHE[key] = module
    return _CACHE[key]


def clamp_to_box(alpha, beta, gamma, r_b_pc):
    """Clip shape tensors into the Appendix-A box (beta through beta - gamma); differentiable inside."""
    gamma_c = gamma.clamp(*GAMMA_RANGE)
    bmg_c = (beta - gamma).clamp(*BETA_MINUS_GAMMA_RANGE)
    return alpha.clamp(*ALPHA_RANGE), gamma_c + bmg_c, gamma_c, r_b_pc.clamp(*R_B_PC_RANGE)


def amplitudes(alpha, beta, gamma, r_b_pc, *, device=None, dtype=torch.float64, clamp=False, check=True):
    """Peak amplitudes (B, 64) [Msun/pc^2 per unit Sigma_b] of the Nuker MGE from the emulator.

    Parameters
    ----------
    alpha, beta, gamma : Nuker shape parameters, arrays/tensors of shape (B,) or scalars.
    r_b_pc : break radius [pc], same.
    device : torch device; default the device of a tensor input, else CPU.
    dtype : dtype of the computation and of the result (default float64).
    clamp : clip inputs outside the Appendix-A box instead of raising ValueError.
    check : check the box (a host sync); ``False`` for callers that already did.

    Returns a (B, 64) tensor, differentiable with respect to tensor inputs.
    """
    ref = next((x for x in (alpha, beta, gamma, r_b_pc) if isinstance(x, torch.Tensor)), None)
    if device is None:
        device = ref.device if ref is not None else _default_device()
    device = torch.device(device)
    t = lambda v: torch.as_tensor(v, dtype=dtype, device=device).reshape(-1)  # noqa: E731
    alpha, beta, gamma, r_b_pc = torch.broadcast_tensors(*map(t, (alpha, beta, gamma, r_b_pc)))
    if clamp:
        finite = torch.isfinite(torch.stack([alpha, beta, gamma, r_b_pc]))
        if not bool(finite.all()):
            raise ValueError("Nuker shape parameters must be finite (clamp=True clips only finite values)")
        alpha, beta, gamma, r_b_pc = clamp_to_box(alpha, beta, gamma, r_b_pc)
    elif check:
        check_training_box(*(np.asarray(v.detach().cpu(), dtype=float) for v in (alpha, beta, gamma, r_b_pc)))
    module = load(device=device, dtype=dtype)
    return module(torch.stack([alpha, beta, gamma, r_b_pc], dim=1))


__all__ = ["amplitudes", "load", "clamp_to_box", "WEIGHTS_DIR"]
