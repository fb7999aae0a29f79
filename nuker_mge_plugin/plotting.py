"""Figures for the command line: Nuker vs MGE profile and the jampy circular velocity."""

import numpy as np

from .basis import FIT_R_MAX_PC, FIT_R_MIN_PC
from .nuker import nuker_surface_density


def plot_mge_summary(mge, path, *, inc_deg=None, mbh=0.0, title=None, format=None):
    """Write a figure: surface density (Nuker vs MGE) with fractional residuals, and v_c.

    Without ``inc_deg`` only the surface-density panels are drawn (v_c needs an inclination).
    With it, the jampy circular velocity of the stars, plus, when ``mbh`` > 0 [Msun], the stars
    and black hole, the black hole alone and the black hole's fractional boost below.
    ``format`` is matplotlib's (default: from the extension of ``path``).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = mge.meta
    scale = mge.pc_per_arcsec
    R_pc = np.logspace(np.log10(FIT_R_MIN_PC / 3), np.log10(FIT_R_MAX_PC * 3), 400)
    R_as = R_pc / scale
    nuk = nuker_surface_density(R_pc, m["sigma_b"], m["r_b_pc"], m["alpha"], m["beta"], m["gamma"])
    sig = mge.surface_density(R_as)

    ncols = 1 if inc_deg is None else 2
    fig, axes = plt.subplots(2, ncols, figsize=(5.5 * ncols, 6.5), sharex="col", squeeze=False,
                             gridspec_kw=dict(height_ratios=[3, 1.3]))
    ax, axr = axes[:, 0]
    ax.loglog(R_as, nuk, "k-", lw=2, label="Nuker (eq. 2)")
    ax.loglog(R_as, np.where(sig > 0, sig, np.nan), "C1--", lw=1.5,
              label=f"MGE, {len(mge)} Gaussians ({m.get('backend')})")
    ax.axvline(m["r_b_arcsec"], color="0.6", ls=":", label="break radius")
    ax.set_ylabel(r"$\Sigma_\star$ [M$_\odot$ pc$^{-2}$]")
    ax.legend(fontsize=8)
    axr.semilogx(R_as, sig / nuk - 1, "C1-")
    axr.axvspan(FIT_R_MIN_PC / scale, FIT_R_MAX_PC / scale, color="C2", alpha=0.08, label="fitted range")
    axr.axhline(0, color="k", lw=0.5)
    lim = np.max(np.abs((sig / nuk - 1)[(R_pc >= FIT_R_MIN_PC) & (R_pc <= FIT_R_MAX_PC)]))
    lim = max(float(lim), 1e-12)  # an exact fit would give an empty y range
    axr.set_ylim(-3 * lim, 3 * lim)
    axr.set_xlabel("R [arcsec]")
    axr.set_ylabel("MGE / Nuker - 1")
    axr.legend(fontsize=8)

    if inc_deg is not None:
        ax, axr = axes[:, 1]
        rad = np.logspace(-2, 1.3, 120)
        v_st = mge.vcirc(rad, inc_deg, 0.0)
        if mbh > 0:
            v_bh = mge.vcirc(rad, inc_deg, mbh)
            ax.semilogx(rad, v_bh, "k-", label=f"stars + BH ({mbh:.2g} M$_\\odot$)")
        ax.semilogx(rad, v_st, "C0--", label="stars only")
        if mbh > 0:
            ax.semilogx(rad, np.sqrt(np.maximum(v_bh**2 - v_st**2, 0)), "C3:", label="BH only")
        ax.set_ylabel("v$_c$ [km/s] (jampy)")
        ax.set_ylim(0, 1.1 * np.max(v_st) * 1.6)
        ax.legend(fontsize=8)
        if mbh > 0:
            axr.loglog(rad, v_bh / v_st - 1, "C3-")
            axr.set_xlabel("R [arcsec]")
            axr.set_ylabel("v$_{BH+*}$/v$_*$ - 1")
        else:  # no black hole: nothing to show below, so the velocity panel keeps its own x axis
            axr.remove()
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel("R [arcsec]")
    where = f"Nuker MGE at {mge.distance:g} Mpc" + ("" if inc_deg is None else f", i = {inc_deg:g} deg")
    fig.suptitle(title or where)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format=format)
    plt.close(fig)
    return path
