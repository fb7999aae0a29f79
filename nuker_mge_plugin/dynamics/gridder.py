"""Kaiser-Bessel gridding of raw visibilities with a per-cell noise estimate (seed paper, sec. 2.2.1).

Input: raw visibilities ``u, v`` [wavelengths], complex ``vis`` [Jy], ``weight`` [1/Jy^2, relative
is enough], integer ``chan``; output on the cells of a :class:`~.coords.UVGrid` (the uv grid of the
model image's :class:`~.coords.SkyGrid`; conventions in coords.py), per channel:

* ``vis``: the KB-weighted mean ``sum(a_i V_i) / sum(a_i)``, ``a_i = weight_i K(du_i) K(dv_i)``, where
  ``K`` is a Kaiser-Bessel window of half-width ``h`` cells centred on the cell;
* ``sigma`` [Jy]: the standard error of that mean *per real/imaginary component*, from the
  KB-weighted sample variance (reliability-weights form, unbiased for equal true variances)
  ``s^2 = sum a_i |V_i - mean|^2 / (2 (sum a - sum a^2 / sum a))`` and
  ``sigma^2 = s^2 sum a^2 / (sum a)^2``. The data weights only set *relative* weights: the absolute
  noise comes from the scatter, as in the paper (ALMA weights are often mis-scaled).
* a cell with fewer than ``min_count`` (5) samples in its window has the window grown by
  ``grow_step`` cells at a time up to ``max_halfwidth``; ``halfwidth`` records the final size.

What it does about the pitfalls (docs/design.rst, "Pitfalls"):

* **Hermitian conjugates.** Every visibility is also used as its conjugate ``(-u, -v, V*)``, and only
  the half-plane cells of ``UVGrid.half_plane_mask()`` are produced (u > 0, or u = 0 and v > 0; the
  zero-spacing cell and the unpaired Nyquist row are never produced). A likelihood over these cells
  uses each measurement once. If a visibility *and* its own conjugate fall in the same cell's window
  (only possible for cells closer to the origin than the window half-width) only the visibility is
  counted, so no sample enters a cell twice.
* **Window overlap.** With the default ``width = 1`` cell (half-width 0.5) windows tile the plane
  without overlap: each sample enters exactly one cell and cells are independent. Grown windows (and
  ``width > 1``) share samples with neighbouring cells, which a likelihood treating cells as
  independent over-counts. ``overlap`` gives, per usable cell ``c``, its *overlap multiplicity*
  ``m_c = sum_j A_cj n_j``: ``A_cj`` the normalised window weights of the cell's samples
  (``samples.weight``, summing to 1 over the cell), ``n_j`` the number of usable cells that
  visibility ``j`` enters (a visibility and its conjugate are one sample). ``m_c = 1`` exactly when
  no sample of ``c`` is shared; ``k`` for ``k`` cells holding the same samples. The likelihood
  weights each cell by ``1 / m_c`` (inference/likelihood.py, ``[likelihood] overlap_weights``) so
  that shared samples are not counted several times. The report gives the number of grown cells,
  ``overlap_factor`` = (sample-cell uses) / (samples used), 1 when there is no overlap, and
  ``overlap_max`` / ``overlap_mean`` / ``overlap_mean_grown`` of ``m_c``. Alternatively leave grown
  cells out (``GriddedModel(..., select=gv.halfwidth <= width / 2)``) for strict independence.
* **Noisy sigma.** ``n_vis`` and Kish's ``n_eff = (sum a)^2 / sum a^2`` are returned so that the
  likelihood can use a Student-t with ``n_eff - 1`` degrees of freedom or inflate sigma (the paper
  uses a Gaussian with 2 sigma).
* **Bad cells.** Cells with too few samples even at the largest window, or a zero/non-finite sample
  variance, are masked (``mask`` False), their ``vis``/``sigma`` set to NaN (never to a constant) and
  counted in ``report``. Channels without any usable cell are reported and warned about.
* **Window averaging.** A gridded value is a weighted average of V over the samples of a window,
  not V at the cell centre; for a source at angular distance l from the phase centre the two differ
  at order 2 pi l delta, delta the sample offsets (grown windows reach 2.5 cells). ``samples``
  records, for every usable cell, the (u, v) at which each of its samples was used (conjugates at
  ``(-u, -v)``) and its normalised weight ``a_i / sum(a)``: the model of the cell is the same
  weighted average of the model visibilities, ``sum_i w_i V_model(u_i, v_i)``, which
  :class:`~.visibilities.GriddedModel` evaluates exactly (NUFFT-style degridding).
* **Signal in the scatter.** Signal varying across a window adds to the sample variance: ``sigma``
  is inflated wherever the phase of the signal turns across the window, i.e. for bright emission
  far from the phase centre in grown windows (validation/gridded_model_accuracy.py: a 1 Jy point
  5" off-centre in a 12.8" field with 0.05 Jy noise per visibility gets ``sigma`` 3-4 times the
  true noise in grown cells; at the phase centre the estimate is unbiased). A fit then weights
  those cells too little (conservative, never over-confident).

What a likelihood may assume: the noise of one cell is that of a weighted mean of its samples
(Gaussian, variance ``sigma^2`` per component, estimated from ``n_eff`` samples: Student-t). Cells
that share no sample (all cells when no window grew and ``width <= 1``) are independent; cells
whose windows overlap (``halfwidth > width / 2``) share samples and are positively correlated,
which a likelihood treating all cells as independent over-counts (by ``m_c`` per cell, ``overlap``).

Memory is linear in the number of visibilities: they are processed in chunks of ``chunk`` rows;
``samples`` holds 28 bytes per sample-cell use (``report["n_pairs"]``; 32 beyond 2^31 rows).

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).
"""

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.special import i0

from ..observation import check_visibilities
from .coords import SkyGrid, UVGrid

__all__ = ["kaiser_bessel", "CellSamples", "GriddedVis", "grid_visibilities", "cell_overlap", "check_visibilities"]


def kaiser_bessel(x, beta):
    """Kaiser-Bessel window ``I0(beta sqrt(1 - x^2)) / I0(beta)`` (unit peak; 0 for ``|x| >= 1``).

    Parameters
    ----------
    x : array_like
        Offset divided by the window half-width [dimensionless].
    beta : float
        Shape parameter (larger = narrower), >= 0.

    Returns
    -------
    numpy.ndarray (float64), the shape of ``x``.
    """
    x = np.asarray(x, dtype=np.float64)
    arg = 1.0 - x * x
    out = np.where(arg > 0, i0(beta * np.sqrt(np.clip(arg, 0, None))) / i0(beta), 0.0)
    return out


@dataclass(frozen=True)
class CellSamples:
    """The samples behind each usable cell, in the order of ``np.flatnonzero(GriddedVis.mask)``.

    Samples of cell ``c`` are ``ptr[c]:ptr[c + 1]``; ``u, v`` [wavelengths] are where the sample was
    used (a conjugated visibility at ``(-u, -v)``), ``weight`` its normalised KB weight
    ``a_i / sum(a)`` (summing to 1 over each cell), ``row`` the input row (visibility) it came
    from (a visibility and its conjugate share the row; None when unknown). A visibility enters
    several cells when windows overlap. The model of cell ``c`` is ``sum_i weight_i V_model(u_i, v_i)``.
    """

    ptr: np.ndarray  # (n_cells + 1,) int64
    u: np.ndarray  # (n_pairs,) float64 [wavelengths]
    v: np.ndarray  # (n_pairs,) float64 [wavelengths]
    weight: np.ndarray  # (n_pairs,) float64, sums to 1 per cell
    row: np.ndarray = None  # (n_pairs,) int32 (int64 beyond 2^31 rows), input row of each sample

    @property
    def n_cells(self):
        return len(self.ptr) - 1

    @property
    def counts(self):
        """Samples per cell, (n_cells,) int64."""
        return np.diff(self.ptr)


@dataclass
class GriddedVis:
    """Gridded visibilities on ``grid`` for ``n_chan`` channels; arrays are (n_chan, nu, nv).

    vis [Jy] complex (NaN where no sample; also defined in masked cells that had samples, but use
    ``mask``); sigma [Jy] per real/imag component (NaN where masked);
    mask: usable cells; n_vis: samples in each cell's window; n_eff: Kish effective sample size;
    halfwidth [cells]: final window half-width; samples: :class:`CellSamples` of the usable cells
    (what :class:`~.visibilities.GriddedModel` needs to model each cell exactly); sky: the
    :class:`~.coords.SkyGrid` given to the gridder, or None when a bare UVGrid was given;
    report: counts (see grid_visibilities); overlap: the overlap multiplicity
    ``m_c = sum_j A_cj n_j >= 1`` of each usable cell (NaN where masked; :func:`cell_overlap`):
    1 for a cell that shares no sample with another usable cell.
    """

    grid: UVGrid
    vis: np.ndarray
    sigma: np.ndarray
    mask: np.ndarray
    n_vis: np.ndarray
    n_eff: np.ndarray
    halfwidth: np.ndarray
    samples: CellSamples = None
    sky: SkyGrid = None
    report: dict = field(default_factory=dict)
    overlap: np.ndarray = None

    @property
    def n_chan(self):
        return self.vis.shape[0]

    def to_torch(self, dtype=torch.float64, device=None):
        """(vis complex, sigma real, mask bool) tensors; masked vis/sigma are NaN -- select with mask."""
        cd = torch.complex128 if dtype == torch.float64 else torch.complex64
        return (torch.as_tensor(self.vis, dtype=cd, device=device),
                torch.as_tensor(self.sigma, dtype=dtype, device=device),
                torch.as_tensor(self.mask, device=device))


def _samples(u, v, vis, w, ch, grid):
    """Visibilities and their conjugates in cell units: (pu, pv, V, w, ch, is_conj)."""
    pu = u / grid.du
    pv = v / grid.dv
    return (np.concatenate([pu, -pu]), np.concatenate([pv, -pv]), np.concatenate([vis, np.conj(vis)]),
            np.concatenate([w, w]), np.concatenate([ch, ch]), np.repeat([False, True], len(u)))


def grid_visibilities(u, v, vis, weight, chan, grid, n_chan, *, width=1.0, beta=2.0, min_count=5,
                      max_halfwidth=2.5, grow_step=0.5, chunk=200_000):
    """Grid raw visibilities onto the uv cells of ``grid`` for ``n_chan`` channels.

    Parameters
    ----------
    u, v : (n,) array [wavelengths]
    vis : (n,) complex array [Jy]
    weight : (n,) array, > 0 [1/Jy^2; only relative values matter]
    chan : (n,) int array, channel of each row in ``0 .. n_chan - 1``
    grid : SkyGrid or UVGrid
        The model image (its ``.uv`` grid is used) or the uv grid itself.
    n_chan : int, >= 1
    width : float [cells]
        KB window full width, > 0 (default 1: windows tile the plane without overlap).
    beta : float
        KB shape parameter.
    min_count : int, >= 2
        Samples needed in a window before it stops growing.
    max_halfwidth, grow_step : float [cells]
        Largest window half-width (>= width / 2) and the growth step (> 0).
    chunk : int
        Rows processed at once (memory is linear in it).

    Returns
    -------
    GriddedVis
        ``report`` counts: n_input, n_used (visibilities entering at least one cell, conjugates
        included once), n_unused (the rest: in the zero-spacing cell, beyond the grid, or zero KB
        weight -- counted, not silently dropped), cells_half_plane, cells_usable, cells_grown,
        cells_too_few (had samples but < min_count at the largest window), cells_empty,
        cells_bad_sigma (zero/non-finite variance), overlap_factor, usable_cells_per_channel,
        n_pairs (sample-cell uses recorded in ``samples``); of the overlap multiplicity ``m_c`` of
        the usable cells (``GriddedVis.overlap``): overlap_max, overlap_mean, overlap_mean_grown
        (over the grown cells; NaN without any), cells_overlapping (``m_c > 1``) and
        overlap_weight_mean, the mean of ``1 / m_c`` (the share of the cell count an
        overlap-weighted likelihood keeps; 1 without overlap).
    """
    sky = grid if isinstance(grid, SkyGrid) else None
    if sky is not None:
        grid = sky.uv
    if not isinstance(grid, UVGrid):
        raise TypeError(f"grid must be a SkyGrid or a UVGrid (coords.py), got {type(grid).__name__}")
    if int(n_chan) != n_chan or n_chan < 1:
        raise ValueError(f"n_chan must be a positive integer, got {n_chan!r}")
    if not (width > 0 and max_halfwidth >= width / 2 and grow_step > 0 and min_count >= 2):
        raise ValueError("need width > 0, max_halfwidth >= width/2, grow_step > 0, min_count >= 2")
    u, v, vis, weight, chan = check_visibilities(u, v, vis, weight, chan, n_chan)
    nu, nv = grid.shape
    levels = np.arange(width / 2.0, max_halfwidth + 1e-9, grow_step)  # candidate half-widths [cells]
    L = len(levels)
    K = int(math.ceil(levels[-1]))
    offs = [(a, b) for a in range(-K, K + 1) for b in range(-K, K + 1)]
    hp = grid.half_plane_mask()
    ncell = n_chan * nu * nv

    def pairs(sl):
        """Sample-cell pairs of one chunk: (flat cell, d_u, d_v, max|d| to the orig, sample idx)."""
        pu, pv, V, w, ch, conj = _samples(u[sl], v[sl], vis[sl], weight[sl], chan[sl], grid)
        ru, rv = np.round(pu), np.round(pv)
        for a, b in offs:
            cu, cv = ru + a, rv + b  # centred cell coordinates
            du_, dv_ = cu - pu, cv - pv
            dmax = np.maximum(np.abs(du_), np.abs(dv_))
            ku = (cu + nu // 2).astype(np.int64)
            kv = (cv + nv // 2).astype(np.int64)
            ok = (dmax < levels[-1]) & (ku >= 0) & (ku < nu) & (kv >= 0) & (kv < nv)
            ok[ok] &= hp[ku[ok], kv[ok]]
            if not ok.any():
                continue
            # distance from this cell to the *other* member of the visibility/conjugate pair
            d_other = np.maximum(np.abs(cu + pu), np.abs(cv + pv))
            idx = np.flatnonzero(ok)
            flat = (ch[idx] * nu + ku[idx]) * nv + kv[idx]
            yield flat, du_[idx], dv_[idx], dmax[idx], d_other[idx], conj[idx], V[idx], w[idx], idx

    N = len(u)
    chunks = [slice(i, min(N, i + chunk)) for i in range(0, N, chunk)]

    # pass 1: sample counts per cell and window level (a conjugate counts only at levels where its
    # own visibility is not also inside that cell's window)
    cnt = np.zeros(ncell * L)
    for sl in chunks:
        for flat, _, _, dmax, dother, conj, _, _, _ in pairs(sl):
            lv = np.searchsorted(levels, dmax, side="right")  # first level with dmax < h
            lo = np.searchsorted(levels, dother, side="right")
            keep = ~conj | (lo > lv)
            cnt += np.bincount(flat[keep] * L + lv[keep], minlength=ncell * L)
            m = conj & (lo > lv) & (lo < L)
            cnt -= np.bincount(flat[m] * L + lo[m], minlength=ncell * L)
    cnt = np.cumsum(cnt.reshape(ncell, L), axis=1)
    enough = cnt >= min_count
    lvl = np.where(enough.any(axis=1), enough.argmax(axis=1), L - 1)
    h_cell = levels[lvl]
    ever = cnt[:, -1] > 0

    def weights(flat, du_, dv_, dmax, dother, conj, w):
        h = h_cell[flat]
        use = (dmax < h) & ~(conj & (dother < h))
        a = w * kaiser_bessel(du_ / h, beta) * kaiser_bessel(dv_ / h, beta)
        return use & (a > 0), a

    # pass 2: weighted sums -> mean; pass 3: weighted squared deviations (two-pass for accuracy)
    sa = np.zeros(ncell)
    sa2 = np.zeros(ncell)
    sre = np.zeros(ncell)
    sim = np.zeros(ncell)
    nvis = np.zeros(ncell)
    used = np.zeros(N, dtype=bool)
    rec_cell, rec_u, rec_v, rec_a, rec_row = [], [], [], [], []  # every used sample-cell pair, for CellSamples
    row_dt = np.int32 if N < 2**31 else np.int64
    for sl in chunks:
        for flat, du_, dv_, dmax, dother, conj, V, w, idx in pairs(sl):
            use, a = weights(flat, du_, dv_, dmax, dother, conj, w)
            f, a, V = flat[use], a[use], V[use]
            sa += np.bincount(f, a, ncell)
            sa2 += np.bincount(f, a * a, ncell)
            sre += np.bincount(f, a * V.real, ncell)
            sim += np.bincount(f, a * V.imag, ncell)
            nvis += np.bincount(f, minlength=ncell)
            # where the sample was used [wavelengths]: cell centre minus (cell - sample) offset
            rec_cell.append(f)
            rec_u.append(((f // nv) % nu - nu // 2 - du_[use]) * grid.du)
            rec_v.append((f % nv - nv // 2 - dv_[use]) * grid.dv)
            rec_a.append(a)
            rows = idx[use] % (sl.stop - sl.start)
            used[sl.start + rows] = True
            rec_row.append((sl.start + rows).astype(row_dt))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (sre + 1j * sim) / sa
    sdev = np.zeros(ncell)
    for sl in chunks:
        for flat, du_, dv_, dmax, dother, conj, V, w, idx in pairs(sl):
            use, a = weights(flat, du_, dv_, dmax, dother, conj, w)
            f = flat[use]
            sdev += np.bincount(f, a[use] * np.abs(V[use] - mean[f]) ** 2, ncell)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = sdev / (2.0 * (sa - sa2 / sa))  # per-component sample variance of one visibility
        sig = np.sqrt(s2 * sa2) / sa  # standard error of the weighted mean
        neff = sa * sa / sa2
    hp_all = np.broadcast_to(hp, (n_chan, nu, nv)).reshape(-1)
    enough_final = nvis >= min_count
    # zero (or round-off-level) scatter: identical samples, no noise information -> masked
    good_sig = np.isfinite(sig) & (sig > 1e-10 * np.abs(np.nan_to_num(mean))) & (sig > 0)
    mask = hp_all & enough_final & good_sig
    samples = _cell_samples(mask, sa, rec_cell, rec_u, rec_v, rec_a, rec_row)
    del rec_cell, rec_u, rec_v, rec_a, rec_row
    m_c = cell_overlap(samples, N)  # overlap multiplicity of the usable cells
    overlap = np.full(ncell, np.nan)
    overlap[mask] = m_c
    grown = mask & (h_cell > width / 2.0 + 1e-9)
    rep = dict(
        n_input=N, n_used=int(used.sum()), n_unused=int(N - used.sum()), n_chan=int(n_chan), grid=[nu, nv],
        du_lambda=grid.du,
        dv_lambda=grid.dv, kb_width_cells=width, kb_beta=beta, min_count=min_count,
        cells_half_plane=int(hp_all.sum()),
        cells_usable=int(mask.sum()),
        cells_grown=int(grown.sum()),
        cells_empty=int((hp_all & ~ever).sum()),
        cells_too_few=int((hp_all & ever & ~enough_final).sum()),
        cells_bad_sigma=int((hp_all & enough_final & ~good_sig).sum()),
        overlap_factor=float(nvis.sum() / used.sum()) if used.any() else float("nan"),
        n_pairs=int(samples.ptr[-1]),
        overlap_max=float(m_c.max()) if m_c.size else float("nan"),
        overlap_mean=float(m_c.mean()) if m_c.size else float("nan"),
        overlap_mean_grown=float(overlap[grown].mean()) if grown.any() else float("nan"),
        cells_overlapping=int((m_c > 1.0).sum()),
        overlap_weight_mean=float(np.mean(1.0 / m_c)) if m_c.size else float("nan"),
    )
    per_ch = mask.reshape(n_chan, -1).sum(axis=1)
    rep["usable_cells_per_channel"] = per_ch.tolist()
    empty_ch = np.flatnonzero(per_ch == 0)
    if empty_ch.size:
        warnings.warn(f"{empty_ch.size} of {n_chan} channels have no usable gridded cell: {empty_ch.tolist()[:20]}",
                      stacklevel=2)
    shp = (n_chan, nu, nv)
    return GriddedVis(
        grid=grid,
        vis=np.where(sa > 0, mean, np.nan + 1j * np.nan).reshape(shp),
        sigma=np.where(mask, sig, np.nan).reshape(shp),
        mask=mask.reshape(shp),
        n_vis=nvis.astype(np.int64).reshape(shp),
        n_eff=np.where(mask, neff, np.nan).reshape(shp),
        halfwidth=h_cell.reshape(shp),
        samples=samples,
        sky=sky,
        report=rep,
        overlap=overlap.reshape(shp),
    )


def cell_overlap(samples, n_rows=None):
    """Overlap multiplicity ``m_c = sum_j A_cj n_j`` of each cell of a :class:`CellSamples`, (n_cells,).

    ``A_cj`` = ``samples.weight`` (cell ``c``'s normalised window weight of sample ``j``, summing to
    1 over the cell) and ``n_j`` the number of the record's cells that input row ``j`` enters
    (``samples.row``; a visibility and its conjugate are one row). Computed as
    ``1 + sum_j A_cj (n_j - 1)``: exactly 1 for a cell none of whose samples enters another cell
    of the record, ``k`` when ``k`` cells hold the same samples, never below 1. Cells left out of
    the record (e.g. by ``GriddedModel(select=...)``) do not count: compute it on the selected
    record for the cells a likelihood actually uses.

    Parameters
    ----------
    samples : CellSamples
        With ``row`` (grid_visibilities records it).
    n_rows : int, optional
        Number of input rows (default ``max(row) + 1``).

    Returns
    -------
    numpy.ndarray (n_cells,) float64, >= 1.
    """
    if samples.row is None:
        raise ValueError("samples has no row record: grid with this version of grid_visibilities")
    row = samples.row
    if row.size == 0:
        return np.ones(samples.n_cells)
    n = np.bincount(row, minlength=0 if n_rows is None else int(n_rows))  # cells each row enters
    extra = samples.weight * (n[row] - 1)
    cell = np.repeat(np.arange(samples.n_cells), samples.counts)
    return 1.0 + np.bincount(cell, extra, minlength=samples.n_cells)


def _cell_samples(mask, sa, cells, us, vs, As, rows):
    """Group the recorded sample-cell pairs by usable cell (flat order), weights normalised per cell."""
    cells = np.concatenate(cells) if cells else np.zeros(0, np.int64)
    keep = mask[cells]
    cells = cells[keep]
    order = np.argsort(cells, kind="stable")
    cells = cells[order]
    pick = lambda xs: (np.concatenate(xs)[keep][order] if xs else np.zeros(0))  # noqa: E731
    u, v, a = pick(us), pick(vs), pick(As)
    row = np.concatenate(rows)[keep][order] if rows else np.zeros(0, np.int32)
    rank = np.cumsum(mask) - 1  # position of each usable cell in flatnonzero(mask)
    counts = np.bincount(rank[cells], minlength=int(mask.sum()))
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return CellSamples(ptr=ptr, u=u, v=v, weight=a / sa[cells], row=row)
