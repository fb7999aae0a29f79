"""The TOML configuration of ``nuker-mge fit CONFIG.toml``: parsing, validation, resolved output.

A configuration is read once, checked completely and turned into frozen dataclasses (one per
section) before anything slow starts; every mistake raises :class:`ConfigError` with one line that
names the key as ``section.key`` and says what it expects. A minimal file::

    [data]
    path = "obs.npz"          # the .npz of nuker_mge_plugin.mock (u, v, vis, weight, chan, freq, chan_freq, meta)
    rest_freq_hz = 230.538e9  # default CO(2-1)
    [galaxy]
    distance_mpc = 16.5
    [model]
    cell_arcsec = 0.15        # model image pixel; the uv grid follows from it
    n_pix = 64                # model image n_pix x n_pix
    backend = "exact"         # or "nn"
    [likelihood]
    kind = "student_t"        # or "gaussian" (with sigma_scale, 2.0 in the paper)
    [priors]                  # Table-1 names: [low, high] is uniform, a number fixes it
    log10_mbh = [6.0, 9.79934]
    pa = [0.0, 359.9]
    [sampler]
    chains = 4
    seed = 7
    device = "cpu"            # or "cuda"

Every key is declared once, as a field of its section's dataclass (:mod:`nuker_mge_plugin.schema`):
its default, check, unit and meaning. The reference of all of them (docs/configuration.rst) and
``nuker-mge fit --print-config`` are generated from those declarations; ``[priors]`` is read by
:mod:`nuker_mge_plugin.pipeline.priors`.

Seed paper: Yantovski-Barth M. J., Stone C., Zhang H., Bureau M., Smyth N., Hezaveh Y.,
Perreault-Levasseur L., 2025, *Neural Deprojection of Galaxy Stellar Mass Profiles*, NeurIPS 2025,
arXiv:2511.20746 (docs/references.rst).

Its length (~710 lines) is mostly the declarations themselves: every key's default, check and
meaning, the one place they are written.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..constants import CO21_REST_HZ, SURFACE_BRIGHTNESS, VELOCITY_CONVENTIONS
from ..inference.parameters import EXTRA_PARAMETER_NAMES
from ..schema import (
    REQUIRED,
    Section,
    document,
    key,
    keys_of,
    read_section,
    read_toml,
    reference_rst,
    section_keys,
    suggest,
    template_toml,
)
from .errors import ConfigError
from .priors import (
    _FROM_DATA,
    DATA_PRIOR_NAMES,
    TABLE1,
    Prior,
    PriorsConfig,
    channel_velocities_kms,
    check_nn_box,
    parse_prior,
    resolve_data_priors,
)

__all__ = ["ConfigError", "TABLE1", "DATA_PRIOR_NAMES", "Prior", "DataConfig", "GalaxyConfig", "ModelConfig",
           "GriddingConfig", "LikelihoodConfig", "PriorsConfig", "MapConfig", "SamplerConfig", "OutputConfig",
           "FitConfig", "load_config", "config_from_dict", "resolve_data_priors", "channel_velocities_kms",
           "SAMPLER_KIND_KEYS", "SAMPLER_DEFAULTS", "SECTIONS", "config_reference", "config_template"]


# ---------------------------------------------------------------------------- the sections
# Each key once: its default, check, unit and meaning in the field (nuker_mge_plugin/schema.py);
# the docs' configuration reference and `nuker-mge fit --print-config` are generated from them.
@dataclass(frozen=True)
class DataConfig:
    path: str = key(kind="custom", what="an existing .npz observation or FITS cube", doc="""
        The observation: a visibility ``.npz`` (u, v [wavelengths], vis [Jy], weight [1/Jy^2], chan,
        freq [Hz], chan_freq [Hz], meta; written by ``nuker-mge mock`` and ``convert-vis``), or a
        cleaned FITS image cube [Jy/beam] (``.fits``), fitted in the Fourier domain of its pixels.
        Relative paths resolve against the configuration file's folder; stored absolute.""")
    rest_freq_hz: float = key(CO21_REST_HZ, kind="number", gt=0, what="a rest frequency > 0 [Hz]", unit="Hz",
                              default_text="230.538e9 (12CO(2-1)); a FITS cube: its header's RESTFRQ", doc="""
        Rest frequency of the line, for the radio velocity ``v = c (1 - f / f0)``.""")
    rms_jy_beam: float | None = key(None, kind="number", gt=0, what="a noise rms > 0 [Jy/beam]", unit="Jy/beam",
                                    only="a FITS cube", doc="""
        Noise per pixel (default: measured in ``linefree_channels``).""")
    linefree_channels: tuple | None = key(None, kind="custom", what="a list of 0-based channel indices",
                                          only="a FITS cube", default_text="the first two and the last two", doc="""
        0-based channels without line emission, where the noise is measured.""")
    centre_radec_deg: tuple | None = key(None, kind="custom", unit="deg", only="a FITS cube",
                                         what="[ra, dec] (0 <= ra < 360, -90 <= dec <= 90)",
                                         default_text="the header's reference pixel", doc="""
        Position the model grid is centred on, the origin of ``x``, ``y``.""")
    pb_path: str | None = key(None, kind="custom", what="the path of a FITS primary-beam image",
                              only="a FITS cube", doc="""
        Primary-beam (gain) image or cube on the cube's pixels, multiplying the model sky (for a
        cube that is not primary-beam corrected; default none).""")
    fourier_threshold: float = key(0.05, kind="number", gt=0, lt=1, what="a beam response in (0, 1)",
                                   only="a FITS cube", doc="""
        Fit the Fourier modes where the restoring beam keeps at least this share of its peak.""")
    velocity_convention: str = key("header", kind="choice", choices=VELOCITY_CONVENTIONS, only="a FITS cube",
                                   doc="""
        How to read a velocity axis ("header": as astropy reads the header).""")
    noise: str = key("empirical", kind="choice", choices=("empirical", "beam"), only="a FITS cube",
                     default_text='"empirical"; "beam" when rms_jy_beam is given', doc="""
        Noise of each Fourier mode measured in the line-free channels, or predicted from the rms
        and the restoring beam; see nuker_mge_plugin/image/fourier.py for why real cubes need the
        first.""")

    @property
    def is_image(self):
        """True when ``path`` is a FITS image cube (image-plane fit), False for a visibility ``.npz``."""
        from ..image.cube import is_image_cube
        return is_image_cube(self.path)


@dataclass(frozen=True)
class GalaxyConfig:
    distance_mpc: float = key(kind="number", gt=0, what="a distance > 0 [Mpc]", unit="Mpc", doc="""
        Distance (``pc_per_arcsec = distance pi / 0.648``).""")
    name: str = key("", kind="string", doc="Galaxy name for figure titles and the summary.")


@dataclass(frozen=True)
class ModelConfig:
    cell_arcsec: float = key(kind="number", gt=0, what="a pixel size > 0 [arcsec]", unit="arcsec",
                             default_text="required; a FITS cube: its pixel", doc="""
        Model image pixel; the uv grid follows from it (``du = 1 / (n_pix cell)``). For a FITS cube
        it is the cube's pixel.""")
    n_pix: int = key(kind="integer", ge=8, what="an integer >= 8 [pixels]", unit="pixels",
                     default_text="required; a FITS cube: the largest even square that fits", doc="""
        The model image is ``n_pix x n_pix`` pixels; for a FITS cube, the side of the square
        cut-out (even).""")
    backend: str = key("exact", kind="choice", choices=("exact", "nn"), doc="""
        Nuker -> MGE backend: the exact least-squares fit or the neural emulator.""")
    nsub: int = key(3, kind="integer", ge=1, what="an integer >= 1 [sub-pixels per pixel side]", doc="""
        Sub-pixel samples per pixel side of the gas cube. On a noise-free KinMS mock of the demo,
        nsub = 2 biases log10 M_BH by -0.0135 dex and 3 or 4 by -0.0045 (validation/m5_recovery.py);
        the fit predicts at its MAP how far nsub x 2 would move it and warns past 0.5 posterior
        sigma (fit.discretisation_shift), and near edge-on (fit.subpixel_warning).""")
    surface_brightness: str = key("exponential", kind="choice", choices=SURFACE_BRIGHTNESS, doc="""
        Gas surface brightness: ``exp(-r / scale_length)``, or "ring", the Gaussian ring
        ``exp(-(r - ring_radius)^2 / (2 scale_length^2))`` (as in the KinMS example of NGC 4324),
        which adds the parameter ``ring_radius`` [arcsec] (default range: 0 to half the field).""")
    primary_beam: bool = key(True, kind="boolean", doc="""
        Multiply the sky by the ALMA 12-m primary beam of each channel.""")

    @property
    def field_arcsec(self):
        """Model field side ``n_pix cell_arcsec`` [arcsec]."""
        return self.n_pix * self.cell_arcsec


@dataclass(frozen=True)
class GriddingConfig:
    width: float = key(1.0, kind="number", gt=0, what="a window width > 0 [cells]", unit="cells", doc="""
        Kaiser-Bessel window full width (1: windows do not overlap).""")
    beta: float = key(2.0, kind="number", gt=0, what="a Kaiser-Bessel shape > 0", doc="""
        Kaiser-Bessel shape parameter.""")
    min_count: int = key(5, kind="integer", ge=2, what="an integer >= 2 [visibilities]", doc="""
        Visibilities a cell's window needs (the paper's 5); the window grows otherwise.""")
    max_halfwidth: float = key(2.5, kind="number", unit="cells", default_text="max(2.5, width / 2)",
                               what="a half-width >= gridding.width / 2 [cells]", doc="""
        Largest window half-width.""")
    grow_step: float = key(0.5, kind="number", gt=0, what="a step > 0 [cells]", unit="cells", doc="""
        Window growth step.""")
    mask_grown: bool = key(False, kind="boolean", doc="""
        Drop cells whose window had to grow. By default the model of every cell is the exact window
        average of its own samples, grown or not, and ``[likelihood] overlap_weights`` weights each
        cell by ``1 / m_c`` (its overlap multiplicity) so that shared visibilities are counted once;
        true is the strict alternative (independent cells, less information).""")

    def kwargs(self):
        """Keyword arguments for ``dynamics.gridder.grid_visibilities``."""
        return dict(width=self.width, beta=self.beta, min_count=self.min_count,
                    max_halfwidth=self.max_halfwidth, grow_step=self.grow_step)


@dataclass(frozen=True)
class LikelihoodConfig:
    kind: str = key("student_t", kind="choice", choices=("student_t", "gaussian"), doc="""
        "student_t": degrees of freedom from each cell's effective sample count, the
        sample-variance noise of sec. 2.2 (inference/likelihood.py); or "gaussian".""")
    sigma_scale: float | None = key(None, kind="number", gt=0, what="a factor > 0", only='likelihood.kind = "gaussian"',
                                    default_text='2.0 (the paper\'s) with kind = "gaussian"', doc="""
        The per-cell sigma is multiplied by this (an error with "student_t", which takes its width
        from the data).""")
    overlap_weights: bool = key(True, kind="boolean", doc="""
        Weight each cell's log-likelihood term by ``1 / m_c``, ``m_c`` the overlap multiplicity of
        its window, so that a visibility shared by overlapping (grown) windows is counted once;
        false treats every cell as independent, which makes posteriors too narrow when many
        windows grew (sparse uv coverage).""")


@dataclass(frozen=True)
class MapConfig:
    n_starts: int = key(4, kind="integer", ge=1, doc="Starts: the prior midpoint, then prior draws.")
    screen_grid: int = key(24, kind="integer", ge=2, doc="""
        Grid values per parameter in the coordinate screen of the starts (inference.optimize.screen_starts).""")
    screen_sweeps: int = key(3, kind="integer", ge=0, doc="""
        Sweeps of that screen over all free parameters (0 skips the screen).""")
    adam_steps: int = key(300, kind="integer", ge=0, doc="Adam steps per start in the unconstrained space.")
    adam_lr: float = key(0.02, kind="number", gt=0, unit="unconstrained units per step", doc="Adam learning rate.")
    lbfgs_steps: int = key(50, kind="integer", ge=0, doc="L-BFGS refinement iterations of the best starts.")


_NUTS, _MALA = 'sampler.kind = "nuts"', 'sampler.kind = "mala"'


@dataclass(frozen=True)
class SamplerConfig:
    kind: str = key("nuts", kind="choice", choices=("nuts", "mala"), doc="""
        "nuts": the No-U-Turn sampler (sampling/nuts.py), its mass matrix started at the Fisher
        covariance of the MAP, drawing in blocks until the chains have converged
        (``until_converged``); "mala": Fisher-preconditioned MALA, the seed paper's appendix C
        (sampling/mala.py), a fixed schedule of burn-in, step-size trials and draws. Keys of the
        other kind are an error rather than silently ignored.""")
    chains: int = key(4, kind="integer", ge=2, what="an integer >= 2 (R-hat needs several chains)",
                      doc="Independent chains.")
    seed: int = key(0, kind="integer", ge=0, doc="Seed of every random stream of the fit.")
    device: str = key("cpu", kind="string", what='"cpu", "cuda" or "cuda:N"', doc="""
        Where the model runs; CUDA must be available.""")
    dtype: str = key("float64", kind="choice", choices=("float64", "float32"), doc="""
        Floating type of the forward model (reductions stay float64).""")
    target_acceptance: float = key(0.8, kind="number", gt=0, lt=1, what="an acceptance in (0, 1)",
                                   default_text="0.8 (nuts), 0.574 (mala)", doc="""
        NUTS: the mean acceptance statistic its step-size adaptation aims at (raise it, e.g. to
        0.95, when there are divergences). MALA: the acceptance rate the kept step size is closest
        to (0.574, Roberts & Rosenthal 1998).""")
    draws: int = key(1000, kind="integer", ge=1, what="an integer >= 1 [draws per chain]",
                     default_text="1000 (nuts), 2000 (mala)", doc="""
        Posterior draws per chain. NUTS: the first block of draws after warm-up; with
        ``until_converged`` more blocks follow until convergence. MALA: all the draws after tuning.""")
    checkpoint_every: int = key(500, kind="integer", ge=0, what="an integer >= 0 [iterations] (0 = never)", doc="""
        Write a checkpoint every this many sampler iterations (``nuker-mge fit --resume``).""")
    ridge_frac: float = key(1e-3, kind="number", ge=0, doc="""
        Fisher ridge ``lambda = max(ridge_frac median(diag F), ridge_min)`` (appendix C.1).""")
    ridge_min: float = key(1e-8, kind="number", gt=0, doc="The smallest Fisher ridge (see ``ridge_frac``).")
    threads: int = key(0, kind="integer", ge=0, what="an integer >= 0 (0 = torch's default)", doc="""
        CPU threads of torch. On a machine shared with other work, 1 is often much faster than
        more: idle threads spin while the cores are busy elsewhere.""")
    warmup: int = key(500, kind="integer", ge=20, what="an integer >= 20 [iterations per chain]", only=_NUTS, doc="""
        Warm-up (step-size and mass-matrix adaptation) iterations per chain; not kept as draws.""")
    max_tree_depth: int = key(10, kind="integer", ge=1, le=15, what="an integer in 1..15 [trajectory doublings]",
                              only=_NUTS, doc="""
        Largest trajectory doubling depth (10: at most 2^10 - 1 leapfrog steps, i.e. gradient
        evaluations, per draw).""")
    until_converged: bool = key(True, kind="boolean", only=_NUTS, default_text='true (nuts); false (mala)', doc="""
        Keep drawing in blocks of ``block_draws`` until every free parameter has R-hat <= 1.01 and
        bulk and tail ESS >= 400 (sampling/diagnostics.py), or ``max_draws`` or ``max_wall_s`` is
        reached. False: exactly ``draws`` draws per chain.""")
    block_draws: int = key(250, kind="integer", ge=50, what="an integer >= 50 [draws per chain]", only=_NUTS, doc="""
        Draws per chain added by each further block.""")
    max_draws: int = key(10000, kind="integer", what="an integer >= sampler.draws [draws per chain]",
                         default_text="max(10000, draws)", only=_NUTS, doc="Most draws per chain in all.")
    max_wall_s: float = key(0.0, kind="number", ge=0, what="a time >= 0 [s] (0 = no limit)", unit="s", only=_NUTS,
                            doc="""
        Wall time the sampling (warm-up and draws) may take before it stops unconverged; checked
        between blocks.""")
    space: str = key("box", kind="choice", choices=("box", "logit"), only=_NUTS, doc="""
        The coordinates NUTS moves in: "box", the prior box itself rescaled to [0, 1] per
        parameter, whose walls the trajectories reflect off (a posterior piled against a bound
        stays a truncated bump there), or "logit", the unconstrained ``z`` of the priors' sigmoid
        bijection with its log-Jacobian, where such a posterior becomes a long skewed tail that
        NUTS crosses slowly (docs/sampling.rst).""")
    burn_in_stages: int = key(3, kind="integer", ge=1, only=_MALA, doc="""
        Burn-in stages, each ending with a new Fisher mass matrix at its best point.""")
    burn_in_steps: int = key(500, kind="integer", ge=1, only=_MALA, doc="MALA steps per burn-in stage.")
    step_sizes: tuple | None = key(None, kind="custom", what="a non-empty list of step sizes > 0", only=_MALA, doc="""
        Step sizes tried after burn-in; none lets the sampler choose ``n_step_trials`` of them.
        Give either this or ``n_step_trials``.""")
    n_step_trials: int = key(6, kind="integer", ge=1, only=_MALA, default_text="6; len(step_sizes) when given",
                             doc="Number of step sizes tried.")
    step_trial_steps: int = key(200, kind="integer", ge=1, only=_MALA, doc="MALA steps per step-size trial.")
    thin: int = key(1, kind="integer", ge=1, only=_MALA, doc="Keep every ``thin``-th draw.")
    mass_matrix: str = key("fisher", kind="choice", choices=("fisher", "adaptive"), only=_MALA, doc="""
        "fisher": after each burn-in stage the empirical Fisher covariance at the best point
        (appendix C.1); "adaptive": that matrix blended with the covariance of the burn-in's draws
        so far (MALASchedule ``adapt_mass_matrix``), for data that constrain some parameters weakly,
        where the Fisher matrix at one point misjudges the posterior's widths.""")


#: ``[sampler]`` keys of one sampler kind only (the others apply to both).
SAMPLER_KIND_KEYS = {kind: tuple(k for k, (_, spec) in keys_of(SamplerConfig).items() if spec.only == only)
                     for kind, only in (("nuts", _NUTS), ("mala", _MALA))}
#: ``sampler.target_acceptance`` and ``sampler.draws`` when not given, by ``sampler.kind``.
SAMPLER_DEFAULTS = {"nuts": dict(target_acceptance=0.8, draws=1000),
                    "mala": dict(target_acceptance=0.574, draws=2000)}


@dataclass(frozen=True)
class OutputConfig:
    dir: str = key(kind="custom", what="a directory path", default_text="<config stem>_results", doc="""
        Output folder; relative paths resolve against the configuration file's folder (stored
        absolute).""")
    figures: bool = key(True, kind="boolean", doc="Write the PNG figures.")
    vcirc_draws: int = key(200, kind="integer", ge=10, doc="""
        Posterior draws (thinned) through which the circular-velocity band is computed.""")
    vcirc_n_radii: int = key(64, kind="integer", ge=2, doc="""
        Radii of the band, log-spaced from cell/4 to half the field (``FitConfig.vcirc_radius_arcsec``).""")


#: The sections of a fit configuration with their keys: ``(name, dataclass, what it is)``; [priors]
#: is the parameters' (:data:`TABLE1`).
SECTIONS = (
    ("data", DataConfig, "The observation. A path ending in .fits is a cleaned image cube [Jy/beam], fitted in "
                         "the Fourier domain of its pixels (nuker_mge_plugin/image/); some keys apply to it only."),
    ("galaxy", GalaxyConfig, "The galaxy."),
    ("model", ModelConfig, "The forward model's sky grid and options."),
    ("gridding", GriddingConfig, "Kaiser-Bessel gridding of the visibilities (seed paper sec. 2.2.1); the keys "
                                 "are grid_visibilities' keywords (cfg.gridding.kwargs())."),
    ("likelihood", LikelihoodConfig, "The likelihood of the gridded cells."),
    ("map", MapConfig, "The maximum-a-posteriori search that starts the chains."),
    ("sampler", SamplerConfig, "The MCMC after the MAP: NUTS (default) or the seed paper's Fisher-MALA. The "
                               "fields of the kind not chosen keep their defaults and are not written by "
                               "FitConfig.to_dict."),
    ("output", OutputConfig, "Where and what the fit writes."),
)
#: A fit file's order: these sections, then [priors], then the rest.
_BEFORE_PRIORS, _AFTER_PRIORS = SECTIONS[:5], SECTIONS[5:]
for _name, _cls, _intro in SECTIONS:
    document(_cls, f"``[{_name}]``: {_intro[0].lower()}{_intro[1:]}")


@dataclass(frozen=True)
class FitConfig:
    """The whole, validated configuration of one fit. ``source``: the file it came from (or None)."""

    data: DataConfig
    galaxy: GalaxyConfig
    model: ModelConfig
    gridding: GriddingConfig
    likelihood: LikelihoodConfig
    priors: PriorsConfig
    map: MapConfig
    sampler: SamplerConfig
    output: OutputConfig
    source: str | None = None

    @property
    def field_arcsec(self):
        """Model field side [arcsec]."""
        return self.model.field_arcsec

    def vcirc_radius_arcsec(self):
        """Radii [arcsec] of the circular-velocity band: log-spaced from cell/4 to half the field."""
        return np.geomspace(self.model.cell_arcsec / 4.0, self.field_arcsec / 2.0, self.output.vcirc_n_radii)

    def to_dict(self):
        """Plain nested dict in the file's layout (absolute paths; None values left out)."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name == "source":
                continue
            sec = getattr(self, f.name)
            skip = ()
            if f.name == "sampler":  # the other kind's keys would be an error when read back
                skip = [k for kind, keys in SAMPLER_KIND_KEYS.items() if kind != sec.kind for k in keys]
            if f.name == "priors":
                d = {}
                for p in sec.entries:
                    d[p.name] = (p.value if p.kind == "fixed" else
                                 [p.low, p.high] if p.kind == "uniform" else _FROM_DATA)
            else:
                d = {}
                for k, v in dataclasses.asdict(sec).items():
                    if v is None or k in skip or (f.name == "data" and k in _IMAGE_ONLY_KEYS and not sec.is_image):
                        continue
                    d[k] = list(v) if isinstance(v, tuple) else v
            out[f.name] = d
        return out

    def to_toml_str(self):
        """The resolved configuration as TOML text that :func:`load_config` reads back identically."""
        lines = []
        if self.source:
            lines.append(f"# resolved from {self.source}")
        for sec, d in self.to_dict().items():
            lines.append(f"[{sec}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in d.items())
            lines.append("")
        return "\n".join(lines)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # shortest round-tripping repr; TOML accepts 1e-08, 230538000000.0
    if isinstance(v, str):
        return json.dumps(v)  # a TOML basic string (json escapes are TOML escapes)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def _priors_rst():
    rows = [".. rubric:: [priors]", "",
            "One entry per parameter (seed paper Table 1): ``name = [low, high]`` (uniform), ``name = value`` "
            "(fixed), or for ``systemic_velocity``, ``x``, ``y`` the string ``\"from_data\"`` (their default: "
            "the channels' velocity range and the field). ``ring_radius`` exists with "
            "``model.surface_brightness = \"ring\"`` (default range: 0 to half the field).", "",
            ".. list-table::", "   :header-rows: 1", "   :widths: 18 22 12 48", "",
            "   * - key", "     - default range", "     - unit", "     - meaning"]
    for name, (lo, hi, unit, desc) in TABLE1.items():
        rng = '"from_data"' if name in DATA_PRIOR_NAMES else f"[{lo:g}, {hi:g}]"
        rows += [f"   * - ``{name}``", f"     - {rng}", f"     - {unit or '-'}", f"     - {desc}"]
    return "\n".join(rows) + "\n"


def config_reference():
    """reST reference of every key of a fit configuration, from the declarations (the docs'
    configuration page; :mod:`nuker_mge_plugin.config_reference` has the survey's and mock's too)."""
    return reference_rst(_BEFORE_PRIORS) + "\n" + _priors_rst() + "\n" + reference_rst(_AFTER_PRIORS)


def config_template():
    """A commented TOML template of a fit configuration, every key at its default (``nuker-mge fit
    --print-config``)."""
    priors = ["# One entry per parameter: name = [low, high] (uniform) or name = value (fixed); "
              "systemic_velocity, x, y", '# default to "from_data".', "[priors]"]
    for name, (lo, hi, unit, desc) in TABLE1.items():
        value = '"from_data"' if name in DATA_PRIOR_NAMES else f"[{lo!r}, {hi!r}]"
        priors.append(f"{name} = {value}    # {desc}{f' [{unit}]' if unit else ''}")
    return template_toml(_BEFORE_PRIORS) + "\n" + "\n".join(priors) + "\n\n" + template_toml(_AFTER_PRIORS)


# ---------------------------------------------------------------------------- checks

#: The valid keys of each section, from the declarations above ([priors]: the parameters).
_SECTION_KEYS = {**{name: section_keys(cls) for name, cls, _ in _BEFORE_PRIORS},
                 "priors": tuple(TABLE1) + EXTRA_PARAMETER_NAMES,
                 **{name: section_keys(cls) for name, cls, _ in _AFTER_PRIORS}}


def _section(name, raw):
    return Section(name, raw, _SECTION_KEYS[name], ConfigError)


def _resolve_path(p, base_dir):
    q = Path(p).expanduser()
    if not q.is_absolute():
        q = Path(base_dir) / q
    return str(q.resolve())


def _check_device(dev):
    if dev == "cpu":
        return
    import torch  # only needed to check CUDA
    if dev == "cuda" or dev.startswith("cuda:"):
        idx = 0
        if dev != "cuda":
            tail = dev[5:]
            if not tail.isdigit():
                raise ConfigError(f"sampler.device: expects \"cpu\", \"cuda\" or \"cuda:N\", got {dev!r}")
            idx = int(tail)
        if not torch.cuda.is_available():
            raise ConfigError(f"sampler.device: expects \"cpu\" on this machine (CUDA is not available), got {dev!r}")
        if idx >= torch.cuda.device_count():
            raise ConfigError(f"sampler.device: expects a CUDA index < {torch.cuda.device_count()}, got {dev!r}")
        return
    raise ConfigError(f"sampler.device: expects \"cpu\", \"cuda\" or \"cuda:N\", got {dev!r}")


_IMAGE_ONLY_KEYS = tuple(k for k, (_, spec) in keys_of(DataConfig).items() if spec.only == "a FITS cube")


def _data_config(s, path, raw, check_files):
    """``[data]``: a visibility ``.npz`` or a FITS image cube (its own keys)."""
    from ..image.cube import is_image_cube

    image = is_image_cube(path)
    if check_files and not Path(path).is_file():
        what = "an existing FITS cube" if image else "an existing .npz file"
        raise ConfigError(f"data.path: expects {what}, got {raw['data']['path']!r} (not found: {path})")
    if not image:
        for k in _IMAGE_ONLY_KEYS:
            if s.given(k):
                raise ConfigError(f"data.{k}: applies to a FITS image cube only (data.path ends in .fits), "
                                  f"got it with {Path(path).name!r}")
        return DataConfig(path=path, **read_section(DataConfig, s, skip=_IMAGE_ONLY_KEYS))
    spec = keys_of(DataConfig)
    lf = s.get("linefree_channels", None)
    if lf is not None and not (isinstance(lf, list) and lf and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in lf)):
        s._fail("linefree_channels", spec["linefree_channels"][1].what, lf)
    cen = s.get("centre_radec_deg", None)
    if cen is not None and not (isinstance(cen, list) and len(cen) == 2 and all(
            isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in cen)
            and 0 <= cen[0] < 360 and -90 <= cen[1] <= 90):
        raise ConfigError(f"data.centre_radec_deg: expects [ra, dec] in degrees (0 <= ra < 360, "
                          f"-90 <= dec <= 90), got {cen!r}")
    pb = s.get("pb_path", None)
    if pb is not None:
        if not (isinstance(pb, str) and pb):
            s._fail("pb_path", spec["pb_path"][1].what, pb)
        pb = _resolve_path(pb, Path(path).parent if not Path(pb).is_absolute() else "/")
        if check_files and not Path(pb).is_file():
            raise ConfigError(f"data.pb_path: expects an existing FITS file, got {s.raw['pb_path']!r} "
                              f"(not found: {pb})")
    rms = s.value("rms_jy_beam", spec["rms_jy_beam"][1], None)
    v = read_section(DataConfig, s, defaults=dict(rest_freq_hz=None, noise="beam" if rms is not None else "empirical"))
    if v["noise"] == "empirical" and rms is not None:
        raise ConfigError("data.noise: expects \"beam\" when data.rms_jy_beam is given (the empirical noise is "
                          "measured in data.linefree_channels instead), got 'empirical'")
    if lf is not None and rms is not None:
        raise ConfigError("data.linefree_channels: expects to be left out when data.rms_jy_beam is given (one "
                          f"noise source), got {lf!r}")
    return DataConfig(path=path, linefree_channels=tuple(lf) if lf is not None else None,
                      centre_radec_deg=tuple(float(c) for c in cen) if cen is not None else None, pb_path=pb, **v)


def _image_grid_defaults(s, data, check_files):
    """model.cell_arcsec and model.n_pix of an image cube, from its header; the rest frequency too."""
    from ..image.cube import image_cube_grid

    if not (check_files and Path(data.path).is_file()):
        return REQUIRED, REQUIRED, data
    try:
        cell, n_max, rest = image_cube_grid(data.path)
    except ValueError as e:
        raise ConfigError(f"data.path: {e}") from None
    if s.given("cell_arcsec") and not math.isclose(float(s.raw["cell_arcsec"]), cell, rel_tol=1e-6):
        raise ConfigError(f"model.cell_arcsec: expects the cube's pixel size {cell:.6g} arcsec (or to be left out), "
                          f"got {s.raw['cell_arcsec']!r}")
    if s.given("n_pix") and (not isinstance(s.raw["n_pix"], int) or s.raw["n_pix"] % 2 or s.raw["n_pix"] > n_max):
        raise ConfigError(f"model.n_pix: expects an even cut-out size <= {n_max} pixels for this cube, "
                          f"got {s.raw['n_pix']!r}")
    if data.rest_freq_hz is None:
        if rest is None:
            raise ConfigError("data.rest_freq_hz: required: the cube's header has no RESTFRQ/RESTFREQ")
        data = dataclasses.replace(data, rest_freq_hz=rest)
    return cell, n_max, data


def _sampler_config(s):
    """``[sampler]``: the keys common to both kinds, then those of ``sampler.kind`` (the other kind's are an error)."""
    spec = keys_of(SamplerConfig)
    kind = s.value("kind", spec["kind"][1], "nuts")
    for other, keys in SAMPLER_KIND_KEYS.items():
        for k in keys:
            if other != kind and s.given(k):
                raise ConfigError(f"sampler.{k}: applies to sampler.kind = \"{other}\" only, got it with "
                                  f"kind = \"{kind}\"" + ("" if s.given("kind") else " (the default)"))
    mine = SAMPLER_KIND_KEYS[kind]
    others = [k for keys in SAMPLER_KIND_KEYS.values() for k in keys if k not in mine]
    common = read_section(SamplerConfig, s, defaults=SAMPLER_DEFAULTS[kind],
                          skip=[*mine, *others])
    _check_device(common["device"])
    if kind == "nuts":
        draws = common["draws"]
        nuts = read_section(SamplerConfig, s, defaults=dict(max_draws=max(10000, draws)),
                            checks=dict(max_draws=dict(ge=draws, what=f"an integer >= sampler.draws = {draws} "
                                                                      "[draws per chain]")),
                            skip=[k for k in spec if k not in mine])
        return SamplerConfig(**common, **nuts)
    step_sizes = s.get("step_sizes", None)
    if step_sizes is not None:
        if not (isinstance(step_sizes, list) and step_sizes and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
                for x in step_sizes)):
            s._fail("step_sizes", spec["step_sizes"][1].what, step_sizes)
        step_sizes = tuple(float(x) for x in step_sizes)
        if s.given("n_step_trials") and s.raw["n_step_trials"] != len(step_sizes):
            raise ConfigError(f"sampler.n_step_trials: expects len(sampler.step_sizes) = {len(step_sizes)} or "
                              f"to be left out, got {s.raw['n_step_trials']!r}")
    mala = read_section(SamplerConfig, s, skip=[k for k in spec if k not in mine])
    if step_sizes:
        mala["n_step_trials"] = len(step_sizes)
    return SamplerConfig(**common, **mala, step_sizes=step_sizes,
                         until_converged=False)  # MALA runs its fixed schedule


def config_from_dict(raw, base_dir=".", source=None, *, check_files=True):
    """Validate a parsed TOML document and build a :class:`FitConfig`.

    Parameters
    ----------
    raw : dict
        The document, as ``tomllib`` returns it.
    base_dir : str or Path
        Directory that relative ``data.path`` and ``output.dir`` resolve against.
    source : str, optional
        Where the document came from (recorded in ``FitConfig.source``).
    check_files : bool
        Check that ``data.path`` exists (default True).

    Returns
    -------
    FitConfig

    Raises
    ------
    ConfigError
        One line naming ``section.key`` and what it expects.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration: expects a TOML document (a table), got {type(raw).__name__}")
    for sec, val in raw.items():
        if sec not in _SECTION_KEYS:
            s = suggest(sec, _SECTION_KEYS)
            hint = f" (did you mean [{s}]?)" if s else f" (valid: {', '.join('[' + k + ']' for k in _SECTION_KEYS)})"
            raise ConfigError(f"{sec}: unknown section{hint}")
        if not isinstance(val, dict):
            raise ConfigError(f"{sec}: expects a [{sec}] table, got {val!r}")
    sections = {name: _section(name, raw.get(name, {})) for name in _SECTION_KEYS}

    s = sections["data"]
    path = s.get("path", REQUIRED)
    if not isinstance(path, str):
        s._fail("path", "a string", path)
    if not path:
        raise ConfigError("data.path: expects the path of the .npz observation, got ''")
    path = _resolve_path(path, base_dir)
    data = _data_config(s, path, raw, check_files)

    galaxy = GalaxyConfig(**read_section(GalaxyConfig, sections["galaxy"]))

    s = sections["model"]
    grid_defaults = {}
    if data.is_image:
        cell, n_pix, data = _image_grid_defaults(s, data, check_files)
        grid_defaults = dict(cell_arcsec=cell, n_pix=n_pix)
    model = ModelConfig(**read_section(ModelConfig, s, defaults=grid_defaults))

    s = sections["gridding"]
    width = s.value("width", keys_of(GriddingConfig)["width"][1], 1.0)
    gridding = GriddingConfig(**read_section(
        GriddingConfig, s, defaults=dict(max_halfwidth=max(2.5, width / 2)),
        checks=dict(max_halfwidth=dict(ge=width / 2, what=f"a half-width >= gridding.width / 2 = {width / 2:g} "
                                                          "[cells]"))))

    s = sections["likelihood"]
    kind = s.value("kind", keys_of(LikelihoodConfig)["kind"][1], "student_t")
    if kind == "student_t" and s.given("sigma_scale"):
        raise ConfigError("likelihood.sigma_scale: expects likelihood.kind = \"gaussian\" (the Student-t "
                          f"takes its width from the data), got {s.raw['sigma_scale']!r} with kind = \"student_t\"")
    likelihood = LikelihoodConfig(**read_section(LikelihoodConfig, s,
                                                 defaults=dict(sigma_scale=2.0 if kind == "gaussian" else None)))

    s = sections["priors"]
    entries = []
    for name, (lo, hi, _, _) in TABLE1.items():
        if s.given(name):
            entries.append(parse_prior(name, s.raw[name]))
        elif name in DATA_PRIOR_NAMES:
            entries.append(Prior(name, source="data"))
        else:
            entries.append(Prior(name, low=lo, high=hi, source="table1"))
    if s.given("ring_radius") and model.surface_brightness != "ring":
        raise ConfigError(f"priors.ring_radius: applies to model.surface_brightness = \"ring\" only, got it with "
                          f"{model.surface_brightness!r}")
    if model.surface_brightness == "ring":  # default: anywhere inside the field
        entries.append(parse_prior("ring_radius", s.raw["ring_radius"]) if s.given("ring_radius") else
                       Prior("ring_radius", low=0.0, high=model.field_arcsec / 2.0, source="data"))
    priors = PriorsConfig(tuple(entries))
    half = model.field_arcsec / 2.0
    for name in ("x", "y"):
        p = priors[name]
        vals = (p.value,) if p.kind == "fixed" else (p.low, p.high) if p.kind == "uniform" else ()
        if any(abs(v) > half * (1 + 1e-12) for v in vals):
            raise ConfigError(f"priors.{name}: expects values inside the model field +-{half:g} arcsec "
                              f"(model.n_pix x model.cell_arcsec), got {s.raw[name]!r}")
    if model.backend == "nn":
        check_nn_box(priors, galaxy.distance_mpc)

    map_ = MapConfig(**read_section(MapConfig, sections["map"]))

    sampler = _sampler_config(sections["sampler"])

    s = sections["output"]
    stem = Path(source).stem if source else "nuker_mge"
    out_dir = s.get("dir", f"{stem}_results")
    if not isinstance(out_dir, str):
        s._fail("dir", "a string", out_dir)
    if not out_dir:
        raise ConfigError("output.dir: expects a directory path, got ''")
    output = OutputConfig(dir=_resolve_path(out_dir, base_dir), **read_section(OutputConfig, s))

    return FitConfig(data=data, galaxy=galaxy, model=model, gridding=gridding, likelihood=likelihood,
                     priors=priors, map=map_, sampler=sampler, output=output,
                     source=str(source) if source is not None else None)


def load_config(path, *, check_files=True):
    """Read and validate ``nuker-mge fit``'s TOML configuration.

    Parameters
    ----------
    path : str or Path
        The ``.toml`` file. Relative paths inside it resolve against its directory.
    check_files : bool
        Check that ``data.path`` exists (default True).

    Returns
    -------
    FitConfig
        ``systemic_velocity``, ``x``, ``y`` not given in [priors] are still "from data": call
        :func:`resolve_data_priors` once the observation is loaded.

    Raises
    ------
    ConfigError
        Missing or unreadable file, invalid TOML, or any bad key (one line naming ``section.key``).
    """
    p = Path(path)
    raw = read_toml(p, "configuration", ConfigError)
    return config_from_dict(raw, base_dir=p.resolve().parent, source=str(p.resolve()), check_files=check_files)


