"""What the Measurement-Set and UVFITS readers share: channel selection, polarisation averaging,
the conversion to our sign convention, and the assembly of the observation dict.

Both readers go through a file in blocks of rows (``chunk_rows``; :func:`block_rows`), reduce each
block to per-row arrays -- ``u_m, v_m`` [m] (the file's own baseline coordinates), ``data``
(n_row, n_chan, n_corr) complex [Jy], ``weight`` and ``flag`` of the same shape, the antenna pair
and the time of each row -- average its polarisations and hand the kept samples to
:class:`KeptSamples`, which holds only the output and assembles the observation dict at the end.
"""

import json
import os

import numpy as np

from .. import __version__
from ..constants import C_M_S
from ..observation import validate_observation

#: Our convention (docs/conventions.rst), written into every converted file's meta.
OUR_CONVENTION = ("V = sum I exp(-2 pi i (u l + v m)), l East, m North; u, v [wavelengths] = baseline "
                  "pos(ant2) - pos(ant1) (ant1 < ant2), East and North components")

#: Correlation codes of the parallel hands (their weighted mean estimates Stokes I) and of Stokes I,
#: by format: casacore's Stokes enum for a Measurement Set's POLARIZATION::CORR_TYPE
#: (I=1, RR=5, LL=8, XX=9, YY=12), AIPS Memo 117's STOKES axis values for UVFITS (I=1, RR=-1,
#: LL=-2, XX=-5, YY=-6).
CORR_NAMES = {
    "ms": {1: "I", 2: "Q", 3: "U", 4: "V", 5: "RR", 6: "RL", 7: "LR", 8: "LL", 9: "XX", 10: "XY", 11: "YX",
           12: "YY"},
    "uvfits": {1: "I", 2: "Q", 3: "U", 4: "V", -1: "RR", -2: "LL", -3: "RL", -4: "LR", -5: "XX", -6: "YY",
               -7: "XY", -8: "YX"},
}


def parallel_hands(codes, fmt, where):
    """Indices of the correlations to average (RR+LL, XX+YY, one of them, or Stokes I); ValueError if none."""
    names = [CORR_NAMES[fmt].get(int(c), f"code {int(c)}") for c in codes]
    for group in (("RR", "LL"), ("XX", "YY")):
        idx = [i for i, n in enumerate(names) if n in group]
        if idx:
            if any(n in ("RR", "LL") for n in names) and any(n in ("XX", "YY") for n in names):
                raise ValueError(f"{where}: mixes circular and linear correlations {names}")
            return idx, [names[i] for i in idx]
    idx = [i for i, n in enumerate(names) if n == "I"]
    if idx:
        return idx[:1], ["I"]
    raise ValueError(f"{where}: no parallel-hand (RR/LL, XX/YY) or Stokes I correlation among {names}")


def parse_channels(channels, n_chan, where):
    """``channels`` (None, a slice, a ``(start, stop)`` pair or a ``"a:b"`` string) as a checked slice.

    Python slice rules (``a`` included, ``b`` excluded, negative counts from the end, either may be
    left out); a step is not accepted: every channel of the range is read.
    """
    if channels is None:
        return slice(0, n_chan)
    text = channels
    if isinstance(channels, str):
        parts = channels.split(":")
        try:
            if len(parts) != 2:
                raise ValueError
            channels = slice(*(int(p) if p.strip() else None for p in parts))
        except ValueError:
            raise ValueError(f"channels {text!r} is invalid: give 'a:b' (first channel a, up to but not "
                             f"including b; either may be left out)") from None
    elif isinstance(channels, (tuple, list)) and len(channels) == 2:
        channels = slice(*channels)
    if not isinstance(channels, slice) or channels.step not in (None, 1):
        raise ValueError(f"channels {text!r} is invalid: give a slice, a (start, stop) pair or 'a:b' without step")
    for b in (channels.start, channels.stop):
        if b is not None and (isinstance(b, bool) or not isinstance(b, (int, np.integer))):
            raise ValueError(f"channels {text!r} is invalid: the bounds must be integers")
    start, stop, _ = channels.indices(n_chan)
    if stop <= start:
        raise ValueError(f"{where}: channels {_fmt_slice(channels)} select no channel of the {n_chan} there")
    return slice(start, stop)


def _fmt_slice(s):
    return f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"


def average_polarisations(data, weight, flag, corr_idx):
    """Weighted mean over the correlations ``corr_idx`` of (n_row, n_chan, n_corr) arrays.

    A sample (row, channel) is kept only when every one of those correlations is unflagged, has a
    finite value and a finite weight > 0 (Stokes I needs both hands: a lone XX is not I for a
    polarised source). Returns ``vis`` = sum w V / sum w, ``w`` = sum w (the inverse variance of
    that mean), ``keep`` (n_row, n_chan) bool, and the counts of samples dropped for flags and for
    bad (non-positive or non-finite) weights or values.
    """
    d = data[..., corr_idx]
    w = weight[..., corr_idx].astype(np.float64)
    f = flag[..., corr_idx]
    flagged = f.any(-1)
    bad = ~(np.isfinite(d).all(-1) & np.isfinite(w).all(-1) & (w > 0).all(-1)) & ~flagged
    keep = ~flagged & ~bad
    wsum = np.where(keep, w.sum(-1), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        vis = np.where(keep, (np.where(keep[..., None], d * w, 0)).sum(-1) / np.where(keep, wsum, 1.0), 0)
    return vis.astype(np.complex128), wsum, keep, int(flagged.sum()), int(bad.sum())


#: Rows read at once when ``chunk_rows`` is None: at most this many ...
DEFAULT_CHUNK_ROWS = 1_000_000
#: ... and at most this many stored values (row x channel x correlation [x complex part]) per block, so
#: that a block of a many-channel file stays small too (a few hundred MB of working arrays).
DEFAULT_CHUNK_VALUES = 4_000_000


def block_rows(chunk_rows, values_per_row):
    """Rows per block: ``chunk_rows`` as given (a positive integer), or for None the default
    (:data:`DEFAULT_CHUNK_ROWS` rows, fewer when a row holds many values); ValueError otherwise."""
    if chunk_rows is None:
        return int(max(1, min(DEFAULT_CHUNK_ROWS, DEFAULT_CHUNK_VALUES // max(1, int(values_per_row)))))
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) or chunk_rows < 1:
        raise ValueError(f"chunk_rows {chunk_rows!r} is invalid: give a positive number of rows (or None)")
    return int(chunk_rows)


class _Growing:
    """A 1-D array filled block after block: its capacity grows by a quarter at a time in place
    (``ndarray.resize``; a large block is remapped by realloc, not copied) and is cut to the length
    filled at the end, so that it never holds much more than its contents (a list of blocks joined
    at the end would need the blocks and their join at once)."""

    def __init__(self, dtype):
        self.buf = np.empty(0, dtype)
        self.n = 0

    def extend(self, x):
        end = self.n + x.size
        if end > self.buf.size:
            self.buf.resize(max(end, self.buf.size + self.buf.size // 4, 4096), refcheck=False)
        self.buf[self.n:end] = x
        self.n = end

    def take(self):
        out, self.buf = self.buf, None
        out.resize(self.n, refcheck=False)
        return out


class KeptSamples:
    """The kept samples of a file, gathered block by block of rows (in file order), and the
    observation dict (observation.py) made of them by :meth:`finish`.

    Only the output is held: per kept sample u, v, freq, weight (float64), vis (complex128), chan,
    ant1, ant2 (int64) and the row's time (float64, turned into ``time_idx`` at the end), plus the
    sorted distinct times of every cross-correlation row added and which channels kept a sample.
    The result is the same, bit for bit, however the rows are cut into blocks.
    """

    DTYPES = dict(u=np.float64, v=np.float64, vis=np.complex128, weight=np.float64, chan=np.int64, freq=np.float64,
                  ant1=np.int64, ant2=np.int64, time=np.float64)

    def __init__(self, chan_freq):
        self.chan_freq = np.asarray(chan_freq)
        self.cols = {k: _Growing(t) for k, t in self.DTYPES.items()}
        self.seen = np.zeros(self.chan_freq.size, bool)
        self.times = np.zeros(0, np.float64)
        self.n_rows = 0

    def add(self, *, u_m, v_m, vis, weight, keep, ant1, ant2, time):
        """One block of cross-correlation rows: ``u_m, v_m`` [m] (n_row,) already in our convention,
        ``vis`` and ``weight`` (n_row, n_chan) from :func:`average_polarisations`, ``keep`` its mask.

        Rows with ``ant1 > ant2`` are turned round (u, v -> -u, -v and V -> conj V, the same
        measurement) so that ``ant1 < ant2`` as the format requires; u, v are scaled to each
        channel's wavelength.
        """
        swap = ant1 > ant2
        if swap.any():
            u_m = np.where(swap, -u_m, u_m)
            v_m = np.where(swap, -v_m, v_m)
            vis = np.where(swap[:, None], np.conj(vis), vis)
            ant1, ant2 = np.where(swap, ant2, ant1), np.where(swap, ant1, ant2)
        time = np.asarray(time, dtype=np.float64)
        self.n_rows += int(np.size(u_m))
        if keep.size:
            self.seen |= keep.any(0)
        if time.size:
            self.times = np.unique(np.concatenate([self.times, np.unique(time)]))
        r, c = np.nonzero(keep)
        f = self.chan_freq[c]
        col = self.cols
        col["u"].extend(u_m[r] * f / C_M_S)
        col["v"].extend(v_m[r] * f / C_M_S)
        col["vis"].extend(vis[r, c])
        col["weight"].extend(weight[r, c])
        col["chan"].extend(c)
        col["freq"].extend(f)
        col["ant1"].extend(ant1[r])
        col["ant2"].extend(ant2[r])
        col["time"].extend(time[r])

    def _take(self, key):
        return self.cols.pop(key).take()

    def finish(self, *, meta, where):
        """The observation dict of the kept samples (``meta`` completed, as a 0-d JSON string as the
        .npz holds it: :func:`meta_of` parses it). Channels left without any kept sample raise
        ValueError."""
        chan_freq = self.chan_freq
        n_chan = chan_freq.size
        empty = np.flatnonzero(~self.seen)
        if empty.size == n_chan:
            raise ValueError(f"{where}: no unflagged visibility in the selection")
        if empty.size:
            raise ValueError(f"{where}: {empty.size} of {n_chan} selected channels have no unflagged visibility "
                             f"(selected channel indices {empty.tolist()[:10]}{' ...' if empty.size > 10 else ''}): "
                             f"narrow the channel range (channels=/--channels a:b)")
        out = {k: self._take(k) for k in ("u", "v", "vis", "weight", "chan", "freq")}
        out["chan_freq"] = chan_freq.astype(np.float64)
        out["ant1"], out["ant2"] = self._take("ant1"), self._take("ant2")
        time = self._take("time")
        # the rank of each row's time among the distinct times of all cross-correlation rows read
        # (= np.unique(time, return_inverse=True)[1] over those rows)
        out["time_idx"] = np.searchsorted(self.times, time).astype(np.int64)
        del time
        n_vis = int(out["u"].size)
        meta = dict(meta, n_vis=n_vis, n_chan=int(n_chan), freq_min_hz=float(chan_freq.min()),
                    freq_max_hz=float(chan_freq.max()), conventions=OUR_CONVENTION,
                    written_by=f"nuker-mge-plugin {__version__} (nuker_mge_plugin.io)")
        out["meta"] = np.array(json.dumps(meta))
        d = validate_observation(out, source=where)
        d["meta"] = out["meta"]  # the .npz form (as mock_observation returns it): save_observation takes it as is
        return d


def assemble(*, u_m, v_m, vis, weight, keep, chan_freq, ant1, ant2, time, meta, where):
    """The observation dict (observation.py) of kept samples; u, v scaled to each channel's wavelength.

    All rows at once (the readers use :class:`KeptSamples` block by block). ``meta`` is returned as
    the .npz holds it, a 0-d JSON string (:func:`meta_of` parses it).

    ``u_m, v_m`` [m] (n_row,) must already be in our convention (see the readers); rows with
    ``ant1 > ant2`` are turned round (u, v -> -u, -v and V -> conj V, the same measurement) so that
    ``ant1 < ant2`` as the format requires. Channels left without any kept sample raise ValueError.
    """
    acc = KeptSamples(chan_freq)
    acc.add(u_m=u_m, v_m=v_m, vis=vis, weight=weight, keep=keep, ant1=ant1, ant2=ant2, time=time)
    return acc.finish(meta=meta, where=where)


def meta_of(obs):
    """The ``meta`` of an observation dict as a dict (it is a JSON string in the .npz form)."""
    m = obs["meta"]
    return m if isinstance(m, dict) else json.loads(str(np.asarray(m)))


def source_path(path):
    """``path`` as a string that exists, else one ValueError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file or directory")
    return path
