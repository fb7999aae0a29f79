"""Cleaned FITS data cubes (what kinms_fitter users have) read into the model's sky grid.

A cube is read once into an :class:`ImageCube`: the spectral axis becomes channel frequencies on a
uniform radio-velocity axis (the model cube's), the Stokes axis is dropped, NaN pixels stay NaN
(masked, as in masked cubes), the restoring beam comes from BMAJ/BMIN/BPA, and a square cut-out of
``n_pix`` pixels centred on the reference position becomes the model grid (``dynamics.coords``).

Orientation. FITS axis 1 is RA (``CDELT1 < 0``: pixel index grows to the West), axis 2 Dec; our
sky arrays are ``(x, y, chan)`` with +x West, +y North, so a standard cube needs only a transpose
(axes with the other sign are flipped). The cut-out's reference -- offsets ``x = y = 0`` -- is the
centre of its pixel ``n_pix // 2`` (0-based), the full image's pixel nearest to the requested centre
(default: the header's reference pixel ``CRPIX``); its RA/Dec are recorded.

Spectral axis (astropy.wcs reads the header, including the AIPS convention ``VELO-xxx`` + VELREF,
which it translates to VRAD or VOPT): frequency ``FREQ``, radio velocity ``VRAD`` or optical velocity
``VOPT``/``FELO``, in whatever frame ``SPECSYS`` states (the fit's ``systemic_velocity`` is in that
frame). Every channel becomes a radio velocity ``v = c (1 - f / f0)``; channels equally spaced in
optical velocity are not quite equally spaced in radio velocity (the spacing changes by 2 v / c
across the band), so they are placed on the best uniform radio axis when no channel moves by more
than ``MAX_CHANNEL_SHIFT`` of a channel (0.26 km/s, 0.013 channels, for NGC 4324's 21 CARMA channels)
and refused otherwise. ``velocity_convention`` overrides a header whose convention is wrong (Miriad
writes ``VELO`` for radio velocities, which astropy reads as optical without VELREF).

Noise: the rms [Jy/beam] is given, or measured in line-free channels (default: the first two and
the last two) over the cut-out, with ``n_eff_noise`` = (finite pixels used) / (beam area in
pixels) independent samples behind it.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._files import fits_truncation
from ..constants import VELOCITY_CONVENTIONS, optical_to_radio_kms, radio_frequency_hz, radio_velocity_kms

__all__ = ["ImageCube", "read_image_cube", "is_image_cube", "image_cube_grid", "MAX_CHANNEL_SHIFT",
           "VELOCITY_CONVENTIONS"]

#: Largest shift [channels] allowed when channels are put on a uniform radio-velocity axis.
MAX_CHANNEL_SHIFT = 0.05


_FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz")


def is_image_cube(path):
    """True when ``path`` names a FITS file (by its suffix): ``[data] path`` is then an image cube."""
    name = str(path).lower()
    return name.endswith(_FITS_SUFFIXES)


@dataclass
class ImageCube:
    """A cleaned data cube on the model's sky grid.

    Attributes
    ----------
    data : (n_pix, n_pix, n_chan) float64 [Jy/beam]
        The cut-out, indexed ``[ix, iy, chan]`` (+ix West, +iy North); NaN where masked.
    cell_arcsec : float
        Pixel size [arcsec].
    beam_fwhm_arcsec : (float, float)
        Restoring beam major and minor FWHM [arcsec].
    beam_pa_deg : float
        Beam major-axis position angle [deg], North through East.
    chan_freq_hz : (n_chan,) float64
        Channel frequencies [Hz], in the cube's channel order, on a uniform radio-velocity axis.
    vel_kms : (n_chan,) float64
        Their radio velocities [km/s] ``c (1 - f / rest_freq_hz)``.
    rest_freq_hz : float
    spec_frame : str
        The velocity frame (SPECSYS), e.g. "LSRK" or "BARYCENT".
    ref_ra_deg, ref_dec_deg : float
        Position of the cut-out's reference (x = y = 0) [deg].
    rms_jy_beam : float
        Noise per pixel [Jy/beam].
    n_eff_noise : float
        Independent samples behind ``rms_jy_beam`` (inf when the rms was given).
    pb : (n_pix, n_pix) or (n_pix, n_pix, n_chan) float64 or None
        Primary-beam response (gain) to multiply the model sky by, when given.
    linefree_channels : tuple of int or None
        The channels the noise was measured in (None when the rms was given).
    report : dict
        What was read and how: file, shape, cut-out origin, spectral axis, channel shifts, noise.
    """

    data: np.ndarray
    cell_arcsec: float
    beam_fwhm_arcsec: tuple
    beam_pa_deg: float
    chan_freq_hz: np.ndarray
    vel_kms: np.ndarray
    rest_freq_hz: float
    spec_frame: str
    ref_ra_deg: float
    ref_dec_deg: float
    rms_jy_beam: float
    n_eff_noise: float
    pb: np.ndarray | None = None
    linefree_channels: tuple | None = None
    report: dict = field(default_factory=dict)

    @property
    def n_pix(self):
        return self.data.shape[0]

    @property
    def n_chan(self):
        return self.data.shape[2]

    @property
    def beam_area_pix(self):
        """Area of the restoring beam [pixels]: pi bmaj bmin / (4 ln 2) / cell^2."""
        a, b = self.beam_fwhm_arcsec
        return math.pi * a * b / (4.0 * math.log(2.0)) / self.cell_arcsec ** 2


def _fail(path, what):
    return ValueError(f"{path}: {what}")


def _open(path):
    from astropy.io import fits

    p = Path(path)
    if not p.is_file():
        raise _fail(path, "no such file")
    from astropy.utils.exceptions import AstropyUserWarning

    # astropy logs multi-line warnings before failing on a corrupt or truncated file: our one line
    # says it (a truncated array fails where it is read, _read_sky)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            hdul = fits.open(p, memmap=False)
        except OSError as e:
            raise _fail(path, f"not a readable FITS file ({e})") from None
    for hdu in hdul:  # judged by the header: hdu.data would read the whole array
        h = hdu.header
        if h.get("NAXIS", 0) >= 3 and all(h.get(f"NAXIS{i}", 0) > 0 for i in range(1, h["NAXIS"] + 1)):
            return hdul, hdu
    hdul.close()
    raise _fail(path, "no HDU with a data cube (NAXIS >= 3)")


def _wcs(path, header):
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            return WCS(header)
        except Exception as e:  # astropy raises several kinds for bad headers
            raise _fail(path, f"the header's WCS cannot be read ({e})") from None


def _axes(path, w):
    """0-based WCS axis indices (ra, dec, spec, stokes or None)."""
    types = [t.upper() for t in w.wcs.ctype]
    ra = next((i for i, t in enumerate(types) if t.startswith("RA")), None)
    dec = next((i for i, t in enumerate(types) if t.startswith("DEC")), None)
    spec = w.wcs.spec if w.wcs.spec >= 0 else None
    stokes = next((i for i, t in enumerate(types) if t.startswith("STOKES")), None)
    if ra is None or dec is None:
        raise _fail(path, f"no RA/Dec axes (CTYPE: {', '.join(w.wcs.ctype)})")
    if spec is None:
        raise _fail(path, f"no spectral axis (CTYPE: {', '.join(w.wcs.ctype)}): expects FREQ, VRAD, VOPT, FELO "
                          "or VELO-xxx")
    if (ra, dec) != (0, 1):
        raise _fail(path, "RA and Dec must be FITS axes 1 and 2")
    return ra, dec, spec, stokes


def image_cube_grid(path):
    """``(cell_arcsec, n_pix_max, rest_freq_hz or None)`` of a FITS cube from its header alone.

    ``n_pix_max`` is the largest even square that fits the image; configuration checks use this
    before anything is read.
    """
    hdul, hdu = _open(path)
    with hdul:
        h = hdu.header
        w = _wcs(path, h)
        _axes(path, w)
        return _grid(path, w, h)


def _grid(path, w, h):
    """``image_cube_grid``'s numbers from an opened header ``h`` and its WCS ``w``."""
    pc = w.celestial.wcs.get_pc()
    if abs(pc[0, 1]) + abs(pc[1, 0]) > 1e-6 * (abs(pc[0, 0]) + abs(pc[1, 1])):
        raise _fail(path, "the pixel grid is rotated on the sky (off-diagonal PC/CD terms): regrid it to "
                          "North up, East left")
    cd = np.abs(w.celestial.wcs.get_cdelt() * np.diag(pc)) * 3600.0
    if not math.isclose(cd[0], cd[1], rel_tol=1e-4):
        raise _fail(path, f"pixels must be square, got {cd[0]:.6g}\" x {cd[1]:.6g}\"")
    n = min(int(h["NAXIS1"]), int(h["NAXIS2"]))
    rest = w.wcs.restfrq or h.get("RESTFRQ") or h.get("RESTFREQ")
    return float(f"{cd[0]:.10g}"), n - n % 2, (float(rest) if rest else None)


def _read_sky(path, what):
    """``(array (x West, y North, chan), header, WCS)`` of the first cube HDU of a FITS file."""
    hdul, hdu = _open(path)
    with hdul:
        h = hdu.header.copy()
        short = fits_truncation(hdu, path)
        if short:
            raise _fail(path, f"the file is truncated: its header describes {short[0]} bytes of data, the file "
                              f"holds {short[1]}")
        raw = np.array(hdu.data)
    w = _wcs(path, h)
    return _to_sky_layout(raw, w, *_axes(path, w), path, what), h, w


def _channel_velocities(path, w, n_chan, rest_freq_hz, convention):
    """Radio velocities [km/s] of the channels, their frequencies [Hz], and the axis type read."""
    s = w.sub([w.wcs.spec + 1])
    world = s.all_pix2world(np.arange(n_chan, dtype=np.float64), 0)[0]
    ctype = s.wcs.ctype[0].upper()
    unit = str(s.wcs.cunit[0]).strip() or ("Hz" if ctype.startswith("FREQ") else "m/s")
    kind = ctype[:4]
    if convention != "header" and kind in ("VRAD", "VOPT", "FELO", "VELO"):
        kind = "VRAD" if convention == "radio" else "VOPT"
    scale = {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9, "m/s": 1e-3, "km/s": 1.0}.get(unit.replace(" ", ""))
    if scale is None:
        raise _fail(path, f"spectral axis unit {unit!r} is not understood (expects Hz or m/s)")
    if kind == "FREQ":
        freq = world * scale
        vrad = radio_velocity_kms(freq, rest_freq_hz)
    elif kind == "VRAD":
        vrad = world * scale
    elif kind in ("VOPT", "FELO"):
        vrad = optical_to_radio_kms(world * scale)
    else:
        raise _fail(path, f"spectral axis {ctype!r} is not supported (expects FREQ, VRAD, VOPT, FELO, VELO)")
    return vrad, kind


def _linear_axis(path, vrad):
    """The best uniform axis through ``vrad`` and the largest shift [channels] it makes."""
    k = np.arange(vrad.size, dtype=np.float64)
    slope, icpt = np.polyfit(k, vrad, 1)
    lin = icpt + slope * k
    shift = float(np.max(np.abs(lin - vrad)) / abs(slope)) if vrad.size > 1 else 0.0
    if vrad.size < 2 or slope == 0:
        raise _fail(path, "the cube needs at least 2 channels of distinct velocity")
    if shift > MAX_CHANNEL_SHIFT:
        raise _fail(path, f"channels are not uniformly spaced in radio velocity: putting them on a uniform axis "
                          f"moves one by {shift:.3g} channels (> {MAX_CHANNEL_SHIFT}); regrid the cube in velocity")
    return lin, shift


def _beam(path, header):
    try:
        bmaj, bmin = float(header["BMAJ"]) * 3600.0, float(header["BMIN"]) * 3600.0
        bpa = float(header.get("BPA", 0.0))
    except KeyError:
        raise _fail(path, "no restoring beam: the header needs BMAJ and BMIN [deg] (and BPA)") from None
    if not (math.isfinite(bmaj) and math.isfinite(bmin) and bmaj > 0 and bmin > 0 and math.isfinite(bpa)):
        raise _fail(path, f"invalid restoring beam BMAJ/BMIN/BPA = {bmaj}\"/{bmin}\"/{bpa} deg")
    return (max(bmaj, bmin), min(bmaj, bmin)), bpa


def _to_sky_layout(arr, w, ra, dec, spec, stokes, path, what):
    """FITS array (reversed WCS axes) -> (ix West, iy North, chan) float64."""
    a = np.asarray(arr, dtype=np.float64)
    naxis = a.ndim
    if stokes is not None and stokes < naxis:
        np_axis = naxis - 1 - stokes
        if a.shape[np_axis] < 1:
            raise _fail(path, f"{what}: empty Stokes axis")
        a = np.take(a, 0, axis=np_axis)  # Stokes I (or the only one)
        remaining = [i for i in range(naxis) if i != stokes]
    else:
        remaining = list(range(naxis))
    # the numpy axis of WCS axis i among the remaining ones
    order = {wi: len(remaining) - 1 - j for j, wi in enumerate(remaining)}
    extra = [order[i] for i in remaining if i not in (ra, dec, spec)]
    for ax in sorted(extra, reverse=True):
        if a.shape[ax] != 1:
            raise _fail(path, f"{what}: unexpected axis {w.wcs.ctype[remaining[ax]]} of length {a.shape[ax]}")
        a = np.take(a, 0, axis=ax)
        order = {k: (v - 1 if v > ax else v) for k, v in order.items() if v != ax}
    a = np.transpose(a, (order[ra], order[dec], order[spec]))
    cd = w.wcs.get_cdelt() * np.diag(w.wcs.get_pc())
    if cd[ra] > 0:
        a = a[::-1]
    if cd[dec] < 0:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def _crop_origin(path, n_full, n_pix, centre_pix):
    i0 = int(round(centre_pix - n_pix / 2.0))
    if i0 < 0 or i0 + n_pix > n_full:
        raise _fail(path, f"a {n_pix}-pixel cut-out centred on pixel {centre_pix:.1f} does not fit the "
                          f"{n_full}-pixel image: choose a smaller model.n_pix or another centre")
    return i0


def read_image_cube(path, *, n_pix=None, rest_freq_hz=None, centre_radec_deg=None, rms_jy_beam=None,
                    linefree_channels=None, pb_path=None, velocity_convention="header"):
    """Read a cleaned FITS cube [Jy/beam] into an :class:`ImageCube` (module doc for conventions).

    Parameters
    ----------
    path : str or Path
        FITS file (first HDU with NAXIS >= 3): RA, Dec, a spectral axis, optionally Stokes (the
        first plane is used).
    n_pix : int, optional
        Side of the square cut-out [pixels], even, >= 8; default the largest even square that fits
        around the centre.
    rest_freq_hz : float, optional
        Line rest frequency [Hz]; default the header's RESTFRQ/RESTFREQ.
    centre_radec_deg : (float, float), optional
        Position [deg] to centre the cut-out on; default the header's reference pixel.
    rms_jy_beam : float, optional
        Noise per pixel [Jy/beam], > 0; default measured in ``linefree_channels``.
    linefree_channels : sequence of int, optional
        0-based channel indices without line emission (default the first two and the last two).
    pb_path : str or Path, optional
        A primary-beam (gain) image or cube on the same pixels: the model sky is multiplied by it
        (give it when the cube is not primary-beam corrected).
    velocity_convention : "header", "radio" or "optical"
        How to read a velocity axis; "header" (default) trusts astropy's reading of the header.

    Returns
    -------
    ImageCube

    Raises
    ------
    ValueError
        One line naming the file and the problem (no spectral axis, no beam, non-square pixels, a
        cut-out that does not fit, no line-free pixels, ...).
    """
    if velocity_convention not in VELOCITY_CONVENTIONS:
        raise ValueError(f"velocity_convention = {velocity_convention!r} is invalid: choose one of "
                         f"{', '.join(map(repr, VELOCITY_CONVENTIONS))}")
    full, h, w = _read_sky(path, "data")
    ra, dec = 0, 1  # WCS axes of RA and Dec: FITS axes 1 and 2, which _axes insists on
    cell, _, rest_hdr = _grid(path, w, h)
    rest = rest_freq_hz if rest_freq_hz is not None else rest_hdr
    if rest is None or not (math.isfinite(rest) and rest > 0):
        raise _fail(path, "no rest frequency: the header has no RESTFRQ/RESTFREQ; give data.rest_freq_hz")
    bunit = str(h.get("BUNIT", "")).strip().upper().replace(" ", "")
    if bunit and bunit not in ("JY/BEAM", "JY/BM"):
        raise _fail(path, f"BUNIT is {h['BUNIT']!r}: the image-plane fit expects Jy/beam")
    nx_full, ny_full, n_chan = full.shape
    if n_chan < 2:
        raise _fail(path, f"the spectral axis has {n_chan} channel(s); at least 2 are needed")
    vrad, kind = _channel_velocities(path, w, n_chan, rest, velocity_convention)
    vel, shift = _linear_axis(path, vrad)
    freq = radio_frequency_hz(vel, rest)

    # the cut-out: pixel positions in the (possibly flipped) sky layout
    cd = w.wcs.get_cdelt() * np.diag(w.wcs.get_pc())
    cel = w.celestial
    if centre_radec_deg is None:
        cx, cy = float(w.wcs.crpix[ra] - 1.0), float(w.wcs.crpix[dec] - 1.0)
    else:
        cx, cy = (float(t[0]) for t in cel.all_world2pix([centre_radec_deg[0]], [centre_radec_deg[1]], 0))
    if cd[ra] > 0:
        cx = nx_full - 1 - cx
    if cd[dec] < 0:
        cy = ny_full - 1 - cy
    if n_pix is None:  # the largest even square around the centre that fits the image
        fits_in = [n for n in range(min(nx_full, ny_full) // 2 * 2, 7, -2)
                   if 0 <= round(cx - n / 2) <= nx_full - n and 0 <= round(cy - n / 2) <= ny_full - n]
        if not fits_in:
            raise _fail(path, f"no cut-out of >= 8 pixels fits around the centre pixel ({cx:.1f}, {cy:.1f})")
        n_pix = fits_in[0]
    if n_pix < 8 or n_pix % 2:
        raise _fail(path, f"model.n_pix = {n_pix}: the cut-out must be an even number of pixels >= 8")
    i0, j0 = _crop_origin(path, nx_full, n_pix, cx), _crop_origin(path, ny_full, n_pix, cy)
    data = np.ascontiguousarray(full[i0:i0 + n_pix, j0:j0 + n_pix])
    # the reference (centre of cut-out pixel n_pix // 2) back in the file's pixel numbering
    rx, ry = i0 + n_pix // 2, j0 + n_pix // 2
    fx = nx_full - 1 - rx if cd[ra] > 0 else rx
    fy = ny_full - 1 - ry if cd[dec] < 0 else ry
    ref_ra, ref_dec = (float(t[0]) for t in cel.all_pix2world([fx], [fy], 0))

    beam, bpa = _beam(path, h)
    beam_area_pix = math.pi * beam[0] * beam[1] / (4.0 * math.log(2.0)) / cell ** 2
    finite = np.isfinite(data)
    if not finite.any():
        raise _fail(path, "the cut-out has no finite pixel")
    if rms_jy_beam is None:
        chans = [0, 1, n_chan - 2, n_chan - 1] if linefree_channels is None else list(linefree_channels)
        bad = [c for c in chans if not (isinstance(c, (int, np.integer)) and 0 <= c < n_chan)]
        if bad:
            raise _fail(path, f"line-free channels {bad} are not channel indices 0..{n_chan - 1}")
        vals = data[:, :, sorted(set(chans))]  # the fitted pixels' noise, not the whole file's
        vals = vals[np.isfinite(vals)]
        if vals.size < 10:
            raise _fail(path, f"line-free channels {sorted(set(chans))} have {vals.size} finite pixels; "
                              "give data.rms_jy_beam")
        rms = float(np.sqrt(np.mean((vals - vals.mean()) ** 2)))
        n_eff_noise = vals.size / max(beam_area_pix, 1.0)
        noise_from = f"channels {sorted(set(chans))}"
        linefree = tuple(sorted(set(int(c) for c in chans)))
    else:
        rms, n_eff_noise, noise_from, linefree = float(rms_jy_beam), math.inf, "given", None
    if not (math.isfinite(rms) and rms > 0):
        raise _fail(path, f"noise rms {rms!r} Jy/beam is not > 0")

    pb = None
    if pb_path is not None:
        if not is_image_cube(pb_path):
            raise _fail(pb_path, "the primary-beam file must be FITS")
        pfull, _, _ = _read_sky(pb_path, "primary beam")
        if pfull.shape[:2] != (nx_full, ny_full) or pfull.shape[2] not in (1, n_chan):
            raise _fail(pb_path, f"primary beam shape {pfull.shape} does not match the cube {full.shape}")
        pb = np.nan_to_num(pfull[i0:i0 + n_pix, j0:j0 + n_pix], nan=0.0)
        pb = pb[:, :, 0] if pb.shape[2] == 1 else pb
        if not (np.all(pb >= 0) and np.all(pb <= 1.0 + 1e-6)):
            raise _fail(pb_path, "primary-beam values must lie in [0, 1]")

    report = dict(file=str(path), shape_file=[nx_full, ny_full, n_chan], n_pix=int(n_pix),
                  cutout_origin=[int(i0), int(j0)], cell_arcsec=cell, spectral_axis=kind,
                  spec_frame=str(w.wcs.specsys or h.get("SPECSYS", "") or "unknown"),
                  max_channel_shift=shift, channel_width_kms=float(abs(vel[1] - vel[0])),
                  beam_fwhm_arcsec=list(beam), beam_pa_deg=bpa, beam_area_pix=beam_area_pix,
                  rms_jy_beam=rms, noise_from=noise_from, n_eff_noise=n_eff_noise,
                  masked_pixels=int((~finite).sum()), ref_ra_deg=ref_ra, ref_dec_deg=ref_dec,
                  primary_beam=str(pb_path) if pb_path is not None else None)
    return ImageCube(data=data, cell_arcsec=cell, beam_fwhm_arcsec=beam, beam_pa_deg=bpa, chan_freq_hz=freq,
                     vel_kms=vel, rest_freq_hz=float(rest), spec_frame=report["spec_frame"], ref_ra_deg=ref_ra,
                     ref_dec_deg=ref_dec, rms_jy_beam=rms, n_eff_noise=n_eff_noise, pb=pb,
                     linefree_channels=linefree, report=report)
