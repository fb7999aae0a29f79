"""Read a UVFITS file (random groups, AIPS Memo 117) into the observation format, through astropy.

What is read (AIPS Memo 117, Greisen: "Going AIPS: the UVFITS format")
-----------------------------------------------------------------------
* Random parameters (``PTYPEn``, scaled by ``PSCALn``/``PZEROn``; astropy adds parameters that
  share a name, e.g. the two ``DATE`` halves): ``UU``, ``VV`` (``WW``) in **seconds** (light
  travel time; ``UU---SIN`` and similar spellings too), ``BASELINE`` = 256 a1 + a2 (or
  2048 a1 + a2 + 65536 beyond 255 antennas; antennas numbered from 1) or ``ANTENNA1``/``ANTENNA2``,
  ``DATE`` [JD], ``SOURCE`` (multi-source files) and ``FREQSEL``.
* The regular axes, by ``CTYPEn``: ``COMPLEX`` (real, imaginary, weight; a weight <= 0 flags the
  sample), ``STOKES`` (1 = I; -1..-4 = RR, LL, RL, LR; -5..-8 = XX, YY, XY, YX), ``FREQ`` (channel
  k at ``CRVAL + (k + 1 - CRPIX) CDELT`` [Hz]; CDELT < 0 gives decreasing frequencies), ``IF``
  (offsets from the ``AIPS FQ`` table's ``IF FREQ``), ``RA``/``DEC`` (the phase centre [deg];
  of a multi-source file, the ``AIPS SU`` table's ``RAEPO``/``DECEPO``).
* u, v at channel frequency f are ``UU f``, ``VV f`` wavelengths.

Conventions (docs/visibility_formats.rst)
-----------------------------------------
AIPS Memo 117 fixes the layout and units, not a Fourier sign. The files CASA writes and reads
(casacore's MSFitsOutput.cc / MSFitsInput.cc, ``exportuvfits`` / ``importuvfits``) carry UVW and
the complex values *unchanged* between MS and UVFITS (``UU = UVW[0] / c``; data copied; antenna
order kept), so a UVFITS file obeys the same relation as a Measurement Set:
``V = sum I exp(+2 pi i (u l + v m))`` with UU, VV as stored. The reader therefore takes the
complex conjugate of the data, exactly as the MS reader does, and keeps u, v.

Memory (docs/visibility_formats.rst)
------------------------------------
The file is opened as a memory map (``fits.open(..., memmap=True)``) and the groups are taken in
blocks (``chunk_rows``; default 1_000_000 groups, fewer when a group holds more than 4 values):
the random parameters and data of one block are scaled and converted, reduced, and only the kept
samples are held; the block's pages of the map are then handed back (``MADV_DONTNEED``) so that
the resident size does not grow with the file. A multi-source file is scanned once more, over
its SOURCE parameter only. The result is bitwise the same for any ``chunk_rows``.
"""

import mmap
import os
import warnings

import numpy as np

from .._files import fits_truncation
from ..constants import C_M_S
from ._common import KeptSamples, average_polarisations, block_rows, parallel_hands, parse_channels, source_path

__all__ = ["read_uvfits", "is_fits"]


def is_fits(path):
    """True if ``path`` is a file that starts with a FITS primary header."""
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(9) == b"SIMPLE  ="


def _axes(hdr, path):
    """{CTYPE: (numpy axis of group data, length, crval, cdelt, crpix)} of the regular axes."""
    n = int(hdr["NAXIS"])
    out = {}
    for k in range(2, n + 1):
        ctype = str(hdr.get(f"CTYPE{k}", "")).strip().upper()
        out[ctype.split("-")[0]] = (1 + n - k, int(hdr[f"NAXIS{k}"]), float(hdr.get(f"CRVAL{k}", 0.0)),
                                    float(hdr.get(f"CDELT{k}", 1.0)), float(hdr.get(f"CRPIX{k}", 1.0)))
    for need in ("COMPLEX", "STOKES", "FREQ"):
        if need not in out:
            raise ValueError(f"{path}: the random-groups data have no {need} axis (axes: {list(out)})")
    return out


def _parname(data, prefix, path, required=True):
    """The first random-parameter name starting with ``prefix`` (``par`` adds those that share it)."""
    names = [p for p in data.parnames if p.upper().startswith(prefix)]
    if not names:
        if required:
            raise ValueError(f"{path}: no {prefix} random parameter (have {list(data.parnames)})")
        return None
    return names[0]


def _par(data, name):
    """Parameter ``name`` (scaled by PSCAL/PZERO) of the groups of ``data`` (a block of them) as float64."""
    return np.asarray(data.par(name), dtype=np.float64)


class _Pages:
    """Hands the pages of the memory-mapped groups back once a block is processed.

    Pages of a file mapped by astropy (read-only files: a private, copy-on-write map that is
    never written here) stay in the process's resident set once touched; ``MADV_DONTNEED`` drops
    them from it (a later access reads them from the file again), so that the resident size does
    not grow with the file. Does nothing where the data are not a memory map or madvise is
    missing.
    """

    def __init__(self, data):
        self.mm = None
        x = data
        while x is not None and not isinstance(x, mmap.mmap):
            x = getattr(x, "base", None)
        if x is None or not hasattr(x, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
            return
        try:
            view = np.frombuffer(x, np.uint8)
            self.offset = np.asarray(data).__array_interface__["data"][0] - view.__array_interface__["data"][0]
            del view  # the buffer export must end before the file can be closed
        except (TypeError, ValueError, BufferError):
            return
        self.mm, self.size, self.itemsize, self.done = x, len(x), data.dtype.itemsize, 0

    def release(self, stop):
        """Drop the whole pages before group ``stop``."""
        if self.mm is None:
            return
        end = min(self.offset + stop * self.itemsize, self.size) // mmap.PAGESIZE * mmap.PAGESIZE
        start = max(self.offset // mmap.PAGESIZE * mmap.PAGESIZE, self.done)
        if end > start:
            try:
                self.mm.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (OSError, ValueError):
                self.mm = None
                return
            self.done = end


def _table(hdul, name):
    for h in hdul[1:]:
        if str(h.header.get("EXTNAME", "")).strip().upper() == name:
            return h.data
    return None


def _column(tab, name):
    for c in tab.columns.names:
        if c.strip().upper() == name:
            return np.asarray(tab[c])
    return None


def read_uvfits(path, *, field=None, spw=None, datacolumn="DATA", channels=None, chunk_rows=None):
    """Read one source and one IF of a UVFITS file (module doc) as an observation dict.

    ``field``: source name or ``SOURCE`` id of a multi-source file (AIPS SU table), or the
    ``OBJECT`` name (or 0) of a single-source one; ``spw``: the IF index (from 0; default: the
    only one); ``datacolumn`` must be ``"DATA"`` (UVFITS holds one data column); ``channels`` as
    for the MS reader; ``chunk_rows``: groups processed at once (module doc, "Memory"; default
    1_000_000, fewer for groups of many values; the result does not depend on it). Raises
    ValueError (one line) for unreadable files and bad selections.
    """
    try:
        from astropy.io import fits
    except ImportError as err:
        raise ImportError(f"reading UVFITS needs astropy: pip install 'nuker-mge-plugin[ms]' ({err})") from None

    path = source_path(path)
    if str(datacolumn).upper() != "DATA":
        raise ValueError(f"datacolumn {datacolumn!r} is invalid for UVFITS: a UVFITS file holds one data column "
                         f"(DATA)")
    if not is_fits(path):
        raise ValueError(f"{path}: not a FITS file")
    block_rows(chunk_rows, 1)  # a bad chunk_rows fails before anything is read
    from astropy.utils.exceptions import AstropyUserWarning

    with warnings.catch_warnings():  # astropy's multi-line warnings: the one-line errors below say it
        warnings.simplefilter("ignore", fits.verify.VerifyWarning)
        warnings.simplefilter("ignore", AstropyUserWarning)
        try:
            hdul = fits.open(path, memmap=True)
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a readable FITS file ({' '.join(str(err).split())})") from None
    with hdul:
        hdu = hdul[0]
        short = fits_truncation(hdu, path)
        if short:
            raise ValueError(f"{path}: the file is truncated: its header describes {short[0]} bytes of data, "
                             f"the file holds {short[1]}")
        hdr = hdu.header
        if not hdr.get("GROUPS", False) or not isinstance(hdu, fits.GroupsHDU):
            raise ValueError(f"{path}: not a UVFITS file (the primary HDU is not random groups)")
        data = hdu.data  # memory-mapped: nothing is read until a block of groups is taken below
        n_groups = 0 if data is None else len(data)
        ax = _axes(hdr, path)
        p_uu = _parname(data, "UU", path)
        p_vv = _parname(data, "VV", path)
        p_date = _parname(data, "DATE", path, required=False)
        p_bl = _parname(data, "BASELINE", path, required=False)
        if p_bl is None:
            p_a1, p_a2 = _parname(data, "ANTENNA1", path, False), _parname(data, "ANTENNA2", path, False)
            if p_a1 is None or p_a2 is None:
                raise ValueError(f"{path}: no BASELINE (or ANTENNA1/ANTENNA2) random parameter")
        n_values = int(np.prod([int(hdr[f"NAXIS{k}"]) for k in range(2, int(hdr["NAXIS"]) + 1)]))
        step = block_rows(chunk_rows, n_values)  # groups per block
        blocks = [(s, min(s + step, n_groups)) for s in range(0, n_groups, step)]

        # field (source) selection
        p_src = _parname(data, "SOURCE", path, required=False)
        su = _table(hdul, "AIPS SU")
        obj = str(hdr.get("OBJECT", "")).strip()
        if p_src is not None and su is not None:
            ids = _column(su, "ID. NO.")
            ids = np.arange(1, len(su) + 1) if ids is None else ids.astype(np.int64)
            snames = [str(s).strip() for s in _column(su, "SOURCE")]
            present = set()
            pages = _Pages(data)
            for b0, b1 in blocks:
                present.update(np.unique(np.rint(_par(data[b0:b1], p_src)).astype(np.int64)).tolist())
                pages.release(b1)
            present = sorted(present)
            listing = ", ".join(f"{i}={snames[list(ids).index(i)]!r}" for i in present if i in ids)
            if field is None:
                if len(present) != 1:
                    raise ValueError(f"{path}: {len(present)} sources have data ({listing}): choose one with "
                                     f"field=/--field")
                sid = present[0]
            elif isinstance(field, str) and field in snames:
                sid = int(ids[snames.index(field)])
            elif str(field).strip().isdigit():
                sid = int(str(field).strip())
            else:
                raise ValueError(f"{path}: no source named {field!r} (sources with data: {listing})")
            if sid not in present or sid not in ids:
                raise ValueError(f"{path}: source {sid} has no data (sources with data: {listing})")
            k = list(ids).index(sid)
            fname = snames[k]
            ra = float(_column(su, "RAEPO")[k])
            dec = float(_column(su, "DECEPO")[k])
        else:
            p_src = None  # every group is read
            if field is not None and str(field).strip() not in (obj, "0"):
                raise ValueError(f"{path}: no field {field!r}: this single-source file holds {obj or 'one source'!r} "
                                 f"(field 0)")
            fname, sid = obj, 0
            if "RA" not in ax or "DEC" not in ax:
                raise ValueError(f"{path}: no RA/DEC axes to give the phase centre")
            ra, dec = ax["RA"][2], ax["DEC"][2]

        # spectral window (IF) and channels
        n_if = ax["IF"][1] if "IF" in ax else 1
        if spw is None:
            if n_if != 1:
                raise ValueError(f"{path}: the file holds {n_if} IFs: choose one with spw=/--spw (0-{n_if - 1})")
            spw_id = 0
        else:
            try:
                spw_id = int(str(spw).strip()) if not isinstance(spw, (int, np.integer)) else int(spw)
            except ValueError:
                raise ValueError(f"spw {spw!r} is invalid: give an IF index (from 0)") from None
            if not 0 <= spw_id < n_if:
                raise ValueError(f"{path}: spw {spw_id} is out of range: the file has {n_if} IF"
                                 f"{'s' if n_if > 1 else ''} (0-{n_if - 1})")
        fq = _table(hdul, "AIPS FQ")
        if_off = 0.0
        if fq is not None:
            col = _column(fq, "IF FREQ")
            if col is not None:
                off = np.atleast_1d(np.asarray(col[0], dtype=np.float64))
                if off.size > spw_id:
                    if_off = float(off[spw_id])
        elif n_if > 1:
            raise ValueError(f"{path}: {n_if} IFs but no AIPS FQ table to give their frequencies")
        _, n_f, crval, cdelt, crpix = ax["FREQ"]
        cf_all = crval + if_off + (np.arange(n_f) + 1 - crpix) * cdelt
        if not np.all(cf_all > 0):
            raise ValueError(f"{path}: the FREQ axis gives non-positive frequencies")
        sl = parse_channels(channels, n_f, f"{path} IF {spw_id}")
        chan_freq = cf_all[sl]

        # the visibilities: move axes to (group, freq, stokes, complex), one IF, one RA/DEC pixel
        ndim = int(hdr["NAXIS"])  # the group data array: (group, axis NAXIS, ..., axis 2)
        order = [0, ax["FREQ"][0], ax["STOKES"][0], ax["COMPLEX"][0]]
        rest = [a for a in range(1, ndim) if a not in order]
        idx = [slice(None)] * 4
        for a in rest:  # IF takes spw_id, RA/DEC (length 1) their only pixel
            name = next(k for k, v in ax.items() if v[0] == a)
            idx.append(spw_id if name == "IF" else 0)
        idx = tuple(idx)
        n_cplx = ax["COMPLEX"][1]
        if n_cplx not in (2, 3):
            raise ValueError(f"{path}: the COMPLEX axis has {n_cplx} elements (need real, imaginary[, weight])")
        sax = ax["STOKES"]
        codes = np.rint(sax[2] + (np.arange(sax[1]) + 1 - sax[4]) * sax[3]).astype(np.int64)
        corr_idx, corr_names = parallel_hands(codes, "uvfits", path)

        acc = KeptSamples(chan_freq)
        counts = dict(rows_read=0, rows_flag_row=0, rows_autocorrelation=0, samples_flagged=0, samples_bad_weight=0)
        pages = _Pages(data)
        for b0, b1 in blocks:
            blk = data[b0:b1]  # a view of the memory map; the parameters and data of these groups only
            uu = _par(blk, p_uu)
            vv = _par(blk, p_vv)
            date = np.zeros_like(uu) if p_date is None else _par(blk, p_date)
            if p_bl is not None:
                b = np.rint(np.floor(_par(blk, p_bl))).astype(np.int64)
                big = b > 65536
                a1 = np.where(big, (b - 65536) // 2048, b // 256)
                a2 = np.where(big, (b - 65536) % 2048, b % 256)
            else:
                a1, a2 = np.rint(_par(blk, p_a1)).astype(np.int64), np.rint(_par(blk, p_a2)).astype(np.int64)
            a1, a2 = a1 - 1, a2 - 1  # 1-based in the file
            sel = np.rint(_par(blk, p_src)).astype(np.int64) == sid if p_src is not None \
                else np.ones(uu.size, bool)
            arr = np.asarray(blk.data, dtype=np.float64)[sel]
            arr = np.transpose(arr, order + rest)[idx]
            vis = arr[..., 0] + 1j * arr[..., 1]
            wt = arr[..., 2] if n_cplx == 3 else np.ones(arr.shape[:-1])
            del arr, blk
            uu, vv, date, a1, a2 = uu[sel], vv[sel], date[sel], a1[sel], a2[sel]
            counts["rows_read"] += int(uu.size)
            counts["rows_autocorrelation"] += int((a1 == a2).sum())
            cross = a1 != a2
            vis, wt = vis[cross][:, sl], wt[cross][:, sl]
            flag = ~(wt > 0)  # AIPS: weight <= 0 is flagged (a NaN weight too)
            v_avg, wsum, keep, n_flag, n_bad = average_polarisations(vis, np.abs(wt), flag, corr_idx)
            del vis, wt, flag
            counts["samples_flagged"] += n_flag
            counts["samples_bad_weight"] += n_bad
            # u, v in metres here (times c), so that u f / c gives UU f
            acc.add(u_m=uu[cross] * C_M_S, v_m=vv[cross] * C_M_S, vis=np.conj(v_avg), weight=wsum, keep=keep,
                    ant1=a1[cross], ant2=a2[cross], time=date[cross])
            del v_avg, wsum, keep
            pages.release(b1)
        equinox = hdr.get('EQUINOX', hdr.get('EPOCH', 2000.0))

    if acc.n_rows == 0:
        raise ValueError(f"{path}: only autocorrelations")
    meta = dict(source_file=os.path.abspath(path), format="uvfits", field=fname, field_id=int(sid), spw=spw_id,
                datacolumn="DATA", weight_column="COMPLEX[2]" if n_cplx == 3 else "none (all 1)",
                correlations="+".join(corr_names), channel_start=sl.start, channel_stop=sl.stop, n_chan_spw=int(n_f),
                phase_centre_ra_deg=float(ra % 360.0), phase_centre_dec_deg=float(dec),
                phase_centre_frame=f"EQUINOX {equinox}", counts=counts,
                conversion="vis = conj(data) (the MS relation, which casacore's UVFITS I/O keeps); "
                           "u, v = UU, VV [s] * freq")
    return acc.finish(meta=meta, where=f"{path} (IF {spw_id})")
