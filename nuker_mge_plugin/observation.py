"""The observation format (one ``.npz``) and its single validator, shared by the loader and the gridder.

File format (``np.savez``; every array 1-D with one row per visibility unless stated)
----------------------------------------------------------------------------------------
``u``, ``v``   float64 [wavelengths] (of the row's own frequency)
``vis``        complex128 [Jy]
``weight``     float64 [1/Jy^2], > 0 (relative weights are enough: the gridder takes the noise
               level from the scatter)
``chan``       int64 channel index, 0 <= chan < n_chan
``freq``       float64 [Hz], the channel frequency of the row (= ``chan_freq[chan]``)
``chan_freq``  float64 (n_chan,) [Hz], channel centre frequencies (may decrease with index)
``ant1``, ``ant2``  optional int64 antenna indices (ant1 < ant2); ``time_idx`` optional int64
``meta``       0-d str: a JSON object (rest_freq_hz, and for mocks the true parameters and geometry)

Sign and axis conventions are those of :mod:`nuker_mge_plugin.dynamics.coords`.
"""

import json
import os
import zipfile

import numpy as np

from ._files import atomic_write

__all__ = ["REQUIRED_KEYS", "check_visibilities", "validate_observation", "load_observation",
           "save_observation"]

REQUIRED_KEYS = ("u", "v", "vis", "weight", "chan", "freq", "chan_freq", "meta")


def _row_problems(arrs, n_chan):
    """Problems (list of str) with named 1-D row arrays; ``arrs`` has u, v, vis, weight, maybe chan."""
    probs = [f"{k} must be 1-D (one row per visibility), has shape {a.shape}" for k, a in arrs.items() if a.ndim != 1]
    if probs:
        return probs
    n = {k: a.shape[0] for k, a in arrs.items()}
    if len(set(n.values())) != 1:
        return [f"row counts differ: {n}"]
    N = arrs["u"].shape[0]
    if N == 0:
        return ["no rows"]
    if not np.iscomplexobj(arrs["vis"]):
        probs.append(f"vis must be complex, is {arrs['vis'].dtype}")
    for k, a in arrs.items():
        if k in ("vis", "chan", "ant1", "ant2", "time_idx"):
            continue
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            probs.append(f"{k} must be real numbers, is {a.dtype}")
    for k in ("chan", "ant1", "ant2", "time_idx"):
        if k in arrs and not np.issubdtype(arrs[k].dtype, np.integer):
            probs.append(f"{k} must hold integers, is {arrs[k].dtype}")
    if probs:
        return probs
    for k in ("u", "v", "vis", "weight", "freq"):
        if k in arrs:
            bad = int((~np.isfinite(arrs[k])).sum())
            if bad:
                probs.append(f"{bad} of {N} rows have non-finite {k}")
    for k in ("weight", "freq"):
        if k in arrs:
            bad = int((np.isfinite(arrs[k]) & (arrs[k] <= 0)).sum())
            if bad:
                probs.append(f"{bad} of {N} rows have {k} <= 0")
    if "chan" in arrs and n_chan is not None:
        out = int(((arrs["chan"] < 0) | (arrs["chan"] >= n_chan)).sum())
        if out:
            probs.append(f"{out} of {N} rows have chan outside [0, {n_chan})")
    if "ant1" in arrs and "ant2" in arrs:
        bad = int((arrs["ant1"] >= arrs["ant2"]).sum())
        if bad:
            probs.append(f"{bad} of {N} rows have ant1 >= ant2 (autocorrelation or unordered pair)")
    return probs


def check_visibilities(u, v, vis, weight, chan=None, n_chan=None):
    """Validate raw visibility rows; returns (u, v, vis, weight, chan) as float64/complex128/int64.

    u, v [wavelengths], vis [Jy] complex, weight [1/Jy^2] > 0, chan int in [0, n_chan): 1-D, one
    row per visibility. Raises ValueError listing every problem with its row count (non-finite
    values, non-positive weights, shape or dtype mismatches, channels out of range); nothing is
    dropped silently.
    """
    arrs = {"u": np.asarray(u), "v": np.asarray(v), "vis": np.asarray(vis), "weight": np.asarray(weight)}
    if chan is not None:
        arrs["chan"] = np.asarray(chan)
    probs = _row_problems(arrs, n_chan)
    if probs:
        raise ValueError("bad visibilities: " + "; ".join(probs))
    return (arrs["u"].astype(np.float64), arrs["v"].astype(np.float64), arrs["vis"].astype(np.complex128),
            arrs["weight"].astype(np.float64), None if chan is None else arrs["chan"].astype(np.int64))


def validate_observation(d, source=None):
    """Check an observation dict (arrays as in the module doc); returns it normalised, meta parsed.

    ``source`` (a path) prefixes every message. Raises ValueError listing every problem with row
    counts: missing keys, wrong dimensions or dtypes, row counts that differ, non-finite values,
    non-positive weights or frequencies, channels out of range or without rows, ``freq``
    inconsistent with ``chan_freq[chan]``, unreadable ``meta``.
    """
    where = f"{source}: " if source is not None else ""
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ValueError(f"{where}observation lacks {missing} (need {list(REQUIRED_KEYS)})")
    rows = ["u", "v", "vis", "weight", "chan", "freq"] + [k for k in ("ant1", "ant2", "time_idx") if k in d]
    arrs = {k: np.asarray(d[k]) for k in rows}
    cf = np.asarray(d["chan_freq"])
    cf_ok = cf.ndim == 1 and cf.size > 0 and np.issubdtype(cf.dtype, np.number) and np.all(np.isfinite(cf)) \
        and np.all(cf > 0)
    probs = _row_problems(arrs, cf.size if cf_ok else None)
    if not cf_ok:
        probs.append("chan_freq must be a non-empty 1-D array of positive finite frequencies [Hz]")
    elif not probs:
        c = arrs["chan"]
        mism = ~np.isclose(arrs["freq"], cf[c], rtol=1e-9, atol=0)
        if mism.any():
            probs.append(f"{int(mism.sum())} of {c.size} rows have freq != chan_freq[chan]")
        empty = np.setdiff1d(np.arange(cf.size), np.unique(c))
        if empty.size:
            probs.append(f"{empty.size} of {cf.size} channels have no rows: {empty.tolist()[:20]}")
    try:
        meta = json.loads(str(np.asarray(d["meta"])))
        if not isinstance(meta, dict):
            raise ValueError
    except (ValueError, TypeError):
        probs.append("meta must be a JSON object string")
        meta = None
    if probs:
        raise ValueError(f"{where}bad observation: " + "; ".join(probs))
    out = {k: arrs[k] for k in rows}
    out.update(u=arrs["u"].astype(np.float64), v=arrs["v"].astype(np.float64), vis=arrs["vis"].astype(np.complex128),
               weight=arrs["weight"].astype(np.float64), chan=arrs["chan"].astype(np.int64),
               freq=arrs["freq"].astype(np.float64), chan_freq=cf.astype(np.float64), meta=meta)
    return out


def load_observation(path):
    """Load and validate an observation ``.npz`` (module doc); one ValueError naming the file otherwise."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, not an observation .npz file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: the file is empty, not an observation .npz file")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz observation file ({type(err).__name__}: {err})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single array (a .npy file), not an observation .npz with the keys "
                         f"{list(REQUIRED_KEYS)}")
    try:
        with f:
            d = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: the .npz file is damaged or truncated ({type(err).__name__}: {err})") from None
    return validate_observation(d, source=path)


def save_observation(path, d):
    """Validate ``d`` and write it as an observation ``.npz`` atomically (temporary file, then rename)."""
    validate_observation(d)
    path = os.fspath(path)
    arrays = {k: (np.array(json.dumps(val)) if k == "meta" and isinstance(val, dict) else val) for k, val in d.items()}

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez appends ".npz" to a name that lacks it
            np.savez(f, **arrays)
    atomic_write(path, write)
