"""Training data of the Nuker -> MGE emulator, generated on the fly (seed paper Appendix A).

Nothing here is written to disk: a batch is a (B, 4) tensor of shape parameters
``(alpha, beta, gamma, r_b_pc)`` drawn either from the paper's 50^4 grid or uniformly
from the same box, and the targets (log Nuker profile on a radius grid, projected mass
inside 3 pc) are computed from it when the batch is used.

Box coordinates. The box is a product of four intervals in the coordinates
``(log10 alpha, gamma, beta - gamma, log10 r_b)``: alpha and r_b are log-spaced because
each spans two (alpha 0.1-10) or three (r_b 2 pc - 2 kpc) decades and acts
multiplicatively (the transition width in ln R is ~1/alpha; r_b shifts the profile in
ln R). A linear 50-point alpha grid would put only 1 of its 50 values below alpha = 0.3
and half of them above 5, where the profile barely changes with alpha. gamma and
beta - gamma are slopes and are spaced linearly. docs/metrics.rst M1 samples the same
coordinates uniformly, so training and evaluation see the same density.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import functools
import math

import numpy as np
import torch

from ..basis import FIT_R_MAX_PC, FIT_R_MIN_PC, MASS_R0_PC
from ..nuker import ALPHA_RANGE, BETA_MINUS_GAMMA_RANGE, GAMMA_RANGE, R_B_PC_RANGE, log_nuker
from ..projector import nuker_enclosed_mass_2d

#: Number of values per parameter of the paper's grid (Appendix A): 50^4 = 6.25e6 profiles.
PAPER_GRID_N = 50

#: Box in the sampling coordinates (log10 alpha, gamma, beta - gamma, log10 r_b/pc).
BOX_LO = (math.log10(ALPHA_RANGE[0]), GAMMA_RANGE[0], BETA_MINUS_GAMMA_RANGE[0], math.log10(R_B_PC_RANGE[0]))
BOX_HI = (math.log10(ALPHA_RANGE[1]), GAMMA_RANGE[1], BETA_MINUS_GAMMA_RANGE[1], math.log10(R_B_PC_RANGE[1]))


@functools.lru_cache(maxsize=8)
def _box_bounds(dtype, device):
    # Cached: a fresh host-to-device copy per batch would stall a CUDA training step.
    return (torch.tensor(BOX_LO, dtype=dtype, device=device), torch.tensor(BOX_HI, dtype=dtype, device=device))


def unit_to_params(u):
    """Map points of the unit cube (..., 4) to Nuker shapes (..., 4) = (alpha, beta, gamma, r_b_pc)."""
    lo, hi = _box_bounds(u.dtype, u.device)
    z = lo + (hi - lo) * u
    alpha = 10.0 ** z[..., 0]
    gamma = z[..., 1]
    beta = gamma + z[..., 2]
    r_b_pc = 10.0 ** z[..., 3]
    return torch.stack([alpha, beta, gamma, r_b_pc], dim=-1)


def paper_grid_axes(n=PAPER_GRID_N):
    """The four 1-D axes of the paper's grid, each with ``n`` values (numpy, float64).

    Returns (alpha, gamma, beta_minus_gamma, r_b_pc): alpha and r_b [pc] log-spaced, gamma
    and beta - gamma linearly spaced, all including both ends of the Appendix-A ranges.
    """
    return (np.logspace(BOX_LO[0], BOX_HI[0], n), np.linspace(*GAMMA_RANGE, n),
            np.linspace(*BETA_MINUS_GAMMA_RANGE, n), np.logspace(BOX_LO[3], BOX_HI[3], n))


def paper_grid_params(index, n=PAPER_GRID_N, dtype=torch.float64):
    """Shape vectors (B, 4) of flat indices ``index`` (B,) into the n^4 paper grid.

    The flat index enumerates (alpha, gamma, beta - gamma, r_b) in C order; no grid is
    materialised, so any index in [0, n^4) costs the same.
    """
    axes = [torch.as_tensor(a, dtype=dtype) for a in paper_grid_axes(n)]
    index = torch.as_tensor(index, dtype=torch.int64)
    i_rb = index % n
    i_bg = (index // n) % n
    i_g = (index // n**2) % n
    i_a = index // n**3
    alpha, gamma, bmg, r_b = axes[0][i_a], axes[1][i_g], axes[2][i_bg], axes[3][i_rb]
    return torch.stack([alpha, gamma + bmg, gamma, r_b], dim=-1)


class PaperGridSampler:
    """Batches from the n^4 paper grid, each epoch a fresh seeded permutation (no repeats)."""

    def __init__(self, seed, n=PAPER_GRID_N):
        self.n = n
        self.size = n**4
        self.generator = torch.Generator().manual_seed(seed)
        self._perm = None
        self._pos = 0

    def __call__(self, batch, dtype=torch.float64):
        out = []
        while batch > 0:
            if self._perm is None or self._pos >= self.size:
                self._perm = torch.randperm(self.size, generator=self.generator)
                self._pos = 0
            take = min(batch, self.size - self._pos)
            out.append(self._perm[self._pos:self._pos + take])
            self._pos += take
            batch -= take
        return paper_grid_params(torch.cat(out), self.n, dtype)

    def state_dict(self):
        return {"generator": self.generator.get_state(), "perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])
        self._perm, self._pos = state["perm"], state["pos"]


class RandomBoxSampler:
    """Batches drawn uniformly (in the box coordinates) from the continuous Appendix-A box.

    The generator lives on ``device``: drawing on the training device keeps a CUDA step free
    of host-to-device copies (each one would stall the queue of kernels behind it).
    """

    def __init__(self, seed, device="cpu"):
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def unit(self, n, dtype=torch.float64):
        """``n`` uniform points (n, 4) of the unit cube, on the generator's device."""
        return torch.rand(n, 4, generator=self.generator, dtype=dtype, device=self.generator.device)

    def __call__(self, batch, dtype=torch.float64):
        return unit_to_params(self.unit(batch, dtype))

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        self.generator.set_state(state["generator"])


def make_sampler(grid, seed, device="cpu"):
    """``grid`` = 'paper' (the 50^4 grid, drawn on the CPU) or 'random' (continuous box, on ``device``)."""
    if grid == "paper":
        return PaperGridSampler(seed)
    if grid == "random":
        return RandomBoxSampler(seed, device)
    raise ValueError(f"grid = {grid!r} is invalid: choose 'paper' or 'random'")


def sample_box(n, seed, dtype=torch.float64):
    """``n`` seeded shape vectors (n, 4) drawn as docs/metrics.rst M1 prescribes (held-out sets)."""
    g = torch.Generator().manual_seed(seed)
    return unit_to_params(torch.rand(n, 4, generator=g, dtype=dtype))


def training_radii_pc(n, jitter=0.0, dtype=torch.float64, device=None):
    """``n`` log-spaced radii [pc] spanning [3 pc, 3 kpc], shifted by ``jitter`` in [0, 1) of a step.

    With jitter the grid moves between batches, so the fit is trained between grid points
    too; the end points stay inside [3 pc, 3 kpc].
    """
    lo, hi = math.log(FIT_R_MIN_PC), math.log(FIT_R_MAX_PC)
    step = (hi - lo) / n
    ln_r = lo + step * (jitter + torch.arange(n, dtype=dtype, device=device))
    return torch.exp(ln_r)


def profile_targets(params, radii_pc):
    """Targets of one batch: ln Sigma_Nuker at ``radii_pc`` (B, N) and ln M2D(<3 pc) (B,).

    ``params`` (B, 4) = (alpha, beta, gamma, r_b_pc), Sigma_b = 1 [Msun/pc^2]; the
    profile is evaluated in log space (it spans ~15 decades over the box).
    """
    alpha, beta, gamma, r_b = params.unbind(-1)
    ln_sigma = log_nuker(radii_pc[None, :], 1.0, r_b[:, None], alpha[:, None], beta[:, None], gamma[:, None])
    m2d = nuker_enclosed_mass_2d(MASS_R0_PC, r_b, alpha, beta, gamma)
    return ln_sigma, torch.log(m2d)
