"""``nuker-mge fit``: a configuration in, a black-hole mass (and everything behind it) out.

The stages, each a call into one module (seed paper sections 2.2-2.3, appendix C):

1. data: the observation ``.npz`` (observation.py), gridded onto the model's uv grid with a
   Kaiser-Bessel window and a per-cell noise estimate (dynamics/gridder.py);
2. model: Table-1 parameters -> Nuker MGE -> v_c -> gas cube -> primary beam -> the exact
   window average of each usable cell (model/forward.py, dynamics/visibilities.GriddedModel);
3. likelihood (model/likelihood.py) and uniform priors through a sigmoid bijection
   (inference/parameters.py);
4. MAP: starts (the prior midpoint and prior draws) screened one parameter at a time across the
   prior box, then Adam and L-BFGS (inference/optimize.py);
5. the empirical Fisher matrix at the MAP as the first mass matrix (inference/fisher.py);
6. the sampler (``[sampler] kind``), with atomic checkpoints and bitwise resume:
   ``"nuts"`` (default): the No-U-Turn sampler started at the Fisher covariance, warm-up, then
   blocks of draws until R-hat <= 1.01 and bulk and tail ESS >= 400 (or a draw or time limit;
   sampling/nuts.py); ``"mala"``: the seed paper's appendix C, burn-in stages that recompute the
   Fisher matrix at the best point so far, a step-size stage aiming at acceptance 0.574, then
   sampling (sampling/mala.py);
7. results: posterior.nc (ArviZ), summary.json, figures (results.py, plots.py), and the verdict:
   one line saying whether the chains converged (a ``warning:`` line when not, also in
   ``summary["warnings"]``; ``nuker-mge fit --strict`` exits with status 3 then).

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).

Its length (~750 lines) is the fit's one-way chain (problem, MAP, Fisher matrix, sampler, verdict,
results) kept together so that the order of the steps reads top to bottom.
"""

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .._files import atomic_write
from .._warnings import FitWarning, log_warning
from ..dynamics.coords import SkyGrid
from ..dynamics.gridder import GriddedVis, grid_visibilities
from ..dynamics.visibilities import GriddedModel, alma_pb_fwhm_arcsec
from ..inference.fisher import FisherResult, fisher_covariance, fisher_from_jacobian
from ..inference.mala import MALASchedule, run_mala
from ..inference.optimize import find_map, screen_starts
from ..inference.parameters import ParameterSpace
from ..model.cells import CellModel
from ..model.forward import NukerDiscModel
from ..model.likelihood import GriddedLikelihood
from ..observation import load_observation
from .config import FitConfig, resolve_data_priors
from .rundir import RunDir

__all__ = ["FitProblem", "ImageGridding", "build_problem", "map_starts", "fit_map", "subpixel_warning",
           "discretisation_shift",
           "mala_schedule", "nuts_settings", "run_sampler", "sampler_messages", "run_fit", "FitWarning"]


@dataclass(frozen=True)
class ImageGridding:
    """The ``gridded`` of an image-cube fit: its uv grid and the cells' report (a visibility fit has
    the gridder's :class:`~nuker_mge_plugin.dynamics.gridder.GriddedVis`, which has both too)."""

    grid: object
    report: dict


@dataclass
class FitProblem:
    """Everything a fit evaluates: data on the cells, the forward model, likelihood and priors.

    ``cells`` follows the :class:`~nuker_mge_plugin.model.cells.CellModel` protocol (visibility
    cells or the Fourier modes of an image cube); ``gridded`` is the gridder's ``GriddedVis`` or an
    :class:`ImageGridding`.
    """

    config: FitConfig
    observation: dict
    gridded: GriddedVis | ImageGridding
    cells: CellModel
    model: NukerDiscModel
    likelihood: GriddedLikelihood
    space: ParameterSpace
    truth: dict

    # ------------------------------------------------------------ densities in the sampler's space
    def params(self, z):
        """All 15 Table-1 parameters as (B,) tensors for unconstrained ``z`` (B, d)."""
        return self.space.unconstrained_dict(z)

    def model_cells(self, z):
        """Complex model (B, n_cells) [Jy] at unconstrained ``z`` (B, d)."""
        return self.model(self.params(z))

    def log_prob(self, z):
        """Log-posterior (B,) [nats] in the unconstrained space (log-Jacobian included)."""
        return self.likelihood(self.model_cells(z)) + self.space.log_prior_unconstrained(z)

    def logp_and_grad(self, z):
        """``(logp (C,), grad (C, d))`` for MALA, one batched forward and backward."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            lp = self.log_prob(z)
            (grad,) = torch.autograd.grad(lp.sum(), z)
        return lp.detach(), grad

    # ------------------------------------------------------------ densities in the prior box
    def box_to_theta(self, u):
        """Parameters [their units] (B, d) at box coordinates ``u`` (B, d) in [0, 1]: ``low + u (high - low)``."""
        lo, hi = self.space.low.to(u), self.space.high.to(u)
        return lo + u * (hi - lo)

    def theta_to_box(self, theta):
        """Box coordinates ``(theta - low) / (high - low)`` (B, d) of parameters ``theta`` (B, d)."""
        lo, hi = self.space.low.to(theta), self.space.high.to(theta)
        return (theta - lo) / (hi - lo)

    def log_prob_box(self, u):
        """Log-posterior (B,) [nats] at box coordinates ``u`` (B, d) in [0, 1], up to a constant: the
        uniform priors are flat there, so it is the log-likelihood (no Jacobian)."""
        return self.likelihood(self.model(self.space.to_dict(self.box_to_theta(u))))

    def logp_and_grad_box(self, u):
        """``(logp (C,), grad (C, d))`` in box coordinates, one batched forward and backward."""
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            lp = self.log_prob_box(u)
            (grad,) = torch.autograd.grad(lp.sum(), u)
        return lp.detach(), grad

    def residuals(self, z):
        """Whitened residuals (2 n_cells,) at one point ``z`` (d,): the Fisher matrix's J^T J."""
        return self.likelihood.whitened_residuals(self.model_cells(z.unsqueeze(0)))[0]

    def chi2_per_cell(self, z):
        """Mean |V - M|^2 / (2 s^2) over the cells at one point ``z`` (d,)."""
        with torch.no_grad():
            return float(self.likelihood.chi2(self.model_cells(z.unsqueeze(0)))[0].mean())

    def sky_tangents(self, z):
        """d(sky cube)/dz_k, (d, n_x, n_y, n_chan) [Jy/pixel per unit z], primary beam applied, at ``z`` (d,)."""
        import torch.autograd.forward_ad as fwad

        z = z.detach()
        eye = torch.eye(z.numel(), dtype=z.dtype, device=z.device)
        tangents = []
        for k in range(z.numel()):
            with fwad.dual_level():
                cube = self.model.sky_cube(self.params(fwad.make_dual(z, eye[k]).unsqueeze(0)))[0]
                tangents.append(fwad.unpack_dual(cube).tangent)
        return self.model.apply_primary_beam(torch.stack(tangents))

    def jacobian(self, z):
        """J = d(whitened residuals)/dz, (2 n_cells, d), at one point ``z`` (d,), by forward-mode autodiff.

        The cell model is linear in the sky cube, so J's column k is the cell model applied to the
        cube's tangent along e_k: d forward-mode passes through Nuker -> MGE -> v_c -> cube (forward-mode AD),
        then ONE batched cell-model call on the d tangent cubes. (The cell operator's hand-written
        adjoint is first-order, so the double-backward route of reverse mode is not open.)
        """
        tangents = self.sky_tangents(z)
        with torch.no_grad():
            dm = self.model.cell_model(tangents)                          # (d, n_cells) complex
            w = self.likelihood.residual_weights()                        # (n_cells,)
            return torch.cat([dm.real * w, dm.imag * w], dim=-1).T.to(torch.float64)

    def fisher(self, z):
        """Empirical Fisher matrix and mass matrix at ``z`` (d,) (seed paper appendix C.1).

        F = J^T J of the whitened residuals, ridge lambda = max(ridge_frac median(diag F),
        ridge_min), plus the curvature of the logistic prior of the bijection (so directions the data
        do not constrain get the prior's width rather than 1/lambda); covariance = F~^-1.
        """
        s = self.config.sampler
        z = z.detach()
        J = self.jacobian(z)
        F = fisher_from_jacobian(J)
        P, cov, L, lam = fisher_covariance(F, ridge_frac=s.ridge_frac, ridge_min=s.ridge_min,
                                           prior_precision=self.space.prior_precision_unconstrained(z[None])[0])
        with torch.no_grad():
            chi2 = float((self.residuals(z) ** 2).sum())
        return FisherResult(z=z, fisher=F, ridge=lam, precision=P, covariance=cov, cholesky=L, chi2=chi2,
                            n_residuals=J.shape[0])


def build_problem(cfg, *, progress=True):
    """Read and grid the data, and build the model, likelihood and priors of a :class:`FitConfig`.

    A FITS image cube (``cfg.data.is_image``) is read by ``image.read_image_cube`` and fitted on the
    Fourier modes of its pixels (``image.BeamFourierCells``); a visibility ``.npz`` is gridded.
    Either way the cells (a :class:`~nuker_mge_plugin.model.cells.CellModel`) then get the same
    likelihood, disc model and priors (:func:`_problem_on_cells`).
    """
    if cfg.data.is_image:
        return _build_image_problem(cfg)
    obs = load_observation(cfg.data.path)
    device = torch.device(cfg.sampler.device)
    grid = SkyGrid(cfg.model.n_pix, cfg.model.n_pix, cfg.model.cell_arcsec)
    n_chan = obs["chan_freq"].size
    gv = grid_visibilities(obs["u"], obs["v"], obs["vis"], obs["weight"], obs["chan"], grid, n_chan,
                           **cfg.gridding.kwargs())
    pb = grid.primary_beam(alma_pb_fwhm_arcsec(obs["chan_freq"])) if cfg.model.primary_beam else None
    select = gv.halfwidth <= cfg.gridding.width / 2 + 1e-9 if cfg.gridding.mask_grown else None
    cells = GriddedModel(gv, grid, pb=pb, select=select).to(device)
    cell_weight = 1.0 / cells.overlap if cfg.likelihood.overlap_weights else None  # shared samples once
    return _problem_on_cells(cfg, obs, gv, cells, grid, obs["chan_freq"], cfg.data.rest_freq_hz,
                             cell_weight=cell_weight, truth=dict(obs["meta"].get("truth", {})))


def _build_image_problem(cfg):
    """:func:`build_problem` for a cleaned FITS cube (nuker_mge_plugin/image/)."""
    from ..image import BeamFourierCells, read_image_cube

    d = cfg.data
    cube = read_image_cube(d.path, n_pix=cfg.model.n_pix, rest_freq_hz=d.rest_freq_hz,
                           centre_radec_deg=d.centre_radec_deg, rms_jy_beam=d.rms_jy_beam,
                           linefree_channels=d.linefree_channels, pb_path=d.pb_path,
                           velocity_convention=d.velocity_convention)
    grid = SkyGrid(cube.n_pix, cube.n_pix, cube.cell_arcsec)
    cells = BeamFourierCells(cube, grid, threshold=d.fourier_threshold, noise=d.noise).to(cfg.sampler.device)
    meta = dict(kind="image", phase_centre_ra_deg=cube.ref_ra_deg, phase_centre_dec_deg=cube.ref_dec_deg,
                beam_fwhm_arcsec=list(cube.beam_fwhm_arcsec), beam_pa_deg=cube.beam_pa_deg,
                spec_frame=cube.spec_frame)
    obs = dict(chan_freq=cube.chan_freq_hz, meta=meta, image=cube)
    return _problem_on_cells(cfg, obs, ImageGridding(grid=grid.uv, report=cells.report), cells, grid,
                             cube.chan_freq_hz, cube.rest_freq_hz, primary_beam=cube.pb)


def _problem_on_cells(cfg, obs, gridded, cells, grid, chan_freq_hz, rest_freq_hz, *, cell_weight=None,
                      primary_beam=None, truth=None):
    """The likelihood of ``cells``, the disc model on ``grid`` and the priors: a :class:`FitProblem`."""
    dtype = torch.float64 if cfg.sampler.dtype == "float64" else torch.float32
    device = torch.device(cfg.sampler.device)
    like = GriddedLikelihood(cells.vis, cells.sigma, cells.n_eff, kind=cfg.likelihood.kind,
                             sigma_scale=cfg.likelihood.sigma_scale or 2.0, cell_weight=cell_weight).to(device)
    model = NukerDiscModel(grid, chan_freq_hz, rest_freq_hz, cfg.galaxy.distance_mpc, cell_model=cells,
                           primary_beam=primary_beam, backend=cfg.model.backend, nsub=cfg.model.nsub, dtype=dtype,
                           device=device, surface_brightness=cfg.model.surface_brightness)
    cfg = resolve_data_priors(cfg, chan_freq_hz=chan_freq_hz, field_arcsec=grid.n_x * grid.cell_arcsec)
    return FitProblem(cfg, obs, gridded, cells, model, like, ParameterSpace(cfg.priors.spec()), truth or {})


def map_starts(space, n, generator):
    """``n`` MAP starts [parameter units], (n, n_free) float64: the prior midpoint, then prior draws."""
    mid = ((space.low + space.high) / 2)[None]
    if n == 1:
        return mid
    return torch.cat([mid, space.sample_prior(n - 1, generator).to(mid.dtype)])


def fit_map(prob, generator, *, progress=True, log=print):
    """The MAP of a :class:`FitProblem` by its ``[map]`` configuration: screened starts, Adam, L-BFGS.

    Returns a JSON-able dict: ``z`` (unconstrained), ``log_prob`` [nats], ``chi2_per_cell``,
    ``theta`` (name -> value [parameter units]), ``n_evals`` (screen + optimiser) and ``wall_time_s``.
    """
    cfg, space = prob.config, prob.space
    dev, dt = prob.model.device, prob.model.dtype
    t_map = time.perf_counter()
    theta0 = map_starts(space, cfg.map.n_starts, generator).to(dev, dt)
    n_screen = 0
    if cfg.map.screen_sweeps > 0:
        theta0, lp_screen, n_screen = screen_starts(prob.log_prob, space, theta0, n_grid=cfg.map.screen_grid,
                                                    sweeps=cfg.map.screen_sweeps, progress=progress)
        log(f"MAP screen: best log-posterior {float(lp_screen.max()):.6g} ({n_screen} evaluations)")
    m = find_map(prob.log_prob, space.unconstrain(theta0, check=False), adam_steps=cfg.map.adam_steps,
                 adam_lr=cfg.map.adam_lr, lbfgs_steps=cfg.map.lbfgs_steps, progress=progress)
    z_map = m["z"]
    return dict(z=z_map.tolist(), log_prob=m["log_prob"], chi2_per_cell=prob.chi2_per_cell(z_map),
                theta={k: float(v) for k, v in zip(space.free_names, space.constrain(z_map[None])[0])},
                n_evals=m["n_evals"] + n_screen, wall_time_s=time.perf_counter() - t_map)


#: Largest deprojected sub-pixel ``cell / nsub / cos(inc)`` [scale lengths] the fit accepts without a
#: warning. On the M5 "edge" mock (inc 84, scale length 0.8", 0.1" pixels) nsub = 2 (0.60 scale
#: lengths) put the truth's log-posterior 41 nats below nsub = 4 (0.30), and nsub = 8 gained 2 more.
MAX_SUBPIXEL_SCALE_LENGTHS = 0.3


def subpixel_warning(cfg, theta):
    """A one-line warning when the cube's sub-pixels are too coarse for the disc at ``theta``, else None.

    Near edge-on the disc's surface brightness changes across a sub-pixel of side ``cell / nsub``
    [arcsec] as over ``cell / nsub / cos(inc)`` of its radius (dynamics/cube.py); past
    :data:`MAX_SUBPIXEL_SCALE_LENGTHS` scale lengths the cube's sub-pixel sampling biases the
    inclination and, through it, M_BH. ``theta`` maps parameter names to values (free or fixed).
    """
    inc, h = float(theta["inclination"]), float(theta["scale_length"])
    cell, nsub = cfg.model.cell_arcsec, cfg.model.nsub
    size = cell / nsub / max(math.cos(math.radians(inc)), 1e-6)
    if size <= MAX_SUBPIXEL_SCALE_LENGTHS * h:
        return None
    need = math.ceil(cell / (MAX_SUBPIXEL_SCALE_LENGTHS * h * max(math.cos(math.radians(inc)), 1e-6)))
    return (f"warning: at the MAP (inclination {inc:.1f} deg, scale_length {h:.3g}\") a sub-pixel of the cube "
            f"spans {size:.3g}\" of the disc's radius, {size / h:.2f} scale lengths (> {MAX_SUBPIXEL_SCALE_LENGTHS}): "
            f"set model.nsub >= {need} (now {nsub}) or a smaller model.cell_arcsec, or inclination and M_BH "
            f"may be biased")


#: Predicted MAP shift [posterior sigmas] from doubling the cube's sampling above which the fit
#: warns (:func:`discretisation_shift`). The shift it predicts is what is *left* at nsub; the
#: continuum limit may be further still (on a noise-free copy of the M5 "sparse" mock nsub 3 -> 6
#: moved log10 M_BH by 0.0085 dex, and nsub 6 was still 0.0045 dex from the truth).
MAX_DISCRETISATION_SHIFT_SIGMA = 0.5


def posterior_curvature(prob, z, covariance, *, rel_step=0.1, chunk=4):
    """The log-posterior's Hessian at ``z`` by central differences of its gradient [1/z^2].

    Steps of ``rel_step`` Fisher sigmas ``sqrt(C_kk)`` along each axis, ``chunk`` points per batched
    gradient call (2 d points in all). The forward model's gridding has no double backward, and
    the Fisher matrix is the *expected* curvature: on weakly constrained data (the calibration
    mocks) it overstates the posterior's widths by up to 10x in variance.

    Parameters
    ----------
    prob : FitProblem
    z : (d,) tensor
        The point, in the sampler's unconstrained space.
    covariance : (d, d) tensor
        The Fisher covariance at ``z`` [z^2]: the scale of the differencing steps.
    rel_step : float
        Differencing step [Fisher sigmas].
    chunk : int
        Points per batched gradient call.

    Returns
    -------
    (d, d) float64 tensor
        The symmetrised Hessian of ``log p`` [1/z^2].
    """
    z = z.detach().to(prob.model.dtype)
    d = z.numel()
    h = rel_step * torch.sqrt(torch.diagonal(torch.as_tensor(covariance, dtype=torch.float64))).to(z)
    pts = torch.cat([z + torch.diag(h), z - torch.diag(h)])
    g = torch.cat([prob.logp_and_grad(pts[i:i + chunk])[1] for i in range(0, 2 * d, chunk)]).to(torch.float64)
    H = (g[:d] - g[d:]).T / (2.0 * h.to(torch.float64))
    return 0.5 * (H + H.T)


def discretisation_shift(prob, z, covariance, factor=2):
    """How far the MAP would move if the cube sampled every pixel ``factor`` times finer.

    One Newton step of the finer model's log-posterior from ``z``:
    ``dz = (-H)^-1 (grad log p_fine(z) - grad log p(z))``, with ``H`` the posterior's Hessian
    (:func:`posterior_curvature`; the Fisher covariance if that is not negative definite). The
    priors cancel, and subtracting the gradient at the current sampling keeps an unconverged
    MAP's own gradient out of the step: it is the linear-response bias of the MAP to the model's
    discretisation error. In posterior sigmas ``dz_i / sqrt(C_ii)`` it does not depend on the
    bijection.

    Parameters
    ----------
    prob : FitProblem
    z : (d,) tensor
        The MAP in the sampler's unconstrained space.
    covariance : (d, d) tensor
        The Fisher covariance at ``z`` (``FisherResult.covariance``) [z^2]: the differencing
        steps' scale, and the fallback curvature.
    factor : int
        Refinement of ``nsub`` and ``nsub_centre`` (>= 2).

    Returns
    -------
    dict
        ``nsub``, ``nsub_check`` (the finer ``nsub``), ``curvature`` ("hessian" or "fisher"),
        ``shift`` {name: change in the parameter's own unit}, ``shift_sigma`` {name: change in
        posterior sigmas}, ``worst`` (the parameter of the largest ``|shift_sigma|``) and
        ``max_abs_shift_sigma``.
    """
    fine = prob.model.refined(factor)
    z = z.detach().to(prob.model.dtype)

    def grad(model):
        with torch.enable_grad():
            zz = z.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(prob.likelihood(model(prob.params(zz[None])))[0], zz)
        return g.to(torch.float64)

    C = torch.as_tensor(covariance, dtype=torch.float64, device=z.device)
    curvature = "fisher"
    if z.numel():
        precision = -posterior_curvature(prob, z, C)
        L, info = torch.linalg.cholesky_ex(precision)
        if int(info) == 0:
            C, curvature = torch.cholesky_inverse(L), "hessian"
    dz = C @ (grad(fine) - grad(prob.model))
    sig = dz / torch.sqrt(torch.diagonal(C))
    names = prob.space.free_names
    with torch.no_grad():
        theta = prob.space.constrain(torch.stack([z, z + dz.to(z.dtype)]))
    shift = {n: float(theta[1, i] - theta[0, i]) for i, n in enumerate(names)}
    shift_sigma = {n: float(sig[i]) for i, n in enumerate(names)}
    worst = max(names, key=lambda n: abs(shift_sigma[n])) if names else None
    return dict(nsub=prob.model.cube.nsub, nsub_check=fine.cube.nsub, curvature=curvature, shift=shift,
                shift_sigma=shift_sigma, worst=worst, max_abs_shift_sigma=abs(shift_sigma[worst]) if worst else 0.0)


def discretisation_message(check):
    """One line on :func:`discretisation_shift`'s result: a warning past
    :data:`MAX_DISCRETISATION_SHIFT_SIGMA`, else an information line."""
    w, nsub, fine = check["worst"], check["nsub"], check["nsub_check"]
    if w is None:
        return "sub-pixel check: no free parameter"
    part = f"{w} {check['shift'][w]:+.3g} ({check['shift_sigma'][w]:+.2f} sigma)"
    if "log10_mbh" in check["shift"] and w != "log10_mbh":
        part += (f", log10_mbh {check['shift']['log10_mbh']:+.3g} "
                 f"({check['shift_sigma']['log10_mbh']:+.2f} sigma)")
    if check["max_abs_shift_sigma"] <= MAX_DISCRETISATION_SHIFT_SIGMA:
        return f"sub-pixel check: nsub {nsub} -> {fine} would move the MAP by at most {part}"
    return (f"warning: the cube's sub-pixel sampling biases this fit: nsub {nsub} -> {fine} would move the MAP "
            f"by {part} (> {MAX_DISCRETISATION_SHIFT_SIGMA} sigma); set model.nsub >= {fine} or a smaller "
            f"model.cell_arcsec")


def mala_schedule(s):
    """The :class:`~.mala.MALASchedule` of a ``[sampler]`` section (:class:`~.config.SamplerConfig`).

    Parameters
    ----------
    s : SamplerConfig
        Its MALA keys: ``burn_in_stages`` x ``burn_in_steps`` burn-in steps, the step sizes tried
        (``step_sizes``, or ``n_step_trials`` of them log-spaced in [0.5, 2] times the adapted
        step [unconstrained units]) for ``step_trial_steps`` steps each, ``draws``, ``thin``,
        ``target_acceptance``, ``mass_matrix``.

    Returns
    -------
    MALASchedule
    """
    if s.step_sizes:
        steps = tuple(s.step_sizes)
    else:
        steps = tuple(float(x) for x in np.geomspace(0.5, 2.0, s.n_step_trials))
    return MALASchedule(burn_in=(s.burn_in_steps,) * s.burn_in_stages, step_sizes=steps,
                        step_size_steps=s.step_trial_steps, n_draws=s.draws, thin=s.thin,
                        target_accept=s.target_acceptance, adapt_mass_matrix=s.mass_matrix == "adaptive")


#: The old private name, kept for scripts written against it (use :func:`mala_schedule`).
_schedule = mala_schedule


def nuts_settings(s):
    """The ``sampling.nuts.NUTSSettings`` of a ``[sampler]`` section with ``kind = "nuts"``.

    Parameters
    ----------
    s : SamplerConfig
        Its NUTS keys: ``warmup`` [iterations per chain], ``draws`` (the first block) [draws per
        chain], ``target_acceptance``, ``max_tree_depth`` [doublings], ``until_converged``,
        ``block_draws``, ``max_draws`` [draws per chain], ``max_wall_s`` [s] (0 = no limit).

    Returns
    -------
    NUTSSettings
    """
    from ..sampling.nuts import NUTSSettings
    return NUTSSettings(warmup=s.warmup, draws=s.draws, target_accept=s.target_acceptance,
                        max_tree_depth=s.max_tree_depth, until_converged=s.until_converged,
                        block_draws=s.block_draws, max_draws=s.max_draws, max_wall_s=s.max_wall_s or None)


def run_sampler(prob, z_map, fish, generator, out, *, resume=False, progress=True):
    """Run the ``[sampler]`` of a :class:`FitProblem` from its MAP: the chains, not the products.

    The chains start around the MAP, dispersed by half the Fisher width (R-hat needs dispersed
    starts), and run the configured kind: ``"nuts"`` in the prior box (``space = "box"``, the
    Fisher covariance carried over by du/dz = u (1 - u)) or in the logit coordinates, or
    ``"mala"`` (seed paper appendix C).

    Parameters
    ----------
    prob : FitProblem
    z_map : (d,) tensor
        The MAP in the unconstrained space (``fit_map(...)["z"]``).
    fish : FisherResult
        ``prob.fisher(z_map)``: its covariance is the first mass matrix [unconstrained units^2].
    generator : torch.Generator
        Draws the chains' dispersion (``run_fit`` passes the one its MAP starts came from).
    out : path
        The run's directory: the checkpoints go to ``out / "chains"``.
    resume : bool
        Continue a killed run from its checkpoints (bitwise).
    progress : bool
        Show the sampler's progress bar.

    Returns
    -------
    MALAResult or HamiltonianResult
        ``draws()`` (name -> (chains, draws) [parameter units]), ``sample_stats()``, ``traces()``,
        ``n_grad_evals``, ``step_size``; NUTS also ``stopped``, ``n_divergent``, ``divergences_per_chain``.
    """
    s, space = prob.config.sampler, prob.space
    dev, dt = prob.model.device, prob.model.dtype
    xi = torch.randn((s.chains, space.n_free), generator=generator, dtype=torch.float64).to(dev, dt)
    z_start = z_map[None] + 0.5 * xi @ torch.as_tensor(fish.cholesky, dtype=dt, device=dev).T
    common = dict(transform=space.constrain, names=space.free_names, seed=s.seed, checkpoint_dir=RunDir(out).chains,
                  resume=resume,
                  checkpoint_every=s.checkpoint_every or 2 ** 62,  # 0 = never: only the finished run is written
                  progress=progress)
    mass = torch.as_tensor(fish.covariance, dtype=dt, device=dev)
    if s.kind == "mala":
        return run_mala(prob.logp_and_grad, z_start, schedule=mala_schedule(s), mass_matrix=mass,
                        mass_matrix_fn=lambda zb: prob.fisher(torch.as_tensor(zb, dtype=dt, device=dev)), **common)
    from ..sampling.nuts import run_nuts
    if s.space == "logit":
        return run_nuts(prob.logp_and_grad, z_start, settings=nuts_settings(s), mass_matrix=mass, **common)
    with torch.no_grad():
        u_start = prob.theta_to_box(space.constrain(z_start)).clamp(0.0, 1.0)
        u_map = prob.theta_to_box(space.constrain(torch.as_tensor(fish.z, dtype=dt, device=dev)[None]))[0]
    jac = (u_map * (1.0 - u_map)).to(torch.float64)
    mass_box = torch.as_tensor(fish.covariance, dtype=torch.float64, device=dev) * jac[:, None] * jac[None, :]
    mass_box = (0.5 * (mass_box + mass_box.T)).to(dt)  # exactly symmetric, whatever the model's dtype
    common["transform"] = prob.box_to_theta
    bounds = (torch.zeros(space.n_free, dtype=dt, device=dev), torch.ones(space.n_free, dtype=dt, device=dev))
    return run_nuts(prob.logp_and_grad_box, u_start, settings=nuts_settings(s), mass_matrix=mass_box, bounds=bounds,
                    **common)


def _sampler_line(s):
    """What the sampler of ``[sampler]`` will do, in one line (for the log)."""
    if s.kind == "mala":
        return (f"Fisher-MALA, {s.chains} chains: {s.burn_in_stages} x {s.burn_in_steps} burn-in steps, "
                f"{s.n_step_trials} step-size trials of {s.step_trial_steps}, {s.draws} draws per chain")
    more = (f", then blocks of {s.block_draws} until converged (at most {s.max_draws} draws per chain"
            + (f" or {s.max_wall_s:g} s" if s.max_wall_s else "") + ")") if s.until_converged else \
        " (until_converged = false: not checked for convergence while sampling)"
    where = "the prior box, reflecting off its walls" if s.space == "box" else "the priors' logit coordinates"
    return (f"NUTS, {s.chains} chains: {s.warmup} warm-up iterations, {s.draws} draws per chain{more}; "
            f"target acceptance {s.target_acceptance:g}, max tree depth {s.max_tree_depth}; in {where}")


def _stopped_text(stopped, s, n_draws):
    """Why the sampling stopped, for the warning line of an unconverged fit."""
    if stopped == "max_wall_s":
        return f"Sampling stopped at sampler.max_wall_s = {s.max_wall_s:g} s after {n_draws} draws per chain."
    if stopped == "max_draws":
        return f"Sampling stopped at sampler.max_draws = {s.max_draws} draws per chain."
    if s.kind == "nuts" and not s.until_converged:
        return f"Sampling stopped after sampler.draws = {n_draws} per chain (sampler.until_converged = false)."
    return (f"Sampling stopped after {n_draws} draws per chain (kind = \"mala\" runs its fixed schedule: raise "
            f"sampler.draws, or use kind = \"nuts\", which draws until converged).")


def sampler_messages(report, s, *, n_draws, stopped="draws", divergences_per_chain=None):
    """The verdict lines of a finished sampler run: convergence, and NUTS's divergences.

    Parameters
    ----------
    report : dict
        ``sampling.diagnostics.convergence(draws)`` of the run's draws.
    s : SamplerConfig
    n_draws : int
        Draws per chain of the run.
    stopped : str
        Why the sampling stopped: ``"converged"``, ``"max_draws"``, ``"max_wall_s"`` or
        ``"draws"`` (the configured number; MALA always).
    divergences_per_chain : sequence of int, optional
        NUTS's divergent transitions after warm-up, per chain.

    Returns
    -------
    (str or None, list of str)
        The information line of a converged run (None when not converged), and the ``warning:``
        lines: one when the chains have not converged (R-hat > 1.01 or bulk / tail ESS < 400 for
        some parameter; it names the worst and why the sampling stopped), one when there were
        divergent transitions (their count per chain).
    """
    from ..sampling.diagnostics import convergence_message

    warnings = []
    info = None
    if report["converged"]:
        info = (f"converged: {report['criteria']} (max R-hat {report['max_r_hat']:.4f}, min bulk ESS "
                f"{report['min_ess_bulk']:.0f}, min tail ESS {report['min_ess_tail']:.0f}, {n_draws} draws per chain)")
    else:
        warnings.append(f"{convergence_message(report)} {_stopped_text(stopped, s, n_draws)}")
    per = [int(x) for x in (divergences_per_chain or [])]
    if sum(per):
        warnings.append(f"warning: {sum(per)} divergent NUTS transitions after warm-up (per chain: "
                        f"{', '.join(map(str, per))}): the sampler cannot follow part of the posterior and the "
                        f"intervals may be biased; set sampler.target_acceptance closer to 1 (now "
                        f"{s.target_acceptance:g}) or reparametrise")
    return info, warnings


def run_fit(cfg, out_dir=None, *, resume=False, progress=True, log=print):
    """Run the whole fit of a :class:`FitConfig`; returns the summary dict (also ``summary.json``).

    ``summary["diagnostics"]["converged"]`` says whether the chains converged (R-hat <= 1.01, bulk
    and tail ESS >= 400 for every free parameter); the last lines logged say so too, a ``warning:``
    line when they did not (also in ``summary["warnings"]``). Every ``warning:`` line is also issued
    as a :class:`~nuker_mge_plugin.FitWarning` (Python's ``warnings``), which callers can filter.

    ``out_dir`` defaults to the configuration's ``output.dir``. With ``resume=True`` a killed run
    continues from its checkpoints (the MAP and first Fisher matrix are read back, the chains
    continue bitwise as if never stopped); without it an existing run in ``out_dir`` is an error.
    """
    t0 = time.perf_counter()
    out = Path(out_dir if out_dir is not None else cfg.output.dir)
    if cfg.sampler.threads:
        torch.set_num_threads(cfg.sampler.threads)
    prob = build_problem(cfg, progress=progress)
    out.mkdir(parents=True, exist_ok=True)  # after the data are read: a bad input leaves nothing behind
    cfg, space = prob.config, prob.space
    rep = prob.gridded.report
    if cfg.data.is_image:
        log(f"data: a {rep['n_pix']}^2 x {rep['n_chan']} cut-out of {Path(rep['file']).name} "
            f"({cfg.model.cell_arcsec:g}\" pixels, beam {rep['beam_fwhm_arcsec'][0]:.3g}\" x "
            f"{rep['beam_fwhm_arcsec'][1]:.3g}\", rms {rep['rms_jy_beam']:.3g} Jy/beam) -> "
            f"{prob.cells.n_cells} Fourier modes ({rep['n_modes_per_channel']} per channel)")
    else:
        log(f"data: {rep['n_input']} visibilities in {rep['n_chan']} channels -> {prob.cells.n_cells} usable cells "
            f"({rep['cells_grown']} with grown windows) on a {cfg.model.n_pix}^2 x {cfg.model.cell_arcsec:g}\" grid")
    log(f"free parameters ({space.n_free}): {', '.join(space.free_names)}")
    dev, dt = prob.model.device, prob.model.dtype
    gen = torch.Generator().manual_seed(cfg.sampler.seed)

    map_path = RunDir(out).map_json
    map_this_call = False
    if resume and map_path.exists():
        m = json.loads(map_path.read_text())
        z_map = torch.tensor(m["z"], dtype=dt, device=dev)
        log(f"MAP (read back): log-posterior {m['log_prob']:.6g}")
    else:
        map_this_call = True
        m = fit_map(prob, gen, progress=progress, log=log)
        z_map = torch.tensor(m["z"], dtype=dt, device=dev)
        atomic_write(map_path, lambda tmp: Path(tmp).write_text(json.dumps(m, indent=2)))
        log(f"MAP: log-posterior {m['log_prob']:.6g}, chi^2/cell {m['chi2_per_cell']:.4f} "
            f"({m['n_evals']} evaluations, {m['wall_time_s']:.0f} s)")

    fish = prob.fisher(z_map)
    check = discretisation_shift(prob, z_map, fish.covariance)
    lines = [subpixel_warning(cfg, {**space.fixed, **m["theta"]}), discretisation_message(check)]
    for line in filter(None, lines):
        log_warning(line, log)
    m = {**m, "warnings": [w for w in lines if w and w.startswith("warning")], "discretisation": check}
    log(f"sampler: {_sampler_line(cfg.sampler)}")
    t_sample = time.perf_counter()
    res = run_sampler(prob, z_map, fish, gen, out, resume=resume, progress=progress)
    # the fit's compute time across resumed calls: the MAP's (read back or made here), the sampler's
    # (its checkpoints carry what earlier calls spent) and this call's set-up and Fisher matrix
    t_sample = time.perf_counter() - t_sample
    setup = time.perf_counter() - t0 - t_sample - (m["wall_time_s"] if map_this_call else 0.0)
    wall = m["wall_time_s"] + float(res.wall_time) + setup
    return write_fit_results(prob, res, out, map_info=m, wall_time_s=wall, log=log)


def _vcirc_fn(prob, with_bh=True):
    def fn(thinned, radius_arcsec):
        theta = torch.stack([torch.as_tensor(np.asarray(thinned[n]), dtype=prob.model.dtype)
                             for n in prob.space.free_names], dim=-1).to(prob.model.device)
        with torch.no_grad():
            return prob.model.vcirc(prob.space.to_dict(theta), radius_arcsec, with_bh=with_bh).cpu().numpy()
    return fn


def _fmt(x, spec):
    """A number in ``spec``, or "n/a" for the None that summary.json holds for non-finite values."""
    return "n/a" if x is None else format(x, spec)


def write_fit_results(prob, res, out, *, map_info, wall_time_s, log=print):
    """posterior.nc, summary.json, figures, the standard products (FITS cubes, moment maps, PV
    diagram, results.ecsv); prints log10 M_BH with its 68% interval beside the truth, then the
    verdict (:func:`sampler_messages`): a line saying the chains converged, or a ``warning:`` line.

    ``res`` is the sampler's result (MALAResult, or run_nuts's HamiltonianResult: ``draws()``, ``sample_stats()``,
    ``traces()``, ``n_grad_evals``, ``n_nonfinite_total``, ``step_size``; NUTS also
    ``n_divergent``, ``divergences_per_chain``, ``stopped``). summary.json gains ``sampler``
    (kind, n_grad_evals, step_size, n_divergent, divergences_per_chain (NUTS), stopped,
    draws_per_chain) and ``warnings`` (every ``warning:`` line of the fit)."""
    from .plots import dirty_image
    from .results import write_results

    cfg, space = prob.config, prob.space
    draws = res.draws()
    radius = cfg.vcirc_radius_arcsec()
    # model at the posterior median, for the data / model / residual maps
    med = torch.as_tensor([float(np.median(draws[n])) for n in space.free_names], dtype=prob.model.dtype,
                          device=prob.model.device)
    if cfg.data.is_image:
        # the cube itself, the beam-convolved model and their difference [Jy/beam], (n_chan, ny, nx)
        with torch.no_grad():
            sky = prob.model.apply_primary_beam(prob.model.sky_cube(space.to_dict(med[None])))
            img = prob.cells.image(sky)[0].cpu().numpy().transpose(2, 1, 0)
        data = np.nan_to_num(prob.observation["image"].data.transpose(2, 1, 0), nan=0.0)
        mask = np.isfinite(prob.observation["image"].data.transpose(2, 1, 0))
        maps = dict(data=data, model=img * mask, residual=(data - img) * mask, kind="image-cube",
                    velocity_kms=prob.model.axis["vel_kms"], cell_arcsec=cfg.model.cell_arcsec)
    else:
        with torch.no_grad():
            m = prob.model(space.to_dict(med[None]))[0].cpu().numpy()
        d = prob.cells.vis.cpu().numpy()
        idx = prob.cells.cell_index.cpu().numpy()
        nu, nv = prob.gridded.grid.shape
        n_chan = prob.cells.n_chan
        w = 1.0 / prob.cells.sigma.cpu().numpy() ** 2
        maps = dict(data=dirty_image(d, idx, (nu, nv), n_chan, weights=w),
                    model=dirty_image(m, idx, (nu, nv), n_chan, weights=w),
                    residual=dirty_image(d - m, idx, (nu, nv), n_chan, weights=w),
                    velocity_kms=prob.model.axis["vel_kms"], cell_arcsec=cfg.model.cell_arcsec)
    thin = {k: np.asarray(v).reshape(-1)[:: max(1, np.asarray(v).size // 200)] for k, v in draws.items()}
    comps = dict(stars=_vcirc_fn(prob, with_bh=False)(thin, radius))
    truth = {k: v for k, v in prob.truth.items() if k in space.free_names} or None
    # the verdict before summary.json is written, so that its warnings are in it
    from ..sampling.diagnostics import convergence
    from .results import validate_draws
    report = convergence(validate_draws(draws)[0])
    n_draws = int(np.shape(next(iter(draws.values())))[1])
    stopped = str(getattr(res, "stopped", "draws"))  # MALA: its fixed number of draws
    per_chain = getattr(res, "divergences_per_chain", None)
    verdict, sampler_warnings = sampler_messages(report, cfg.sampler, n_draws=n_draws, stopped=stopped,
                                                 divergences_per_chain=per_chain)
    n_div = getattr(res, "n_divergent", None)
    sampler = dict(kind=cfg.sampler.kind, n_grad_evals=int(res.n_grad_evals), step_size=float(res.step_size),
                   n_divergent=None if n_div is None else int(n_div), stopped=stopped, draws_per_chain=n_draws)
    if per_chain is not None:
        sampler["divergences_per_chain"] = [int(x) for x in per_chain]
    extra = dict(map=map_info, gridding=prob.gridded.report, n_cells=prob.cells.n_cells,
                 likelihood=cfg.likelihood.kind, backend=cfg.model.backend, device=str(prob.model.device),
                 n_grad_evals=int(res.n_grad_evals), nonfinite_proposals=int(res.n_nonfinite_total),
                 step_size=float(res.step_size), sampler=sampler,
                 # every warning of the fit: the MAP's (sub-pixel sampling) and the sampler's
                 warnings=list((map_info or {}).get("warnings") or []) + sampler_warnings)
    paths = write_results(out, draws, res.sample_stats(), priors=space.bounds, vcirc=_vcirc_fn(prob),
                          radius_arcsec=radius, vcirc_components=comps, truth=truth, wall_time_s=wall_time_s,
                          traces=res.traces(), maps=maps, config=cfg, figures=cfg.output.figures, extra=extra,
                          vcirc_draws=cfg.output.vcirc_draws, seed=cfg.sampler.seed,
                          distance_mpc=cfg.galaxy.distance_mpc)
    s = paths["summary_dict"]
    # FITS cubes, moment maps, the major-axis PV diagram and results.ecsv (inference/products.py)
    from .products import write_products
    pmed = {k: float(v[0]) for k, v in space.to_dict(med[None]).items()}
    with torch.no_grad():
        sky = prob.model.sky_cube(space.to_dict(med[None]))[0].cpu().numpy().transpose(2, 1, 0)
    write_products(out, maps, s, model_sky=sky, pa_deg=pmed["pa"], centre_arcsec=(pmed["x"], pmed["y"]),
                   vsys_kms=pmed["systemic_velocity"], meta=prob.observation.get("meta"),
                   rest_freq_hz=cfg.data.rest_freq_hz, figures=cfg.output.figures)
    p = s["parameters"].get("log10_mbh")
    if p is not None:
        lo, hi = p["hdi_68"]
        line = (f"log10 M_BH = {p['median']:.3f} (68% HDI {lo:.3f} - {hi:.3f}), R-hat {_fmt(p['r_hat'], '.3f')}, "
                f"bulk ESS {_fmt(p['ess_bulk'], '.0f')}")
        if truth and "log10_mbh" in truth:
            line += f"; truth {truth['log10_mbh']:.3f} ({(p['median'] - truth['log10_mbh']) / p['std']:+.1f} sigma)"
        log(line)
    dg = s["diagnostics"]
    log(f"max R-hat {_fmt(dg['max_r_hat'], '.3f')}, min bulk ESS {_fmt(dg['min_ess_bulk'], '.0f')}, "
        f"acceptance {_fmt(s['acceptance'], '.3f')}, wall time {wall_time_s:.0f} s; wrote {out}")
    # the verdict last, where it is seen: one line either way (and one per further warning)
    for line in filter(None, [verdict, *sampler_warnings]):
        log_warning(line, log)
    return s
