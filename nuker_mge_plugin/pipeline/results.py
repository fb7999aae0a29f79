"""What a fit writes: the posterior as netCDF (ArviZ 0.23 and 1.x read it), ``summary.json``, figures.

Inputs are plain arrays, so that this module knows nothing about the sampler or the model:

* ``draws``: ``name -> (chains, draws)`` array of every free parameter, in constrained units
  (``config.TABLE1``'s);
* ``sample_stats``: ``logp`` (chains, draws) [log posterior density, nats, up to a constant],
  ``step_size`` scalar, (chains,) or (chains, draws) [unconstrained units], and ``accepted``
  (chains, draws) bool (MALA) or ``acceptance_rate`` (chains, draws) in [0, 1] (NUTS: the mean
  Metropolis acceptance statistic of each trajectory); further (chains, draws) arrays
  (``diverging``, ``tree_depth``, ``n_leapfrog``, ``energy`` of NUTS) are passed through to the file.

Diagnostics (computed here, in numpy, so that their definition does not change with the ArviZ
version; tests/test_inference_results.py checks them against ArviZ 0.23):

* ``r_hat``: rank-normalised split R-hat, the larger of the bulk and the folded (tail) value
  (Vehtari, Gelman, Simpson, Carpenter & Buerkner 2021, Bayesian Analysis 16, 667);
* ``ess_bulk``: effective sample size of the rank-normalised split chains, ``ess_tail``: the
  smaller of the ESS of the 5% and 95% quantile indicators (same paper), each with Geyer's
  initial-monotone-sequence truncation of the autocorrelations;
* ``hdi_68``, ``hdi_997``: highest-density intervals (the shortest interval holding that
  fraction of the pooled draws) of probability 0.68 and 0.997 -- named explicitly because the
  default interval differs between ArviZ versions (0.23: 94% HDI; 1.x: 89% equal-tailed);
* ``diagnostics.converged``: :func:`~nuker_mge_plugin.sampling.diagnostics.convergence` with the
  thresholds careful users apply: R-hat <= 1.01 and bulk and tail ESS >= 400 for every free
  parameter (:data:`CONVERGED_RHAT`, :data:`CONVERGED_ESS`).

The netCDF file is written from ``xarray.DataTree.from_dict({"posterior": ds, "sample_stats": ds2})``
with the h5netcdf engine: ``arviz.from_netcdf`` opens it in 0.23 (an ``InferenceData``) and in 1.x
(a ``DataTree``). Dimensions ``chain``, ``draw``; every variable carries a ``units`` attribute.
In ``sample_stats`` the log posterior is called ``lp`` (ArviZ's name), not ``logp``.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._files import atomic_write
from ..inference.parameters import bound_pileup_sides
from ..sampling.diagnostics import ESS_MIN, RHAT_MAX, convergence, ess_bulk, ess_tail, rhat
from .config import TABLE1
from .rundir import RunDir

__all__ = ["validate_draws", "rhat", "ess_bulk", "ess_tail", "hdi", "thin_draws", "vcirc_band", "at_bound",
           "summarize", "write_summary_json", "write_posterior_netcdf", "read_posterior_netcdf", "write_results",
           "CONVERGED_RHAT", "CONVERGED_ESS"]

#: Convergence thresholds of ``summary["diagnostics"]["converged"]``: R-hat <= 1.01 and bulk and tail
#: ESS >= 400 for every free parameter (aliases of ``sampling.diagnostics.RHAT_MAX`` and ``ESS_MIN``).
CONVERGED_RHAT = RHAT_MAX
CONVERGED_ESS = ESS_MIN

#: Sample stats that hold booleans (netCDF stores them as 0/1 int8; read back as bool).
_BOOL_STATS = ("accepted", "diverging")


# ---------------------------------------------------------------------------- input checks
def validate_draws(draws, sample_stats=None):
    """Check posterior draws (and sample stats); return them as float64 / bool numpy arrays.

    Parameters
    ----------
    draws : mapping
        ``name -> (chains, draws)`` array, all of one shape, finite [parameter units].
    sample_stats : mapping, optional
        ``logp`` (chains, draws) [nats], ``step_size`` scalar, (chains,) or (chains, draws)
        [unconstrained units], and ``accepted`` (chains, draws) bool or ``acceptance_rate``
        (chains, draws) in [0, 1]; other entries must be (chains, draws).

    Returns
    -------
    (dict, dict or None)
        The draws, and the sample stats with ``step_size`` broadcast to (chains, draws).

    Raises
    ------
    ValueError
        Naming the entry: empty draws, shapes that differ or are not 2-D, fewer than 4 draws per
        chain (split chains need 2), non-finite draws, missing sample stats.
    """
    if not isinstance(draws, Mapping) or not draws:
        raise ValueError("draws: expects a non-empty mapping name -> (chains, draws) array")
    out = {}
    shape = None
    for name, a in draws.items():
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"draws[{name!r}]: expects a (chains, draws) array, got shape {a.shape}")
        if shape is None:
            shape = a.shape
        if a.shape != shape:
            raise ValueError(f"draws[{name!r}]: shape {a.shape} differs from {shape} of the other parameters")
        bad = int((~np.isfinite(a)).sum())
        if bad:
            raise ValueError(f"draws[{name!r}]: {bad} of {a.size} draws are not finite")
        out[str(name)] = a
    if shape[1] < 4:
        raise ValueError(f"draws: expects at least 4 draws per chain (split R-hat), got {shape[1]}")
    if sample_stats is None:
        return out, None
    if not isinstance(sample_stats, Mapping):
        raise ValueError("sample_stats: expects a mapping with logp, step_size, accepted or acceptance_rate")
    missing = [k for k in ("logp", "step_size") if k not in sample_stats]
    if "accepted" not in sample_stats and "acceptance_rate" not in sample_stats:
        missing.append("accepted or acceptance_rate")
    if missing:
        raise ValueError(f"sample_stats: missing {missing} (need logp, step_size, accepted or acceptance_rate)")
    ss = {}
    for k, a in sample_stats.items():
        a = np.asarray(a)
        if k == "step_size":
            a = np.asarray(a, dtype=np.float64)
            if a.ndim == 1 and a.shape[0] == shape[0]:
                a = a[:, None]
            try:
                a = np.broadcast_to(a, shape).copy()
            except ValueError:
                raise ValueError(f"sample_stats['step_size']: expects a scalar, (chains,) or (chains, draws), "
                                 f"got shape {np.shape(sample_stats[k])}") from None
        elif a.shape != shape:
            raise ValueError(f"sample_stats[{k!r}]: expects shape {shape} (chains, draws), got {a.shape}")
        if k in _BOOL_STATS:
            a = a.astype(bool)
        ss[str(k)] = a
    return out, ss


# ---------------------------------------------------------------------------- diagnostics
def hdi(x, prob):
    """Highest-density interval [lo, hi] of the pooled draws: the shortest one spanning floor(prob n) + 1 of them."""
    s = np.sort(np.asarray(x, dtype=np.float64).ravel())
    n = s.size
    k = min(int(math.floor(prob * n)), n - 1)
    widths = s[k:] - s[:n - k]
    i = int(np.argmin(widths))
    return [float(s[i]), float(s[i + k])]


# ---------------------------------------------------------------------------- derived products
def thin_draws(draws, n, seed=0):
    """A seeded random subset of ``n`` pooled draws (without replacement if possible).

    Parameters
    ----------
    draws : mapping name -> (chains, draws) array
    n : int
        Number of draws wanted (all of them if there are fewer).
    seed : int

    Returns
    -------
    dict name -> (n,) float64 array, the same draws for every name [parameter units].
    """
    d, _ = validate_draws(draws)
    total = next(iter(d.values())).size
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(total, size=min(int(n), total), replace=False))
    return {k: v.ravel()[idx] for k, v in d.items()}


def vcirc_band(vcirc_draws, radius_arcsec):
    """Median and 16/84 percentiles of circular-velocity curves.

    Parameters
    ----------
    vcirc_draws : (n_draws, n_radii) array
        v_c(r) of posterior draws [km/s].
    radius_arcsec : (n_radii,) array [arcsec]

    Returns
    -------
    dict
        ``radius_arcsec``, ``median``, ``p16``, ``p84`` (lists of float, [arcsec] and [km/s]),
        ``n_draws``.
    """
    v = np.asarray(vcirc_draws, dtype=np.float64)
    r = np.asarray(radius_arcsec, dtype=np.float64)
    if v.ndim != 2 or r.ndim != 1 or v.shape[1] != r.size:
        raise ValueError(f"vcirc: expects (n_draws, n_radii) with radius_arcsec (n_radii,), "
                         f"got {v.shape} and {r.shape}")
    bad = int((~np.isfinite(v)).sum())
    if bad:
        raise ValueError(f"vcirc: {bad} of {v.size} circular velocities are not finite")
    p16, med, p84 = np.percentile(v, [16, 50, 84], axis=0)
    return dict(radius_arcsec=r.tolist(), median=med.tolist(), p16=p16.tolist(), p84=p84.tolist(),
                n_draws=int(v.shape[0]))


def at_bound(draws, priors, *, density_ratio=0.5, min_excess=2.0, width=0.01):
    """Free parameters whose posterior piles up against a bound of their prior range.

    The criterion is :func:`~nuker_mge_plugin.inference.parameters.bound_pileup_sides`, applied to
    every parameter of ``draws`` that has a range in ``priors``.

    Parameters
    ----------
    draws : mapping name -> (chains, draws) array [parameter units]
    priors : mapping name -> (low, high)
        Prior ranges (e.g. ``FitConfig.priors.ranges``); names absent here are skipped.
    density_ratio, min_excess, width : float
        The thresholds above (defaults 0.5, 2, 0.01).

    Returns
    -------
    dict
        ``name -> [{"side": "low" | "high", "bound": float, "density_ratio": float,
        "fraction_within_1pct": float}, ...]`` for flagged parameters only.
        ``fraction_within_1pct`` is the fraction of draws within ``width`` (1%) of the range of the bound.
    """
    d, _ = validate_draws(draws)
    out = {}
    for name, a in d.items():
        if name not in priors:
            continue
        flags = [dict(side=f["side"], bound=f["bound"], density_ratio=f["density_ratio"],
                      fraction_within_1pct=f["fraction"])
                 for f in bound_pileup_sides(a, *priors[name], density_ratio=density_ratio, min_excess=min_excess,
                                             width=width)]
        if flags:
            out[name] = flags
    return out


def _param_summary(x, rh, eb, et):
    """Moments, intervals and the given R-hat and bulk / tail ESS of one parameter's (chains, draws)."""
    std = float(x.std(ddof=1))
    return dict(mean=float(x.mean()), std=std, median=float(np.median(x)), hdi_68=hdi(x, 0.68),
                hdi_997=hdi(x, 0.997), r_hat=rh, ess_bulk=eb, ess_tail=et,
                mcse_mean=std / math.sqrt(eb) if eb and eb > 0 else math.nan)


def _one_or_mean(a):
    return float(a.flat[0]) if np.all(a == a.flat[0]) else float(a.mean())


def summarize(draws, sample_stats, *, priors=None, vcirc=None, radius_arcsec=None, truth=None,
              wall_time_s=None, vcirc_draws=200, seed=0, extra=None):
    """The ``summary.json`` dictionary of a fit.

    Parameters
    ----------
    draws : mapping name -> (chains, draws) array
        Posterior draws of every free parameter [parameter units].
    sample_stats : mapping
        ``logp`` (chains, draws) [nats], ``step_size`` scalar / (chains,) / (chains, draws), and
        ``accepted`` (chains, draws) bool or ``acceptance_rate`` (chains, draws) (see
        :func:`validate_draws`).
    priors : mapping name -> (low, high), optional
        Prior ranges of the free parameters, for ``at_bound`` (e.g. ``cfg.priors.ranges``).
    vcirc : (n_draws, n_radii) array or callable, optional
        Circular velocities [km/s] of thinned posterior draws at ``radius_arcsec``, or
        ``vcirc(thinned, radius_arcsec) -> (n, n_radii)`` with ``thinned`` = :func:`thin_draws`
        (``name -> (n,)`` of ``vcirc_draws`` draws; the callable adds the fixed parameters).
    radius_arcsec : (n_radii,) array, optional
        Radii [arcsec]; required with ``vcirc``.
    truth : mapping name -> float, optional
        True values (mock data) [parameter units]; any names, free or fixed.
    wall_time_s : float, optional
        Wall time of the fit [s].
    vcirc_draws : int
        Draws passed to a callable ``vcirc`` (default 200).
    seed : int
        Seed of that thinning.
    extra : mapping, optional
        Further JSON-serialisable entries, merged in at the top level (e.g. the galaxy name).

    Returns
    -------
    dict
        ``parameters: {name: {unit, mean, std, median, hdi_68: [lo, hi], hdi_997: [lo, hi], r_hat,
        ess_bulk, ess_tail, mcse_mean}}``, ``vcirc: {radius_arcsec, median, p16, p84, n_draws}``
        (if given), ``acceptance`` (overall fraction of accepted proposals, or the mean
        ``acceptance_rate`` where there is no ``accepted``), ``acceptance_per_chain``, ``step_size``
        (the value, or the mean if it varies), ``step_size_per_chain``, ``chains``, ``draws`` (per
        chain), ``wall_time_s`` (None if not given), ``truth`` (if given: ``{name: {value,
        z = (value - mean) / std, in_hdi_68, in_hdi_997}}``, only ``value`` for names without
        draws), ``at_bound`` (:func:`at_bound`; {} without priors),
        ``diagnostics: {min_ess_bulk, min_ess_tail, min_ess, max_r_hat, worst_r_hat, worst_ess,
        converged, failing, criteria, r_hat_max, ess_min}``: ``converged`` is R-hat <= 1.01 and bulk
        and tail ESS >= 400 for every parameter, ``failing`` the names that miss it (worst R-hat
        first; :func:`~nuker_mge_plugin.sampling.diagnostics.convergence`). Plain Python
        floats/ints/bools/lists; non-finite numbers (e.g. R-hat of a constant parameter) become None.
    """
    d, ss = validate_draws(draws, sample_stats)
    chains, n = next(iter(d.values())).shape
    report = convergence(d)
    params = {}
    for name, x in d.items():
        p = _param_summary(x, report["r_hat"][name], report["ess_bulk"][name], report["ess_tail"][name])
        params[name] = dict(unit=TABLE1[name][2] if name in TABLE1 else "", **p)
    acc = ss["accepted"] if "accepted" in ss else np.asarray(ss["acceptance_rate"], dtype=np.float64)
    out = dict(parameters=params, acceptance=float(acc.mean()), acceptance_per_chain=acc.mean(axis=1).tolist(),
               step_size=_one_or_mean(ss["step_size"]), step_size_per_chain=ss["step_size"].mean(axis=1).tolist(),
               chains=int(chains), draws=int(n),
               wall_time_s=None if wall_time_s is None else float(wall_time_s))
    if vcirc is not None:
        if radius_arcsec is None:
            raise ValueError("radius_arcsec: required with vcirc [arcsec]")
        v = vcirc(thin_draws(d, vcirc_draws, seed), np.asarray(radius_arcsec, float)) if callable(vcirc) else vcirc
        out["vcirc"] = vcirc_band(v, radius_arcsec)
    if truth is not None:
        t = {}
        for name, val in truth.items():
            val = float(val)
            if name in params:
                p = params[name]
                t[name] = dict(value=val, z=(val - p["mean"]) / p["std"] if p["std"] > 0 else math.nan,
                               in_hdi_68=bool(p["hdi_68"][0] <= val <= p["hdi_68"][1]),
                               in_hdi_997=bool(p["hdi_997"][0] <= val <= p["hdi_997"][1]))
            else:
                t[name] = dict(value=val)
        out["truth"] = t
    out["at_bound"] = at_bound(d, priors) if priors is not None else {}
    rh = {k: p["r_hat"] for k, p in params.items()}
    es = {k: min(p["ess_bulk"], p["ess_tail"]) for k, p in params.items()}
    # NaN (a constant parameter: never converged) is the worst value
    worst_r = max(rh, key=lambda k: math.inf if math.isnan(rh[k]) else rh[k])
    worst_e = min(es, key=lambda k: -math.inf if math.isnan(es[k]) else es[k])
    out["diagnostics"] = dict(
        min_ess_bulk=min(p["ess_bulk"] for p in params.values()),
        min_ess_tail=min(p["ess_tail"] for p in params.values()),
        min_ess=es[worst_e], max_r_hat=rh[worst_r], worst_r_hat=worst_r, worst_ess=worst_e,
        converged=bool(report["converged"]), failing=list(report["failing"]), criteria=report["criteria"],
        r_hat_max=CONVERGED_RHAT, ess_min=CONVERGED_ESS)
    if extra:
        out.update(extra)
    return _plain(out)


def _plain(o):
    """JSON-ready copy: numpy scalars/arrays to Python, non-finite floats to None."""
    if isinstance(o, Mapping):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    if isinstance(o, (bool, np.bool_)):
        return bool(o)
    if isinstance(o, (int, np.integer)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        f = float(o)
        return f if math.isfinite(f) else None
    return o


def _atomic_write(path, write):
    """:func:`atomic_write` into ``path``'s folder (made if absent); returns the path as a str."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return str(atomic_write(path, write))


def write_summary_json(path, summary):
    """Write a :func:`summarize` dict as JSON, atomically; returns the path (str)."""
    text = json.dumps(_plain(summary), indent=2, allow_nan=False)

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
    return _atomic_write(path, write)


# ---------------------------------------------------------------------------- netCDF
def write_posterior_netcdf(path, draws, sample_stats, *, units=None, attrs=None):
    """Write posterior draws and sample stats as a netCDF file ArviZ 0.23 and 1.x open.

    Parameters
    ----------
    path : str or Path
        Output file (``.nc``); written atomically (temporary file, then rename).
    draws : mapping name -> (chains, draws) array
        Free parameters [parameter units].
    sample_stats : mapping
        ``logp`` (written as ``lp`` [nats]), ``step_size`` (broadcast to (chains, draws)),
        ``accepted`` or ``acceptance_rate``, and any further (chains, draws) arrays (e.g. NUTS's
        ``diverging``, ``tree_depth``, ``n_leapfrog``, ``energy``: ArviZ's names except the last
        but one), written under their own names; booleans as 0/1.
    units : mapping name -> str, optional
        Units of the draws; default ``config.TABLE1``'s, "" for other names.
    attrs : mapping, optional
        Global attributes (str, numbers), e.g. ``{"config_toml": cfg.to_toml_str()}``; stored on
        the root and on the posterior group.

    Returns
    -------
    str
        The path. Read back with ``arviz.from_netcdf(path)`` or :func:`read_posterior_netcdf`.
    """
    import xarray as xr

    from .. import __version__

    d, ss = validate_draws(draws, sample_stats)
    chains, n = next(iter(d.values())).shape
    coords = {"chain": np.arange(chains), "draw": np.arange(n)}
    units = dict(units or {})
    post = xr.Dataset(
        {k: (("chain", "draw"), v, {"units": units.get(k, TABLE1[k][2] if k in TABLE1 else ""),
                                    "long_name": TABLE1[k][3] if k in TABLE1 else k})
         for k, v in d.items()}, coords=coords)
    stat_attrs = {"lp": {"units": "nats", "long_name": "log posterior density (up to a constant)"},
                  "accepted": {"units": "", "long_name": "proposal accepted"},
                  "step_size": {"units": "unconstrained", "long_name": "sampler step size"},
                  "acceptance_rate": {"units": "", "long_name": "mean Metropolis acceptance statistic"},
                  "diverging": {"units": "", "long_name": "divergent trajectory"},
                  "tree_depth": {"units": "", "long_name": "NUTS trajectory doublings"},
                  "n_leapfrog": {"units": "", "long_name": "leapfrog steps (gradient evaluations)"},
                  "energy": {"units": "nats", "long_name": "Hamiltonian at the draw"}}
    sd = {}
    for k, v in ss.items():
        name = "lp" if k == "logp" else k
        if v.dtype == bool:
            v = v.astype(np.int8)  # netCDF has no bool; 0/1 reads back as int
        sd[name] = (("chain", "draw"), v, stat_attrs.get(name, {"units": ""}))
    stats_ds = xr.Dataset(sd, coords=coords)
    meta = {"created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "inference_library": "nuker_mge_plugin", "inference_library_version": __version__}
    meta.update({str(k): v for k, v in (attrs or {}).items()})
    post.attrs.update(meta)
    stats_ds.attrs.update(meta)
    tree = xr.DataTree.from_dict({"posterior": post, "sample_stats": stats_ds})
    tree.attrs.update(meta)
    return _atomic_write(path, lambda tmp: tree.to_netcdf(tmp, engine="h5netcdf"))


def read_posterior_netcdf(path):
    """Read a file of :func:`write_posterior_netcdf` without ArviZ.

    Returns
    -------
    (dict, dict, dict)
        draws ``name -> (chains, draws)``, sample stats (``logp`` [nats], ``accepted`` /
        ``diverging`` bool where written, ``step_size`` and any others, (chains, draws)), and the
        posterior group's attributes.
    """
    import xarray as xr

    with xr.open_datatree(path, engine="h5netcdf") as tree:
        post = tree["posterior"].to_dataset()
        st = tree["sample_stats"].to_dataset()
        draws = {k: np.asarray(post[k].transpose("chain", "draw").values, np.float64) for k in post.data_vars}
        ss = {("logp" if k == "lp" else k): np.asarray(st[k].transpose("chain", "draw").values)
              for k in st.data_vars}
        attrs = dict(post.attrs)
    for k in _BOOL_STATS:
        if k in ss:
            ss[k] = ss[k].astype(bool)
    return draws, ss, attrs


# ---------------------------------------------------------------------------- everything at once
def write_results(outdir, draws, sample_stats, *, priors=None, vcirc=None, radius_arcsec=None,
                  vcirc_components=None, truth=None, wall_time_s=None, traces=None, maps=None,
                  config=None, figures=True, extra=None, vcirc_draws=200, seed=0, dpi=100, **figure_kwargs):
    """Write ``posterior.nc``, ``summary.json``, ``config.toml`` and the figures of a fit into ``outdir``.

    Parameters
    ----------
    outdir : str or Path
        Created if needed.
    draws, sample_stats, priors, vcirc, radius_arcsec, truth, wall_time_s, extra, vcirc_draws, seed
        As for :func:`summarize` (``vcirc`` may be a callable; it is evaluated once).
    vcirc_components : mapping, optional
        ``{"stars": (n_draws, n_radii), "bh": (n_draws, n_radii)}`` [km/s] for the v_c figure.
    traces : mapping, optional
        ``stage -> {name -> (chains, steps)}`` (``"logp"`` included if known), for the trace figure.
    maps : mapping, optional
        ``data``, ``model``, ``residual`` (n_chan, ny, nx) dirty cubes [Jy/beam], ``velocity_kms``
        (n_chan,), ``cell_arcsec``: for the moment-map figure (see ``plots.plot_maps``).
    config : FitConfig, optional
        Written as ``config.toml`` (its ``to_toml_str()``) and stored in the netCDF attributes.
    figures : bool
        Write the PNG figures (default True).
    dpi : int
        Resolution of the PNGs.
    **figure_kwargs
        Passed to :func:`~.plots.write_figures` (``vcirc_truth``, ``comparisons``, ``distance_mpc``,
        ``title``).

    Returns
    -------
    dict
        ``{"posterior": path, "summary": path, "config": path (if given), "figures": {name: path}}``
        and ``"summary_dict"``: the summary itself.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    run = RunDir(outdir)
    paths = {}
    attrs = {}
    if config is not None:
        toml = config.to_toml_str()
        attrs["config_toml"] = toml
        paths["config"] = _atomic_write(run.config_toml, lambda tmp: Path(tmp).write_text(toml))
    paths["posterior"] = write_posterior_netcdf(run.posterior_nc, draws, sample_stats, attrs=attrs)
    if callable(vcirc):
        d, _ = validate_draws(draws)
        vcirc = vcirc(thin_draws(d, vcirc_draws, seed), np.asarray(radius_arcsec, float))
    summary = summarize(draws, sample_stats, priors=priors, vcirc=vcirc, radius_arcsec=radius_arcsec,
                        truth=truth, wall_time_s=wall_time_s, extra=extra)
    paths["summary"] = write_summary_json(run.summary_json, summary)
    paths["figures"] = {}
    if figures:
        from .plots import write_figures
        t = {k: (v["value"] if isinstance(v, Mapping) else v) for k, v in (truth or {}).items()}
        paths["figures"] = write_figures(outdir, draws=draws, sample_stats=sample_stats, truth=t or None,
                                         vcirc=vcirc, radius_arcsec=radius_arcsec,
                                         vcirc_components=vcirc_components, traces=traces, maps=maps,
                                         summary=summary, dpi=dpi, **figure_kwargs)
    paths["summary_dict"] = summary
    return paths
