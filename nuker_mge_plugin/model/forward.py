"""The forward model of a fit: Table-1 parameters -> model visibilities on the usable gridded cells.

One ``torch.nn.Module``, batched over a leading dimension B (the chains, or MAP starts), any device,
float32 or float64 (the Gaussian sum of v_c and the chi^2 are reduced in float64):

    (B,) parameters -> Nuker (eq. 2) -> 64-Gaussian MGE (exact or nn backend)
      -> v_c(r) of stars (vcirc_qintr, Cappellari 2020 eq. 45) + black hole
      -> thin gas disc cube (exponential surface brightness, KinMS conventions) [Jy/pixel]
      -> x primary beam -> window-averaged model of each usable gridded cell [Jy]

Velocity axis. ``systemic_velocity`` is absolute, in the radio definition and the frame of the
data: channel frequencies f_k become v_k = c (1 - f_k / f_rest) [km/s]. The cube is rendered on
those channels in increasing velocity and put back in the data's order, so channels may come in
decreasing frequency (the usual case) or increasing. Radio velocities of equally spaced
frequencies are equally spaced, which the cube needs; anything else is refused.

Parameter mapping (seed paper Table 1): beta = gamma - gamma_minus_beta; r_b = break_r [arcsec]
x pc/arcsec; Sigma_b = 10^intensity_rb [Msun/pc^2] (the projected stellar surface mass density at
the break radius seen at ``inclination``); M_BH = 10^log10_mbh [Msun]; qobs follows from qintr and
the inclination, so every point of the prior deprojects; the disc's PA, inclination and centre
(x, y) [arcsec, +x West as in KinMS] are those of the gas; ``line_broadening`` is KinMS's gasSigma
[km/s] and ``flux`` the integrated line flux [Jy km/s].

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import copy

import numpy as np
import torch

from ..backends import get_backend
from ..basis import SIGMA_GRID_PC, pc_per_arcsec
from ..constants import SURFACE_BRIGHTNESS, radio_velocity_kms
from ..dynamics.coords import SkyGrid
from ..dynamics.cube import GasCube
from ..dynamics.vcirc import VcircTable, vcirc_qintr

__all__ = ["radio_velocity_kms", "channel_axis", "NukerDiscModel", "SURFACE_BRIGHTNESS"]



def channel_axis(chan_freq_hz, rest_freq_hz):
    """The cube's view of the data's channels.

    Returns
    -------
    dict with ``vel_kms`` (n_chan,) radio velocities in the data's order, ``dv_kms`` (> 0) the
    channel width, ``v_mid_kms`` the velocity of the cube's reference (KinMS's channel centre rule:
    ascending channel i sits at v_mid + (i - n/2) dv) and ``ascending`` (bool): whether the data's
    channels already increase in velocity.
    """
    v = radio_velocity_kms(chan_freq_hz, rest_freq_hz)
    if v.ndim != 1 or v.size < 2:
        raise ValueError(f"chan_freq needs at least 2 channels, got {v.size}")
    step = np.diff(v)
    dv = float(np.mean(np.abs(step)))
    if not (np.all(np.sign(step) == np.sign(step[0])) and np.allclose(np.abs(step), dv, rtol=1e-5, atol=0)):
        raise ValueError("chan_freq must be equally spaced and monotonic (the model cube has uniform channels); "
                         f"channel widths range {np.abs(step).min():.6g}-{np.abs(step).max():.6g} km/s")
    ascending = bool(step[0] > 0)
    v_lo = float(v.min())
    return dict(vel_kms=v, dv_kms=dv, v_mid_kms=v_lo + 0.5 * v.size * dv, ascending=ascending)


class NukerDiscModel(torch.nn.Module):
    """Table-1 parameters (dict of (B,) tensors) -> sky cube and model of the usable gridded cells.

    Parameters
    ----------
    grid : SkyGrid
        The model image (pixels, cell size [arcsec]); its phase centre is the data's.
    chan_freq_hz : (n_chan,) array
        Channel centre frequencies of the data [Hz], in the data's channel order.
    rest_freq_hz : float
        Rest frequency of the line [Hz].
    distance_mpc : float
        Distance [Mpc], > 0.
    cell_model : torch.nn.Module or None
        Maps a (B, n_x, n_y, n_chan) sky cube [Jy/pixel] (primary beam applied) to the (B, n_cells)
        complex model of the usable gridded cells; None to use :meth:`sky_cube` only.
    primary_beam : (n_x, n_y) or (n_x, n_y, n_chan) tensor or None
        Primary-beam response multiplying the sky.
    backend : "exact" or "nn"
        Nuker -> MGE backend.
    nsub : int
        Sub-pixels per pixel side of the cube renderer (default 3; see ``[model] nsub`` in
        inference/config.py for what 2 costs in log10 M_BH).
    surface_brightness : "exponential" or "ring"
        Gas surface brightness: ``exp(-r / scale_length)`` (default), or the Gaussian ring
        ``exp(-(r - ring_radius)^2 / (2 scale_length^2))`` (parameter ``ring_radius`` [arcsec]).
    n_rad : int
        Nodes of the tabulated rotation curve (0 and log-spaced radii from a tenth of a pixel to
        ten times the field's half-diagonal) [arcsec].
    """

    def __init__(self, grid, chan_freq_hz, rest_freq_hz, distance_mpc, cell_model=None, primary_beam=None,
                 backend="exact", nsub=3, n_rad=128, dtype=torch.float64, device="cpu",
                 surface_brightness="exponential"):
        super().__init__()
        if surface_brightness not in SURFACE_BRIGHTNESS:
            raise ValueError(f"surface_brightness = {surface_brightness!r} is invalid: choose one of "
                             f"{', '.join(map(repr, SURFACE_BRIGHTNESS))}")
        self.surface_brightness = surface_brightness
        if not isinstance(grid, SkyGrid):
            raise TypeError("grid must be a SkyGrid")
        if not (np.isfinite(distance_mpc) and distance_mpc > 0):
            raise ValueError(f"distance_mpc = {distance_mpc!r} is invalid: it must be finite and > 0 [Mpc]")
        self.grid = grid
        self.backend = get_backend(backend)
        self.distance_mpc = float(distance_mpc)
        self.axis = channel_axis(chan_freq_hz, rest_freq_hz)
        self.n_chan = self.axis["vel_kms"].size
        self.dtype, self.device = dtype, torch.device(device)
        n_x, n_y, cell = grid.n_x, grid.n_y, grid.cell_arcsec
        self.cube = GasCube(n_x * cell, n_y * cell, self.n_chan * self.axis["dv_kms"], cell, self.axis["dv_kms"],
                            None, nsub=nsub, cleanOut=True, check=False)
        self.cell_model = cell_model
        # a buffer (or None): it moves with .to(device) like the rest of the model
        self.register_buffer("primary_beam", None if primary_beam is None else
                             torch.as_tensor(primary_beam, dtype=dtype, device=self.device))
        half_diag = 0.5 * cell * float(np.hypot(n_x, n_y))
        rad = np.concatenate([[0.0], np.geomspace(0.1 * cell, 10.0 * half_diag, n_rad - 1)])
        self.register_buffer("rad_arcsec", torch.as_tensor(rad, dtype=dtype, device=self.device))
        self.register_buffer("sigma_arcsec", torch.as_tensor(SIGMA_GRID_PC / pc_per_arcsec(self.distance_mpc),
                                                             dtype=dtype, device=self.device))
        # v_c at the rotation curve's nodes: its model-independent table built once, a buffer of ours
        self.vcirc_table = VcircTable(self.sigma_arcsec, self.rad_arcsec, self.distance_mpc)

    def refined(self, factor=2):
        """This model with every pixel of the cube sampled ``factor`` times finer per side.

        ``nsub`` and the centre's ``nsub_centre`` are both multiplied by ``factor``; the cell model,
        primary beam and rotation-curve nodes are shared, not rebuilt. What the fit uses to measure
        how much its MAP still depends on the cube's sub-pixel sampling (fit.discretisation_shift).
        """
        if isinstance(factor, bool) or int(factor) != factor or factor < 2:
            raise ValueError(f"factor = {factor!r} is invalid: it must be an integer >= 2")
        c = self.cube
        fine = copy.copy(self)
        fine._modules = dict(self._modules)  # a shallow copy shares the submodule dict: keep ours intact
        fine.cube = GasCube(c.xs, c.ys, c.vs, c.cellSize, c.dv, None, nsub=c.nsub * int(factor), cleanOut=True,
                            check=False, nsub_centre=c.nsub_centre * int(factor), centre_pix=c.centre_pix,
                            subpixel_spread=c.subpixel_spread)
        return fine

    def mge(self, p):
        """Peak surface densities surf_pc (B, 64) [Msun/pc^2] of the Nuker MGE on ``sigma_arcsec``."""
        gamma = p["gamma"]
        beta = gamma - p["gamma_minus_beta"]
        r_b_pc = p["break_r"] * pc_per_arcsec(self.distance_mpc)
        amps = self.backend.amplitudes(p["alpha"], beta, gamma, r_b_pc, dtype=self.dtype, check=False)
        return amps * torch.pow(10.0, p["intensity_rb"]).unsqueeze(-1)

    def vcirc(self, p, rad_arcsec=None, with_bh=True):
        """Circular velocity (B, R) [km/s] of stars (+ black hole) at ``rad_arcsec`` (default the model's nodes)."""
        mbh = torch.pow(10.0, p["log10_mbh"]) if with_bh else torch.zeros_like(p["log10_mbh"])
        if rad_arcsec is None:
            return self.vcirc_table(self.mge(p), p["qintr"].unsqueeze(-1), p["inclination"], mbh)
        rad = torch.as_tensor(rad_arcsec, dtype=self.dtype, device=self.device)
        return vcirc_qintr(self.mge(p), self.sigma_arcsec, p["qintr"].unsqueeze(-1), p["inclination"], mbh,
                           self.distance_mpc, rad)

    def sky_cube(self, p):
        """Model sky (B, n_x, n_y, n_chan) [Jy/pixel] in the data's channel order, no primary beam."""
        vc = self.vcirc(p)
        h = p["scale_length"].reshape(-1, 1)
        if self.surface_brightness == "ring":
            r0 = p["ring_radius"].reshape(-1, 1)
            sb = lambda r: torch.exp(-0.5 * ((r - r0) / h) ** 2)  # noqa: E731
        else:
            sb = lambda r: torch.exp(-r / h)  # noqa: E731
        cube = self.cube.model_cube(
            p["inclination"], p["pa"], gasSigma=p["line_broadening"], sbProf=sb,
            velRad=self.rad_arcsec, velProf=vc, intFlux=p["flux"],
            phaseCent=torch.stack([p["x"], p["y"]], dim=-1),
            vOffset=p["systemic_velocity"] - self.axis["v_mid_kms"], batch=True)
        return cube if self.axis["ascending"] else cube.flip(-1)

    def apply_primary_beam(self, cube):
        """``cube`` (..., n_x, n_y, n_chan) [Jy/pixel] times the primary beam (unchanged without one)."""
        pb = self.primary_beam
        if pb is None:
            return cube
        return cube * (pb.unsqueeze(-1) if pb.ndim == 2 else pb)

    def forward(self, p):
        """Complex model (B, n_cells) [Jy] of the usable gridded cells for the parameters ``p``."""
        cube = self.apply_primary_beam(self.sky_cube(p))
        if self.cell_model is None:
            raise RuntimeError("NukerDiscModel was built without a cell_model: only sky_cube() is available")
        return self.cell_model(cube)
