"""The image-plane likelihood: a cleaned cube fitted in the Fourier domain of its own pixels.

Why the Fourier domain. Pixels of a cleaned cube are correlated over a beam, so a per-pixel
chi^2 over-counts the information by about the beam area in pixels (kinms_fitter rescales its
chi^2 by a factor for this). Write the image as the sky convolved with the restoring beam ``b``
(peak 1, so Jy/pixel -> Jy/beam) plus noise that is white noise convolved with the same beam:

    d = b * S + b * w,   pixel rms sigma_pix^2 = sigma_w^2 sum(b^2).

Then the discrete Fourier transform over the ``N = n_pix^2`` pixels of each channel is diagonal:

    D_k = B_k S_k + N_k,   E|N_k|^2 = N sigma_pix^2 |B_k|^2 / sum(b^2),

with ``B = DFT(b)`` and independent modes ``k`` on half the plane (the other half is their complex
conjugate). Each mode is a "cell" with a known standard error per real/imaginary component,
``s_k = sigma_pix |B_k| sqrt(N / (2 sum b^2))``, and the gridded-visibility likelihoods
(inference/likelihood.py) apply unchanged: the correlation of neighbouring pixels is accounted for
exactly, not by a rescaling. Only modes where the beam keeps at least ``threshold`` of its peak
response are used: beyond them a cleaned image holds little but clean's own extrapolation and the
float32 rounding of the file, which the noise model above does not describe.

Real cleaned cubes are not quite that: their noise is the residual image's, correlated by the
*dirty* beam, which carries more power than the restoring beam wherever the uv coverage reaches
beyond the restoring beam's transfer (on the CARMA cube of NGC 4324, 2.3 times the predicted power
on the modes above 5% response). So by default (``noise="empirical"``) the noise power of each mode
is measured in the line-free channels, ``P_k = <|D_k|^2>``; its ratio to the restoring-beam model
(flat where that model holds, slowly varying where it does not) is averaged over a ``(2 w + 1)^2``
box of neighbouring fitted modes (``w = smooth_cells``, 2 by default) to tame its scatter; then
``s_k^2 = ratio_k E|N_k|^2 / 2``, and the Student-t likelihood takes ``n_eff = n_linefree
(2 w + 1)^2`` samples behind it.
``noise="beam"`` uses the restoring-beam model above (the only choice when the rms is given).

Masked (NaN) pixels are set to zero in the data and the model image is masked the same way before
its transform; their modes are then slightly correlated and the noise per mode is scaled by the
unmasked fraction of the channel (an approximation, exact without masked pixels).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..constants import fwhm_to_sigma
from ..dynamics.coords import SkyGrid

__all__ = ["beam_image", "BeamFourierCells", "DEFAULT_THRESHOLD", "NOISE_MODELS"]

#: Noise models of :class:`BeamFourierCells`.
NOISE_MODELS = ("empirical", "beam")

#: Smallest beam response |B_k| / B_0 of a mode that is fitted (the ``[data] fourier_threshold`` default).
DEFAULT_THRESHOLD = 0.05


def beam_image(grid, bmaj_arcsec, bmin_arcsec, bpa_deg, *, wrapped=False):
    """The restoring beam (peak 1) sampled on ``grid``'s pixels, (n_x, n_y) float64.

    ``bpa_deg`` is the major axis's position angle, North through East; +x is West, +y North
    (``dynamics.coords``). Centred on the reference pixel, or, with ``wrapped=True``, on pixel
    (0, 0) with negative offsets wrapped around (the layout a circular convolution by FFT needs).
    """
    if not (bmaj_arcsec > 0 and bmin_arcsec > 0 and math.isfinite(bpa_deg)):
        raise ValueError(f"beam {bmaj_arcsec}\" x {bmin_arcsec}\" at {bpa_deg} deg is invalid: FWHMs must be > 0")
    if wrapped:
        ox = (np.fft.fftfreq(grid.n_x) * grid.n_x) * grid.cell_arcsec
        oy = (np.fft.fftfreq(grid.n_y) * grid.n_y) * grid.cell_arcsec
    else:
        ox, oy = np.asarray(grid.x_arcsec), np.asarray(grid.y_arcsec)
    east, north = -ox[:, None], oy[None, :]
    t = math.radians(bpa_deg)
    major = east * math.sin(t) + north * math.cos(t)
    minor = east * math.cos(t) - north * math.sin(t)
    sa, sb = fwhm_to_sigma(bmaj_arcsec), fwhm_to_sigma(bmin_arcsec)
    return np.exp(-0.5 * ((major / sa) ** 2 + (minor / sb) ** 2))


def _empirical_noise(D, frac, keep, s_beam, linefree, smooth_cells):
    """Standard error per component (n_x, n_y) of each mode, from the line-free channels' power.

    The power's ratio to the restoring-beam model is smoothed rather than the power itself (which
    falls steeply with k), over the fitted modes ``keep`` only (a normalised convolution).
    """
    from scipy.ndimage import uniform_filter

    lf = list(linefree)
    power = np.mean(np.abs(D[:, :, lf]) ** 2 / np.maximum(frac[lf], 1e-12), axis=2)
    size = 2 * smooth_cells + 1
    ratio = np.where(keep, power / np.maximum(2.0 * s_beam ** 2, 1e-300), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (uniform_filter(ratio, size=size, mode="wrap")
                 / uniform_filter(keep.astype(np.float64), size=size, mode="wrap"))
    return np.where(keep, s_beam * np.sqrt(np.maximum(np.nan_to_num(ratio), 0.0)), 0.0)


class BeamFourierCells(torch.nn.Module):
    """Sky cube [Jy/pixel] -> the Fourier modes of the beam-convolved model image, on the used modes.

    The image-plane counterpart of ``dynamics.visibilities.GriddedModel``: it holds the data's modes
    (``vis``), their standard errors (``sigma``) and noise sample counts (``n_eff``) on the same
    ``(chan, ku, kv)`` cell layout (``cell_index`` into ``(n_chan, n_x, n_y)``, zero frequency at
    ``(n_x // 2, n_y // 2)``), so ``model.likelihood.GriddedLikelihood`` takes them as they are.

    Parameters
    ----------
    cube : ImageCube
        The data (image/cube.py).
    grid : SkyGrid
        The model grid: ``cube.n_pix`` pixels of ``cube.cell_arcsec``.
    threshold : float
        Modes with beam response ``|B_k| / B_0 >= threshold`` are fitted, in (0, 1) (default
        :data:`DEFAULT_THRESHOLD`).
    noise : "empirical" or "beam"
        Noise per mode measured in ``cube.linefree_channels`` (default), or from the rms and the
        restoring beam (module doc).
    smooth_cells : int
        Half-width ``w`` [modes] of the box the empirical noise power is averaged over, >= 0.

    Call
    ----
    ``cells(sky)`` with ``sky`` (B, n_x, n_y, n_chan) [Jy/pixel] (primary beam applied) returns the
    complex model modes (B, n_cells); :meth:`image` returns the model image (B, n_x, n_y, n_chan)
    [Jy/beam]. Differentiable, any device and dtype (float64 reductions happen in the likelihood).
    """

    def __init__(self, cube, grid, *, threshold=DEFAULT_THRESHOLD, noise="empirical", smooth_cells=2):
        super().__init__()
        if noise not in NOISE_MODELS:
            raise ValueError(f"noise = {noise!r} is invalid: choose one of {', '.join(map(repr, NOISE_MODELS))}")
        if noise == "empirical" and not cube.linefree_channels:
            raise ValueError("noise = 'empirical' needs line-free channels (the rms was given): use noise = 'beam'")
        if int(smooth_cells) != smooth_cells or smooth_cells < 0:
            raise ValueError(f"smooth_cells = {smooth_cells!r} is invalid: it must be an integer >= 0")
        if not isinstance(grid, SkyGrid):
            raise TypeError("grid must be a SkyGrid")
        if grid.shape != cube.data.shape[:2] or not math.isclose(grid.cell_arcsec, cube.cell_arcsec, rel_tol=1e-9):
            raise ValueError(f"grid {grid} does not match the cube's {cube.data.shape[:2]} pixels of "
                             f"{cube.cell_arcsec}\"")
        if not (0.0 < threshold < 1.0):
            raise ValueError(f"threshold = {threshold!r} is invalid: it must lie in (0, 1)")
        n_x, n_y, n_chan = cube.data.shape
        self.grid, self.n_chan, self.threshold = grid, n_chan, float(threshold)
        b = beam_image(grid, *cube.beam_fwhm_arcsec, cube.beam_pa_deg, wrapped=True)
        transfer = np.fft.fft2(b).real  # the beam is point-symmetric: its transform is real
        finite = np.isfinite(cube.data)
        self.masked = not bool(finite.all())
        keep = np.fft.fftshift(np.abs(transfer) >= threshold * transfer[0, 0])
        half = grid.uv.half_plane_mask()
        modes = keep & half
        if not modes.any():
            raise ValueError(f"no Fourier mode has a beam response >= {threshold:g} of its peak")
        frac = finite.mean(axis=(0, 1))  # (n_chan,)
        d = np.where(finite, cube.data, 0.0)
        D = np.fft.fftshift(np.fft.fft2(d, axes=(0, 1)), axes=(0, 1))  # (n_x, n_y, n_chan)
        Bs = np.fft.fftshift(transfer)
        s_beam = cube.rms_jy_beam * np.abs(Bs) * math.sqrt(n_x * n_y / (2.0 * float((b * b).sum())))
        if noise == "empirical":
            s_mode = _empirical_noise(D, frac, keep, s_beam, cube.linefree_channels, int(smooth_cells))
            n_eff_mode = len(cube.linefree_channels) * (2 * int(smooth_cells) + 1) ** 2
            modes &= s_mode > 0
        else:
            s_mode, n_eff_mode = s_beam, min(float(cube.n_eff_noise), 1e8)
        chan, ku, kv = np.nonzero(np.broadcast_to(modes, (n_chan, n_x, n_y)))
        ok = frac[chan] > 0
        chan, ku, kv = chan[ok], ku[ok], kv[ok]
        if chan.size == 0:
            raise ValueError("every channel of the cut-out is masked")
        self.n_cells = int(chan.size)
        cell_index = np.ravel_multi_index((chan, ku, kv), (n_chan, n_x, n_y))
        sigma = s_mode[ku, kv] * np.sqrt(frac[chan])
        n_eff = np.full(self.n_cells, float(n_eff_mode))
        sel = modes & (s_beam > 0)
        power_ratio = float(np.mean((s_mode[sel] / s_beam[sel]) ** 2))
        for name, arr, dt in (("vis", D[ku, kv, chan], torch.complex128), ("sigma", sigma, torch.float64),
                              ("n_eff", n_eff, torch.float64), ("chan", chan, torch.int64),
                              ("ku", ku, torch.int64), ("kv", kv, torch.int64),
                              ("cell_index", cell_index, torch.int64),
                              ("transfer", transfer, torch.float64),
                              ("pixel_mask", finite.astype(np.float64), torch.float64)):
            self.register_buffer(name, torch.as_tensor(np.ascontiguousarray(arr)).to(dt))
        self.noise = noise
        # noise_power_over_beam_model: the noise power used over the restoring-beam model's (1 for "beam")
        self.report = dict(cube.report, n_modes_per_channel=int(modes.sum()), cells_usable=self.n_cells,
                           fourier_threshold=self.threshold, n_chan=int(n_chan), n_input=int(finite.sum()),
                           masked=self.masked, beam_sum_sq=float((b * b).sum()), noise_model=noise,
                           noise_smooth_cells=int(smooth_cells), noise_n_eff=float(n_eff_mode),
                           noise_power_over_beam_model=power_ratio)

    def _shift_select(self, F):
        """(B, n_chan, n_x, n_y) complex transform -> (B, n_cells) at the used modes."""
        F = torch.fft.fftshift(F, dim=(-2, -1))
        return F[:, self.chan, self.ku, self.kv]

    def image(self, sky):
        """Model image (B, n_x, n_y, n_chan) [Jy/beam]: the sky convolved with the restoring beam."""
        squeeze = sky.ndim == 3
        s = sky.unsqueeze(0) if squeeze else sky
        F = torch.fft.fft2(s.movedim(-1, 1), dim=(-2, -1)) * self.transfer.to(s.dtype)
        img = torch.fft.ifft2(F, dim=(-2, -1)).real.movedim(1, -1)
        return img[0] if squeeze else img

    def forward(self, sky):
        """Complex model (B, n_cells) (or (n_cells,) for one cube) of the used Fourier modes."""
        squeeze = sky.ndim == 3
        s = sky.unsqueeze(0) if squeeze else sky
        if self.masked:
            img = self.image(s) * self.pixel_mask.to(s.dtype)
            F = torch.fft.fft2(img.movedim(-1, 1), dim=(-2, -1))
        else:
            F = torch.fft.fft2(s.movedim(-1, 1), dim=(-2, -1)) * self.transfer.to(s.dtype)
        out = self._shift_select(F)
        return out[0] if squeeze else out

    def noise_power_ratio(self, cube, channels):
        """Mean |D_k|^2 / E|N_k|^2 over the used modes of line-free ``channels``: 1 if the noise model holds."""
        d = np.where(np.isfinite(cube.data), cube.data, 0.0)[:, :, list(channels)]
        D = np.fft.fftshift(np.fft.fft2(d, axes=(0, 1)), axes=(0, 1))
        sel = self.chan.cpu().numpy() == int(self.chan[0])
        ku, kv = self.ku.cpu().numpy()[sel], self.kv.cpu().numpy()[sel]
        s2 = 2.0 * self.sigma.cpu().numpy()[sel] ** 2
        return float(np.mean(np.abs(D[ku, kv, :]) ** 2 / s2[:, None]))
