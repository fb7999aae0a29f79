"""The emulator network: Nuker shape (alpha, beta, gamma, r_b [pc]) -> 64 MGE peak amplitudes.

The module owns everything between raw parameters and amplitudes (input normalisation,
the MLP, the output parametrisation), so an exported TorchScript file is self-contained:
it takes a (B, 4) tensor with columns (alpha, beta, gamma, r_b_pc) and returns (B, 64)
peak surface densities [Msun/pc^2 per unit Sigma_b] on ``basis.SIGMA_GRID_PC``.

Output parametrisations (``output=``):

- ``"nuker_scaled"`` (default): ``a_i = Sigma_Nuker(sigma_i) * (c + h_i)``. Scaling by the
  profile at each Gaussian's own width takes out the ~15 decades that the amplitudes
  span across the box, so the network's outputs h_i stay O(0.1) everywhere and may take
  either sign (sharp alpha >= 5 breaks need negative lobes). For a pure power law of
  slope s the exact answer is the constant c(s) = dln(sigma) / (2^(s/2-1) Gamma(s/2)),
  0.03-0.15 on this grid, hence the default c = 0.1.
- ``"symexp"``: the seed paper's eq. (3), ``a_i = sgn(h_i) 1e-12 (10^|h_i| - 1)``.

Inputs: the four box coordinates scaled to [-1, 1], optionally followed by ``n_fourier``
octaves of sines and cosines of each (Fourier features, Tancik et al. 2020). A sharp
(alpha >= 5) break moves across the log-spaced Gaussian grid as r_b changes, so the
amplitudes vary on a scale of one grid step (0.06 dex) in log r_b; plain MLP inputs make
such high frequencies slow to learn.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import torch
from torch import nn

from ..basis import SIGMA_GRID_PC
from .data import BOX_HI, BOX_LO

OUTPUTS = ("nuker_scaled", "symexp")


def symexp(h):
    """Seed paper eq. (3): sgn(h) 1e-12 (10^|h| - 1); maps ~[0.3, 15] onto ~[1e-12, 1e3]."""
    return torch.sign(h) * 1e-12 * torch.expm1(2.302585092994046 * torch.abs(h))  # ln 10 (a literal: TorchScript)


def mlp(n_in, width, depth, n_out):
    """``depth`` hidden layers of ``width`` SiLU units; Linear layers: depth + 1."""
    layers = [nn.Linear(n_in, width), nn.SiLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.SiLU()]
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class NukerMGEEmulator(nn.Module):
    """(B, 4) Nuker shapes (alpha, beta, gamma, r_b_pc) -> (B, 64) MGE peak amplitudes, Sigma_b = 1.

    Parameters
    ----------
    width, depth : hidden-layer width and number of hidden layers of the MLP.
    output : 'nuker_scaled' or 'symexp' (module docstring).
    c : offset of the nuker_scaled head (dimensionless).
    """

    def __init__(self, width=384, depth=4, output="nuker_scaled", c=0.1, n_fourier=0):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output = {output!r} is invalid: choose one of {OUTPUTS}")
        if not 0 <= int(n_fourier) <= 12:
            raise ValueError(f"n_fourier = {n_fourier} must be in [0, 12]")
        self.width, self.depth, self.output, self.c = int(width), int(depth), str(output), float(c)
        self.n_fourier = int(n_fourier)
        self.net = mlp(4 * (1 + 2 * self.n_fourier), self.width, self.depth, len(SIGMA_GRID_PC))
        # Octaves 2^k, k = 0 .. n_fourier - 1 (angular frequencies pi 2^k on coordinates in [-1, 1]);
        # powers of two stay exact in a float32 file; not persistent, so older state_dicts still load.
        self.register_buffer("octaves", 2.0 ** torch.arange(self.n_fourier, dtype=torch.float64), persistent=False)
        self.register_buffer("ln_sigma_pc", torch.log(torch.tensor(SIGMA_GRID_PC, dtype=torch.float64)))
        self.register_buffer("box_lo", torch.tensor(BOX_LO, dtype=torch.float64))
        self.register_buffer("box_hi", torch.tensor(BOX_HI, dtype=torch.float64))
        last = self.net[-1]
        with torch.no_grad():
            if self.output == "nuker_scaled":
                # Start at a_i = c Sigma_N(sigma_i): a smooth, roughly right MGE of every profile.
                last.weight.mul_(1e-2)
                last.bias.zero_()
            else:
                # 10^12 1e-12 = 1: amplitudes of order the break surface density at start.
                last.bias.fill_(12.0)

    def config(self):
        """Constructor arguments, enough to rebuild the module from a state_dict."""
        cfg = {"width": self.width, "depth": self.depth, "output": self.output, "c": self.c}
        if self.n_fourier:
            cfg["n_fourier"] = self.n_fourier
        return cfg

    def features(self, x):
        """Box coordinates (log10 alpha, gamma, beta - gamma, log10 r_b) scaled to [-1, 1], then
        their Fourier features when ``n_fourier`` > 0: (B, 4 (1 + 2 n_fourier))."""
        z = torch.stack([torch.log10(x[:, 0]), x[:, 2], x[:, 1] - x[:, 2], torch.log10(x[:, 3])], dim=1)
        z = 2.0 * (z - self.box_lo) / (self.box_hi - self.box_lo) - 1.0
        if self.n_fourier == 0:
            return z
        angle = (z[:, :, None] * self.octaves).flatten(1) * 3.141592653589793  # pi (a literal: TorchScript)
        return torch.cat([z, torch.sin(angle), torch.cos(angle)], dim=1)

    def log_nuker_at_sigma(self, x):
        """ln Sigma_Nuker(sigma_i) (B, 64) for Sigma_b = 1: nuker.log_nuker's formula, restated here
        because TorchScript cannot compile its numpy/torch dispatch (tests check the two agree)."""
        alpha, beta, gamma = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        lnx = self.ln_sigma_pc[None, :] - torch.log(x[:, 3:4])
        soft = torch.logaddexp(torch.zeros_like(lnx), alpha * lnx)
        return (beta - gamma) / alpha * 0.6931471805599453 - gamma * lnx + (gamma - beta) / alpha * soft

    def forward(self, x):
        h = self.net(self.features(x))
        if self.output == "nuker_scaled":
            return torch.exp(self.log_nuker_at_sigma(x)) * (self.c + h)
        return symexp(h)
