"""The ``[priors]`` of a fit configuration: one uniform range or fixed value per Table-1 parameter.

A parameter left out of ``[priors]`` takes its Table-1 range, except ``systemic_velocity``,
``x`` and ``y``, whose Table-1 values are NGC 4697's: they default to ranges taken from the data
(the band's channel-centre velocities, and +- half the model field), stored as "from data" until
:func:`resolve_data_priors` fills them in. A range ``[low, high]`` must lie inside the closure of
the parameter's physical domain (a sigmoid bijection never reaches the ends, so Table 1's
``scale_length = [0, 10]`` is fine); a fixed value must lie inside the domain itself (e.g.
``gamma_minus_beta`` < 0, ``qintr`` in (0, 1], ``inclination`` in (0, 90)). With
``backend = "nn"`` the shape parameters must also stay inside the emulator's training box
(seed paper Appendix A), ``break_r`` converted to pc at ``galaxy.distance_mpc``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..basis import pc_per_arcsec
from ..constants import radio_velocity_kms
from ..inference.parameters import DATA_RANGE_NAMES, DOMAINS, PARAMETER_NAMES, UNITS, _domain_text
from ..inference.parameters import TABLE1 as _P_TABLE1
from ..nuker import ALPHA_RANGE, BETA_MINUS_GAMMA_RANGE, GAMMA_RANGE, R_B_PC_RANGE
from .errors import ConfigError

__all__ = ["TABLE1", "DATA_PRIOR_NAMES", "Prior", "PriorsConfig", "parse_prior", "check_nn_box",
           "channel_velocities_kms", "resolve_data_priors"]

#: One-line descriptions of the 15 parameters (ranges and units live in parameters.py).
_DESCRIPTIONS = {
    "scale_length": "exponential scale length of the gas surface brightness",
    "log10_mbh": "log10 black-hole mass, (1e6, 6.3e9) Msun",
    "inclination": "disc inclination (90 = edge-on)",
    "qintr": "intrinsic axis ratio of the stellar distribution",
    "alpha": "Nuker break sharpness",
    "gamma_minus_beta": "Nuker inner minus outer slope (gamma - beta)",
    "gamma": "Nuker inner slope",
    "break_r": "Nuker break radius",
    "intensity_rb": "log10 stellar surface mass density at the break radius",
    "pa": "kinematic position angle, North through East to the receding side",
    "line_broadening": "gas velocity dispersion",
    "systemic_velocity": "systemic velocity (radio definition)",
    "x": "disc centre offset from the phase centre, +x West (package convention)",
    "y": "disc centre offset from the phase centre, +y North",
    "flux": "integrated line flux",
}

#: Seed paper Table 1 (Appendix B): ``name -> (low, high, unit, description)``, in the canonical
#: parameter order, built from parameters.py's ranges and units. ``systemic_velocity``, ``x``, ``y``
#: are NGC 4697's; the fit defaults them from the data instead (:data:`DATA_PRIOR_NAMES`).
TABLE1 = {n: (*_P_TABLE1[n], UNITS[n], _DESCRIPTIONS[n]) for n in PARAMETER_NAMES}

#: Parameters whose default range comes from the data, not from Table 1.
DATA_PRIOR_NAMES = DATA_RANGE_NAMES

_INF = math.inf
# Physical domain (low, high, low_closed, high_closed): a fixed value lies inside, a range inside
# the closure.
_DOMAIN = DOMAINS
_FROM_DATA = "from_data"


def _unit(name):
    return UNITS[name] or "dimensionless"


@dataclass(frozen=True)
class Prior:
    """One parameter's prior: uniform ``[low, high]``, fixed ``value``, or still to come from the data.

    name : str
        A :data:`TABLE1` name. Units: ``TABLE1[name][2]``.
    low, high : float or None
        Uniform range [parameter unit]; None when fixed or not yet resolved.
    value : float or None
        Fixed value [parameter unit]; None when free.
    source : str
        ``"table1"`` (default range), ``"config"`` (given in [priors]) or ``"data"`` (from the data:
        unresolved while ``low`` is None).
    """

    name: str
    low: float | None = None
    high: float | None = None
    value: float | None = None
    source: str = "table1"

    @property
    def kind(self):
        """``"uniform"``, ``"fixed"`` or ``"from_data"`` (not yet resolved)."""
        if self.value is not None:
            return "fixed"
        return "uniform" if self.low is not None else "from_data"


@dataclass(frozen=True)
class PriorsConfig:
    """``[priors]``: one :class:`Prior` per Table-1 parameter, in Table-1 order.

    Entries in the file: ``name = [low, high]`` (uniform), ``name = number`` (fixed), or for
    ``systemic_velocity``, ``x``, ``y`` the string ``"from_data"`` (the default for those three).
    """

    entries: tuple

    def __getitem__(self, name):
        for p in self.entries:
            if p.name == name:
                return p
        raise KeyError(name)

    def __iter__(self):
        return iter(self.entries)

    @property
    def names(self):
        """All 15 names, Table-1 order."""
        return tuple(p.name for p in self.entries)

    @property
    def free(self):
        """Names of the free parameters (uniform or from data), Table-1 order."""
        return tuple(p.name for p in self.entries if p.kind != "fixed")

    @property
    def fixed(self):
        """``name -> value`` of the fixed parameters [parameter units]."""
        return {p.name: p.value for p in self.entries if p.kind == "fixed"}

    @property
    def unresolved(self):
        """Names still waiting for :func:`resolve_data_priors`."""
        return tuple(p.name for p in self.entries if p.kind == "from_data")

    @property
    def ranges(self):
        """``name -> (low, high)`` of the free parameters; needs every prior resolved."""
        self._require_resolved()
        return {p.name: (p.low, p.high) for p in self.entries if p.kind == "uniform"}

    def spec(self):
        """``name -> (low, high) | value`` for all 15, e.g. for ``inference.parameters.ParameterSpace(spec)``."""
        self._require_resolved()
        return {p.name: (p.value if p.kind == "fixed" else (p.low, p.high)) for p in self.entries}

    def _require_resolved(self):
        if self.unresolved:
            raise ConfigError(f"priors.{self.unresolved[0]}: the range comes from the data; call "
                              "resolve_data_priors(cfg, ...) first")


def parse_prior(name, v):
    """A :class:`Prior` from a [priors] entry; raises ConfigError naming ``priors.name``."""
    key = f"priors.{name}"
    lo_d, hi_d, lc, hc = _DOMAIN[name]
    what = f"[low, high] (uniform, low < high) or a number (fixed) [{_unit(name)}]"
    if isinstance(v, str):
        if v == _FROM_DATA and name in DATA_PRIOR_NAMES:
            return Prior(name, source="data")
        extra = f" or \"{_FROM_DATA}\"" if name in DATA_PRIOR_NAMES else ""
        raise ConfigError(f"{key}: expects {what}{extra}, got {v!r}")

    def num(x):
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if isinstance(v, list):
        if len(v) != 2 or not all(num(x) for x in v):
            raise ConfigError(f"{key}: expects {what}, got {v!r}")
        lo, hi = float(v[0]), float(v[1])
        if not lo < hi:
            raise ConfigError(f"{key}: expects low < high, got [{lo:g}, {hi:g}]")
        if lo < lo_d or hi > hi_d:
            raise ConfigError(f"{key}: expects a range inside the physical domain {_domain_text(name)} "
                              f"[{_unit(name)}], got [{lo:g}, {hi:g}]")
        if name == "pa" and hi - lo > 360.0:
            raise ConfigError(f"{key}: expects a range at most 360 deg wide, got [{lo:g}, {hi:g}]")
        return Prior(name, low=lo, high=hi, source="config")
    if not num(v):
        raise ConfigError(f"{key}: expects {what}, got {v!r}")
    x = float(v)
    ok = (x >= lo_d if lc else x > lo_d) and (x <= hi_d if hc else x < hi_d)
    if not ok:
        raise ConfigError(f"{key}: expects a fixed value in the physical domain {_domain_text(name)} "
                          f"[{_unit(name)}], got {x:g}")
    return Prior(name, value=x, source="config")


def check_nn_box(priors, distance_mpc):
    """With the nn backend the Nuker shape must stay in the emulator's training box (Appendix A)."""
    scale = pc_per_arcsec(distance_mpc)
    boxes = {"alpha": (ALPHA_RANGE, ""), "gamma": (GAMMA_RANGE, ""),
             # beta - gamma in [0.3, 3] <=> gamma - beta in [-3, -0.3]
             "gamma_minus_beta": ((-BETA_MINUS_GAMMA_RANGE[1], -BETA_MINUS_GAMMA_RANGE[0]), ""),
             "break_r": ((R_B_PC_RANGE[0] / scale, R_B_PC_RANGE[1] / scale),
                         f" ({R_B_PC_RANGE[0]:g}-{R_B_PC_RANGE[1]:g} pc at {distance_mpc:g} Mpc)")}
    for name, ((lo, hi), note) in boxes.items():
        p = priors[name]
        vals = (p.value,) if p.kind == "fixed" else (p.low, p.high)
        tol = 1e-9 * max(abs(lo), abs(hi))  # the box's own ends, written in decimal, must pass
        if any(x < lo - tol or x > hi + tol for x in vals):
            got = f"{p.value:g}" if p.kind == "fixed" else f"[{p.low:g}, {p.high:g}]"
            src = "" if p.source == "config" else " (the Table-1 default)"
            raise ConfigError(f"priors.{name}: expects values inside the nn emulator's training box "
                              f"[{lo:.4g}, {hi:.4g}]{note} with model.backend = \"nn\" "
                              f"(use \"exact\" outside it), got {got}{src}")


def channel_velocities_kms(chan_freq_hz, rest_freq_hz):
    """Radio-definition velocities ``v = c (1 - f / f0)`` [km/s] of channel frequencies [Hz]."""
    return radio_velocity_kms(chan_freq_hz, rest_freq_hz)


def resolve_data_priors(cfg, *, chan_velocity_kms=None, chan_freq_hz=None, field_arcsec=None):
    """Fill in the "from data" ranges of ``systemic_velocity``, ``x``, ``y``; check given ones.

    Parameters
    ----------
    cfg : FitConfig
    chan_velocity_kms : array (n_chan,), optional
        Channel-centre velocities [km/s]. Or give
    chan_freq_hz : array (n_chan,), optional
        channel-centre frequencies [Hz] (the observation's ``chan_freq``), converted with
        ``cfg.data.rest_freq_hz`` by the radio definition.
    field_arcsec : float, optional
        Side of the field [arcsec] (default ``cfg.model.n_pix * cfg.model.cell_arcsec``).

    Returns
    -------
    FitConfig
        A copy with ``systemic_velocity`` in [min, max] of the channel-centre velocities (band
        centre +- half the band) and ``x``, ``y`` in +- half the field, source ``"data"``.
        Priors given in the file are kept.

    Raises
    ------
    ConfigError
        A given ``systemic_velocity`` prior (range or value) entirely outside the band, or
        ``x``/``y`` outside +- half the field; fewer than 2 channels.
    """
    if (chan_velocity_kms is None) == (chan_freq_hz is None):
        raise TypeError("give exactly one of chan_velocity_kms [km/s] or chan_freq_hz [Hz]")
    v = (np.asarray(chan_velocity_kms, dtype=np.float64) if chan_velocity_kms is not None
         else channel_velocities_kms(chan_freq_hz, cfg.data.rest_freq_hz))
    if v.ndim != 1 or v.size < 2 or not np.all(np.isfinite(v)):
        raise ConfigError(f"data.path: expects at least 2 channels with finite velocities, got {v.size}")
    vlo, vhi = float(v.min()), float(v.max())
    half = (cfg.field_arcsec if field_arcsec is None else float(field_arcsec)) / 2.0
    data_range = {"systemic_velocity": (vlo, vhi), "x": (-half, half), "y": (-half, half)}
    entries = []
    for p in cfg.priors.entries:
        if p.name in data_range:
            lo, hi = data_range[p.name]
            if p.kind == "from_data":
                p = Prior(p.name, low=lo, high=hi, source="data")
            else:
                a, b = (p.value, p.value) if p.kind == "fixed" else (p.low, p.high)
                unit = _unit(p.name)
                if p.name == "systemic_velocity" and (b < lo or a > hi):
                    raise ConfigError(f"priors.systemic_velocity: expects values overlapping the band "
                                      f"[{lo:.6g}, {hi:.6g}] km/s (rest frequency {cfg.data.rest_freq_hz:.6g} Hz), "
                                      f"got {a:.6g}..{b:.6g}")
                if p.name != "systemic_velocity" and (a < lo - 1e-12 or b > hi + 1e-12):
                    raise ConfigError(f"priors.{p.name}: expects values inside the field +-{half:g} {unit}, "
                                      f"got {a:g}..{b:g}")
        entries.append(p)
    return dataclasses.replace(cfg, priors=PriorsConfig(tuple(entries)))
