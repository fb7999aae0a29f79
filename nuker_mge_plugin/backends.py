"""One interface over the two Nuker -> MGE backends.

``amplitudes(backend, alpha, beta, gamma, r_b_pc)`` returns the (B, 64) peak amplitudes
[Msun/pc^2 per unit Sigma_b] on ``basis.SIGMA_GRID_PC`` for either backend:

- ``"exact"``: the regularised, mass-conserving least-squares projection (projector.py);
- ``"nn"``: the shipped neural emulator (emulator/), valid inside the Appendix-A box.
"""

import torch

BACKENDS = ("exact", "nn")


def amplitudes(backend, alpha, beta, gamma, r_b_pc, *, device=None, dtype=torch.float64):
    """Peak amplitudes (B, 64) for Sigma_b = 1 from the named backend; ``r_b_pc`` in pc."""
    if backend == "exact":
        from .projector import exact_amplitudes
        return exact_amplitudes(alpha, beta, gamma, r_b_pc, device=device, dtype=dtype)
    if backend == "nn":
        from .emulator import amplitudes as nn_amplitudes
        return nn_amplitudes(alpha, beta, gamma, r_b_pc, device=device, dtype=dtype)
    raise ValueError(f"backend = {backend!r} is invalid: choose one of {', '.join(map(repr, BACKENDS))}")
