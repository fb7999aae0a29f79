"""Visibility readers: CASA Measurement Sets and UVFITS files into the observation format.

:func:`load_visibilities` returns the dict that :mod:`nuker_mge_plugin.observation` documents
(``u, v`` [wavelengths of each channel], ``vis`` [Jy], ``weight`` [1/Jy^2], ``chan``, ``freq``,
``chan_freq`` [Hz], ``ant1``, ``ant2``, ``time_idx``, ``meta`` -- a 0-d JSON string as in the
file, :func:`meta_of` parses it), in our sign convention
(docs/conventions.rst); ``nuker-mge convert-vis IN --out OUT.npz`` writes it with
:func:`~nuker_mge_plugin.observation.save_observation`, for ``nuker-mge fit``.

* Measurement Sets (a folder): :mod:`.ms`, through python-casacore (the ``ms`` extra).
* UVFITS (random groups): :mod:`.uvfits`, through astropy.

The sign and baseline conventions of both formats and what the readers do about them:
docs/visibility_formats.rst. ``meta`` records the source file, format, field, spw, data and
weight columns, the channel range, the counts (rows read, rows flagged by FLAG_ROW,
autocorrelation rows dropped, samples dropped for flags and for bad weights) and the phase
centre (RA/Dec [deg]); ``rest_freq_hz`` is not in the data and is left to the fit configuration.
"""

import os

from ._common import meta_of, parse_channels
from .ms import is_ms, read_ms
from .uvfits import is_fits, read_uvfits

__all__ = ["load_visibilities", "read_ms", "read_uvfits", "parse_channels", "detect_format", "meta_of"]


def detect_format(path):
    """``"ms"`` (a casacore table folder) or ``"uvfits"`` (a FITS file); ValueError otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    if is_ms(path):
        return "ms"
    if os.path.isdir(path):
        raise ValueError(f"{path}: a folder but not a Measurement Set (no table.dat)")
    if is_fits(path):
        return "uvfits"
    raise ValueError(f"{path}: neither a Measurement Set (folder) nor a UVFITS file")


def load_visibilities(path, *, field=None, spw=None, datacolumn="DATA", channels=None, weight_column=None,
                      chunk_rows=None):
    """Read a Measurement Set or a UVFITS file as an observation dict (module doc).

    Parameters
    ----------
    path : str or path-like
        An MS folder or a UVFITS file (told apart by their content).
    field : str or int, optional
        Field (source) name or index; default: the only one with data.
    spw : int, optional
        Spectral window (MS) or IF (UVFITS) index, from 0; default: the only one.
    datacolumn : {"DATA", "CORRECTED_DATA"}
        MS data column (UVFITS has only DATA).
    channels : None, slice, (start, stop) or "a:b"
        Channels of the window to keep (Python slice rules, no step).
    weight_column : str, optional
        MS only: WEIGHT_SPECTRUM, WEIGHT, SIGMA_SPECTRUM or SIGMA (default: :mod:`.ms`).
    chunk_rows : int, optional
        Rows (MS) or groups (UVFITS) read and reduced at once; only the kept samples are held
        beyond a block (docs/visibility_formats.rst, "Memory"). Default: 1_000_000, fewer when a row
        holds more than 4 values (at most 4_000_000 stored values per block). The result does not
        depend on it, bit for bit.

    Raises
    ------
    ValueError
        One line naming the file and the problem (unreadable file, missing column, unknown
        field, spw out of range, empty selection...).
    ImportError
        An MS without python-casacore installed.
    """
    fmt = detect_format(path)
    if fmt == "ms":
        return read_ms(path, field=field, spw=spw, datacolumn=datacolumn, channels=channels,
                       weight_column=weight_column, chunk_rows=chunk_rows)
    if weight_column is not None:
        raise ValueError("weight_column applies to Measurement Sets; UVFITS weights are the COMPLEX axis's third "
                         "element")
    return read_uvfits(path, field=field, spw=spw, datacolumn=datacolumn, channels=channels, chunk_rows=chunk_rows)
