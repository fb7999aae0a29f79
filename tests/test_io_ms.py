"""The Measurement-Set reader (nuker_mge_plugin.io.ms) on small synthetic MSs written with casacore.tables.

The point-source test writes what an MS holds by the CASA convention -- V = F exp(+2 pi i (u l0 + v m0))
with (u, v) the UVW column in wavelengths, u East, v North -- independently of the reader, and
finds the source in our convention (V = sum I exp(-2 pi i (u l + v m)), l East) at its true
East/North offset, not mirrored.
"""

import numpy as np
import pytest

ct = pytest.importorskip("casacore.tables")

from nuker_mge_plugin.constants import ARCSEC_RAD, C_M_S  # noqa: E402
from nuker_mge_plugin.io import load_visibilities, meta_of, read_ms  # noqa: E402
from nuker_mge_plugin.observation import load_observation, save_observation  # noqa: E402

XX, YY, RR, LL, XY, YX = 9, 12, 5, 8, 10, 11


def write_ms(path, *, uvw, ant1, ant2, data, chan_freqs, corr_types=(XX, YY), weight=None, flag=None,
             flag_row=None, field_id=None, ddid=None, time=None, fields=(("NGC4697", 192.15, -5.8),),
             corrected=None, weight_spectrum=None, sigma=None, dd_map=None):
    """A minimal MS: MAIN rows, FIELD, SPECTRAL_WINDOW (one per entry of chan_freqs), POLARIZATION,
    DATA_DESCRIPTION (dd_map: list of (spw, pol); default spw i <-> ddid i, pol 0).

    Rows of one DATA_DESC_ID must be contiguous (they are written as one block).
    """
    n = len(ant1)
    cols = [ct.makearrcoldesc("DATA", 0j, ndim=2, valuetype="complex")]
    if corrected is not None:
        cols.append(ct.makearrcoldesc("CORRECTED_DATA", 0j, ndim=2, valuetype="complex"))
    if weight_spectrum is not None:
        cols.append(ct.makearrcoldesc("WEIGHT_SPECTRUM", 0.0, ndim=2, valuetype="float"))
    t = ct.default_ms(str(path), ct.maketabdesc(cols))
    t.addrows(n)
    ddid = np.zeros(n, np.int32) if ddid is None else np.asarray(ddid, np.int32)
    ncorr = len(corr_types)
    weight = np.ones((n, ncorr)) if weight is None else weight
    flag = np.zeros(data.shape, bool) if flag is None else flag
    t.putcol("UVW", np.asarray(uvw, np.float64))
    t.putcol("ANTENNA1", np.asarray(ant1, np.int32))
    t.putcol("ANTENNA2", np.asarray(ant2, np.int32))
    t.putcol("FIELD_ID", np.zeros(n, np.int32) if field_id is None else np.asarray(field_id, np.int32))
    t.putcol("DATA_DESC_ID", ddid)
    t.putcol("TIME", np.arange(n, dtype=np.float64) if time is None else np.asarray(time, np.float64))
    t.putcol("FLAG_ROW", np.zeros(n, bool) if flag_row is None else np.asarray(flag_row, bool))
    t.putcol("WEIGHT", np.asarray(weight, np.float32))
    with np.errstate(divide="ignore"):
        t.putcol("SIGMA", np.asarray(1.0 / np.sqrt(weight) if sigma is None else sigma, np.float32))
    blocks = [(d, np.flatnonzero(ddid == d)) for d in np.unique(ddid)]
    for d, idx in blocks:
        assert np.all(np.diff(idx) == 1), "rows of one ddid must be contiguous"
        r0, nr = int(idx[0]), idx.size
        t.putcol("DATA", np.asarray(data[r0:r0 + nr], np.complex64), startrow=r0, nrow=nr)
        t.putcol("FLAG", np.asarray(flag[r0:r0 + nr], bool), startrow=r0, nrow=nr)
        if corrected is not None:
            t.putcol("CORRECTED_DATA", np.asarray(corrected[r0:r0 + nr], np.complex64), startrow=r0, nrow=nr)
        if weight_spectrum is not None:
            t.putcol("WEIGHT_SPECTRUM", np.asarray(weight_spectrum[r0:r0 + nr], np.float32), startrow=r0, nrow=nr)
    t.close()
    sw = ct.table(f"{path}/SPECTRAL_WINDOW", readonly=False, ack=False)
    sw.addrows(len(chan_freqs))
    for i, cf in enumerate(chan_freqs):
        cf = np.asarray(cf, np.float64)
        sw.putcell("CHAN_FREQ", i, cf)
        sw.putcell("NUM_CHAN", i, cf.size)
        sw.putcell("NAME", i, f"spw{i}")
        sw.putcell("REF_FREQUENCY", i, float(cf[0]))
    sw.close()
    pt = ct.table(f"{path}/POLARIZATION", readonly=False, ack=False)
    pols = sorted({p for _, p in dd_map}) if dd_map else [0]
    pt.addrows(len(pols))
    for p in pols:
        ctypes = corr_types[p] if isinstance(corr_types[0], (tuple, list)) else corr_types
        pt.putcell("CORR_TYPE", p, np.asarray(ctypes, np.int32))
        pt.putcell("NUM_CORR", p, len(ctypes))
    pt.close()
    dd = ct.table(f"{path}/DATA_DESCRIPTION", readonly=False, ack=False)
    dd_map = dd_map or [(i, 0) for i in range(len(chan_freqs))]
    dd.addrows(len(dd_map))
    for i, (s, p) in enumerate(dd_map):
        dd.putcell("SPECTRAL_WINDOW_ID", i, s)
        dd.putcell("POLARIZATION_ID", i, p)
    dd.close()
    ft = ct.table(f"{path}/FIELD", readonly=False, ack=False)
    ft.addrows(len(fields))
    for i, (name, ra, dec) in enumerate(fields):
        ft.putcell("NAME", i, name)
        for col in ("PHASE_DIR", "DELAY_DIR", "REFERENCE_DIR"):
            ft.putcell(col, i, np.radians([[ra, dec]]))
    ft.close()
    return str(path)


def array_uvw(n_ant=12, n_times=16, seed=0, radius=250.0):
    """Baselines pos(ant2) - pos(ant1) [m] (the MS definition), rotated through n_times hour angles."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-radius, radius, (n_ant, 2))
    a1, a2 = np.triu_indices(n_ant, 1)
    b = pos[a2] - pos[a1]
    out = []
    for ang in np.linspace(-0.6, 0.6, n_times):
        c, s = np.cos(ang), np.sin(ang)
        out.append(np.stack([c * b[:, 0] - s * b[:, 1], 0.8 * (s * b[:, 0] + c * b[:, 1]), np.zeros(len(b))], 1))
    uvw = np.concatenate(out)
    return uvw, np.tile(a1, n_times), np.tile(a2, n_times), np.repeat(np.arange(n_times, dtype=float), len(b))


def casa_point_source(uvw_m, chan_freq, l0_arcsec, m0_arcsec, flux=1.0):
    """What an MS stores for a point source at (l0 East, m0 North): the CASA convention, sign +."""
    u = uvw_m[:, 0, None] * chan_freq[None, :] / C_M_S
    v = uvw_m[:, 1, None] * chan_freq[None, :] / C_M_S
    return flux * np.exp(2j * np.pi * (u * l0_arcsec + v * m0_arcsec) * ARCSEC_RAD)


def locate(obs, half=3.0, step=0.05):
    """Peak (East, North) [arcsec] of our-convention dirty map: Re sum w V exp(+2 pi i (u l + v m))."""
    t = np.arange(-half, half + step / 2, step)
    L, M = np.meshgrid(t, t, indexing="ij")
    ph = np.exp(2j * np.pi * (obs["u"][:, None] * L.ravel()[None, :] + obs["v"][:, None] * M.ravel()[None, :])
                * ARCSEC_RAD)
    img = ((obs["weight"] * obs["vis"]) @ ph).real.reshape(L.shape) / obs["weight"].sum()
    i, j = np.unravel_index(np.argmax(img), img.shape)
    return t[i], t[j], img, t


def test_point_source_comes_out_east_north_not_mirrored(tmp_path):
    uvw, a1, a2, time = array_uvw()
    cf = np.array([230.0e9, 229.99e9, 229.98e9])
    d = casa_point_source(uvw, cf, 1.5, 0.8)
    data = np.repeat(d[:, :, None], 2, axis=2)
    path = write_ms(tmp_path / "pt.ms", uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[cf], time=time)
    obs = read_ms(path)
    east, north, img, t = locate(obs)
    assert abs(east - 1.5) < 0.03 and abs(north - 0.8) < 0.03, (east, north)
    peak = img.max()
    assert peak == pytest.approx(1.0, abs=1e-6)
    for me, mn in ((-1.5, -0.8), (-1.5, 0.8), (1.5, -0.8)):  # mirrored positions hold nothing like it
        assert img[np.argmin(abs(t - me)), np.argmin(abs(t - mn))] < 0.3 * peak
    # the same with the package's gridder and dirty image: +x is West, so East 1.5" is x = -1.5"
    from nuker_mge_plugin.dynamics.coords import SkyGrid
    from nuker_mge_plugin.dynamics.gridder import grid_visibilities
    from nuker_mge_plugin.inference.plots import dirty_image
    g = SkyGrid(64, 64, 0.1)
    gv = grid_visibilities(obs["u"], obs["v"], obs["vis"], obs["weight"], obs["chan"], g, 3, min_count=2)
    idx = np.nonzero(gv.mask)
    im = dirty_image(gv.vis[gv.mask], idx, g.uv.shape, 3)[0]
    iy, ix = np.unravel_index(np.argmax(im), im.shape)  # cell-averaged data: within a pixel (0.1")
    assert g.x_arcsec[ix] == pytest.approx(-1.5, abs=0.11) and g.y_arcsec[iy] == pytest.approx(0.8, abs=0.11)
    mx, my = g.pixel_of(1.5, -0.8)  # the mirrored position (x = +1.5" West, y = -0.8" South)
    assert im[my, mx] < 0.3 * im.max()


def test_u_v_in_wavelengths_of_each_channel_decreasing_frequencies(tmp_path):
    uvw, a1, a2, time = array_uvw(n_ant=4, n_times=2)
    cf = np.array([230.2e9, 230.1e9, 230.0e9, 229.9e9])  # decreasing with index, as ALMA often has
    data = np.ones((len(a1), 4, 2), complex)
    path = write_ms(tmp_path / "f.ms", uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[cf], time=time)
    obs = load_visibilities(path)
    assert np.array_equal(obs["chan_freq"], cf)
    assert np.array_equal(obs["freq"], cf[obs["chan"]])
    n = len(a1)
    for k in range(4):
        sel = obs["chan"] == k
        assert sel.sum() == n
        assert np.allclose(obs["u"][sel], uvw[:, 0] * cf[k] / C_M_S, rtol=1e-12)
        assert np.allclose(obs["v"][sel], uvw[:, 1] * cf[k] / C_M_S, rtol=1e-12)
    assert np.array_equal(obs["ant1"][obs["chan"] == 0], a1) and np.all(obs["ant1"] < obs["ant2"])
    m = meta_of(obs)
    assert m["format"] == "measurement_set" and m["field"] == "NGC4697" and m["spw"] == 0
    assert m["phase_centre_ra_deg"] == pytest.approx(192.15) and m["phase_centre_dec_deg"] == pytest.approx(-5.8)
    assert m["datacolumn"] == "DATA" and m["counts"]["rows_read"] == n and "rest_freq_hz" not in m
    # and the .npz round trip that `nuker-mge fit` reads
    save_observation(tmp_path / "o.npz", obs)
    back = load_observation(tmp_path / "o.npz")
    assert np.array_equal(back["vis"], obs["vis"]) and meta_of(back)["source_file"] == m["source_file"]


def test_flags_flag_row_and_autocorrelations_dropped_and_counted(tmp_path):
    a1 = np.array([0, 0, 1, 0, 1, 2])
    a2 = np.array([1, 2, 2, 0, 1, 3])  # rows 3 and 4 are autocorrelations
    uvw = np.array([[10.0, 5, 0], [20, -3, 0], [-7, 12, 0], [0, 0, 0], [0, 0, 0], [30, 1, 0]])
    n, nc = 6, 3
    data = np.full((n, nc, 2), 1 + 1j)
    flag = np.zeros((n, nc, 2), bool)
    flag[0, 1, 1] = True  # one hand of one sample: the sample goes
    flag[5, :, :] = True  # every sample of row 5
    flag_row = np.array([False, True, False, False, False, False])  # row 1 by FLAG_ROW
    path = write_ms(tmp_path / "fl.ms", uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[[1e11, 1.001e11, 1.002e11]],
                    flag=flag, flag_row=flag_row)
    obs = read_ms(path)
    c = meta_of(obs)["counts"]
    assert c["rows_read"] == 6 and c["rows_autocorrelation"] == 2 and c["rows_flag_row"] == 1
    assert c["samples_flagged"] == 1 + 3 + 3  # (row 0, chan 1), row 1 (FLAG_ROW), row 5
    assert obs["u"].size == 3 + 3 - 1  # rows 0 (two channels) and 2 (three)
    assert set(zip(obs["ant1"].tolist(), obs["ant2"].tolist())) == {(0, 1), (1, 2)}
    assert not np.any(obs["ant1"] == obs["ant2"])
    assert sorted(obs["chan"][obs["ant2"] == 1].tolist()) == [0, 2]


def _two_hand_ms(tmp_path, name, **kw):
    a1, a2 = np.array([0, 1]), np.array([1, 2])
    uvw = np.array([[10.0, 5, 0], [-20, 8, 0]])
    data = np.zeros((2, 2, 2), complex)
    data[..., 0] = 1.0 + 2.0j   # XX
    data[..., 1] = 3.0 - 1.0j   # YY
    return write_ms(tmp_path / name, uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[[1e11, 1.1e11]], **kw)


def test_polarisation_average_with_weight_weight_spectrum_and_sigma(tmp_path):
    xx, yy = 1.0 + 2.0j, 3.0 - 1.0j
    # WEIGHT (per correlation): XX weight 1, YY weight 3
    obs = read_ms(_two_hand_ms(tmp_path, "w.ms", weight=np.array([[1.0, 3.0], [1.0, 3.0]])))
    want = np.conj((1 * xx + 3 * yy) / 4)  # averaged, then conjugated to our convention
    assert np.allclose(obs["vis"], want) and np.allclose(obs["weight"], 4.0)
    assert meta_of(obs)["weight_column"] == "WEIGHT" and meta_of(obs)["correlations"] == "XX+YY"
    # WEIGHT_SPECTRUM wins over WEIGHT when present; it varies with channel
    ws = np.zeros((2, 2, 2))
    ws[:, 0] = [2.0, 2.0]
    ws[:, 1] = [3.0, 1.0]
    obs = read_ms(_two_hand_ms(tmp_path, "ws.ms", weight=np.array([[1.0, 3.0], [1.0, 3.0]]), weight_spectrum=ws))
    assert meta_of(obs)["weight_column"] == "WEIGHT_SPECTRUM"
    c0, c1 = obs["chan"] == 0, obs["chan"] == 1
    assert np.allclose(obs["vis"][c0], np.conj((xx + yy) / 2)) and np.allclose(obs["weight"][c0], 4.0)
    assert np.allclose(obs["vis"][c1], np.conj((3 * xx + yy) / 4)) and np.allclose(obs["weight"][c1], 4.0)
    # explicit weight_column overrides; SIGMA gives 1/sigma^2
    obs = read_ms(_two_hand_ms(tmp_path, "s.ms", weight=np.ones((2, 2)), sigma=np.array([[1.0, 0.5], [1.0, 0.5]])),
                  weight_column="SIGMA")
    assert np.allclose(obs["vis"], np.conj((xx + 4 * yy) / 5)) and np.allclose(obs["weight"], 5.0)
    with pytest.raises(ValueError, match="has no WEIGHT_SPECTRUM column"):
        read_ms(tmp_path / "s.ms", weight_column="WEIGHT_SPECTRUM")
    with pytest.raises(ValueError, match="weight_column 'BOGUS' is invalid"):
        read_ms(tmp_path / "s.ms", weight_column="bogus")


def test_circular_hands_single_hand_and_zero_weights(tmp_path):
    a1, a2 = np.array([0]), np.array([1])
    uvw = np.array([[10.0, 5, 0]])
    data = np.array([[[1 + 1j, 9.0, 9.0, 3 - 1j]]])  # RR, RL, LR, LL: cross hands ignored
    obs = read_ms(write_ms(tmp_path / "c.ms", uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[[1e11]],
                           corr_types=(RR, 6, 7, LL), weight=np.array([[1.0, 1.0, 1.0, 1.0]])))
    assert np.allclose(obs["vis"], np.conj(2.0 + 0j)) and meta_of(obs)["correlations"] == "RR+LL"
    # zero weight on one hand: the sample is not used, counted as a bad weight
    data2 = np.ones((2, 1, 2), complex)
    p = write_ms(tmp_path / "z.ms", uvw=np.array([[1.0, 2, 0], [3, 4, 0]]), ant1=[0, 0], ant2=[1, 2], data=data2,
                 chan_freqs=[[1e11]], weight=np.array([[1.0, 0.0], [1.0, 1.0]]))
    obs = read_ms(p)
    assert obs["u"].size == 1 and meta_of(obs)["counts"]["samples_bad_weight"] == 1
    with pytest.raises(ValueError, match="no parallel-hand"):
        read_ms(write_ms(tmp_path / "x.ms", uvw=uvw, ant1=a1, ant2=a2, data=np.ones((1, 1, 2), complex),
                         chan_freqs=[[1e11]], corr_types=(XY, YX)))


def test_corrected_data_selection_and_default_weight_pairing(tmp_path):
    a1, a2 = np.array([0, 1]), np.array([1, 2])
    uvw = np.array([[10.0, 5, 0], [-20, 8, 0]])
    raw = np.full((2, 1, 2), 5.0 + 0j)
    cal = np.full((2, 1, 2), 1.0 + 1j)
    p = write_ms(tmp_path / "cd.ms", uvw=uvw, ant1=a1, ant2=a2, data=raw, corrected=cal, chan_freqs=[[1e11]],
                 weight=np.full((2, 2), 7.0), sigma=np.full((2, 2), 0.5))
    c = read_ms(p, datacolumn="CORRECTED_DATA")
    assert np.allclose(c["vis"], 1 - 1j) and np.allclose(c["weight"], 14.0)
    assert meta_of(c)["datacolumn"] == "CORRECTED_DATA" and meta_of(c)["weight_column"] == "WEIGHT"
    d = read_ms(p, datacolumn="data")  # DATA of an MS that also holds CORRECTED_DATA: SIGMA belongs to it
    assert np.allclose(d["vis"], 5.0) and np.allclose(d["weight"], 8.0) and meta_of(d)["weight_column"] == "SIGMA"
    p2 = write_ms(tmp_path / "nocd.ms", uvw=uvw, ant1=a1, ant2=a2, data=raw, chan_freqs=[[1e11]])
    with pytest.raises(ValueError, match=r"nocd\.ms: the Measurement Set has no CORRECTED_DATA column$"):
        read_ms(p2, datacolumn="CORRECTED_DATA")
    with pytest.raises(ValueError, match="datacolumn 'MODEL' is invalid"):
        read_ms(p2, datacolumn="MODEL")


def _multi_ms(tmp_path):
    """Two fields, two spws (3 channels each, different frequencies), ddid 0 -> spw 0, ddid 1 -> spw 1."""
    a1 = np.array([0, 0, 1, 0, 1, 0])
    a2 = np.array([1, 2, 2, 1, 2, 2])
    uvw = np.arange(18, dtype=float).reshape(6, 3) + 1
    data = np.zeros((6, 3, 2), complex)
    # rows 0-3 in ddid 0 (spw 0); rows 4-5 in ddid 1 (spw 1)
    data[:4] = (np.arange(4)[:, None, None] + 1) * (1 + 0j)
    data[4:] = 10.0
    ddid = np.array([0, 0, 0, 0, 1, 1])
    field = np.array([0, 0, 1, 1, 0, 1])
    cols = dict(uvw=uvw, ant1=a1, ant2=a2, field_id=field, ddid=ddid,
                fields=(("A", 10.0, 20.0), ("B", 11.0, -21.0)))
    path = str(tmp_path / "multi.ms")
    write_ms(path, data=data, chan_freqs=[[1e11, 1.1e11, 1.2e11], [2e11, 2.1e11, 2.2e11]], **cols)
    return path


def test_field_and_spw_selection_and_errors(tmp_path):
    p = _multi_ms(tmp_path)
    with pytest.raises(ValueError, match=r"2 fields have data \(0='A', 1='B'\): choose one"):
        read_ms(p)
    with pytest.raises(ValueError, match=r"2 spectral windows \[0, 1\]: choose one"):
        read_ms(p, field="A")
    a0 = read_ms(p, field="A", spw=0)
    assert meta_of(a0)["field"] == "A" and meta_of(a0)["field_id"] == 0 and a0["u"].size == 2 * 3
    assert meta_of(a0)["phase_centre_ra_deg"] == pytest.approx(10.0)
    assert np.allclose(np.unique(a0["vis"].real), [1.0, 2.0])
    b1 = read_ms(p, field=1, spw="1")
    assert meta_of(b1)["field"] == "B" and b1["u"].size == 3 and np.allclose(b1["vis"], 10.0)
    assert np.array_equal(b1["chan_freq"], [2e11, 2.1e11, 2.2e11])
    assert np.allclose(meta_of(read_ms(p, field="1", spw=0))["phase_centre_dec_deg"], -21.0)
    for kw, msg in ((dict(field="C", spw=0), r"no field named 'C' \(fields with data: 0='A', 1='B'\)"),
                    (dict(field=5, spw=0), "field 5 is out of range: the MS has 2 fields"),
                    (dict(field="A", spw=2), r"spw 2 is out of range: the MS has 2 spectral windows \(0-1\)"),
                    (dict(field="A", spw="x"), "spw 'x' is invalid")):
        with pytest.raises(ValueError, match=msg) as e:
            read_ms(p, **kw)
        assert "\n" not in str(e.value)


def test_channels_slicing(tmp_path):
    uvw, a1, a2, time = array_uvw(n_ant=4, n_times=1)
    cf = np.linspace(230.0e9, 229.95e9, 6)
    data = np.repeat(np.arange(6, dtype=complex)[None, :, None] + 1, len(a1), 0).repeat(2, 2)
    p = write_ms(tmp_path / "ch.ms", uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[cf])
    for chans, lo, hi in (("1:4", 1, 4), (slice(2, None), 2, 6), ((0, 2), 0, 2), (":-1", 0, 5), ("3:", 3, 6)):
        o = read_ms(p, channels=chans)
        assert np.array_equal(o["chan_freq"], cf[lo:hi]), chans
        assert meta_of(o)["channel_start"] == lo and meta_of(o)["channel_stop"] == hi
        assert np.allclose(o["vis"].real, o["chan"] + lo + 1)  # channel k of the output is lo + k of the spw
    for bad, msg in (("4:2", "select no channel"), ("9:12", "select no channel"), ("1:2:3", "is invalid"),
                     ("a:b", "is invalid"), ((0.5, 2), "must be integers")):
        with pytest.raises(ValueError, match=msg):
            read_ms(p, channels=bad)


def test_fully_flagged_channel_is_a_clear_error(tmp_path):
    uvw, a1, a2, _ = array_uvw(n_ant=3, n_times=1)
    flag = np.zeros((len(a1), 3, 2), bool)
    flag[:, 2] = True
    p = write_ms(tmp_path / "ff.ms", uvw=uvw, ant1=a1, ant2=a2, data=np.ones((len(a1), 3, 2), complex),
                 chan_freqs=[[1e11, 1.1e11, 1.2e11]], flag=flag)
    with pytest.raises(ValueError, match=r"1 of 3 selected channels have no unflagged visibility .*--channels"):
        read_ms(p)
    assert read_ms(p, channels="0:2")["chan_freq"].size == 2


def test_measurement_set_with_no_unflagged_row_fails_in_one_line(tmp_path):
    uvw, a1, a2, _ = array_uvw(n_ant=3, n_times=2)
    p = write_ms(tmp_path / "allflag.ms", uvw=uvw, ant1=a1, ant2=a2, data=np.ones((len(a1), 2, 2), complex),
                 chan_freqs=[[1e11, 1.1e11]], flag_row=np.ones(len(a1), bool))
    with pytest.raises(ValueError, match=r"allflag\.ms.*no unflagged visibility in the selection") as e:
        read_ms(p)
    assert "\n" not in str(e.value)


def test_swapped_antenna_order_is_the_same_measurement(tmp_path):
    uvw = np.array([[40.0, -10.0, 0.0]])
    d = casa_point_source(uvw, np.array([2e11]), 1.0, -0.5)[:, :, None].repeat(2, 2)
    o1 = read_ms(write_ms(tmp_path / "a.ms", uvw=uvw, ant1=[0], ant2=[3], data=d, chan_freqs=[[2e11]]))
    o2 = read_ms(write_ms(tmp_path / "b.ms", uvw=-uvw, ant1=[3], ant2=[0], data=np.conj(d), chan_freqs=[[2e11]]))
    for k in ("u", "v", "vis", "ant1", "ant2"):
        assert np.allclose(o1[k], o2[k]), k
    assert o1["ant1"][0] == 0 and o1["ant2"][0] == 3


def test_not_an_ms_and_missing_columns(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match="a folder but not a Measurement Set"):
        load_visibilities(tmp_path / "folder")
    with pytest.raises(ValueError, match="no such file or directory"):
        load_visibilities(tmp_path / "nothing.ms")
    t = ct.table(str(tmp_path / "plain.tab"), ct.maketabdesc([ct.makescacoldesc("X", 0.0)]), ack=False)
    t.close()
    with pytest.raises(ValueError, match=r"the Measurement Set has no UVW, FLAG, ANTENNA1.* columns"):
        load_visibilities(tmp_path / "plain.tab")


def test_missing_casacore_gives_the_install_hint(tmp_path, monkeypatch):
    import sys
    p = _two_hand_ms(tmp_path, "m.ms")
    monkeypatch.setitem(sys.modules, "casacore.tables", None)
    with pytest.raises(ImportError, match=r"pip install 'nuker-mge-plugin\[ms\]'"):
        load_visibilities(p)


def test_cli_convert_vis_ms_and_missing_casacore(tmp_path, capsys, monkeypatch):
    import sys

    from nuker_mge_plugin.cli import main
    p = _multi_ms(tmp_path)
    out = tmp_path / "b.npz"
    assert main(["convert-vis", p, "--out", str(out), "--field", "B", "--spw", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}: 3 visibilities in 3 channels (200.000000-220.000000 GHz) of field 'B', "
                           f"spw 1, DATA (XX+YY)")
    assert load_observation(out)["meta"]["field"] == "B"
    assert main(["convert-vis", p, "--out", str(tmp_path / "x.npz"), "--field", "B", "--spw", "1",
                 "--datacolumn", "corrected_data"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no CORRECTED_DATA column" in err[0]
    monkeypatch.setitem(sys.modules, "casacore.tables", None)
    assert main(["convert-vis", p, "--out", str(tmp_path / "y.npz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'nuker-mge-plugin[ms]'" in err[0]
    assert not (tmp_path / "x.npz").exists() and not (tmp_path / "y.npz").exists()


def _assert_identical(a, b):
    """The same observation dict, bit for bit (same keys, dtypes, shapes, bytes; meta text equal)."""
    assert list(a) == list(b)
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert (str(x) == str(y)) if k == "meta" else (x.tobytes() == y.tobytes()), k


def _awkward_ms(tmp_path, name, *, two_fields):
    """Flags, FLAG_ROW, autocorrelations, swapped antenna pairs, a zero weight, repeated times; with
    ``two_fields`` the rows of field 0 are interleaved with field 1's (read through selectrows)."""
    rng = np.random.default_rng(7)
    uvw, a1, a2, time = array_uvw(n_ant=6, n_times=5)
    n = len(a1)
    a1, a2 = a1.copy(), a2.copy()
    a2[::9] = a1[::9]  # autocorrelations
    swap = np.arange(n) % 5 == 2
    a1[swap], a2[swap] = a2[swap], a1[swap]
    uvw[swap] *= -1
    cf = np.array([230.0e9, 229.99e9, 229.98e9])
    data = rng.normal(size=(n, 3, 2)) + 1j * rng.normal(size=(n, 3, 2))
    flag = rng.random((n, 3, 2)) < 0.1
    weight = rng.uniform(0.5, 2.0, (n, 2))
    flag_row = rng.random(n) < 0.1
    weight[3, 1], flag[3], flag_row[3] = 0.0, False, False  # an unflagged zero weight
    field = (np.arange(n) % 3 == 1).astype(int) if two_fields else None
    return write_ms(tmp_path / name, uvw=uvw, ant1=a1, ant2=a2, data=data, chan_freqs=[cf], time=time, flag=flag,
                    flag_row=flag_row, weight=weight, field_id=field,
                    fields=(("NGC4697", 192.15, -5.8), ("CAL", 10.0, 20.0)))


@pytest.mark.parametrize("two_fields", [False, True])
def test_chunked_read_is_bitwise_identical(tmp_path, two_fields):
    p = _awkward_ms(tmp_path, "chunk.ms", two_fields=two_fields)
    kw = dict(field=0) if two_fields else {}
    ref = load_visibilities(p, **kw)
    c = meta_of(ref)["counts"]
    assert c["rows_autocorrelation"] > 0 and c["rows_flag_row"] > 0 and c["samples_flagged"] > 0
    assert c["samples_bad_weight"] >= 1 and np.unique(ref["time_idx"]).size > 1
    for chunk_rows in (7, 1, 1_000_000):
        _assert_identical(read_ms(p, chunk_rows=chunk_rows, **kw), ref)
    _assert_identical(read_ms(p, channels="1:", chunk_rows=7, **kw), read_ms(p, channels="1:", **kw))
    for bad in (0, -3, 2.5, True, "7"):
        with pytest.raises(ValueError, match="chunk_rows .* is invalid"):
            load_visibilities(p, chunk_rows=bad, **kw)
