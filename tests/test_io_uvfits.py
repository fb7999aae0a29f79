"""The UVFITS reader (nuker_mge_plugin.io.uvfits) on synthetic random-groups files written with astropy.

The point-source test writes what a UVFITS file holds by the convention casacore's UVFITS I/O
shares with the MS -- V = F exp(+2 pi i (u l0 + v m0)), u = UU f, v = VV f (UU, VV in seconds) --
and finds the source in our convention at its true East/North offset, not mirrored.
"""

import numpy as np
import pytest
from astropy.io import fits

from nuker_mge_plugin.constants import ARCSEC_RAD, C_M_S
from nuker_mge_plugin.io import load_visibilities, meta_of, read_uvfits

JD0 = 2460000.5


def write_uvfits(path, *, uu_s, vv_s, ant1, ant2, vis, weight, freq0=230.0e9, dfreq=-15.625e6, stokes=(-5, -6),
                 n_if=1, if_offsets=None, obj="NGC4697", ra=192.15, dec=-5.8, crpix=1.0, source=None, su=None):
    """Random groups: PTYPEs UU VV WW BASELINE DATE DATE; axes COMPLEX STOKES FREQ IF RA DEC.

    vis (n, n_if, n_chan, n_stokes) complex, weight the same shape; antennas numbered from 0 here.
    """
    n = len(ant1)
    n_chan = vis.shape[2]
    arr = np.zeros((n, 1, 1, n_if, n_chan, len(stokes), 3), np.float32)
    arr[..., 0] = vis.real[:, None, None]
    arr[..., 1] = vis.imag[:, None, None]
    arr[..., 2] = weight[:, None, None]
    base = 256.0 * (np.asarray(ant1) + 1) + (np.asarray(ant2) + 1)
    t = np.linspace(0, 0.1, n)
    names = ["UU", "VV", "WW", "BASELINE", "DATE", "DATE"] + ([] if source is None else ["SOURCE"])
    pars = [uu_s, vv_s, np.zeros(n), base, np.full(n, JD0), t] + ([] if source is None else [source])
    gd = fits.GroupData(arr, parnames=names, pardata=pars, bitpix=-32)
    hdu = fits.GroupsHDU(gd)
    h = hdu.header
    axes = [("COMPLEX", 1.0, 1.0, 1.0), ("STOKES", float(stokes[0]), float(np.sign(stokes[-1] - stokes[0]) or -1), 1.0),
            ("FREQ", freq0, dfreq, crpix), ("IF", 1.0, 1.0, 1.0), ("RA", ra, 1.0, 1.0), ("DEC", dec, 1.0, 1.0)]
    for k, (ct, crval, cdelt, cp) in enumerate(axes, start=2):
        h[f"CTYPE{k}"], h[f"CRVAL{k}"], h[f"CDELT{k}"], h[f"CRPIX{k}"] = ct, crval, cdelt, cp
    h["OBJECT"] = obj
    h["EQUINOX"] = 2000.0
    hdus = [hdu]
    if if_offsets is not None:
        cols = [fits.Column("FRQSEL", "1J", array=[1]),
                fits.Column("IF FREQ", f"{n_if}D", array=[np.asarray(if_offsets, float)]),
                fits.Column("CH WIDTH", f"{n_if}E", array=[np.full(n_if, dfreq)])]
        fq = fits.BinTableHDU.from_columns(cols)
        fq.header["EXTNAME"] = "AIPS FQ"
        hdus.append(fq)
    if su is not None:  # [(id, name, ra, dec)]
        su_hdu = fits.BinTableHDU.from_columns([
            fits.Column("ID. NO.", "1J", array=[x[0] for x in su]),
            fits.Column("SOURCE", "16A", array=[x[1] for x in su]),
            fits.Column("RAEPO", "1D", array=[x[2] for x in su]),
            fits.Column("DECEPO", "1D", array=[x[3] for x in su])])
        su_hdu.header["EXTNAME"] = "AIPS SU"
        hdus.append(su_hdu)
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return str(path)


def snapshot_uv(n_ant=10, n_times=12, seed=3):
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-250, 250, (n_ant, 2))
    a1, a2 = np.triu_indices(n_ant, 1)
    b = pos[a2] - pos[a1]
    uu, vv = [], []
    for ang in np.linspace(-0.6, 0.6, n_times):
        c, s = np.cos(ang), np.sin(ang)
        uu.append(c * b[:, 0] - s * b[:, 1])
        vv.append(0.8 * (s * b[:, 0] + c * b[:, 1]))
    return np.concatenate(uu) / C_M_S, np.concatenate(vv) / C_M_S, np.tile(a1, n_times), np.tile(a2, n_times)


def test_point_source_comes_out_east_north_not_mirrored(tmp_path):
    uu, vv, a1, a2 = snapshot_uv()
    freqs = 230.0e9 + np.arange(3) * -15.625e6
    l0, m0 = 1.5 * ARCSEC_RAD, 0.8 * ARCSEC_RAD
    V = np.exp(2j * np.pi * (uu[:, None] * freqs * l0 + vv[:, None] * freqs * m0))  # the file's own convention
    vis = np.repeat(V[:, None, :, None], 2, axis=3)
    p = write_uvfits(tmp_path / "pt.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=np.ones(vis.shape))
    obs = read_uvfits(p)
    t = np.arange(-3, 3.0001, 0.05)
    L, M = np.meshgrid(t, t, indexing="ij")
    ph = np.exp(2j * np.pi * (obs["u"][:, None] * L.ravel() + obs["v"][:, None] * M.ravel()) * ARCSEC_RAD)
    img = ((obs["weight"] * obs["vis"]) @ ph).real.reshape(L.shape) / obs["weight"].sum()
    i, j = np.unravel_index(np.argmax(img), img.shape)
    assert abs(t[i] - 1.5) < 0.03 and abs(t[j] - 0.8) < 0.03, (t[i], t[j])
    assert img.max() == pytest.approx(1.0, abs=2e-3)  # float32 storage
    for me, mn in ((-1.5, -0.8), (-1.5, 0.8), (1.5, -0.8)):
        assert img[np.argmin(abs(t - me)), np.argmin(abs(t - mn))] < 0.3 * img.max()


def test_frequencies_weights_flags_autocorrelations_and_meta(tmp_path):
    a1 = np.array([0, 0, 1, 2])
    a2 = np.array([1, 2, 2, 2])  # the last is an autocorrelation
    uu = np.array([1e-7, 2e-7, -3e-7, 0.0])
    vv = np.array([4e-7, -1e-7, 2e-7, 0.0])
    vis = np.zeros((4, 1, 4, 2), complex)
    vis[..., 0], vis[..., 1] = 1 + 2j, 3 - 1j
    w = np.ones(vis.shape)
    w[..., 1] = 3.0
    w[0, 0, 2, 0] = -1.0  # negative weight: flagged (AIPS)
    w[1, 0, 3, 1] = 0.0   # zero weight: no data
    p = write_uvfits(tmp_path / "w.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=w, freq0=230.0e9,
                     dfreq=-1e6, crpix=2.0)
    obs = load_visibilities(p)
    cf = 230.0e9 + (np.arange(4) + 1 - 2.0) * -1e6
    assert np.allclose(obs["chan_freq"], cf) and np.all(np.diff(obs["chan_freq"]) < 0)
    assert obs["u"].size == 3 * 4 - 2
    # u = UU * f exactly, per row
    row = {(0, 1): 0, (0, 2): 1, (1, 2): 2}
    r = np.array([row[(x, y)] for x, y in zip(obs["ant1"], obs["ant2"])])
    assert np.allclose(obs["u"], uu[r] * obs["freq"], rtol=1e-6) and np.allclose(obs["v"], vv[r] * obs["freq"],
                                                                                    rtol=1e-6)
    assert np.allclose(obs["vis"], np.conj((1 * (1 + 2j) + 3 * (3 - 1j)) / 4)) and np.allclose(obs["weight"], 4.0)
    m = meta_of(obs)
    c = m["counts"]
    assert c["rows_read"] == 4 and c["rows_autocorrelation"] == 1 and c["samples_flagged"] == 2
    assert m["format"] == "uvfits" and m["field"] == "NGC4697" and m["correlations"] == "XX+YY"
    assert m["phase_centre_ra_deg"] == pytest.approx(192.15) and m["phase_centre_dec_deg"] == pytest.approx(-5.8)


def test_if_selection_channels_and_errors(tmp_path):
    uu, vv, a1, a2 = snapshot_uv(n_ant=4, n_times=1)
    n = len(a1)
    vis = np.zeros((n, 2, 3, 2), complex)
    vis[:, 0], vis[:, 1] = 1.0, 2.0
    p = write_uvfits(tmp_path / "if.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=np.ones(vis.shape),
                     n_if=2, if_offsets=[0.0, 2e9], freq0=100e9, dfreq=1e6, stokes=(-1, -2))
    with pytest.raises(ValueError, match=r"holds 2 IFs: choose one with spw=/--spw \(0-1\)"):
        read_uvfits(p)
    o1 = read_uvfits(p, spw=1)
    assert np.allclose(o1["vis"], 2.0) and np.allclose(o1["chan_freq"], 102e9 + np.arange(3) * 1e6)
    assert meta_of(o1)["correlations"] == "RR+LL" and meta_of(o1)["spw"] == 1
    o0 = read_uvfits(p, spw=0, channels="1:")
    assert np.allclose(o0["vis"], 1.0) and np.allclose(o0["chan_freq"], 100e9 + np.arange(1, 3) * 1e6)
    for kw, msg in ((dict(spw=2), r"spw 2 is out of range: the file has 2 IFs \(0-1\)"),
                    (dict(spw=0, field="M87"), "no field 'M87': this single-source file holds 'NGC4697'"),
                    (dict(spw=0, datacolumn="CORRECTED_DATA"), "a UVFITS file holds one data column"),
                    (dict(spw=0, channels="3:5"), "select no channel")):
        with pytest.raises(ValueError, match=msg) as e:
            read_uvfits(p, **kw)
        assert "\n" not in str(e.value)
    assert meta_of(read_uvfits(p, spw=0, field="NGC4697"))["field"] == "NGC4697"
    with pytest.raises(ValueError, match="weight_column applies to Measurement Sets"):
        load_visibilities(p, spw=0, weight_column="WEIGHT")


def test_not_uvfits(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    with pytest.raises(ValueError, match="neither a Measurement Set"):
        load_visibilities(tmp_path / "a.txt")
    fits.PrimaryHDU(np.zeros((2, 2))).writeto(tmp_path / "img.fits")
    with pytest.raises(ValueError, match="not a UVFITS file"):
        load_visibilities(tmp_path / "img.fits")


def test_cli_convert_vis_uvfits(tmp_path, capsys):
    from nuker_mge_plugin.cli import main
    from nuker_mge_plugin.observation import load_observation

    uu, vv, a1, a2 = snapshot_uv(n_ant=5, n_times=2)
    vis = np.ones((len(a1), 1, 4, 2), complex)
    p = write_uvfits(tmp_path / "c.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=np.ones(vis.shape))
    out = tmp_path / "obs.npz"
    assert main(["convert-vis", p, "--out", str(out), "--channels", "1:3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(f"wrote {out}: {2 * len(a1)} visibilities in 2 channels")
    assert "field 'NGC4697', spw 0, DATA (XX+YY)" in line[0] and "0 autocorrelation rows" in line[0]
    obs = load_observation(out)
    assert obs["chan_freq"].size == 2 and obs["meta"]["format"] == "uvfits" and obs["meta"]["channel_start"] == 1
    # errors: one line, exit 2, nothing written
    for argv, needle in ((["convert-vis", p, "--out", str(tmp_path / "e1.npz"), "--channels", "5:9"],
                          "select no channel"),
                         (["convert-vis", str(tmp_path / "none.uvfits"), "--out", str(tmp_path / "e2.npz")],
                          "no such file or directory"),
                         (["convert-vis", p, "--out", str(tmp_path)], "is a directory"),
                         (["convert-vis", p, "--out", str(tmp_path / "nofolder" / "x.npz")], "does not exist"),
                         (["convert-vis", p, "--out", str(tmp_path / "e3.npz"), "--spw", "3"], "out of range"),
                         (["convert-vis", p, "--out", p], "is the input file")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("nuker-mge: error: ") and needle in err[0], err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["c.uvfits", "obs.npz"]


def test_multi_source_file(tmp_path):
    uu, vv, a1, a2 = snapshot_uv(n_ant=4, n_times=2)
    n = len(a1)
    src = np.repeat([1.0, 2.0], n // 2)
    vis = np.zeros((n, 1, 2, 2), complex)
    vis[src == 1], vis[src == 2] = 1.0, 5.0
    p = write_uvfits(tmp_path / "ms.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=np.ones(vis.shape),
                     source=src, su=[(1, "CAL", 10.0, 20.0), (2, "NGC4697", 192.15, -5.8)])
    with pytest.raises(ValueError, match=r"2 sources have data \(1='CAL', 2='NGC4697'\): choose one"):
        read_uvfits(p)
    o = read_uvfits(p, field="NGC4697")
    m = meta_of(o)
    assert np.allclose(o["vis"], 5.0) and o["u"].size == 2 * (n // 2) and m["field"] == "NGC4697"
    assert m["phase_centre_ra_deg"] == pytest.approx(192.15) and m["field_id"] == 2
    assert np.allclose(read_uvfits(p, field="1")["vis"], 1.0)
    with pytest.raises(ValueError, match="no source named 'M87'"):
        read_uvfits(p, field="M87")


def test_chunked_read_is_bitwise_identical(tmp_path):
    """Memory-mapped, a few groups at a time (chunk_rows=7) or all at once: the same dict, bit for bit;
    with flags, zero weights, autocorrelations, swapped antenna pairs and a multi-source selection."""
    rng = np.random.default_rng(11)
    uu, vv, a1, a2 = snapshot_uv(n_ant=6, n_times=5)
    n = len(a1)
    a1, a2 = a1.copy(), a2.copy()
    a2[::8] = a1[::8]  # autocorrelations
    swap = np.arange(n) % 4 == 1
    a1[swap], a2[swap] = a2[swap], a1[swap]
    vis = rng.normal(size=(n, 1, 3, 2)) + 1j * rng.normal(size=(n, 1, 3, 2))
    w = rng.uniform(-0.3, 2.0, vis.shape)  # about one in eight samples flagged (weight <= 0)
    w[2, 0, 1, 0] = 0.0
    src = np.where(np.arange(n) % 3 == 0, 1.0, 2.0)
    p = write_uvfits(tmp_path / "chunk.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=w, source=src,
                     su=[(1, "CAL", 10.0, 20.0), (2, "NGC4697", 192.15, -5.8)])
    for kw in (dict(field="NGC4697"), dict(field="CAL", channels="1:")):
        ref = load_visibilities(p, **kw)
        c = meta_of(ref)["counts"]
        assert c["rows_autocorrelation"] > 0 and c["samples_flagged"] > 0
        for chunk_rows in (7, 1, 1_000_000):
            got = read_uvfits(p, chunk_rows=chunk_rows, **kw)
            assert list(got) == list(ref)
            for k in ref:
                x, y = np.asarray(got[k]), np.asarray(ref[k])
                assert x.dtype == y.dtype and x.shape == y.shape, k
                assert (str(x) == str(y)) if k == "meta" else (x.tobytes() == y.tobytes()), k
    with pytest.raises(ValueError, match="chunk_rows 0 is invalid"):
        load_visibilities(p, field="CAL", chunk_rows=0)


def test_uvfits_without_uu_vv_fails_in_one_line(tmp_path):
    """Random groups whose parameters lack UU/VV (here renamed): one line naming the file."""
    n = 3
    p = write_uvfits(tmp_path / "nouv.uvfits", uu_s=np.full(n, 1e-7), vv_s=np.zeros(n), ant1=[0, 0, 1], ant2=[1, 2, 2],
                     vis=np.ones((n, 1, 1, 2), complex), weight=np.ones((n, 1, 1, 2)))
    with fits.open(p, mode="update") as h:
        h[0].header["PTYPE1"], h[0].header["PTYPE2"] = "XX", "YY"
    with pytest.raises(ValueError, match=r"nouv\.uvfits.*UU") as e:
        read_uvfits(p)
    assert "\n" not in str(e.value)


def test_truncated_uvfits_fails_in_one_line_naming_the_file(tmp_path, capfd):
    uu, vv, a1, a2 = snapshot_uv()
    vis = np.ones((uu.size, 1, 3, 2), complex)
    p = write_uvfits(tmp_path / "t.uvfits", uu_s=uu, vv_s=vv, ant1=a1, ant2=a2, vis=vis, weight=np.ones(vis.shape))
    blob = open(p, "rb").read()
    cut = tmp_path / "cut.uvfits"
    cut.write_bytes(blob[:len(blob) // 2])
    with pytest.raises(ValueError, match="the file is truncated") as e:
        read_uvfits(cut)
    assert str(e.value).startswith(str(cut)) and "\n" not in str(e.value)
    assert capfd.readouterr().err == ""   # astropy's "File may have been truncated" stays out
