"""Standard products of a fit, as kinms_fitter users expect them: FITS cubes, moment maps, a
position-velocity diagram along the major axis, and an ECSV table of the results.

For an image-plane fit (a FITS cube in, nuker_mge_plugin/image/) they are the cube's cut-out, the
posterior-median model convolved with the restoring beam and their difference [Jy/beam], with the
beam (BMAJ/BMIN/BPA) and the data's spectral frame in the header.

For a visibility fit the "data", "model" and "residual" cubes are dirty images of the gridded cells
(``plots.dirty_image``: the same weights for all three, so data - model = residual exactly), in
Jy/beam of the dirty beam; the model sky cube (``model_sky.fits``) is the noise-free model at the
posterior median in Jy/pixel, before the primary beam. All are written with a celestial WCS centred
on the phase centre (the observation's ``meta`` ``phase_centre_ra_deg``/``phase_centre_dec_deg``
when it has them; a mock has none, and then RA = 0 and Dec = ``meta["dec_deg"]`` (or 0) stand in,
as the header's comment says) and a radio-velocity spectral axis (``VRAD`` [m/s], ``RESTFRQ``).

Orientation. Our images are indexed ``[chan, iy, ix]`` with +ix = West and +iy = North
(``dynamics.coords``); FITS axis 1 is ix with ``CDELT1 = -cell`` (RA grows to the East, i.e.
towards smaller ix), axis 2 is iy with ``CDELT2 = +cell``. The reference pixel is the image's
phase-centre pixel ``(n // 2)`` (0-based), ``CRPIX = n // 2 + 1`` (FITS is 1-based).

Position angle. ``pa`` is KinMS's: from North through East to the *receding* half of the major
axis. The position-velocity diagram's offset is positive towards that half, so a disc's emission at
positive offsets is redshifted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .._files import atomic_write

__all__ = ["sky_header", "write_cube_fits", "write_image_fits", "pv_diagram", "results_table", "plot_pv",
           "write_products"]


def sky_header(n_x, n_y, cell_arcsec, *, ra_deg=0.0, dec_deg=0.0, position_known=True, velocity_kms=None,
               rest_freq_hz=None, bunit="Jy/beam"):
    """A FITS header with the celestial (and, given ``velocity_kms``, spectral) WCS of our sky grid.

    Parameters
    ----------
    n_x, n_y : int
        Image size [pixels]: FITS axes 1 (ix, +West) and 2 (iy, +North).
    cell_arcsec : float
        Pixel size [arcsec].
    ra_deg, dec_deg : float
        Phase centre [deg].
    position_known : bool
        False adds a COMMENT: the phase centre's position is a stand-in, only offsets count.
    velocity_kms : (n_chan,) array, optional
        Channel radio velocities [km/s], uniformly spaced (increasing or decreasing): axis 3,
        ``VRAD`` in m/s.
    rest_freq_hz : float, optional
        Rest frequency of the line [Hz] (``RESTFRQ``).
    bunit : str
        Brightness unit.

    Returns
    -------
    astropy.io.fits.Header
    """
    from astropy.io import fits

    if not (cell_arcsec > 0 and n_x >= 1 and n_y >= 1):
        raise ValueError(f"sky_header: expects n_x, n_y >= 1 and cell_arcsec > 0, got {n_x}, {n_y}, {cell_arcsec}")
    h = fits.Header()
    h["BUNIT"] = bunit
    h["CTYPE1"], h["CUNIT1"] = "RA---SIN", "deg"
    h["CRVAL1"] = float(ra_deg)
    h["CDELT1"] = -cell_arcsec / 3600.0
    h["CRPIX1"] = n_x // 2 + 1
    h["CTYPE2"], h["CUNIT2"] = "DEC--SIN", "deg"
    h["CRVAL2"] = float(dec_deg)
    h["CDELT2"] = cell_arcsec / 3600.0
    h["CRPIX2"] = n_y // 2 + 1
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    if not position_known:
        h["COMMENT"] = "phase centre not known: the celestial WCS gives offsets from it only"
    if velocity_kms is not None:
        v = np.asarray(velocity_kms, dtype=np.float64)
        if v.ndim != 1 or v.size < 1:
            raise ValueError("sky_header: velocity_kms must be a non-empty 1-d array [km/s]")
        dv = float(v[1] - v[0]) if v.size > 1 else 1.0
        if v.size > 2 and not np.allclose(np.diff(v), dv, rtol=1e-6, atol=1e-9):
            raise ValueError("sky_header: velocity_kms must be uniformly spaced")
        h["CTYPE3"], h["CUNIT3"] = "VRAD", "m/s"
        h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = v[0] * 1e3, dv * 1e3, 1.0
        h["SPECSYS"] = "BARYCENT"
        h["COMMENT"] = "spectral frame: that of the data's channel frequencies (radio velocity definition)"
    if rest_freq_hz is not None:
        h["RESTFRQ"] = float(rest_freq_hz)
    h["ORIGIN"] = "nuker-mge-plugin"
    return h


def write_cube_fits(path, cube, header):
    """Write a ``(n_chan, ny, nx)`` cube (FITS order) with ``header``, atomically; returns the path."""
    from astropy.io import fits

    c = np.asarray(cube, dtype=np.float32)
    if c.ndim != 3:
        raise ValueError(f"write_cube_fits: expects a (n_chan, ny, nx) cube, got shape {c.shape}")
    hdu = fits.PrimaryHDU(c, header=header)
    return Path(atomic_write(path, lambda tmp: hdu.writeto(tmp, output_verify="exception", overwrite=True)))


def write_image_fits(path, image, header, bunit):
    """Write a ``(ny, nx)`` map with the celestial part of ``header`` and unit ``bunit``, atomically."""
    from astropy.io import fits

    h = header.copy()
    for k in ("CTYPE3", "CUNIT3", "CRVAL3", "CDELT3", "CRPIX3", "SPECSYS"):
        h.remove(k, ignore_missing=True)
    h["BUNIT"] = bunit
    hdu = fits.PrimaryHDU(np.asarray(image, dtype=np.float32), header=h)
    return Path(atomic_write(path, lambda tmp: hdu.writeto(tmp, output_verify="exception", overwrite=True)))


def pv_diagram(cube, cell_arcsec, pa_deg, *, centre_arcsec=(0.0, 0.0), width_pix=1, n_offsets=None):
    """Position-velocity diagram along the major axis of an ``(n_chan, ny, nx)`` cube.

    Parameters
    ----------
    cube : (n_chan, ny, nx) array
        Indexed ``[chan, iy, ix]``, +ix West, +iy North (module doc).
    cell_arcsec : float
        Pixel size [arcsec].
    pa_deg : float
        Position angle of the receding half of the major axis, North through East [deg].
    centre_arcsec : (x, y)
        The disc centre [arcsec], +x West, +y North (the fit's ``x``, ``y``).
    width_pix : int
        Slit width [pixels]: the mean over this many parallel cuts, one pixel apart.
    n_offsets : int, optional
        Samples along the slit (default: the image's larger side), one pixel apart, centred.

    Returns
    -------
    offset_arcsec : (n_offsets,) array
        Distance along the slit from the centre [arcsec], positive towards the receding side.
    pv : (n_offsets, n_chan) array
        The cube interpolated (bilinearly) along the slit, in the cube's unit; NaN off the image.
    """
    from scipy.ndimage import map_coordinates

    c = np.asarray(cube, dtype=np.float64)
    if c.ndim != 3:
        raise ValueError(f"pv_diagram: expects a (n_chan, ny, nx) cube, got shape {c.shape}")
    if not (cell_arcsec > 0 and math.isfinite(pa_deg)) or int(width_pix) < 1:
        raise ValueError("pv_diagram: expects cell_arcsec > 0 [arcsec], a finite pa_deg [deg] and width_pix >= 1")
    n_chan, ny, nx = c.shape
    n = int(n_offsets or max(nx, ny))
    s = (np.arange(n) - (n - 1) / 2.0) * cell_arcsec
    pa = math.radians(pa_deg)
    # along the slit: East = sin(pa), North = cos(pa); x = -East (West)
    ex, ey = -math.sin(pa), math.cos(pa)
    px, py = ey, -ex  # perpendicular
    w = int(width_pix)
    perp = (np.arange(w) - (w - 1) / 2.0) * cell_arcsec
    x = centre_arcsec[0] + s[:, None] * ex + perp[None, :] * px          # (n, w) [arcsec]
    y = centre_arcsec[1] + s[:, None] * ey + perp[None, :] * py
    ix = x / cell_arcsec + nx // 2
    iy = y / cell_arcsec + ny // 2
    inside = (ix >= 0) & (ix <= nx - 1) & (iy >= 0) & (iy <= ny - 1)
    pv = np.empty((n, n_chan))
    for k in range(n_chan):
        val = map_coordinates(c[k], [iy.ravel(), ix.ravel()], order=1, mode="nearest").reshape(n, w)
        val[~inside] = np.nan
        with np.errstate(invalid="ignore"):
            pv[:, k] = np.nanmean(val, axis=1) if w > 1 else val[:, 0]
    return s, pv


def results_table(summary):
    """The fit's results as an astropy Table: one row per free parameter.

    Columns: ``name``, ``unit``, ``median``, ``mean``, ``std``, ``hdi68_lo``, ``hdi68_hi``,
    ``hdi997_lo``, ``hdi997_hi``, ``r_hat``, ``ess_bulk``, ``ess_tail`` and ``truth`` (NaN when the
    data carry no truth). Units in the column ``unit`` (Table-1 units).
    """
    from astropy.table import Table

    from ..inference.parameters import UNITS

    rows = []
    truth = summary.get("truth") or {}
    for name, p in summary["parameters"].items():
        t = truth.get(name, {})
        tv = t.get("value") if isinstance(t, dict) else t

        def num(x):
            return float("nan") if x is None else float(x)

        rows.append(dict(name=name, unit=UNITS.get(name, ""), median=num(p["median"]), mean=num(p["mean"]),
                         std=num(p["std"]), hdi68_lo=num(p["hdi_68"][0]), hdi68_hi=num(p["hdi_68"][1]),
                         hdi997_lo=num(p["hdi_997"][0]), hdi997_hi=num(p["hdi_997"][1]), r_hat=num(p.get("r_hat")),
                         ess_bulk=num(p.get("ess_bulk")), ess_tail=num(p.get("ess_tail")), truth=num(tv)))
    names = ["name", "unit", "median", "mean", "std", "hdi68_lo", "hdi68_hi", "hdi997_lo", "hdi997_hi", "r_hat",
             "ess_bulk", "ess_tail", "truth"]
    tab = Table(rows=[[r[k] for k in names] for r in rows], names=names) if rows else Table(names=names)
    tab.meta["comments"] = ["nuker-mge fit results: posterior median, mean, std and HDIs per free parameter",
                            f"chains {summary.get('chains')}, draws {summary.get('draws')}, "
                            f"acceptance {summary.get('acceptance')}"]
    return tab


def plot_pv(offset_arcsec, velocity_kms, pvs, *, vsys_kms=None, title=None):
    """Data / model / residual PV diagrams side by side; ``pvs`` maps a label to (n_off, n_chan)."""
    from .plots import _plt

    plt = _plt()
    fig, axes = plt.subplots(1, len(pvs), figsize=(4.2 * len(pvs), 3.8), sharey=True, squeeze=False)
    v = np.asarray(velocity_kms, dtype=np.float64)
    order = np.argsort(v)
    data = next(iter(pvs.values()))
    lim = np.nanpercentile(np.abs(data), 99.5) if np.any(np.isfinite(data)) else 1.0
    ext = [offset_arcsec[0], offset_arcsec[-1], v[order][0], v[order][-1]]
    for ax, (label, pv) in zip(axes[0], pvs.items()):
        im = ax.imshow(pv[:, order].T, origin="lower", aspect="auto", extent=ext, cmap="RdBu_r", vmin=-lim,
                       vmax=lim)
        ax.set_title(label)
        ax.set_xlabel("major-axis offset [arcsec], + receding")
        if vsys_kms is not None:
            ax.axhline(vsys_kms, color="k", lw=0.6, ls=":")
        ax.axvline(0.0, color="k", lw=0.6, ls=":")
    axes[0][0].set_ylabel("radio velocity [km/s]")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.85, label="Jy/beam")
    if title:
        fig.suptitle(title, y=1.0)
    return fig


def write_products(out, maps, summary, *, model_sky=None, pa_deg, centre_arcsec, vsys_kms=None, meta=None,
                   rest_freq_hz=None, figures=True):
    """Write the standard products of a fit into ``out``; returns ``{name: path}``.

    ``maps``: ``data``, ``model``, ``residual`` dirty cubes (n_chan, ny, nx) [Jy/beam],
    ``velocity_kms`` (n_chan,), ``cell_arcsec``. ``model_sky``: the model sky (n_chan, ny, nx)
    [Jy/pixel], optional. ``pa_deg``, ``centre_arcsec``, ``vsys_kms``: the posterior-median geometry
    for the PV slit. ``meta``: the observation's meta (phase centre, if known).

    Files: ``{data,model,residual}_cube.fits``, ``model_sky.fits``, ``{data,model,residual}_mom0.fits``
    [Jy/beam km/s], ``{data,model}_mom1.fits`` [km/s], ``pv_{data,model,residual}.fits`` (axis 1
    offset [arcsec], axis 2 velocity [m/s]), ``pv.png`` and ``results.ecsv``.
    """
    from astropy.io import fits

    from .plots import moment_maps

    out = Path(out)
    meta = dict(meta or {})
    known = "phase_centre_ra_deg" in meta and "phase_centre_dec_deg" in meta
    ra = float(meta["phase_centre_ra_deg"]) if known else 0.0
    dec = float(meta["phase_centre_dec_deg"]) if known else float(meta.get("dec_deg", 0.0))
    vel = np.asarray(maps["velocity_kms"], dtype=np.float64)
    cell = float(maps["cell_arcsec"])
    n_chan, ny, nx = np.asarray(maps["data"]).shape
    hdr = sky_header(nx, ny, cell, ra_deg=ra, dec_deg=dec, position_known=known, velocity_kms=vel,
                     rest_freq_hz=rest_freq_hz)
    if "beam_fwhm_arcsec" in meta:  # an image-plane fit: the cubes are in Jy per restoring beam
        hdr["BMAJ"], hdr["BMIN"] = (float(b) / 3600.0 for b in meta["beam_fwhm_arcsec"])
        hdr["BPA"] = float(meta.get("beam_pa_deg", 0.0))
    if "spec_frame" in meta:
        hdr["SPECSYS"] = str(meta["spec_frame"])
    paths = {}
    for name in ("data", "model", "residual"):
        paths[f"{name}_cube"] = write_cube_fits(out / f"{name}_cube.fits", maps[name], hdr)
    if model_sky is not None:
        h = hdr.copy()
        h["BUNIT"] = "Jy/pixel"
        paths["model_sky"] = write_cube_fits(out / "model_sky.fits", model_sky, h)
    # one mask for all three moment-0 maps, so residual = data - model there too: where the model
    # exceeds 3 rms of the data (a data-selected mask would sum positive noise peaks into the data
    # and the residual); moment 1 of the data over the data's own > 3 rms voxels
    d = np.asarray(maps["data"], dtype=np.float64)
    rms = 1.4826 * np.median(np.abs(d - np.median(d)))
    model_mask = np.asarray(maps["model"], dtype=np.float64) > 3.0 * rms
    for name in ("data", "model", "residual"):
        mom0, mom1 = moment_maps(maps[name], vel, mask=model_mask)
        paths[f"{name}_mom0"] = write_image_fits(out / f"{name}_mom0.fits", mom0, hdr, "Jy/beam km/s")
        if name == "data":
            mom1 = moment_maps(d, vel, mask=d > 3.0 * rms)[1]
        if name != "residual":
            paths[f"{name}_mom1"] = write_image_fits(out / f"{name}_mom1.fits", mom1, hdr, "km/s")
    pvs = {}
    for name in ("data", "model", "residual"):
        off, pv = pv_diagram(maps[name], cell, pa_deg, centre_arcsec=centre_arcsec)
        pvs[name] = pv
        h = fits.Header()
        h["BUNIT"] = "Jy/beam"
        h["CTYPE1"], h["CUNIT1"], h["CRVAL1"], h["CDELT1"], h["CRPIX1"] = "OFFSET", "arcsec", off[0], cell, 1.0
        h["CTYPE2"], h["CUNIT2"] = "VRAD", "m/s"
        h["CRVAL2"], h["CDELT2"], h["CRPIX2"] = vel[0] * 1e3, (vel[1] - vel[0]) * 1e3 if vel.size > 1 else 1.0, 1.0
        h["PA"] = (float(pa_deg), "slit PA [deg], N through E to the receding side")
        h["COMMENT"] = "offset along the major axis from the disc centre, positive towards the receding side"
        hdu = fits.PrimaryHDU(pv.T.astype(np.float32), header=h)
        paths[f"pv_{name}"] = atomic_write(out / f"pv_{name}.fits",
                                           lambda tmp, hdu=hdu: hdu.writeto(tmp, overwrite=True))
    if figures:
        fig = plot_pv(off, vel, {"data": pvs["data"], "model": pvs["model"], "residual": pvs["residual"]},
                      vsys_kms=vsys_kms, title=f"major axis, PA = {pa_deg:.1f} deg")
        paths["pv_png"] = atomic_write(out / "pv.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        from .plots import _plt
        _plt().close(fig)
    tab = results_table(summary)
    paths["results_ecsv"] = atomic_write(out / "results.ecsv",
                                         lambda tmp: tab.write(tmp, format="ascii.ecsv", overwrite=True))
    return paths
