"""Likelihoods of gridded visibilities (seed paper section 2.3): Student-t (default) and Gaussian x k.

Each usable gridded cell holds the window-weighted mean ``V`` of its visibilities and a standard
error ``s`` per real/imaginary component estimated from their own scatter (dynamics/gridder.py),
from ``n_eff`` effective samples (Kish). The model ``M`` is the same window average of the model
visibilities (the cell model), so ``V - M`` is pure noise at the truth.

Student-t (default). ``s^2`` is itself a sample variance: pooled over the real and imaginary
parts of ~n_eff samples, it has ``nu = 2 (n_eff - 1)`` degrees of freedom (``nu s^2 / sigma^2 ~
chi^2_nu``), independent of the mean. Then ``(V - M) / s`` is a bivariate Student-t with ``nu``
degrees of freedom, whose log-density in ``M`` is

    log L = sum_cells [ -(nu + 2)/2 log(1 + |V - M|^2 / (nu s^2)) - 2 log s + c(nu) ],

the exact likelihood for sample-variance noise: it neither trusts cells that happened to scatter
little (as a Gaussian with ``s`` would) nor throws information away (as inflating every ``s``
would). At the truth ``E|V - M|^2 / (2 s^2) = nu / (nu - 2)``: chi^2 per cell of about 1.13 for a
typical mock, which is right, not a misfit.

Gaussian x k. The seed paper's choice: a Gaussian with ``s`` multiplied by ``sigma_scale = k``
(2 in the paper): ``log L = -sum |V - M|^2 / (2 k^2 s^2) - 2 log(k s) - log(2 pi)``. It makes the
posterior wider by about k than the Gaussian with ``s`` alone; whether that is right is a
calibration question (validation/calibration.py measures both).

Overlapping windows: per-cell weights. A grown Kaiser-Bessel window shares visibilities with its
neighbours (dynamics/gridder.py), so neighbouring cells are positively correlated, and a product
of independent per-cell densities counts each shared visibility's information once per cell it
enters: the posterior comes out too narrow (on the sparse-array M5 mock, log10 M_BH offsets of up
to 4 posterior sigmas). The likelihood is therefore a *weighted composite likelihood*

    log L = sum_cells w_c l_c,   w_c = 1 / m_c,   m_c = sum_j A_cj n_j,

``l_c`` the Student-t or Gaussian term of cell ``c`` above, ``A_cj`` the cell's normalised window
weights of its samples ``j`` and ``n_j`` the number of cells visibility ``j`` enters (the gridder's
``overlap``). ``m_c = 1`` for a cell that shares nothing (all cells when no window grew and
``width <= 1``), so those terms are unchanged. ``k`` cells holding the same samples get
``m_c = k`` and together count as one cell, i.e. each visibility's information once. For two cells
of ``n`` equally weighted samples sharing ``s`` of them (noise correlation ``rho = s / n``),
``m = 1 + rho``. With model derivatives ``d_1, d_2`` (in units of sigma) the weighted likelihood's
information ``(d_1^2 + d_2^2) / (1 + rho)`` is the true information of the correlated pair minus
``rho (d_1 - d_2)^2 / (1 - rho^2)``, and its inverse (the posterior variance) exceeds the actual
variance of the weighted estimate by ``rho (d_1 - d_2)^2 / (d_1^2 + d_2^2)^2``: exact for
duplicated cells or a common signal, conservative
(wider than needed) for partially shared cells whose signal differs. It is a composite likelihood,
not the joint density of correlated cells; cells of very unequal sample counts are only
approximately corrected. The Fisher matrix of the weighted likelihood uses the same weights
(``whitened_residuals`` are scaled by ``sqrt(w_c)``, so ``J^T J = sum_c w_c I_c``).

Both are reduced in float64 and batched over a leading dimension of the model.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import math

import torch

__all__ = ["GriddedLikelihood", "LIKELIHOODS"]

LIKELIHOODS = ("student_t", "gaussian")


class GriddedLikelihood(torch.nn.Module):
    """log L of a (B, n_cells) complex model given the gridded data on the same cells.

    Parameters
    ----------
    vis : (n_cells,) complex tensor [Jy]
        Gridded data.
    sigma : (n_cells,) real tensor [Jy]
        Standard error per real/imaginary component, > 0 and finite.
    n_eff : (n_cells,) real tensor
        Effective number of samples behind each cell (> 1 for the Student-t).
    kind : "student_t" or "gaussian"
    sigma_scale : float
        The Gaussian's multiplier of ``sigma`` (seed paper: 2), > 0; ignored by the Student-t.
    cell_weight : (n_cells,) real tensor, optional
        Weight ``w_c`` of each cell's log-density term, finite and in (0, 1] (default all 1):
        ``log L = sum_c w_c l_c``. ``1 / GriddedModel.overlap`` counts a visibility shared by
        overlapping windows once rather than once per cell (module docstring).
        :meth:`whitened_residuals` and :meth:`residual_weights` carry ``sqrt(w_c)``, so the Fisher
        matrix ``J^T J`` is the expected information of the weighted likelihood.
    """

    def __init__(self, vis, sigma, n_eff, kind="student_t", sigma_scale=2.0, cell_weight=None):
        super().__init__()
        if kind not in LIKELIHOODS:
            raise ValueError(f"kind = {kind!r} is invalid: choose one of {', '.join(map(repr, LIKELIHOODS))}")
        if not (math.isfinite(sigma_scale) and sigma_scale > 0):
            raise ValueError(f"sigma_scale = {sigma_scale!r} is invalid: it must be finite and > 0")
        vis = torch.as_tensor(vis).to(torch.complex128)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=vis.device)
        n_eff = torch.as_tensor(n_eff, dtype=torch.float64, device=vis.device)
        if not (vis.shape == sigma.shape == n_eff.shape and vis.ndim == 1):
            raise ValueError(f"vis, sigma, n_eff must be 1-D of one length, got {tuple(vis.shape)}, "
                             f"{tuple(sigma.shape)}, {tuple(n_eff.shape)}")
        if not bool(torch.isfinite(vis).all() & torch.isfinite(sigma).all() & (sigma > 0).all()):
            raise ValueError("vis and sigma must be finite with sigma > 0 on every cell (select usable cells)")
        if kind == "student_t" and not bool((n_eff > 1).all()):
            raise ValueError("the Student-t likelihood needs n_eff > 1 on every cell (min_count >= 2)")
        if cell_weight is None:
            cell_weight = torch.ones_like(sigma)
        else:
            cell_weight = torch.as_tensor(cell_weight, dtype=torch.float64, device=vis.device)
            if cell_weight.shape != vis.shape:
                raise ValueError(f"cell_weight must be 1-D of the cells' length {vis.shape[0]}, got "
                                 f"{tuple(cell_weight.shape)}")
            if not bool((torch.isfinite(cell_weight) & (cell_weight > 0) & (cell_weight <= 1)).all()):
                raise ValueError("cell_weight must be finite and in (0, 1] on every cell (1 / overlap, overlap >= 1)")
        self.kind, self.sigma_scale = kind, float(sigma_scale)
        self.register_buffer("vis", vis)
        self.register_buffer("sigma", sigma)
        self.register_buffer("nu", 2.0 * (n_eff - 1.0))
        self.register_buffer("cell_weight", cell_weight)
        if kind == "student_t":
            nu = self.nu
            const = (torch.lgamma((nu + 2) / 2) - torch.lgamma(nu / 2) - torch.log(math.pi * nu)
                     - 2 * torch.log(sigma))
        else:
            s = self.sigma_scale * sigma
            const = -2 * torch.log(s) - math.log(2 * math.pi)
        self.register_buffer("const", (cell_weight * const).sum())

    @property
    def n_cells(self):
        return self.vis.shape[0]

    def chi2(self, model):
        """|V - M|^2 / (2 s^2) per cell, (B, n_cells) float64 (1 per cell for Gaussian noise of scale s)."""
        r = self.vis - model.to(torch.complex128)
        return (r.real ** 2 + r.imag ** 2) / (2.0 * self.sigma ** 2)

    def forward(self, model):
        """log L = sum_c w_c l_c (B,) [nats] of the (B, n_cells) (or (n_cells,)) complex model."""
        q = 2.0 * self.chi2(model)     # |V - M|^2 / s^2
        w = self.cell_weight
        if self.kind == "student_t":
            return -0.5 * (w * (self.nu + 2.0) * torch.log1p(q / self.nu)).sum(-1) + self.const
        return -0.5 * (w * q).sum(-1) / self.sigma_scale ** 2 + self.const

    def whitened_residuals(self, model):
        """Residuals whose J^T J is the expected Fisher information of this likelihood, (..., 2 n_cells).

        Gaussian: (M - V) / (k s) per component. Student-t: (M - V) / s x sqrt((nu + 2) / (nu + 4)),
        the expected information of a bivariate-t location (seed paper appendix C.1 applies to it
        unchanged). Both times ``sqrt(cell_weight)``.
        """
        r = (model.to(torch.complex128) - self.vis)
        w = self.residual_weights()
        return torch.cat([r.real * w, r.imag * w], dim=-1)

    def residual_weights(self):
        """Per-cell whitening weights (n_cells,) [1/Jy] of :meth:`whitened_residuals` (``sqrt(w_c)`` included)."""
        if self.kind == "student_t":
            return torch.sqrt(self.cell_weight * (self.nu + 2.0) / (self.nu + 4.0)) / self.sigma
        return torch.sqrt(self.cell_weight) / (self.sigma_scale * self.sigma)
