"""The observation file format: one validator, and loader errors that name the file (issue 11, defect 8)."""

import json

import numpy as np
import pytest

from nuker_mge_plugin.observation import check_visibilities, load_observation, save_observation, validate_observation


def _tiny(n=40, n_chan=4, seed=0):
    rng = np.random.default_rng(seed)
    chan = np.arange(n) % n_chan
    cf = 230.5e9 - 1e7 * np.arange(n_chan)
    return dict(u=rng.normal(size=n) * 1e4, v=rng.normal(size=n) * 1e4,
                vis=rng.normal(size=n) + 1j * rng.normal(size=n), weight=np.ones(n), chan=chan.astype(np.int64),
                freq=cf[chan], chan_freq=cf, meta=np.array(json.dumps({"rest_freq_hz": 230.538e9})))


def test_roundtrip_atomic_save(tmp_path):
    p = tmp_path / "obs.npz"
    save_observation(p, _tiny())
    o = load_observation(p)
    assert o["u"].size == 40 and o["meta"]["rest_freq_hz"] == 230.538e9
    assert sorted(x.name for x in tmp_path.iterdir()) == ["obs.npz"]  # no temporary left behind


@pytest.mark.parametrize("kind, match", [
    ("missing", "no such file"),
    ("dir", "is a directory"),
    ("empty", "the file is empty"),
    ("text", "not a readable .npz observation file"),
    ("npy", "a single array"),
    ("truncated", "npz"),
    ("corrupt", "npz"),
])
def test_loader_errors_name_the_file(tmp_path, kind, match):
    good = tmp_path / "good.npz"
    save_observation(good, _tiny(4000))
    raw = good.read_bytes()
    p = tmp_path / f"{kind}.npz"
    if kind == "dir":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("u v vis\n1 2 3\n")
    elif kind == "npy":
        p = tmp_path / "x.npy"
        np.save(p, np.arange(5))
    elif kind == "truncated":
        p.write_bytes(raw[: len(raw) // 2])
    elif kind == "corrupt":
        b = bytearray(raw)
        b[len(b) // 3: len(b) // 3 + 200] = b"\x00" * 200
        p.write_bytes(bytes(b))
    with pytest.raises(ValueError, match=match) as err:
        load_observation(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_one_validator_for_rows_and_files():
    d = _tiny()
    with pytest.raises(ValueError, match="2 of 40 rows have weight <= 0"):
        validate_observation({**d, "weight": np.r_[-1.0, 0.0, np.ones(38)]})
    with pytest.raises(ValueError, match="2 of 40 rows have weight <= 0"):
        check_visibilities(d["u"], d["v"], d["vis"], np.r_[-1.0, 0.0, np.ones(38)])
    with pytest.raises(ValueError, match="rows have chan outside \\[0, 4\\)"):
        check_visibilities(d["u"], d["v"], d["vis"], d["weight"], d["chan"] + 1, n_chan=4)
    with pytest.raises(ValueError, match="chan must hold integers"):
        check_visibilities(d["u"], d["v"], d["vis"], d["weight"], d["chan"] + 0.5, n_chan=4)
    with pytest.raises(ValueError, match="x.npz: bad observation: vis must be complex"):
        validate_observation({**d, "vis": d["vis"].real}, source="x.npz")
    with pytest.raises(ValueError, match="no rows"):
        check_visibilities([], [], np.array([], complex), [])
