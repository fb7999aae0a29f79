"""What the Measurement-Set and UVFITS readers share: channel selection, polarisation averaging,
the conversion to our sign convention, and the assembly of the observation dict.

Both readers reduce a file to per-row arrays -- ``u_m, v_m`` [m] (the file's own baseline
coordinates), ``data`` (n_row, n_chan, n_corr) complex [Jy], ``weight`` and ``flag`` of the same
shape, the antenna pair and the time of each row -- and hand them to :func:`assemble`.
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


def assemble(*, u_m, v_m, vis, weight, keep, chan_freq, ant1, ant2, time, meta, where):
    """The observation dict (observation.py) of kept samples; u, v scaled to each channel's wavelength.

    ``meta`` is returned as the .npz holds it, a 0-d JSON string (:func:`meta_of` parses it).

    ``u_m, v_m`` [m] (n_row,) must already be in our convention (see the readers); rows with
    ``ant1 > ant2`` are turned round (u, v -> -u, -v and V -> conj V, the same measurement) so that
    ``ant1 < ant2`` as the format requires. Channels left without any kept sample raise ValueError.
    """
    swap = ant1 > ant2
    if swap.any():
        u_m = np.where(swap, -u_m, u_m)
        v_m = np.where(swap, -v_m, v_m)
        vis = np.where(swap[:, None], np.conj(vis), vis)
        ant1, ant2 = np.where(swap, ant2, ant1), np.where(swap, ant1, ant2)
    n_chan = chan_freq.size
    empty = np.flatnonzero(~keep.any(0))
    if empty.size == n_chan:
        raise ValueError(f"{where}: no unflagged visibility in the selection")
    if empty.size:
        raise ValueError(f"{where}: {empty.size} of {n_chan} selected channels have no unflagged visibility "
                         f"(selected channel indices {empty.tolist()[:10]}{' ...' if empty.size > 10 else ''}): "
                         f"narrow the channel range (channels=/--channels a:b)")
    r, c = np.nonzero(keep)
    _, t_idx = np.unique(time, return_inverse=True)
    f = chan_freq[c]
    out = dict(u=u_m[r] * f / C_M_S, v=v_m[r] * f / C_M_S, vis=vis[r, c], weight=weight[r, c],
               chan=c.astype(np.int64), freq=f, chan_freq=chan_freq.astype(np.float64),
               ant1=ant1[r].astype(np.int64), ant2=ant2[r].astype(np.int64),
               time_idx=t_idx.reshape(-1)[r].astype(np.int64))
    meta = dict(meta, n_vis=int(r.size), n_chan=int(n_chan), freq_min_hz=float(chan_freq.min()),
                freq_max_hz=float(chan_freq.max()), conventions=OUR_CONVENTION,
                written_by=f"nuker-mge-plugin {__version__} (nuker_mge_plugin.io)")
    out["meta"] = np.array(json.dumps(meta))
    d = validate_observation(out, source=where)
    d["meta"] = out["meta"]  # the .npz form (as mock_observation returns it): save_observation takes it as is
    return d


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
