"""Figures of a fit (matplotlib, Agg backend; no display needed).

Every ``plot_*`` function takes arrays and returns a ``matplotlib.figure.Figure``;
:func:`write_figures` writes the PNGs of a fit. Figures follow the seed paper: the corner plot of
all free parameters with truths marked (Fig. 4), the black-hole mass credible intervals (Fig. 2:
box = 68%, whiskers = 99.7%), the circular-velocity band (Fig. 3, right), plus trace plots of every
sampler stage and data / model / residual moment maps.

Sky orientation of images. :func:`dirty_image` returns ``(n_chan, ny, nx)`` cubes indexed
``[chan, iy, ix]`` on the package's sky grid (``dynamics.coords.SkyGrid``): pixel ``(ix, iy)`` is
centred at ``x = (ix - nx/2) cell`` (+x = **West**), ``y = (iy - ny/2) cell`` (+y = North) from
the phase centre. Shown with ``origin="lower"``, column index increasing to the right, East is on
the left and North up, the usual astronomical orientation; the axes are labelled with the offset
towards East (``-x``) and North (``y``) [arcsec].

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).

Its length (~600 lines) is one function per figure of a fit's output folder, each independent of
the others.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .config import TABLE1

__all__ = ["dirty_image", "moment_maps", "plot_corner", "plot_vcirc", "plot_mbh", "plot_traces", "plot_maps",
           "write_figures"]


def _plt():
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")  # no display: figures are only written to files
    import matplotlib.pyplot as plt
    return plt


def _label(name, sep=" "):
    unit = TABLE1[name][2] if name in TABLE1 else ""
    return f"{name}{sep}[{unit}]" if unit else name


def _order(names):
    """Table-1 order first, then the rest as given."""
    names = list(names)
    return [n for n in TABLE1 if n in names] + [n for n in names if n not in TABLE1]


def _span(x):
    lo, hi = float(np.min(x)), float(np.max(x))
    if not hi > lo:  # a constant: give it a visible range
        pad = 0.5 * max(abs(lo), 1.0) * 1e-3
        return lo - pad, hi + pad
    return lo, hi


# ---------------------------------------------------------------------------- dirty images
def dirty_image(cells_vis, cells_uv_index, grid_shape, n_chan, *, weights=None):
    """Dirty channel images [Jy/beam] from gridded visibility cells.

    The cells are completed with their Hermitian conjugates ``V(-u, -v) = conj V(u, v)`` (a cell
    whose conjugate is also given keeps the given value), weighted, inverse Fourier transformed
    with the package's conventions (``dynamics.visibilities``: ``V = sum I exp(-2 pi i (u l + v m))``,
    ``l = -x`` East, ``m = y`` North, zero spacing at cell ``(nu//2, nv//2)``, half-pixel ramps for
    odd sizes), and normalised by the sum of weights, so that the dirty beam peaks at 1.

    Parameters
    ----------
    cells_vis : (n_cells,) complex array
        Visibilities of the cells [Jy] (e.g. ``GriddedVis.vis[mask]``, or model visibilities of
        the same cells, or data minus model).
    cells_uv_index : tuple of 3 int arrays, (n_cells, 3) int array, or (n_cells,) int array
        Cell indices ``(chan, ku, kv)`` into the ``(n_chan, nu, nv)`` grid -- ``np.nonzero(mask)``
        gives the tuple form -- or flat indices into that grid.
    grid_shape : (nu, nv)
        uv grid size [cells]; ``nu = nx``, ``nv = ny`` pixels of the image.
    n_chan : int
        Number of channels.
    weights : (n_cells,) array, optional
        Cell weights (default 1: uniform weighting of the gridded cells; ``1 / sigma^2`` gives
        natural weighting).

    Returns
    -------
    (n_chan, ny, nx) float64 array
        Indexed ``[chan, iy, ix]``: +ix West, +iy North (module doc); show with ``origin="lower"``
        for East left. A channel without cells is all zeros.
    """
    nu, nv = (int(s) for s in grid_shape)
    n_chan = int(n_chan)
    V = np.asarray(cells_vis).ravel().astype(np.complex128)
    idx = cells_uv_index
    if isinstance(idx, tuple) and len(idx) == 3:
        c, ku, kv = (np.asarray(a, dtype=np.int64).ravel() for a in idx)
    else:
        idx = np.asarray(idx, dtype=np.int64)
        if idx.ndim == 2 and idx.shape[1] == 3:
            c, ku, kv = idx[:, 0], idx[:, 1], idx[:, 2]
        elif idx.ndim == 1:
            c, ku, kv = np.unravel_index(idx, (n_chan, nu, nv))
        else:
            raise ValueError(f"cells_uv_index: expects (chan, ku, kv) arrays, (n, 3) or flat indices, "
                             f"got shape {idx.shape}")
    if not (c.size == ku.size == kv.size == V.size):
        raise ValueError(f"cells_vis ({V.size}) and cells_uv_index ({c.size}) differ in length")
    if V.size and (c.min() < 0 or c.max() >= n_chan or ku.min() < 0 or ku.max() >= nu
                   or kv.min() < 0 or kv.max() >= nv):
        raise ValueError(f"cells_uv_index: indices outside the (n_chan, nu, nv) = {(n_chan, nu, nv)} grid")
    w = np.ones(V.size) if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    if w.size != V.size or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("weights: expects (n_cells,) finite values >= 0")
    if not np.all(np.isfinite(V)):
        raise ValueError(f"cells_vis: {int((~np.isfinite(V)).sum())} values are not finite (select usable cells)")

    G = np.zeros((n_chan, nu, nv), np.complex128)
    W = np.zeros((n_chan, nu, nv))
    given = np.zeros((n_chan, nu, nv), bool)
    G[c, ku, kv] = w * V
    W[c, ku, kv] = w
    given[c, ku, kv] = True
    # conjugate partner of centred cell (cu, cv) is (-cu, -cv): index 2 (n//2) - k
    pu, pv = 2 * (nu // 2) - ku, 2 * (nv // 2) - kv
    ok = (pu >= 0) & (pu < nu) & (pv >= 0) & (pv < nv)
    ok[ok] &= ~given[c[ok], pu[ok], pv[ok]]
    G[c[ok], pu[ok], pv[ok]] = w[ok] * np.conj(V[ok])
    W[c[ok], pu[ok], pv[ok]] = w[ok]

    # I(x, y) = sum G exp(+2 pi i (u l + v m)), u l = -cu (ix - nx/2) / nx, v m = cv (iy - ny/2) / ny.
    # With ix - nx/2 = jx - hx (jx = ix - nx//2, hx = 0 or 1/2): a forward DFT over u, an inverse
    # one over v, and for odd sizes the half-pixel ramps exp(+-2 pi i c h / n).
    cu = np.arange(nu) - nu // 2
    cv = np.arange(nv) - nv // 2
    hx, hy = nu / 2.0 - nu // 2, nv / 2.0 - nv // 2
    if hx:
        G = G * np.exp(2j * np.pi * cu * hx / nu)[None, :, None]
    if hy:
        G = G * np.exp(-2j * np.pi * cv * hy / nv)[None, None, :]
    g = np.fft.ifftshift(G, axes=(1, 2))
    img = np.fft.fft(g, axis=1)
    img = np.fft.ifft(img, axis=2) * nv
    img = np.fft.fftshift(img, axes=(1, 2)).real  # (chan, ix, iy)
    s = W.sum(axis=(1, 2))
    img = img / np.where(s > 0, s, 1.0)[:, None, None]
    return np.ascontiguousarray(img.transpose(0, 2, 1))


def moment_maps(cube, velocity_kms, *, mask=None, clip_sigma=3.0):
    """Moment-0 [cube unit x km/s] and moment-1 [km/s] maps of an (n_chan, ny, nx) cube.

    Parameters
    ----------
    cube : (n_chan, ny, nx) array
        E.g. a dirty cube [Jy/beam].
    velocity_kms : (n_chan,) array
        Channel velocities [km/s].
    mask : (n_chan, ny, nx) bool array, optional
        Voxels that count; default ``cube > clip_sigma * rms`` with the robust rms
        ``1.4826 MAD`` of the cube.
    clip_sigma : float
        Threshold of the default mask [rms].

    Returns
    -------
    mom0, mom1 : (ny, nx) arrays
        ``sum(I dv)`` and ``sum(I v) / sum(I)`` over masked voxels; mom1 is NaN where fewer than 2
        channels are masked in or the masked flux is not positive.
    """
    c = np.asarray(cube, dtype=np.float64)
    v = np.asarray(velocity_kms, dtype=np.float64)
    if c.ndim != 3 or v.shape != (c.shape[0],):
        raise ValueError(f"cube (n_chan, ny, nx) and velocity_kms (n_chan,) do not match: {c.shape}, {v.shape}")
    if mask is None:
        rms = 1.4826 * np.median(np.abs(c - np.median(c)))
        mask = c > clip_sigma * rms
    dv = float(np.median(np.abs(np.diff(v)))) if v.size > 1 else 1.0
    ci = np.where(mask, c, 0.0)
    flux = ci.sum(axis=0)
    mom0 = flux * dv
    with np.errstate(invalid="ignore", divide="ignore"):
        mom1 = (ci * v[:, None, None]).sum(axis=0) / flux
    mom1[(mask.sum(axis=0) < 2) | ~(flux > 0)] = np.nan
    return mom0, mom1


# ---------------------------------------------------------------------------- figures
def plot_corner(draws, truth=None, *, names=None, bins=25, title=None):
    """Corner plot of the posterior (seed paper Fig. 4): 1-D histograms and 2-D 68/95% contours.

    Parameters
    ----------
    draws : mapping name -> array (chains, draws) or (n,)
        Posterior draws [parameter units].
    truth : mapping name -> float, optional
        True values, marked by red lines.
    names : sequence of str, optional
        Parameters to show (default all, Table-1 order).
    bins : int
        Histogram bins per axis.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    from scipy.ndimage import gaussian_filter

    names = _order(names or list(draws))
    x = {n: np.asarray(draws[n], dtype=np.float64).ravel() for n in names}
    k = len(names)
    size = max(1.5 * k, 4.0)
    fig = plt.figure(figsize=(size, size))
    gs = fig.add_gridspec(k, k, left=0.1, bottom=0.1, right=0.98, top=0.95, wspace=0.06, hspace=0.06)
    spans = {n: _span(x[n]) for n in names}
    truth = truth or {}
    for i, ni in enumerate(names):
        for j, nj in enumerate(names[:i + 1]):  # lower triangle only: axes are what costs time
            ax = fig.add_subplot(gs[i, j])
            if i == j:
                ax.hist(x[ni], bins=bins, range=spans[ni], histtype="step", color="k", density=True)
                for q in np.percentile(x[ni], [16, 50, 84]):
                    ax.axvline(q, color="0.4", ls="--", lw=0.8)
                if ni in truth:
                    ax.axvline(truth[ni], color="C3", lw=1.2)
                ax.set_yticks([])
                ax.set_xlim(spans[ni])
            else:
                H, xe, ye = np.histogram2d(x[nj], x[ni], bins=bins, range=[spans[nj], spans[ni]])
                ax.pcolormesh(xe, ye, H.T, cmap="Greys", shading="flat", rasterized=True)
                Hs = gaussian_filter(H, 1.0)  # contours of a lightly smoothed histogram are not ragged
                levels = _mass_levels(Hs, (0.95, 0.68))
                if levels is not None:
                    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
                    ax.contour(xc, yc, Hs.T, levels=levels, colors="C0", linewidths=1.0)
                if nj in truth:
                    ax.axvline(truth[nj], color="C3", lw=1.0)
                if ni in truth:
                    ax.axhline(truth[ni], color="C3", lw=1.0)
                ax.set_xlim(spans[nj])
                ax.set_ylim(spans[ni])
                ax.yaxis.set_major_locator(MaxNLocator(3))
                if j == 0:
                    ax.set_ylabel(_label(ni, "\n"), fontsize=7)
                else:
                    ax.tick_params(labelleft=False)
            ax.xaxis.set_major_locator(MaxNLocator(3))
            ax.tick_params(labelsize=6)
            if i == k - 1:
                ax.set_xlabel(_label(nj, "\n"), fontsize=7)
                ax.tick_params(axis="x", labelrotation=45)
            else:
                ax.tick_params(labelbottom=False)
    fig.suptitle(title or "Posterior (68% and 95% contours; red: truth)", fontsize=10)
    return fig


def _mass_levels(H, masses):
    """Histogram heights enclosing the given probability masses (highest bins first), increasing."""
    h = np.sort(H.ravel())[::-1]
    tot = h.sum()
    if tot <= 0:
        return None
    cum = np.cumsum(h) / tot
    lev = [h[min(np.searchsorted(cum, m), h.size - 1)] for m in masses]
    lev = sorted(set(float(v) for v in lev if v > 0))
    return lev if lev and lev[-1] < h[0] else None


def plot_vcirc(radius_arcsec, vcirc_draws=None, *, band=None, components=None, truth=None, title=None,
               distance_mpc=None):
    """Circular-velocity band (seed paper Fig. 3, right): median and 16-84% band.

    Parameters
    ----------
    radius_arcsec : (n_radii,) array [arcsec]
    vcirc_draws : (n_draws, n_radii) array, optional
        v_c of posterior draws [km/s]. Or give
    band : mapping, optional
        ``{"median", "p16", "p84"}`` lists [km/s] (``summary["vcirc"]``).
    components : mapping, optional
        ``label -> (n_draws, n_radii)`` or (n_radii,) curves [km/s], e.g. ``{"stars": ..., "bh": ...}``;
        their medians are drawn as separate lines.
    truth : (n_radii,) array, optional
        True v_c [km/s] (mock data).
    title : str, optional
    distance_mpc : float, optional
        Adds a top axis in pc.

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _plt()
    r = np.asarray(radius_arcsec, dtype=np.float64)
    if vcirc_draws is not None:
        v = np.asarray(vcirc_draws, dtype=np.float64)
        p16, med, p84 = np.percentile(v, [16, 50, 84], axis=0)
    elif band is not None:
        med, p16, p84 = (np.asarray(band[k], dtype=np.float64) for k in ("median", "p16", "p84"))
    else:
        raise ValueError("plot_vcirc: give vcirc_draws (n_draws, n_radii) or band {median, p16, p84}")
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.fill_between(r, p16, p84, color="C0", alpha=0.3, lw=0, label="16-84%")
    ax.plot(r, med, color="C0", lw=2, label="median (stars + BH)")
    for i, (lab, cv) in enumerate((components or {}).items()):
        cv = np.asarray(cv, dtype=np.float64)
        ax.plot(r, np.median(cv, axis=0) if cv.ndim == 2 else cv, ls="--", color=f"C{i + 1}", label=f"{lab} (median)")
    if truth is not None:
        ax.plot(r, np.asarray(truth, dtype=np.float64), color="C3", lw=1, ls=":", label="truth")
    ax.set_xscale("log")
    ax.set_xlabel("radius [arcsec]")
    ax.set_ylabel("circular velocity $v_c$ [km/s]")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    if distance_mpc:
        scale = distance_mpc * np.pi / 0.648  # pc per arcsec (jampy's constant)
        top = ax.secondary_xaxis("top", functions=(lambda a: a * scale, lambda p: p / scale))
        top.set_xlabel("radius [pc]")
    ax.set_title(title or "Circular velocity", fontsize=10)
    fig.tight_layout()
    return fig


def _hdi(x, prob):
    s = np.sort(x)
    k = min(int(math.floor(prob * s.size)), s.size - 1)
    i = int(np.argmin(s[k:] - s[:s.size - k]))
    return s[i], s[i + k]


def plot_mbh(log10_mbh, *, truth=None, comparisons=None, title=None):
    """Black-hole mass credible intervals (seed paper Fig. 2 style) and the marginal posterior.

    Parameters
    ----------
    log10_mbh : array (any shape)
        Posterior draws of log10(M_BH / Msun).
    truth : float, optional
        True log10 M_BH [log10 Msun], a red line.
    comparisons : sequence of mapping, optional
        Other measurements as extra rows, each ``{"label": str, "median": float, "hdi_68": [lo, hi],
        "hdi_997": [lo, hi]}`` [log10 Msun] (e.g. literature MGE-based values).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Top: histogram with the 68% (dark) and 99.7% (light) highest-density intervals. Bottom:
        one row per measurement, box = 68%, whiskers = 99.7%, tick = median.
    """
    plt = _plt()
    x = np.asarray(log10_mbh, dtype=np.float64).ravel()
    rows = [dict(label="this fit", median=float(np.median(x)), hdi_68=list(_hdi(x, 0.68)),
                 hdi_997=list(_hdi(x, 0.997)))] + list(comparisons or [])
    fig, (ax, axb) = plt.subplots(2, 1, figsize=(6.4, 3.2 + 0.45 * len(rows)), sharex=True,
                                  gridspec_kw=dict(height_ratios=[2.2, 0.4 + 0.35 * len(rows)]))
    lo, hi = _span(x)
    ax.hist(x, bins=50, range=(lo, hi), density=True, histtype="stepfilled", color="0.85", ec="0.3")
    a, b = rows[0]["hdi_997"]
    ax.axvspan(a, b, color="C0", alpha=0.12, lw=0, label="99.7% HDI")
    a, b = rows[0]["hdi_68"]
    ax.axvspan(a, b, color="C0", alpha=0.3, lw=0, label="68% HDI")
    ax.axvline(rows[0]["median"], color="C0", lw=1.5, label="median")
    if truth is not None:
        ax.axvline(truth, color="C3", lw=1.5, label="truth")
        axb.axvline(truth, color="C3", lw=1.5)
    ax.set_ylabel("posterior density")
    ax.legend(fontsize=8)
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        l68, h68 = row["hdi_68"]
        l997, h997 = row["hdi_997"]
        axb.add_patch(plt.Rectangle((l68, y - 0.3), h68 - l68, 0.6, fc="C0" if i == 0 else "C1", alpha=0.5, ec="k"))
        axb.plot([l997, l68], [y, y], "k-", lw=1)
        axb.plot([h68, h997], [y, y], "k-", lw=1)
        axb.plot([l997, l997], [y - 0.15, y + 0.15], "k-", lw=1)
        axb.plot([h997, h997], [y - 0.15, y + 0.15], "k-", lw=1)
        axb.plot([row["median"]] * 2, [y - 0.3, y + 0.3], "k-", lw=2)
    axb.set_yticks(range(len(rows)))
    axb.set_yticklabels([r["label"] for r in rows][::-1], fontsize=8)
    axb.set_ylim(-0.7, len(rows) - 0.3)
    allx = [v for r in rows for v in r["hdi_997"]] + ([truth] if truth is not None else [])
    pad = 0.05 * (max(allx) - min(allx) or 1.0)
    axb.set_xlim(min(allx) - pad, max(allx) + pad)
    axb.set_xlabel(r"$\log_{10}(M_{BH}\,/\,M_\odot)$")
    ax.set_title(title or "Black-hole mass (box: 68%, whiskers: 99.7%)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_traces(traces, *, title=None):
    """Trace plots of every sampler stage: one column per stage, one row per parameter plus logp.

    Parameters
    ----------
    traces : mapping stage -> mapping name -> (chains, steps) array
        E.g. ``{"burn_in_1": {...}, ..., "posterior": {...}}`` in the order to show; a ``"logp"``
        entry [nats] (or ``"lp"``) is drawn in the last row. Parameters missing in a stage leave
        the panel empty.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    plt = _plt()
    stages = list(traces)
    if not stages:
        raise ValueError("traces: expects at least one stage")
    names = []
    for st in stages:
        for n in traces[st]:
            n = "logp" if n == "lp" else n
            if n not in names:
                names.append(n)
    has_lp = "logp" in names
    names = _order([n for n in names if n != "logp"]) + (["logp"] if has_lp else [])
    width, height = 3.0 * len(stages) + 1.8, 1.0 * len(names) + 1.0
    fig, axes = plt.subplots(len(names), len(stages), figsize=(width, height), squeeze=False, sharex="col")
    for j, st in enumerate(stages):
        d = {("logp" if k == "lp" else k): v for k, v in traces[st].items()}
        for i, n in enumerate(names):
            ax = axes[i, j]
            if n in d:
                a = np.atleast_2d(np.asarray(d[n], dtype=np.float64))
                for c in range(a.shape[0]):
                    ax.plot(a[c], lw=0.5, alpha=0.8, color=f"C{c % 10}", rasterized=True)
            else:
                ax.text(0.5, 0.5, "n/a", transform=ax.transAxes, ha="center", va="center", color="0.5", fontsize=7)
                ax.set_yticks([])
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel("logp [nats]" if n == "logp" else _label(n), fontsize=7, rotation=0, ha="right",
                              va="center")
            if i == 0:
                ax.set_title(st, fontsize=9)
            if i == len(names) - 1:
                ax.set_xlabel("step", fontsize=8)
    fig.suptitle(title or "Chains by stage (one colour per chain)", fontsize=10)
    # margins in inches, so that labels fit whatever the number of rows and stages
    fig.subplots_adjust(left=1.7 / width, right=1 - 0.1 / width, bottom=0.5 / height, top=1 - 0.5 / height,
                        hspace=0.15, wspace=0.25)
    return fig


def plot_maps(data, model, residual, velocity_kms, cell_arcsec, *, vsys_kms=None, clip_sigma=3.0, title=None):
    """Data / model / residual moment maps from dirty cubes.

    Parameters
    ----------
    data, model, residual : (n_chan, ny, nx) arrays
        Dirty cubes [Jy/beam] indexed ``[chan, iy, ix]`` as :func:`dirty_image` returns them.
    velocity_kms : (n_chan,) array
        Channel velocities [km/s].
    cell_arcsec : float
        Pixel size [arcsec].
    vsys_kms : float, optional
        Subtracted from the moment-1 maps [km/s].
    clip_sigma : float
        Moment 0 of all three rows is summed where ``model > clip_sigma * rms(data)`` (robust rms):
        one mask, so ``mom0(residual) = mom0(data) - mom0(model)`` holds exactly, chosen without
        the data's noise, so positive noise peaks do not bias the residual. Moment 1 of the data
        uses ``data > clip_sigma * rms(data)``, of the model the model mask.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Rows data, model, residual; columns moment 0 [Jy/beam km/s] and moment 1 [km/s]. The
        residual row's moment-1 panel is ``mom1(data) - mom1(model)`` (a residual cube has no
        meaningful velocity field of its own). East left, North up.
    """
    plt = _plt()
    d = np.asarray(data, dtype=np.float64)
    cubes = [d, np.asarray(model, dtype=np.float64), np.asarray(residual, dtype=np.float64)]
    if any(c.shape != d.shape or c.ndim != 3 for c in cubes):
        raise ValueError(f"data, model, residual: expects three (n_chan, ny, nx) cubes of one shape, "
                         f"got {[c.shape for c in cubes]}")
    v = np.asarray(velocity_kms, dtype=np.float64) - (vsys_kms or 0.0)
    rms = 1.4826 * np.median(np.abs(d - np.median(d)))
    model_mask = cubes[1] > clip_sigma * rms
    mom0 = [moment_maps(c, v, mask=model_mask)[0] for c in cubes]
    mom1 = [moment_maps(d, v, mask=d > clip_sigma * rms)[1], moment_maps(cubes[1], v, mask=model_mask)[1], None]
    m = list(zip(mom0, mom1))
    _, ny, nx = d.shape
    # pixel edges as offsets towards East (-x) and North (y) [arcsec]
    east = -(np.array([-0.5, nx - 0.5]) - nx / 2.0) * cell_arcsec
    north = (np.array([-0.5, ny - 0.5]) - ny / 2.0) * cell_arcsec
    extent = (east[0], east[1], north[0], north[1])
    fig, axes = plt.subplots(3, 2, figsize=(8.4, 11.0), squeeze=False)
    m0max = np.nanmax(np.abs(m[0][0])) or 1.0
    vfin = np.concatenate([m[0][1][np.isfinite(m[0][1])], m[1][1][np.isfinite(m[1][1])]])
    vlim = float(np.percentile(np.abs(vfin), 99)) if vfin.size else 1.0
    rfin = np.abs(m[2][0][np.isfinite(m[2][0])])
    rlim = float(np.percentile(rfin, 99)) if rfin.size and np.percentile(rfin, 99) > 0 else m0max
    dmom1 = m[0][1] - m[1][1]
    dfin = dmom1[np.isfinite(dmom1)]
    dlim = float(np.percentile(np.abs(dfin), 99)) if dfin.size else 1.0
    vlab = "v - v$_{sys}$" if vsys_kms is not None else "v"
    panels = [
        (m[0][0], "data: moment 0", "Jy/beam km/s", "inferno", (0, m0max)),
        (m[0][1], f"data: moment 1 ({vlab})", "km/s", "RdBu_r", (-vlim, vlim) if vsys_kms is not None else None),
        (m[1][0], "model: moment 0", "Jy/beam km/s", "inferno", (0, m0max)),
        (m[1][1], f"model: moment 1 ({vlab})", "km/s", "RdBu_r", (-vlim, vlim) if vsys_kms is not None else None),
        (m[2][0], "residual: moment 0 (own scale)", "Jy/beam km/s", "RdBu_r", (-rlim, rlim)),
        (dmom1, "data - model: moment 1", "km/s", "RdBu_r", (-(dlim or 1.0), dlim or 1.0)),
    ]
    for ax, (img, lab, unit, cmap, lim) in zip(axes.ravel(), panels):
        kw = dict(vmin=lim[0], vmax=lim[1]) if lim else {}
        im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, interpolation="nearest", **kw)
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.set_label(unit, fontsize=8)
        ax.set_title(lab, fontsize=9)
        ax.set_xlabel("East offset [arcsec]  (East left)", fontsize=8)
        ax.set_ylabel("North offset [arcsec]", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title or f"Dirty-image moment maps (moment 0 where model > {clip_sigma:g} rms)", fontsize=10)
    fig.subplots_adjust(left=0.1, right=0.92, bottom=0.05, top=0.94, wspace=0.45, hspace=0.3)
    return fig


# ---------------------------------------------------------------------------- all figures
def write_figures(outdir, *, draws=None, sample_stats=None, truth=None, vcirc=None, radius_arcsec=None,
                  vcirc_components=None, vcirc_truth=None, traces=None, maps=None, summary=None,
                  comparisons=None, distance_mpc=None, title=None, dpi=100):
    """Write the PNG figures of a fit into ``outdir``; figures whose inputs are missing are skipped.

    Parameters
    ----------
    outdir : str or Path
    draws : mapping name -> (chains, draws), optional
        Posterior draws: ``corner.png`` and, with ``log10_mbh``, ``mbh.png``.
    sample_stats : mapping, optional
        With ``logp``: the posterior is added as the last column ``"posterior"`` of ``traces.png``.
    truth : mapping name -> float, optional
    vcirc : (n_draws, n_radii) array, optional; radius_arcsec : (n_radii,) array
        ``vcirc.png`` [km/s, arcsec]; without ``vcirc``, ``summary["vcirc"]`` is used if present.
    vcirc_components : mapping label -> array, optional; vcirc_truth : (n_radii,) array, optional
        See :func:`plot_vcirc`.
    traces : mapping stage -> mapping name -> (chains, steps), optional
        ``traces.png`` (:func:`plot_traces`).
    maps : mapping, optional
        ``{"data", "model", "residual", "velocity_kms", "cell_arcsec"[, "vsys_kms"]}``: ``maps.png``.
    summary : dict, optional
        A :func:`~.results.summarize` dict (for the v_c band when ``vcirc`` is not given).
    comparisons : sequence, optional
        Extra rows of ``mbh.png`` (:func:`plot_mbh`).
    distance_mpc : float, optional
        Adds a pc axis to ``vcirc.png``.
    title : str, optional
        Prefix of the figure titles (e.g. the galaxy name).
    dpi : int

    Returns
    -------
    dict
        ``figure name -> path`` of the files written.
    """
    plt = _plt()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    out = {}
    pre = f"{title}: " if title else ""

    def save(name, fig):
        p = outdir / f"{name}.png"
        fig.savefig(p, dpi=dpi)
        plt.close(fig)
        out[name] = str(p)

    truth = dict(truth or {})
    if draws:
        save("corner", plot_corner(draws, truth, title=f"{pre}posterior (68% and 95% contours; red: truth)"))
        if "log10_mbh" in draws:
            save("mbh", plot_mbh(draws["log10_mbh"], truth=truth.get("log10_mbh"), comparisons=comparisons,
                                 title=f"{pre}black-hole mass (box: 68%, whiskers: 99.7%)"))
    if radius_arcsec is not None and (vcirc is not None or (summary and "vcirc" in summary)):
        band = None if vcirc is not None else summary["vcirc"]
        save("vcirc", plot_vcirc(radius_arcsec, vcirc, band=band, components=vcirc_components, truth=vcirc_truth,
                                 distance_mpc=distance_mpc, title=f"{pre}circular velocity"))
    elif summary and "vcirc" in summary:
        save("vcirc", plot_vcirc(summary["vcirc"]["radius_arcsec"], band=summary["vcirc"],
                                 components=vcirc_components, truth=vcirc_truth, distance_mpc=distance_mpc,
                                 title=f"{pre}circular velocity"))
    tr = dict(traces or {})
    if draws and sample_stats is not None and "logp" in sample_stats:
        tr["posterior"] = {**draws, "logp": sample_stats["logp"]}
    if tr:
        save("traces", plot_traces(tr, title=f"{pre}chains by stage (one colour per chain)"))
    if maps is not None:
        need = ("data", "model", "residual", "velocity_kms", "cell_arcsec")
        missing = [k for k in need if k not in maps]
        if missing:
            raise ValueError(f"maps: missing {missing} (need {list(need)})")
        save("maps", plot_maps(maps["data"], maps["model"], maps["residual"], maps["velocity_kms"],
                               maps["cell_arcsec"], vsys_kms=maps.get("vsys_kms"),
                               title=f"{pre}{maps.get('kind', 'dirty-image')} moment maps"))
    return out
