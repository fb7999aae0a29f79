"""Read a CASA Measurement Set (MS v2) into the observation format, through python-casacore.

Needs the optional ``ms`` extra (``pip install 'nuker-mge-plugin[ms]'``: python-casacore, no CASA).

What is read (MeasurementSet definition v2.0, Kemball & Wieringa 2000)
-----------------------------------------------------------------------
* MAIN: ``UVW`` [m], ``DATA`` or ``CORRECTED_DATA`` (n_row, n_chan, n_corr), ``FLAG`` (same
  shape), ``FLAG_ROW``, ``ANTENNA1``, ``ANTENNA2``, ``FIELD_ID``, ``DATA_DESC_ID``, ``TIME``, and the
  weights: ``WEIGHT_SPECTRUM`` (per channel) or ``WEIGHT`` (per correlation), or
  ``SIGMA_SPECTRUM``/``SIGMA`` as ``1 / sigma^2``. By default CASA's pairing since 4.2.2 is used:
  WEIGHT* belong to CORRECTED_DATA, SIGMA* to DATA when an MS holds both data columns; an MS with
  only DATA (a split of calibrated data) uses WEIGHT*. ``weight_column=`` overrides.
* ``DATA_DESCRIPTION`` maps ``DATA_DESC_ID`` to ``SPECTRAL_WINDOW_ID`` and ``POLARIZATION_ID``;
  ``SPECTRAL_WINDOW::CHAN_FREQ`` [Hz] gives each channel's frequency (it may decrease with
  channel index: kept as it is); ``POLARIZATION::CORR_TYPE`` (casacore Stokes codes) which
  correlations are parallel hands; ``FIELD::NAME`` and ``PHASE_DIR`` [rad] the field and its
  phase centre.

Conventions (docs/visibility_formats.rst)
-----------------------------------------
The MS definition says UVW is "for the baseline from ANTENNA2 to ANTENNA1, i.e. the baseline is
equal to the difference POSITION2 - POSITION1": u, v, w [m] with u East, v North, w towards the
phase centre. It does not write down the Fourier sign; CASA's imager, model prediction and the
software built to agree with it (WSClean, ducc's wgridder, codex-africanus: their "CASA"
convention) use ``V = sum I exp(+2 pi i (u l + v m))`` with the UVW column as it is. Ours is the
opposite sign (Thompson, Moran & Swenson eq. 3.7, as in MPoL), so the reader takes the complex
conjugate of the data and keeps u, v (the baseline direction then stays POSITION2 - POSITION1 =
pos(ant2) - pos(ant1), as in our mocks); MPoL and visread conjugate CASA data for the same reason.
Parallel hands (XX, YY or RR, LL) are averaged with their weights; a sample needs all of them
unflagged. Autocorrelations (ANTENNA1 = ANTENNA2) are dropped and counted. The w term is not
kept (small fields).

Memory (docs/visibility_formats.rst)
------------------------------------
The main table is read in blocks of rows (``chunk_rows``; default 1_000_000 rows, fewer when a
row holds more than 4 values): a first pass over FIELD_ID and DATA_DESC_ID finds the field and
spectral window, then, one DATA_DESC_ID after the other, every column above is read for one block
(``getcol(name, startrow, nrow)``; rows of other fields or windows in between through
``selectrows``), reduced, and only its kept samples are held (``_common.KeptSamples``). The result
is bitwise the same for any ``chunk_rows``.
"""

import os

import numpy as np

from ._common import KeptSamples, average_polarisations, block_rows, parallel_hands, parse_channels, source_path

__all__ = ["read_ms", "is_ms", "WEIGHT_COLUMNS"]

DATA_COLUMNS = ("DATA", "CORRECTED_DATA")
WEIGHT_COLUMNS = ("WEIGHT_SPECTRUM", "WEIGHT", "SIGMA_SPECTRUM", "SIGMA")

MS_HINT = "reading a Measurement Set needs python-casacore: pip install 'nuker-mge-plugin[ms]' (no CASA needed)"


def _tables():
    try:
        import casacore.tables as ct
    except ImportError as err:
        raise ImportError(f"{MS_HINT} ({err})") from None
    return ct


def is_ms(path):
    """True if ``path`` is a folder holding a casacore table (``table.dat``)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "table.dat"))


def _open(ct, path, what):
    try:
        return ct.table(path, readonly=True, ack=False)
    except RuntimeError as err:
        msg = " ".join(str(err).split())
        raise ValueError(f"{path}: cannot open {what} ({msg})") from None


def _subtable(ct, ms, path, name):
    try:
        sub = ms.getkeyword(name)
        sub = sub.split("Table: ", 1)[1] if isinstance(sub, str) and sub.startswith("Table: ") else None
    except RuntimeError:
        sub = None
    if sub is None or not os.path.exists(sub):
        sub = os.path.join(path, name)
    if not os.path.exists(sub):
        raise ValueError(f"{path}: the Measurement Set has no {name} subtable")
    return _open(ct, sub, f"its {name} subtable")


def _select_field(field, names, present, path):
    """Field id from a name, an index, or None (the only field with rows)."""
    listing = ", ".join(f"{i}={names[i]!r}" for i in present)
    if field is None:
        if len(present) != 1:
            raise ValueError(f"{path}: {len(present)} fields have data ({listing}): choose one with field=/--field")
        return int(present[0])
    if isinstance(field, (int, np.integer)) and not isinstance(field, bool):
        fid = int(field)
    elif isinstance(field, str):
        matches = [i for i, n in enumerate(names) if n == field]
        if matches:
            fid = matches[0]
        elif field.strip().lstrip("-").isdigit():
            fid = int(field)
        else:
            raise ValueError(f"{path}: no field named {field!r} (fields with data: {listing})")
    else:
        raise ValueError(f"field {field!r} is invalid: give a field name or index")
    if not 0 <= fid < len(names):
        raise ValueError(f"{path}: field {fid} is out of range: the MS has {len(names)} fields (0-{len(names) - 1})")
    if fid not in present:
        raise ValueError(f"{path}: field {fid} ({names[fid]!r}) has no data rows (fields with data: {listing})")
    return fid


def _select_spw(spw, n_spw, present, path):
    if spw is None:
        if len(present) != 1:
            raise ValueError(f"{path}: the field has data in {len(present)} spectral windows {list(present)}: "
                             f"choose one with spw=/--spw")
        return int(present[0])
    if isinstance(spw, bool) or not isinstance(spw, (int, np.integer)):
        try:
            spw = int(str(spw).strip())
        except ValueError:
            raise ValueError(f"spw {spw!r} is invalid: give a spectral-window index") from None
    if not 0 <= spw < n_spw:
        raise ValueError(f"{path}: spw {spw} is out of range: the MS has {n_spw} spectral windows (0-{n_spw - 1})")
    if spw not in present:
        raise ValueError(f"{path}: spw {spw} has no data rows for this field (spws with data: {list(present)})")
    return int(spw)


def _weight_column(ms, first_row, cols, column, datacolumn, path):
    """The weight column to use (``column`` checked, or the default pairing), judged by whether its
    cell is defined in ``first_row`` (the first row read of one DATA_DESC_ID)."""
    def defined(c):
        return c in cols and ms.iscelldefined(c, int(first_row))

    if column is None:
        own = ("WEIGHT_SPECTRUM", "WEIGHT")
        if datacolumn == "DATA" and "CORRECTED_DATA" in cols:
            own = ("SIGMA_SPECTRUM", "SIGMA")
        column = next((c for c in own if defined(c)), None)
        if column is None:
            raise ValueError(f"{path}: no usable weight column for {datacolumn} (tried {', '.join(own)})")
    else:
        column = str(column).upper()
        if column not in WEIGHT_COLUMNS:
            raise ValueError(f"weight_column {column!r} is invalid: choose one of {', '.join(WEIGHT_COLUMNS)}")
        if not defined(column):
            raise ValueError(f"{path}: has no {column} column" + (" values" if column in cols else ""))
    return column


def _weights(values, column, datacolumn, shape, path):
    """(n_row, n_chan, n_corr) weights from the values of ``column`` read for a block of rows."""
    w = np.asarray(values, dtype=np.float64)
    if w.ndim == 2:  # per correlation: the same for every channel
        w = np.broadcast_to(w[:, None, :], shape)
    if w.shape != shape:
        raise ValueError(f"{path}: {column} has shape {w.shape[1:]} per row, {datacolumn} {shape[1:]}")
    if column.startswith("SIGMA"):
        with np.errstate(divide="ignore"):
            w = np.where(w > 0, 1.0 / np.where(w > 0, w, 1.0) ** 2, 0.0)
    return w


def _blocks(n_rows, step):
    """(startrow, nrow) of consecutive blocks of at most ``step`` rows."""
    for start in range(0, n_rows, step):
        yield start, min(step, n_rows - start)


class _Rows:
    """Column reads of some rows of the main table: a contiguous range straight from the table
    (``getcol(name, startrow, nrow)``), other row sets through a reference table (``selectrows``)."""

    def __init__(self, ms, rows):
        self.rows = rows
        if rows[-1] - rows[0] + 1 == rows.size:
            self.table, self.start, self.n, self.sub = ms, int(rows[0]), int(rows.size), None
        else:
            self.sub = ms.selectrows(rows)
            self.table, self.start, self.n = self.sub, 0, int(rows.size)

    def getcol(self, name):
        return self.table.getcol(name, startrow=self.start, nrow=self.n)

    def close(self):
        if self.sub is not None:
            self.sub.close()


def read_ms(path, *, field=None, spw=None, datacolumn="DATA", channels=None, weight_column=None, chunk_rows=None):
    """Read one field and one spectral window of a Measurement Set (module doc) as an observation dict.

    Parameters
    ----------
    path : str or path-like
        The MS folder.
    field : str or int, optional
        Field name (``FIELD::NAME``) or index; default: the only field with data.
    spw : int, optional
        Spectral-window index; default: the only one with data for the field.
    datacolumn : {"DATA", "CORRECTED_DATA"}
    channels : None, slice, (start, stop) or "a:b"
        Channels of the spectral window to read (Python slice rules); output channel 0 is the
        first of them (``meta["channel_start"]``).
    weight_column : {"WEIGHT_SPECTRUM", "WEIGHT", "SIGMA_SPECTRUM", "SIGMA"}, optional
        Default: see the module doc.
    chunk_rows : int, optional
        Rows of the main table read at once (module doc, "Memory"); default: 1_000_000, fewer for
        rows of many channels (:func:`~nuker_mge_plugin.io._common.block_rows`). The result does
        not depend on it.

    Returns
    -------
    dict
        The observation (``observation.py``), ``meta`` a dict with the source, selection, counts
        and phase centre. Raises ValueError (one line) for unreadable files and bad selections,
        ImportError without python-casacore.
    """
    ct = _tables()
    path = source_path(path)
    if not is_ms(path):
        raise ValueError(f"{path}: not a Measurement Set (a folder with table.dat)")
    datacolumn = str(datacolumn).upper()
    if datacolumn not in DATA_COLUMNS:
        raise ValueError(f"datacolumn {datacolumn!r} is invalid: choose DATA or CORRECTED_DATA")
    block_rows(chunk_rows, 1)  # a bad chunk_rows fails before anything is read
    ms = _open(ct, path, "the Measurement Set")
    try:
        cols = set(ms.colnames())
        need = ["UVW", "FLAG", "ANTENNA1", "ANTENNA2", "FIELD_ID", "DATA_DESC_ID", "TIME", datacolumn]
        missing = [c for c in need if c not in cols]
        if missing:
            raise ValueError(f"{path}: the Measurement Set has no {', '.join(missing)} column"
                             f"{'s' if len(missing) > 1 else ''}")
        if ms.nrows() == 0:
            raise ValueError(f"{path}: the Measurement Set has no rows")
        with _subtable(ct, ms, path, "FIELD") as ft:
            names = [str(n) for n in ft.getcol("NAME")]
            phase_dir = np.asarray(ft.getcol("PHASE_DIR"), dtype=np.float64)  # (n_field, n_poly + 1, 2) [rad]
            try:
                frame = ft.getcolkeyword("PHASE_DIR", "MEASINFO").get("Ref", "J2000")
            except RuntimeError:
                frame = "J2000"
        with _subtable(ct, ms, path, "DATA_DESCRIPTION") as dd:
            dd_spw = np.asarray(dd.getcol("SPECTRAL_WINDOW_ID"), dtype=np.int64)
            dd_pol = np.asarray(dd.getcol("POLARIZATION_ID"), dtype=np.int64)
        with _subtable(ct, ms, path, "SPECTRAL_WINDOW") as sw:
            n_spw = sw.nrows()
            spw_names = [str(n) for n in sw.getcol("NAME")] if "NAME" in sw.colnames() else [""] * n_spw
            chan_freqs = [np.asarray(sw.getcell("CHAN_FREQ", i), dtype=np.float64) for i in range(n_spw)]
        with _subtable(ct, ms, path, "POLARIZATION") as pt:
            corr_types = [np.asarray(pt.getcell("CORR_TYPE", i), dtype=np.int64) for i in range(pt.nrows())]

        n_rows = ms.nrows()
        # pass 1, over FIELD_ID and DATA_DESC_ID only: which (field, data description) pairs hold rows
        pairs = {}
        id_range = [np.inf, -np.inf, np.inf, -np.inf]  # FIELD_ID min, max; DATA_DESC_ID min, max
        for start, nr in _blocks(n_rows, block_rows(chunk_rows, 1)):
            f_blk = np.asarray(ms.getcol("FIELD_ID", startrow=start, nrow=nr), dtype=np.int64)
            d_blk = np.asarray(ms.getcol("DATA_DESC_ID", startrow=start, nrow=nr), dtype=np.int64)
            id_range = [min(id_range[0], f_blk.min()), max(id_range[1], f_blk.max()),
                        min(id_range[2], d_blk.min()), max(id_range[3], d_blk.max())]
            pr, cnt = np.unique(np.stack([f_blk, d_blk], 1), axis=0, return_counts=True)
            for (fi, di), k in zip(pr.tolist(), cnt.tolist()):
                pairs[fi, di] = pairs.get((fi, di), 0) + k
            del f_blk, d_blk
        if id_range[2] < 0 or id_range[3] >= dd_spw.size:
            raise ValueError(f"{path}: DATA_DESC_ID outside the DATA_DESCRIPTION table ({dd_spw.size} rows)")
        if id_range[0] < 0 or id_range[1] >= len(names):
            raise ValueError(f"{path}: FIELD_ID outside the FIELD table ({len(names)} rows)")
        fid = _select_field(field, names, sorted({fi for fi, _ in pairs}), path)
        spw_id = _select_spw(spw, n_spw, sorted({int(dd_spw[di]) for fi, di in pairs if fi == fid}), path)
        cf_all = chan_freqs[spw_id]
        sl = parse_channels(channels, cf_all.size, f"{path} spw {spw_id}")
        chan_freq = cf_all[sl]
        ddid_sel = sorted(di for fi, di in pairs if fi == fid and dd_spw[di] == spw_id)
        every_row = len(pairs) == 1  # one field and one data description: every row is read

        acc = KeptSamples(chan_freq)
        counts = dict(rows_read=sum(pairs[fid, d] for d in ddid_sel), rows_flag_row=0, rows_autocorrelation=0,
                      samples_flagged=0, samples_bad_weight=0)
        weight_used, corr_used = set(), set()
        # pass 2, one DATA_DESC_ID after the other (the order of the rows in the output), in blocks of rows
        for d in ddid_sel:
            pol_id = int(dd_pol[d])
            if not 0 <= pol_id < len(corr_types):
                raise ValueError(f"{path}: POLARIZATION_ID {pol_id} outside the POLARIZATION table")
            corr_idx, corr_names = parallel_hands(corr_types[pol_id], "ms", f"{path} (POLARIZATION row {pol_id})")
            step = block_rows(chunk_rows, cf_all.size * corr_types[pol_id].size)
            wcol = None
            for start, nr in _blocks(n_rows, step):
                if every_row:
                    rows = np.arange(start, start + nr)
                else:
                    f_blk = np.asarray(ms.getcol("FIELD_ID", startrow=start, nrow=nr), dtype=np.int64)
                    d_blk = np.asarray(ms.getcol("DATA_DESC_ID", startrow=start, nrow=nr), dtype=np.int64)
                    rows = start + np.flatnonzero((f_blk == fid) & (d_blk == d))
                    del f_blk, d_blk
                    if rows.size == 0:
                        continue
                sub = _Rows(ms, rows)
                try:
                    data = np.asarray(sub.getcol(datacolumn))
                    if data.ndim != 3 or data.shape[1] != cf_all.size or data.shape[2] != corr_types[pol_id].size:
                        raise ValueError(f"{path}: {datacolumn} has shape {data.shape[1:]} per row, but spw {spw_id} "
                                         f"has {cf_all.size} channels and {corr_types[pol_id].size} correlations")
                    flag = np.asarray(sub.getcol("FLAG"), dtype=bool)
                    if wcol is None:
                        wcol = _weight_column(ms, rows[0], cols, weight_column, datacolumn, path)
                    w = _weights(sub.getcol(wcol), wcol, datacolumn, data.shape, path)
                    flag_row = np.asarray(sub.getcol("FLAG_ROW"), dtype=bool) if "FLAG_ROW" in cols \
                        else np.zeros(data.shape[0], bool)
                    uvw = np.asarray(sub.getcol("UVW"), dtype=np.float64)
                    a1 = np.asarray(sub.getcol("ANTENNA1"), dtype=np.int64)
                    a2 = np.asarray(sub.getcol("ANTENNA2"), dtype=np.int64)
                    t = np.asarray(sub.getcol("TIME"), dtype=np.float64)
                finally:
                    sub.close()
                weight_used.add(wcol)
                corr_used.add("+".join(corr_names))
                auto = a1 == a2
                counts["rows_autocorrelation"] += int(auto.sum())
                cross = ~auto
                counts["rows_flag_row"] += int((flag_row & cross).sum())
                data, flag, w = data[cross][:, sl], flag[cross][:, sl], w[cross][:, sl]
                flag = flag | flag_row[cross][:, None, None]
                vis, wsum, keep, n_flag, n_bad = average_polarisations(data, w, flag, corr_idx)
                del data, flag, w
                counts["samples_flagged"] += n_flag
                counts["samples_bad_weight"] += n_bad
                # CASA's sign: V = sum I exp(+2 pi i (u l + v m)) with UVW as stored; ours has -2 pi i.
                acc.add(u_m=uvw[cross, 0], v_m=uvw[cross, 1], vis=np.conj(vis), weight=wsum, keep=keep,
                        ant1=a1[cross], ant2=a2[cross], time=t[cross])
                del vis, wsum, keep, uvw, a1, a2, t
    finally:
        ms.close()
    if acc.n_rows == 0:
        raise ValueError(f"{path}: field {fid} spw {spw_id} has only autocorrelations")
    ra, dec = phase_dir[fid, 0]
    meta = dict(source_file=os.path.abspath(path), format="measurement_set", field=names[fid], field_id=fid,
                spw=spw_id, spw_name=spw_names[spw_id], datacolumn=datacolumn,
                weight_column="+".join(sorted(weight_used)), correlations="+".join(sorted(corr_used)),
                channel_start=sl.start, channel_stop=sl.stop, n_chan_spw=int(cf_all.size),
                phase_centre_ra_deg=float(np.degrees(ra) % 360.0), phase_centre_dec_deg=float(np.degrees(dec)),
                phase_centre_frame=str(frame), counts=counts,
                conversion="vis = conj(DATA): CASA's exp(+2 pi i (u l + v m)) to ours; u, v = UVW[0:2] * freq / c")
    return acc.finish(meta=meta, where=f"{path} (field {names[fid]!r}, spw {spw_id})")
