"""Peak memory and wall time of ``nuker_mge_plugin.io.load_visibilities`` on 10^7-row files.

The issue's target: "reading 10^7 rows stays within a few GB of memory (chunked)". This script
writes one synthetic file of each format under ``--dir`` (default /tmp) -- a Measurement Set
through ``casacore.tables`` (as tests/test_io_ms.py builds its small ones, DATA and FLAG in
TiledColumnStMan like a real MS, written in blocks of rows) and a UVFITS random-groups file
through astropy (as tests/test_io_uvfits.py does) -- with 1 channel, 2 parallel hands (XX, YY),
64 antennas (so 64 of every 2080 rows are autocorrelations), about 5% of the samples flagged (MS
FLAG on one hand, UVFITS weight <= 0) and (MS) 1% of the rows flagged by FLAG_ROW. Each file is
then read by ``load_visibilities`` in a fresh Python process, which reports its own peak resident
memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, so the imports are included; the RSS after
the imports is reported too) and the wall time of the read. One JSON object is printed: per
format the rows, kept visibilities, file size, write time, peak RSS, wall time and the size of
the output arrays (every array of the returned dict) -- the floor any reader has to reach.

    python validation/io_memory.py                  # 10^7 rows, both formats, files deleted
    python validation/io_memory.py --rows 1e5 --formats uvfits --keep

``--reader`` names the module whose ``load_visibilities`` the child calls (default
``nuker_mge_plugin.io``; another implementation on PYTHONPATH can be measured the same way), and
``--chunk-rows`` is passed on when given. The files are written in a separate process as well, so
that the process starting the readers stays small: on Linux a child's ``ru_maxrss`` starts from
its parent's resident size at the fork. Disk: about 170 B per MS row and 48 B per UVFITS group
(1.7 GB and 0.5 GB at 10^7 rows); the formats are done one after the other and each file is
deleted after its read unless ``--keep``.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np

N_ANT = 64
FREQ_HZ = 230.0e9
JD0 = 2460000.5
BLOCK = 1_000_000  # rows written at once
C_M_S = 299_792_458.0


def _rows_block(start, n, rng):
    """Rows start .. start + n - 1 of the synthetic observation: antennas, baselines [m], time [s],
    XX/YY visibilities (a point source 1" East plus noise), weights and flags."""
    a1, a2 = np.triu_indices(N_ANT)  # with autocorrelations (a1 == a2)
    per_t = a1.size
    i = np.arange(start, start + n)
    t_idx, b = np.divmod(i, per_t)
    pos = np.random.default_rng(1).uniform(-500.0, 500.0, (N_ANT, 2))
    ang = 1e-4 * t_idx
    bx, by = (pos[a2] - pos[a1])[b].T
    u = np.cos(ang) * bx - np.sin(ang) * by
    v = 0.8 * (np.sin(ang) * bx + np.cos(ang) * by)
    phase = 2 * np.pi * u * FREQ_HZ / C_M_S * (1.0 / 206264.806)
    vis = np.exp(1j * phase)[:, None] + 0.1 * (rng.normal(size=(n, 2)) + 1j * rng.normal(size=(n, 2)))
    weight = rng.uniform(0.5, 2.0, (n, 2))
    flag = np.zeros((n, 2), bool)
    flag[np.arange(n), rng.integers(0, 2, n)] = rng.random(n) < 0.05  # one hand of ~5% of the samples
    flag_row = rng.random(n) < 0.01
    return dict(a1=a1[b], a2=a2[b], u=u, v=v, time=4.0e9 + 6.048 * t_idx, vis=vis, weight=weight, flag=flag,
                flag_row=flag_row)


def write_ms(path, n_rows):
    import casacore.tables as ct

    cols = [ct.makearrcoldesc("DATA", 0j, shape=[1, 2], valuetype="complex", datamanagertype="TiledColumnStMan",
                              datamanagergroup="TiledData"),
            ct.makearrcoldesc("FLAG", False, shape=[1, 2], valuetype="boolean", datamanagertype="TiledColumnStMan",
                              datamanagergroup="TiledFlag"),
            ct.makearrcoldesc("WEIGHT", 0.0, shape=[2], valuetype="float"),
            ct.makearrcoldesc("SIGMA", 0.0, shape=[2], valuetype="float")]
    t = ct.default_ms(path, ct.maketabdesc(cols))
    t.addrows(n_rows)
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, BLOCK):
        n = min(BLOCK, n_rows - start)
        r = _rows_block(start, n, rng)
        put = dict(startrow=start, nrow=n)
        t.putcol("UVW", np.stack([r["u"], r["v"], np.zeros(n)], 1), **put)
        t.putcol("ANTENNA1", r["a1"].astype(np.int32), **put)
        t.putcol("ANTENNA2", r["a2"].astype(np.int32), **put)
        t.putcol("FIELD_ID", np.zeros(n, np.int32), **put)
        t.putcol("DATA_DESC_ID", np.zeros(n, np.int32), **put)
        t.putcol("TIME", r["time"], **put)
        t.putcol("FLAG_ROW", r["flag_row"], **put)
        t.putcol("DATA", r["vis"][:, None, :].astype(np.complex64), **put)
        t.putcol("FLAG", r["flag"][:, None, :], **put)
        t.putcol("WEIGHT", r["weight"].astype(np.float32), **put)
        t.putcol("SIGMA", (1.0 / np.sqrt(r["weight"])).astype(np.float32), **put)
    t.close()
    sub = {"SPECTRAL_WINDOW": [("CHAN_FREQ", np.array([FREQ_HZ])), ("NUM_CHAN", 1), ("NAME", "spw0"),
                               ("REF_FREQUENCY", FREQ_HZ)],
           "POLARIZATION": [("CORR_TYPE", np.array([9, 12], np.int32)), ("NUM_CORR", 2)],
           "DATA_DESCRIPTION": [("SPECTRAL_WINDOW_ID", 0), ("POLARIZATION_ID", 0)],
           "FIELD": [("NAME", "SYNTH")] + [(c, np.radians([[192.15, -5.8]])) for c in
                                           ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR")]}
    for name, cells in sub.items():
        st = ct.table(f"{path}/{name}", readonly=False, ack=False)
        st.addrows(1)
        for col, val in cells:
            st.putcell(col, 0, val)
        st.close()


def write_uvfits(path, n_rows):
    from astropy.io import fits

    arr = np.zeros((n_rows, 1, 1, 1, 1, 2, 3), np.float32)  # DEC RA IF FREQ STOKES COMPLEX
    pars = {k: np.zeros(n_rows, np.float32) for k in ("UU", "VV", "WW", "BASELINE", "DATE2")}
    rng = np.random.default_rng(0)
    for start in range(0, n_rows, BLOCK):
        n = min(BLOCK, n_rows - start)
        r = _rows_block(start, n, rng)
        s = slice(start, start + n)
        w = np.where(r["flag"], -r["weight"], r["weight"])  # AIPS: weight <= 0 flags
        arr[s, 0, 0, 0, 0, :, 0] = r["vis"].real
        arr[s, 0, 0, 0, 0, :, 1] = r["vis"].imag
        arr[s, 0, 0, 0, 0, :, 2] = w
        pars["UU"][s], pars["VV"][s] = r["u"] / C_M_S, r["v"] / C_M_S
        pars["BASELINE"][s] = 256.0 * (r["a1"] + 1) + (r["a2"] + 1)
        pars["DATE2"][s] = (r["time"] - 4.0e9) / 86400.0
    names = ["UU", "VV", "WW", "BASELINE", "DATE", "DATE"]
    data = [pars["UU"], pars["VV"], pars["WW"], pars["BASELINE"], np.full(n_rows, JD0, np.float32), pars["DATE2"]]
    gd = fits.GroupData(arr, parnames=names, pardata=data, bitpix=-32)
    del arr, data, pars
    hdu = fits.GroupsHDU(gd)
    h = hdu.header
    axes = [("COMPLEX", 1.0, 1.0), ("STOKES", -5.0, -1.0), ("FREQ", FREQ_HZ, 1e6), ("IF", 1.0, 1.0),
            ("RA", 192.15, 1.0), ("DEC", -5.8, 1.0)]
    for k, (ctype, crval, cdelt) in enumerate(axes, start=2):
        h[f"CTYPE{k}"], h[f"CRVAL{k}"], h[f"CDELT{k}"], h[f"CRPIX{k}"] = ctype, crval, cdelt, 1.0
    h["OBJECT"] = "SYNTH"
    h["EQUINOX"] = 2000.0
    hdu.writeto(path, overwrite=True)


def size_gb(path):
    if os.path.isfile(path):
        return os.path.getsize(path) / 1e9
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs) / 1e9


def child(reader, path, chunk_rows):
    """Runs in the fresh process: read ``path``, print a JSON line of memory, time and sizes."""
    import importlib

    mod = importlib.import_module(reader)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB (Linux)
    kw = {} if chunk_rows is None else dict(chunk_rows=chunk_rows)
    t0 = time.perf_counter()
    obs = mod.load_visibilities(path, **kw)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    meta = json.loads(str(np.asarray(obs["meta"])))
    out_bytes = sum(np.asarray(a).nbytes for a in obs.values())
    print(json.dumps(dict(kept_visibilities=int(obs["u"].size), counts=meta["counts"],
                          output_arrays_gb=round(out_bytes / 1e9, 4), peak_rss_gb=round(peak, 4),
                          rss_after_imports_gb=round(rss_import, 4), wall_s=round(wall, 2))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=float, default=1e7, help="rows (MS) / groups (UVFITS) to write (default 1e7)")
    ap.add_argument("--formats", default="ms,uvfits", help="comma-separated: ms, uvfits (default both)")
    ap.add_argument("--keep", action="store_true", help="keep the files written")
    ap.add_argument("--dir", default="/tmp", help="where to write them (default /tmp)")
    ap.add_argument("--reader", default="nuker_mge_plugin.io", help="module whose load_visibilities is measured")
    ap.add_argument("--chunk-rows", type=int, default=None, help="chunk_rows passed to load_visibilities")
    ap.add_argument("--child", nargs=2, metavar=("READER", "PATH"), help=argparse.SUPPRESS)
    ap.add_argument("--write", nargs=2, metavar=("FORMAT", "PATH"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], a.child[1], a.chunk_rows)
        return 0
    if a.write:
        (write_ms if a.write[0] == "ms" else write_uvfits)(a.write[1], int(a.rows))
        return 0
    n_rows = int(a.rows)
    formats = [f.strip().lower() for f in a.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in ("ms", "uvfits")]
    if bad or not formats:
        ap.error(f"--formats: unknown {bad}; choose from ms, uvfits")
    result = dict(rows=n_rows, reader=a.reader, chunk_rows=a.chunk_rows if a.chunk_rows else "default",
                  n_antennas=N_ANT, n_chan=1, correlations="XX+YY", formats={})
    for fmt in formats:
        path = os.path.join(a.dir, f"io_memory_{n_rows}.{'ms' if fmt == 'ms' else 'uvfits'}")
        shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else None
        me = [sys.executable, os.path.abspath(__file__)]
        t0 = time.perf_counter()
        # written in a process of its own too: a child's ru_maxrss starts at its parent's RSS at the
        # fork (Linux keeps it across exec), so this process must stay small
        w = subprocess.run(me + ["--write", fmt, path, "--rows", str(n_rows)], capture_output=True, text=True)
        if w.returncode:
            raise SystemExit(f"{fmt}: writing {path} failed:\n{w.stderr}")
        t_write = time.perf_counter() - t0
        cmd = me + ["--child", a.reader, path] + (["--chunk-rows", str(a.chunk_rows)] if a.chunk_rows else [])
        try:
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                raise SystemExit(f"{fmt}: the reading process failed:\n{p.stderr}")
            r = json.loads(p.stdout.strip().splitlines()[-1])
            r.update(file=path, file_size_gb=round(size_gb(path), 4), write_s=round(t_write, 1),
                     peak_rss_over_output=round(r["peak_rss_gb"] / r["output_arrays_gb"], 2))
            result["formats"][fmt] = r
        finally:
            if not a.keep:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
