"""Mock ALMA observations of a KinMS gas disc, and a validating loader for the ``.npz`` format.

The sky is simulated by **KinMS** (an independent simulator: random cloudlets), not by our own
``dynamics.cube``, so a fit of the mock with our pipeline is a real test (docs/metrics.rst M5).

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

File format: :mod:`nuker_mge_plugin.observation` (``u, v, vis, weight, chan, freq, chan_freq, meta``,
plus ``ant1``, ``ant2``, ``time_idx``); ``meta`` holds rest_freq_hz, vsys_kms, dv_kms, dec_deg,
ha_range_h, n_ant, sigma_jy, seed, lat_deg, the cube geometry and the true sky parameters.
"""

import inspect
import json
import math
from dataclasses import dataclass

import numpy as np

from .constants import C_KMS, CO21_REST_HZ, radio_frequency_hz
from .dynamics.coords import SkyGrid
from .dynamics.visibilities import alma_pb_fwhm_arcsec, direct_ft
from .observation import REQUIRED_KEYS, load_observation, save_observation, validate_observation
from .pipeline.config import GalaxyConfig
from .schema import REQUIRED, Key, Section, document, key, keys_of, read_section, read_toml, section_keys, suggest

__all__ = ["ALMA_LAT_DEG", "CO21_REST_HZ", "alma_like_layout", "baselines", "uvw_tracks", "channel_freqs",
           "mock_observation", "load_observation", "validate_observation", "REQUIRED_KEYS"]

ALMA_LAT_DEG = -23.0229


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
    return radio_frequency_hz(vel, rest_hz)


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
    pb = SkyGrid(X, Y, g["cellSize"]).primary_beam(alma_pb_fwhm_arcsec(freqs)).numpy()
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
        save_observation(path, out)
    out["sky_cube"] = sky_cube
    return out


def kinms_sky_from_parameters(truth, distance_mpc, *, field_arcsec, n_rad=400):
    """KinMS ``model_cube`` keywords for a Table-1 parameter set, built with the host packages only.

    The stars: ``nuker_to_mge`` (exact backend) with qobs from ``qintr`` and ``inclination``, and
    jampy's ``vcirc`` (through :meth:`MGE.kinms_velocity`) plus the black hole ``10**log10_mbh``
    [Msun]; the gas: an exponential disc of ``scale_length`` [arcsec] with KinMS's ``gasSigma =
    line_broadening`` [km/s], ``intFlux = flux`` [Jy km/s] and ``phaseCent = (x, y)`` [arcsec].
    ``truth`` maps the 15 Table-1 names to numbers; ``field_arcsec`` sets the radius grids (0 to
    the field's half-diagonal / cos(inc), ``n_rad`` points): linear for ``sbRad``, and for ``velRad``
    0 then logarithmic from 1e-5 of the field. KinMS interpolates ``velProf`` linearly between
    ``velRad`` nodes, and a black hole's v ~ r^-1/2 rise is not linear: on a linear grid the clouds
    inside the first node (0.05-0.11" for the M5 mocks) moved at 1/3 of their Keplerian speed; the
    logarithmic grid's <= 4% steps keep that interpolation error below 1e-3. None of our torch model
    is used, so a fit of such a mock is a real test.
    """
    from .mge import nuker_to_mge

    t = {k: float(v) for k, v in truth.items()}
    inc = t["inclination"]
    qobs = math.sqrt((t["qintr"] * math.sin(math.radians(inc))) ** 2 + math.cos(math.radians(inc)) ** 2)
    mge = nuker_to_mge(sigma_b=10 ** t["intensity_rb"], r_b=t["break_r"], alpha=t["alpha"],
                       beta=t["gamma"] - t["gamma_minus_beta"], gamma=t["gamma"], qobs=min(qobs, 1.0),
                       distance=distance_mpc)
    r_max = 0.5 * math.sqrt(2.0) * field_arcsec / max(math.cos(math.radians(inc)), 0.05)
    rad = np.linspace(0.0, r_max, n_rad)
    vel_rad, vel_prof = mge.kinms_velocity(np.concatenate([[0.0], np.geomspace(1e-5 * field_arcsec, r_max, n_rad)]),
                                           inc, 10 ** t["log10_mbh"])
    return dict(inc=inc, posAng=t["pa"], gasSigma=t["line_broadening"], sbProf=np.exp(-rad / t["scale_length"]),
                sbRad=rad, velRad=vel_rad, velProf=vel_prof, intFlux=t["flux"], phaseCent=[t["x"], t["y"]])


def mock_from_parameters(path, truth, *, distance_mpc, n_pix=128, cell_arcsec=0.1, n_chan=32, dv_kms=20.0,
                         rest_freq_hz=CO21_REST_HZ, **observation):
    """A KinMS mock observation of the Table-1 parameters ``truth``; writes ``path`` (.npz) if given.

    The sky is ``n_pix x n_pix`` pixels of ``cell_arcsec`` [arcsec] and ``n_chan`` channels of
    ``dv_kms`` [km/s] centred on ``systemic_velocity`` (radio definition, rest ``rest_freq_hz`` [Hz]);
    ``observation`` goes to :func:`mock_observation` (n_ant, max_radius_m, n_times, ha_range_h,
    dec_deg, sigma_jy, nsamps, seed). ``meta`` records ``truth`` and ``distance_mpc``.
    """
    missing = [k for k in ("scale_length", "log10_mbh", "inclination", "qintr", "alpha", "gamma_minus_beta", "gamma",
                           "break_r", "intensity_rb", "pa", "line_broadening", "systemic_velocity", "x", "y", "flux")
               if k not in truth]
    if missing:
        raise ValueError(f"truth lacks {missing}: a mock needs all 15 Table-1 parameters")
    field = n_pix * cell_arcsec
    sky = kinms_sky_from_parameters(truth, distance_mpc, field_arcsec=field)
    geom = dict(xs=field, ys=field, vs=n_chan * dv_kms, cellSize=cell_arcsec, dv=dv_kms)
    out = mock_observation(None, geom=geom, sky=sky, vsys_kms=float(truth["systemic_velocity"]),
                           rest_hz=rest_freq_hz, **observation)
    meta = json.loads(str(out["meta"]))
    meta.update(truth={k: float(v) for k, v in truth.items()}, distance_mpc=float(distance_mpc))
    meta["sky"] = {k: v for k, v in meta["sky"].items() if k not in ("sbProf", "sbRad", "velRad", "velProf")}
    out["meta"] = np.array(json.dumps(meta))
    if path is not None:
        save_observation(path, {k: v for k, v in out.items() if k != "sky_cube"})
    return out


def _signature_default(fn, name):
    return inspect.signature(fn).parameters[name].default


_OBS = mock_observation


@dataclass(frozen=True)
class MockObservationTable:
    n_pix: int = key(_signature_default(mock_from_parameters, "n_pix"), kind="integer", ge=8, unit="pixels",
                     doc="Sky pixels per side of the KinMS cube.")
    cell_arcsec: float = key(_signature_default(mock_from_parameters, "cell_arcsec"), kind="number", gt=0,
                             unit="arcsec", doc="Sky pixel of the KinMS cube.")
    n_chan: int = key(_signature_default(mock_from_parameters, "n_chan"), kind="integer", ge=1,
                      doc="Channels, centred on the systemic velocity.")
    dv_kms: float = key(_signature_default(mock_from_parameters, "dv_kms"), kind="number", gt=0, unit="km/s",
                        doc="Channel width (radio definition).")
    rest_freq_hz: float = key(_signature_default(mock_from_parameters, "rest_freq_hz"), kind="number", gt=0,
                              unit="Hz", doc="Rest frequency of the line.")
    n_ant: int = key(_signature_default(_OBS, "n_ant"), kind="integer", ge=2, doc="Antennas of the array.")
    max_radius_m: float = key(_signature_default(_OBS, "max_radius_m"), kind="number", gt=0, unit="m",
                              doc="Antennas lie within this radius of the array centre.")
    n_times: int = key(_signature_default(_OBS, "n_times"), kind="integer", ge=1, doc="Integrations over the track.")
    ha_range_h: tuple = key(_signature_default(_OBS, "ha_range_h"), kind="custom", unit="h", what="[start, end]",
                            doc="Hour-angle range of the track.")
    dec_deg: float = key(_signature_default(_OBS, "dec_deg"), kind="number", ge=-90, le=90, unit="deg",
                         doc="Declination of the source.")
    sigma_jy: float = key(_signature_default(_OBS, "sigma_jy"), kind="number", ge=0, unit="Jy",
                          doc="Noise per visibility and part (real, imaginary).")
    nsamps: int = key(_signature_default(_OBS, "nsamps"), kind="integer", ge=1, doc="KinMS clouds.")
    seed: int = key(_signature_default(_OBS, "seed"), kind="integer", ge=0, doc="Seed of the antennas and the noise.")


document(MockObservationTable, "``[observation]`` of a ``nuker-mge mock`` file: the keywords of "
                               ":func:`mock_from_parameters` (defaults: its own).")


def load_mock_config(path):
    """Read a ``nuker-mge mock`` TOML file: ``[galaxy] distance_mpc``, ``[truth]`` (all 15 Table-1
    parameters) and ``[observation]`` (:class:`MockObservationTable`, the keywords of
    :func:`mock_from_parameters`).

    Returns ``(truth, distance_mpc, observation)``, ``observation`` holding the keys given; one-line
    ValueError ``path: section.key: ...`` on an unknown or missing key or a bad value.
    """
    from .inference.parameters import PARAMETER_NAMES

    raw = read_toml(path, "mock")

    def error(msg):
        return ValueError(f"{path}: {msg}")

    for s in raw:
        if s not in ("galaxy", "truth", "observation"):
            near = suggest(s, ("galaxy", "truth", "observation"))
            raise error(f"{s}: unknown section" + (f" (did you mean [{near}]?)" if near else
                                                   " (valid: [galaxy], [truth], [observation])"))
        if not isinstance(raw[s], dict):
            raise error(f"{s}: expects a [{s}] table, got {raw[s]!r}")
    gal = Section("galaxy", raw.get("galaxy", {}), section_keys(GalaxyConfig), error)
    d = gal.value("distance_mpc", keys_of(GalaxyConfig)["distance_mpc"][1], REQUIRED)
    truth = Section("truth", raw.get("truth", {}), PARAMETER_NAMES, error)
    missing = [k for k in PARAMETER_NAMES if not truth.given(k)]
    if missing:
        raise error(f"truth lacks {', '.join('truth.' + k for k in missing)}: a mock needs all 15")
    number = Key(kind="number", doc="", what="a finite number")
    values = {k: truth.value(k, number, REQUIRED) for k in PARAMETER_NAMES}
    s = Section("observation", raw.get("observation", {}), section_keys(MockObservationTable), error)
    obs = {k: v for k, v in read_section(MockObservationTable, s).items() if s.given(k)}
    if s.given("ha_range_h"):
        ha = s.raw["ha_range_h"]
        if not (isinstance(ha, list) and len(ha) == 2 and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in ha)):
            s._fail("ha_range_h", "[start, end] [h]", ha)
        obs["ha_range_h"] = tuple(float(x) for x in ha)
    return values, float(d), obs
