"""Mock ALMA observations of a KinMS gas disc, and a validating loader for the ``.npz`` format.

The sky is simulated by **KinMS** (an independent simulator: random cloudlets), not by our own
``dynamics.cube``, so a fit of the mock with our pipeline is a real test (METRICS.md M5).

Observation model
-----------------
* Antennas: ``alma_like_layout`` -- ``n_ant`` pads in a centrally concentrated disc of radius
  ``max_radius_m`` with at least ``min_sep_m`` (15 m: 12-m dishes) between pads, seeded.
* Earth rotation: baselines (ENU [m]) -> equatorial XYZ at ALMA's latitude -23.0229 deg, then
  ``(u, v, w)`` for hour angles ``H`` and declination ``dec`` (Thompson, Moran & Swenson eq. 4.1):
  ``u = sin H X + cos H Y``, ``v = -sin d cos H X + sin d sin H Y + cos d Z``. One visibility per
  baseline (antenna1 < antenna2) per time per channel; u, v in wavelengths of that channel.
* Channels: the KinMS cube's channel ``k`` is centred at velocity ``vsys + (k - n_chan/2) dv``
  [km/s] (KinMS convention), observed at ``freq = rest (1 - v / c)`` (radio definition) with
  ``rest`` = CO(2-1) 230.538 GHz.
* Sky in Jy/pixel (KinMS ``cleanOut=True``, ``intFlux`` in Jy km/s), times a Gaussian primary
  beam of FWHM 1.13 lambda / 12 m per channel, Fourier-summed *directly* (no FFT, no gridding) at
  every (u, v) with ``dynamics.visibilities.direct_ft`` -- same sign, axis and phase-centre
  conventions as ``cube_to_vis``.
* Thermal noise: complex Gaussian, ``sigma_jy`` per real/imaginary part per visibility;
  ``weight = 1 / sigma_jy^2``.

File format (``np.savez``; every array 1-D with one row per visibility unless stated)
----------------------------------------------------------------------------------------
``u``, ``v``   float64 [wavelengths]
``vis``        complex128 [Jy]
``weight``     float64 [1/Jy^2], > 0
``chan``       int64 channel index, 0 <= chan < n_chan
``freq``       float64 [Hz], the channel frequency of the row (= ``chan_freq[chan]``)
``chan_freq``  float64 (n_chan,) [Hz], channel centre frequencies
``ant1``, ``ant2``  int64 antenna indices (ant1 < ant2); ``time_idx`` int64 time-step index
``meta``       0-d str: JSON with rest_freq_hz, vsys_kms, dv_kms, dec_deg, ha_range_h, n_ant,
               sigma_jy, seed, lat_deg, the cube geometry (xs, ys, vs, cellSize, dv, beamSize) and
               the true sky parameters given to KinMS, and the conventions in words.
"""

import json
import math

import numpy as np

from .dynamics.visibilities import alma_pb_fwhm_arcsec, direct_ft

__all__ = ["ALMA_LAT_DEG", "CO21_REST_HZ", "alma_like_layout", "baselines", "uvw_tracks", "channel_freqs",
           "mock_observation", "load_observation", "validate_observation", "REQUIRED_KEYS"]

ALMA_LAT_DEG = -23.0229
CO21_REST_HZ = 230.538e9
C_KMS = 299792.458
REQUIRED_KEYS = ("u", "v", "vis", "weight", "chan", "freq", "chan_freq", "meta")


def alma_like_layout(n_ant=43, max_radius_m=300.0, min_sep_m=15.0, seed=0):
    """ENU pad positions [m], (n_ant, 3): centrally concentrated, >= min_sep_m apart, seeded."""
    if n_ant < 2 or max_radius_m <= 0 or min_sep_m < 0:
        raise ValueError("need n_ant >= 2, max_radius_m > 0, min_sep_m >= 0")
    rng = np.random.default_rng(seed)
    pos = []
    tries = 0
    while len(pos) < n_ant:
        tries += 1
        if tries > 200_000:
            raise ValueError(f"cannot place {n_ant} pads {min_sep_m} m apart within {max_radius_m} m")
        r = max_radius_m * rng.random() ** 1.5  # denser core, like a compact configuration
        t = rng.uniform(0, 2 * np.pi)
        p = np.array([r * np.cos(t), r * np.sin(t), rng.normal(0, 1.0)])
        if all(np.hypot(*(p[:2] - q[:2])) >= min_sep_m for q in pos):
            pos.append(p)
    return np.array(pos)


def baselines(enu):
    """Baseline vectors ENU [m] for antenna pairs a1 < a2: (n_bl, 3), a1 (n_bl,), a2 (n_bl,)."""
    a1, a2 = np.triu_indices(len(enu), k=1)
    return enu[a2] - enu[a1], a1, a2


def uvw_tracks(bl_enu, dec_deg, ha_h, lat_deg=ALMA_LAT_DEG):
    """(u, v, w) [m] of ENU baselines (n_bl, 3) at hour angles ha_h [h]: (n_time, n_bl, 3)."""
    lat = math.radians(lat_deg)
    E, N, U = bl_enu[:, 0], bl_enu[:, 1], bl_enu[:, 2]
    X = -N * math.sin(lat) + U * math.cos(lat)
    Y = E
    Z = N * math.cos(lat) + U * math.sin(lat)
    H = np.radians(15.0 * np.asarray(ha_h, dtype=float))[:, None]
    d = math.radians(dec_deg)
    u = np.sin(H) * X + np.cos(H) * Y
    v = -math.sin(d) * np.cos(H) * X + math.sin(d) * np.sin(H) * Y + math.cos(d) * Z
    w = math.cos(d) * np.cos(H) * X - math.cos(d) * np.sin(H) * Y + math.sin(d) * Z
    return np.stack([u, v, w], axis=-1)


def channel_freqs(n_chan, dv_kms, vsys_kms, rest_hz=CO21_REST_HZ):
    """Channel centre frequencies [Hz] of KinMS channels k: v = vsys + (k - n_chan/2) dv (radio)."""
    vel = vsys_kms + (np.arange(n_chan) - n_chan / 2.0) * dv_kms
    return rest_hz * (1.0 - vel / C_KMS)


def mock_observation(path=None, *, geom, sky, vsys_kms=1252.0, dec_deg=-5.8, ha_range_h=(-2.0, 2.0),
                     n_times=30, n_ant=24, max_radius_m=300.0, sigma_jy=0.01, nsamps=1_000_000, seed=0,
                     rest_hz=CO21_REST_HZ):
    """Simulate an ALMA CO(2-1) observation of a KinMS disc; write ``path`` (.npz) if given.

    geom: KinMS geometry dict (xs, ys, vs [arcsec, arcsec, km/s], cellSize [arcsec], dv [km/s];
    beamSize is ignored: an interferometer has no image-plane beam); sky: KinMS ``model_cube``
    arguments (inc, posAng, sbProf, sbRad, velRad, velProf, gasSigma, intFlux [Jy km/s], ...).
    vsys_kms [km/s]; dec_deg [deg]; ha_range_h [h]; n_times time steps; sigma_jy [Jy] noise per
    real/imag part per visibility; nsamps KinMS clouds; seed for layout, KinMS and noise.
    Returns the dict of arrays written (see module doc), plus ``sky_cube`` (x, y, chan) [Jy/pixel].
    Defaults resemble NGC 4697 (vsys 1252 km/s, dec -5.8 deg).
    """
    from .adapters.kinms_shim import kinms_model_cube

    if sigma_jy <= 0 or n_times < 1:
        raise ValueError("need sigma_jy > 0 [Jy] and n_times >= 1")
    g = dict(geom)
    # Jy/pixel per channel (sum * dv = intFlux); the shim hides KinMS 2.x/3.x API differences.
    sky_cube = kinms_model_cube(g["xs"], g["ys"], g["vs"], g["cellSize"], g["dv"], g.get("beamSize", 1.0),
                                nSamps=nsamps, seed=seed + 1, cleanOut=True, **sky)
    X, Y, V = sky_cube.shape
    freqs = channel_freqs(V, g["dv"], vsys_kms, rest_hz)
    enu = alma_like_layout(n_ant, max_radius_m, seed=seed)
    bl, a1, a2 = baselines(enu)
    ha = np.linspace(ha_range_h[0], ha_range_h[1], n_times)
    uvw = uvw_tracks(bl, dec_deg, ha)  # (T, n_bl, 3) [m]
    T, nb = uvw.shape[:2]
    um = uvw[..., 0].ravel()
    vm = uvw[..., 1].ravel()
    lam = (C_KMS * 1e3) / freqs  # [m]
    u = um[None, :] / lam[:, None]  # (V, T*nb) [wavelengths]
    v = vm[None, :] / lam[:, None]
    # primary beam per channel at the phase centre (the cube reference pixel)
    xo = (np.arange(X) - X / 2.0) * g["cellSize"]
    yo = (np.arange(Y) - Y / 2.0) * g["cellSize"]
    r2 = xo[:, None] ** 2 + yo[None, :] ** 2
    s_pb = alma_pb_fwhm_arcsec(freqs) / (2 * math.sqrt(2 * math.log(2)))
    pb = np.exp(-0.5 * r2[..., None] / s_pb**2)
    vis = direct_ft(sky_cube, g["cellSize"], u, v, pb=pb)  # (V, T*nb) [Jy]
    rng = np.random.default_rng(seed + 2)
    vis = vis + sigma_jy * (rng.normal(size=vis.shape) + 1j * rng.normal(size=vis.shape))
    n = vis.size
    chan = np.repeat(np.arange(V), T * nb)
    meta = dict(rest_freq_hz=rest_hz, vsys_kms=vsys_kms, dv_kms=g["dv"], dec_deg=dec_deg,
                ha_range_h=list(ha_range_h), n_times=n_times, n_ant=n_ant, max_radius_m=max_radius_m,
                sigma_jy=sigma_jy, seed=seed, lat_deg=ALMA_LAT_DEG, kinms_nsamps=nsamps,
                geom={k: (list(np.atleast_1d(val).astype(float)) if k == "beamSize" else float(val))
                      for k, val in g.items()},
                sky={k: (np.asarray(val).tolist() if not callable(val) else repr(val)) for k, val in sky.items()},
                conventions="V = sum A I exp(-2 pi i (u l + v m)); l = -(ix - X/2) cellSize (East), "
                            "m = (iy - Y/2) cellSize (North); phase centre = cube reference pixel; "
                            "channel k at vsys + (k - n_chan/2) dv, freq = rest (1 - v/c)")
    out = dict(u=u.ravel(), v=v.ravel(), vis=vis.ravel(), weight=np.full(n, 1.0 / sigma_jy**2), chan=chan,
               freq=freqs[chan], chan_freq=freqs, ant1=np.tile(np.tile(a1, T), V).astype(np.int64),
               ant2=np.tile(np.tile(a2, T), V).astype(np.int64),
               time_idx=np.tile(np.repeat(np.arange(T), nb), V).astype(np.int64), meta=np.array(json.dumps(meta)))
    if path is not None:
        np.savez(path, **out)
    out["sky_cube"] = sky_cube
    return out


def validate_observation(d):
    """Check a mock/real observation dict (arrays as in the module doc); returns it normalised.

    Raises ValueError listing every problem with row counts: missing keys, wrong dimensions or
    dtypes, row counts that differ, non-finite values, non-positive weights or frequencies,
    channels out of range, ``freq`` inconsistent with ``chan_freq[chan]``, unreadable ``meta``.
    """
    missing = [k for k in REQUIRED_KEYS if k not in d]
    if missing:
        raise ValueError(f"observation lacks {missing} (need {list(REQUIRED_KEYS)})")
    probs = []
    rows = ["u", "v", "vis", "weight", "chan", "freq"] + [k for k in ("ant1", "ant2", "time_idx") if k in d]
    arr = {k: np.asarray(d[k]) for k in rows}
    for k, a in arr.items():
        if a.ndim != 1:
            probs.append(f"{k} must be 1-D, has shape {a.shape}")
    if probs:
        raise ValueError("bad observation: " + "; ".join(probs))
    n = {k: a.shape[0] for k, a in arr.items()}
    if len(set(n.values())) != 1:
        raise ValueError(f"bad observation: row counts differ: {n}")
    N = arr["u"].shape[0]
    if N == 0:
        raise ValueError("bad observation: no rows")
    if not np.iscomplexobj(arr["vis"]):
        probs.append(f"vis must be complex, is {arr['vis'].dtype}")
    for k in ("u", "v", "weight", "freq"):
        if not np.issubdtype(arr[k].dtype, np.floating):
            probs.append(f"{k} must be floating point, is {arr[k].dtype}")
    for k in ("chan", "ant1", "ant2", "time_idx"):
        if k in arr and not np.issubdtype(arr[k].dtype, np.integer):
            probs.append(f"{k} must be integer, is {arr[k].dtype}")
    if probs:
        raise ValueError("bad observation: " + "; ".join(probs))
    for k in ("u", "v", "vis", "weight", "freq"):
        bad = int((~np.isfinite(arr[k])).sum())
        if bad:
            probs.append(f"{bad} of {N} rows have non-finite {k}")
    for k in ("weight", "freq"):
        bad = int((np.isfinite(arr[k]) & (arr[k] <= 0)).sum())
        if bad:
            probs.append(f"{bad} of {N} rows have {k} <= 0")
    cf = np.asarray(d["chan_freq"])
    if cf.ndim != 1 or cf.size == 0 or not np.all(np.isfinite(cf)) or np.any(cf <= 0):
        probs.append("chan_freq must be a non-empty 1-D array of positive finite frequencies [Hz]")
    else:
        c = arr["chan"]
        out = (c < 0) | (c >= cf.size)
        if out.any():
            probs.append(f"{int(out.sum())} of {N} rows have chan outside [0, {cf.size})")
        else:
            mism = ~np.isclose(arr["freq"], cf[c], rtol=1e-9, atol=0)
            if mism.any():
                probs.append(f"{int(mism.sum())} of {N} rows have freq != chan_freq[chan]")
            empty = np.setdiff1d(np.arange(cf.size), np.unique(c))
            if empty.size:
                probs.append(f"{empty.size} of {cf.size} channels have no rows: {empty.tolist()[:20]}")
    if "ant1" in arr and "ant2" in arr:
        bad = int((arr["ant1"] >= arr["ant2"]).sum())
        if bad:
            probs.append(f"{bad} of {N} rows have ant1 >= ant2 (autocorrelation or unordered pair)")
    try:
        meta = json.loads(str(np.asarray(d["meta"])))
        if not isinstance(meta, dict):
            raise ValueError
    except (ValueError, TypeError):
        probs.append("meta must be a JSON object string")
        meta = None
    if probs:
        raise ValueError("bad observation: " + "; ".join(probs))
    out = {k: arr[k] for k in rows}
    out.update(u=arr["u"].astype(np.float64), v=arr["v"].astype(np.float64), vis=arr["vis"].astype(np.complex128),
               weight=arr["weight"].astype(np.float64), chan=arr["chan"].astype(np.int64),
               freq=arr["freq"].astype(np.float64), chan_freq=cf.astype(np.float64), meta=meta)
    return out


def load_observation(path):
    """Load and validate a ``.npz`` written by :func:`mock_observation` (or in the same format)."""
    with np.load(path, allow_pickle=False) as f:
        d = {k: f[k] for k in f.files}
    return validate_observation(d)
