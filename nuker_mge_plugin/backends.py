"""The registry of Nuker -> MGE backends: each one owns its domain check and follows one device rule.

``amplitudes(backend, alpha, beta, gamma, r_b_pc)`` returns the (B, 64) peak amplitudes
[Msun/pc^2 per unit Sigma_b] on ``basis.SIGMA_GRID_PC`` for either backend:

- ``"exact"``: the regularised, mass-conserving least-squares projection (projector.py); any
  physical Nuker (alpha > 0, 0 <= gamma < 2, beta > gamma) with r_b in 1 pc-10 kpc, so that the
  fit range 3 pc-3 kpc sees the break;
- ``"nn"``: the shipped neural emulator (emulator/), valid inside the Appendix-A box only.

Device rule (both backends): the device of the first tensor argument, else ``device=``, else CPU.
"""

from dataclasses import dataclass

import numpy as np
import torch

from .nuker import R_B_PC_RANGE, check_nuker_params, check_training_box


@dataclass(frozen=True)
class Backend:
    """One Nuker -> MGE backend: its name, a one-line description and its r_b range [pc]."""

    name: str
    description: str
    r_b_pc_range: tuple

    def check(self, alpha, beta, gamma, r_b_pc):
        """Raise ValueError naming the first shape parameter outside this backend's domain."""
        a, b, g, r = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, dtype=float)
                      for v in (alpha, beta, gamma, r_b_pc))
        check_nuker_params(alpha=a, beta=b, gamma=g, r_b=np.where(np.isfinite(r), r, np.nan))
        if self.name == "nn":
            check_training_box(a, b, g, r)
            return
        lo, hi = self.r_b_pc_range
        bad = ~((r >= lo) & (r <= hi))
        if np.any(bad):
            raise ValueError(f"r_b = {float(np.broadcast_to(r, bad.shape)[bad][0]):g} pc is outside the "
                             f"{self.name} backend's range [{lo:g}, {hi:g}] pc")

    def amplitudes(self, alpha, beta, gamma, r_b_pc, *, device=None, dtype=torch.float64, check=True):
        """Peak amplitudes (B, 64) for Sigma_b = 1; shape parameters (B,) or scalars, ``r_b_pc`` [pc].

        ``check=False`` skips the domain check (a host sync), for callers whose prior already
        keeps the parameters inside the domain (the fitter). Differentiable in tensor inputs.
        """
        if check:
            self.check(alpha, beta, gamma, r_b_pc)
        device = _device_of((alpha, beta, gamma, r_b_pc), device)
        if self.name == "exact":
            from .projector import exact_amplitudes
            return exact_amplitudes(alpha, beta, gamma, r_b_pc, device=device, dtype=dtype)
        from .emulator import amplitudes as nn_amplitudes
        # the box was checked above (or the caller vouches for it): no second host sync
        return nn_amplitudes(alpha, beta, gamma, r_b_pc, device=device, dtype=dtype, check=False)


def _device_of(values, device):
    ref = next((x for x in values if isinstance(x, torch.Tensor)), None)
    if ref is not None:
        return ref.device
    return torch.device(device) if device is not None else torch.device("cpu")


#: The backends by name, in the order the command line lists them.
REGISTRY = {
    "exact": Backend("exact", "regularised mass-conserving least-squares projection (any Nuker)", (1.0, 1.0e4)),
    "nn": Backend("nn", "neural emulator, one batched forward pass (Appendix-A box)", tuple(R_B_PC_RANGE)),
}
BACKENDS = tuple(REGISTRY)


def get_backend(name):
    """The :class:`Backend` called ``name``; ValueError listing the valid names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"backend = {name!r} is invalid: choose one of {', '.join(map(repr, BACKENDS))}") from None


def amplitudes(backend, alpha, beta, gamma, r_b_pc, *, device=None, dtype=torch.float64, check=True):
    """Peak amplitudes (B, 64) for Sigma_b = 1 from the named backend; ``r_b_pc`` in pc."""
    return get_backend(backend).amplitudes(alpha, beta, gamma, r_b_pc, device=device, dtype=dtype, check=check)


__all__ = ["Backend", "REGISTRY", "BACKENDS", "get_backend", "amplitudes"]
