"""The TOML configuration of ``nuker-mge fit``: the documented example, round trip, data-derived
priors, and one ConfigError naming ``section.key`` for each kind of bad configuration."""

import copy
import tomllib

import numpy as np
import pytest
import torch

from nuker_mge_plugin.inference.config import (TABLE1, ConfigError, channel_velocities_kms, config_from_dict,
                                               load_config, resolve_data_priors)

EXAMPLE = """\
[data]
path = "obs.npz"          # the documented .npz (u, v, vis, weight, chan, freq, chan_freq, meta)
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
pa = [0.0, 359.9]         # ... any of the 15
[sampler]
chains = 4
seed = 7
device = "cpu"            # or "cuda"
"""


@pytest.fixture
def example(tmp_path):
    (tmp_path / "obs.npz").write_bytes(b"")  # only its existence is checked here
    p = tmp_path / "fit.toml"
    p.write_text(EXAMPLE)
    return p


def test_example_parses_exactly(example):
    cfg = load_config(example)
    d = example.parent.resolve()
    assert cfg.data.path == str(d / "obs.npz")
    assert cfg.data.rest_freq_hz == 230.538e9
    assert cfg.galaxy.distance_mpc == 16.5
    assert (cfg.model.cell_arcsec, cfg.model.n_pix, cfg.model.backend) == (0.15, 64, "exact")
    assert cfg.field_arcsec == pytest.approx(9.6)
    assert (cfg.likelihood.kind, cfg.likelihood.sigma_scale) == ("student_t", None)
    assert (cfg.sampler.chains, cfg.sampler.seed, cfg.sampler.device) == (4, 7, "cpu")
    assert cfg.sampler.dtype == "float64" and cfg.sampler.step_sizes is None
    assert cfg.sampler.mass_matrix == "fisher"
    assert cfg.model.nsub == 3 and cfg.model.surface_brightness == "exponential"
    assert cfg.output.dir == str(d / "fit_results") and cfg.output.figures is True
    # priors: two from the file, the rest from Table 1, three from the data
    pr = cfg.priors
    assert pr.names == tuple(TABLE1)
    assert (pr["log10_mbh"].low, pr["log10_mbh"].high, pr["log10_mbh"].source) == (6.0, 9.79934, "config")
    assert (pr["pa"].low, pr["pa"].high) == (0.0, 359.9)
    assert (pr["gamma"].low, pr["gamma"].high, pr["gamma"].source) == (0.001, 1.2, "table1")
    assert pr.unresolved == ("systemic_velocity", "x", "y")
    assert pr.free == tuple(TABLE1) and pr.fixed == {}
    with pytest.raises(ConfigError, match="priors.systemic_velocity"):
        pr.ranges


def test_round_trip_and_fixed(example, tmp_path):
    text = EXAMPLE.replace("pa = [0.0, 359.9]", "pa = [0.0, 359.9]\nqintr = 0.8\nx = [-0.5, 0.5]")
    text = text.replace('kind = "student_t"', 'kind = "gaussian"')
    example.write_text(text)
    cfg = load_config(example)
    assert cfg.priors.fixed == {"qintr": 0.8}
    assert "qintr" not in cfg.priors.free
    assert cfg.likelihood.sigma_scale == 2.0
    out = tmp_path / "sub" / "resolved.toml"
    out.parent.mkdir()
    out.write_text(cfg.to_toml_str())
    again = load_config(out)
    assert again.to_dict() == cfg.to_dict()
    assert tomllib.loads(cfg.to_toml_str())["priors"]["systemic_velocity"] == "from_data"


def test_resolve_data_priors(example):
    cfg = load_config(example)
    v = np.linspace(1180.0, 1300.0, 25)
    f = cfg.data.rest_freq_hz * (1 - v / 299792.458)
    assert np.allclose(channel_velocities_kms(f, cfg.data.rest_freq_hz), v)
    r = resolve_data_priors(cfg, chan_freq_hz=f)
    lo, hi = r.priors.ranges["systemic_velocity"]
    assert lo == pytest.approx(1180.0) and hi == pytest.approx(1300.0)
    assert r.priors.ranges["x"] == (-4.8, 4.8) and r.priors["y"].source == "data"
    spec = r.priors.spec()
    assert len(spec) == 15 and spec["log10_mbh"] == (6.0, 9.79934)
    assert resolve_data_priors(cfg, chan_velocity_kms=v, field_arcsec=2.0).priors.ranges["y"] == (-1.0, 1.0)
    # a resolved config round-trips with numbers in place of "from_data"
    assert load_config_text(example, r.to_toml_str()).priors.ranges == r.priors.ranges
    # a systemic-velocity prior that misses the band
    bad = load_config_text(example, EXAMPLE.replace("pa = [0.0, 359.9]", "systemic_velocity = [500, 600]"))
    with pytest.raises(ConfigError, match=r"^priors\.systemic_velocity: .*band"):
        resolve_data_priors(bad, chan_velocity_kms=v)


def load_config_text(example, text):
    example.write_text(text)
    return load_config(example)


def _base():
    return tomllib.loads(EXAMPLE)


def _set(raw, dotted, value):
    sec, key = dotted.split(".") if "." in dotted else (dotted, None)
    if key is None:
        raw[sec] = value
    else:
        raw.setdefault(sec, {})[key] = value
    return raw


BAD = [
    # (dotted key to set, value, the key the message must name)
    ("sampling", {"chains": 4}, "sampling"),
    ("data", 3, "data"),
    ("model.npix", 64, "model.npix"),
    ("sampler.chain", 4, "sampler.chain"),
    ("sampler.chains", "4", "sampler.chains"),
    ("sampler.chains", 4.0, "sampler.chains"),
    ("sampler.chains", 1, "sampler.chains"),
    ("sampler.seed", True, "sampler.seed"),
    ("sampler.dtype", "float16", "sampler.dtype"),
    ("sampler.mass_matrix", "identity", "sampler.mass_matrix"),
    ("sampler.step_sizes", [0.1, -1.0], "sampler.step_sizes"),
    ("sampler.device", "tpu", "sampler.device"),
    ("sampler.kind", "hmc", "sampler.kind"),
    ("sampler.kind", 1, "sampler.kind"),
    ("sampler.max_wall_s", -1.0, "sampler.max_wall_s"),
    ("sampler.max_draws", 500, "sampler.max_draws"),  # < the default 1000 draws
    ("sampler.max_tree_depth", 16, "sampler.max_tree_depth"),
    ("sampler.max_tree_depth", 0, "sampler.max_tree_depth"),
    ("sampler.warmup", 10, "sampler.warmup"),
    ("sampler.block_draws", 20, "sampler.block_draws"),
    ("sampler.until_converged", "yes", "sampler.until_converged"),
    ("sampler.target_acceptance", 1.0, "sampler.target_acceptance"),
    ("sampler.burn_in_steps", 100, "sampler.burn_in_steps"),  # a MALA key with the default kind nuts
    ("priors.pa", [10.0, 5.0], "priors.pa"),
    ("priors.pa", [0.0, 720.0], "priors.pa"),
    ("priors.gamma_minus_beta", 0.1, "priors.gamma_minus_beta"),
    ("priors.gamma_minus_beta", [-3.0, 0.5], "priors.gamma_minus_beta"),
    ("priors.qintr", 1.2, "priors.qintr"),
    ("priors.qintr", 0.0, "priors.qintr"),
    ("priors.inclination", 90.0, "priors.inclination"),
    ("priors.inclination", [-5.0, 80.0], "priors.inclination"),
    ("priors.flux", -1.0, "priors.flux"),
    ("priors.gamma", [0.5, 2.5], "priors.gamma"),
    ("priors.log10_mbh", [6.0, "9"], "priors.log10_mbh"),
    ("priors.alpha", True, "priors.alpha"),
    ("priors.break_r", [1.0, 2.0, 3.0], "priors.break_r"),
    ("priors.scale_length", "from_data", "priors.scale_length"),
    ("priors.mbh", [6.0, 9.0], "priors.mbh"),
    ("priors.x", [-10.0, 10.0], "priors.x"),
    ("galaxy.distance_mpc", 0.0, "galaxy.distance_mpc"),
    ("galaxy.distance_mpc", -3.0, "galaxy.distance_mpc"),
    ("likelihood.kind", "poisson", "likelihood.kind"),
    ("likelihood.sigma_scale", 2.0, "likelihood.sigma_scale"),  # with kind = student_t
    ("likelihood.overlap_weights", "yes", "likelihood.overlap_weights"),
    ("likelihood.overlap_weights", 1, "likelihood.overlap_weights"),
    ("likelihood.overlap_weight", True, "likelihood.overlap_weight"),
    ("model.backend", "mlp", "model.backend"),
    ("model.n_pix", 4, "model.n_pix"),
    ("model.cell_arcsec", 0.0, "model.cell_arcsec"),
    ("model.cell_arcsec", -0.1, "model.cell_arcsec"),
    ("model.surface_brightness", "spiral", "model.surface_brightness"),
    ("data.path", "missing.npz", "data.path"),
    ("data.rest_freq_hz", -1.0, "data.rest_freq_hz"),
    ("map.n_starts", 0, "map.n_starts"),
]


@pytest.mark.parametrize("dotted,value,key", BAD, ids=[f"{b[0]}={b[1]!r}" for b in BAD])
def test_bad_configuration_names_the_key(example, dotted, value, key):
    raw = _set(_base(), dotted, value)
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=example.parent)
    msg = str(e.value)
    assert msg.startswith(key + ":") or msg.startswith(key + " "), msg
    assert "\n" not in msg
    assert isinstance(e.value, ValueError)


def test_suggestions_and_missing(example):
    with pytest.raises(ConfigError, match=r"did you mean model\.n_pix\?"):
        config_from_dict(_set(_base(), "model.npix", 64), base_dir=example.parent)
    with pytest.raises(ConfigError, match=r"did you mean \[sampler\]\?"):
        config_from_dict(_set(_base(), "sampling", {}), base_dir=example.parent)
    with pytest.raises(ConfigError, match=r"did you mean priors\.pa\?"):
        config_from_dict(_set(_base(), "priors.PA", [0.0, 10.0]), base_dir=example.parent)
    raw = _base()
    del raw["galaxy"]["distance_mpc"]
    with pytest.raises(ConfigError, match=r"^galaxy\.distance_mpc: required"):
        config_from_dict(raw, base_dir=example.parent)
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config_text(example, "[data\npath = 1")
    with pytest.raises(ConfigError, match="not found"):
        load_config(example.parent / "nope.toml")


def test_nn_backend_training_box(example):
    raw = _set(_base(), "model.backend", "nn")
    assert config_from_dict(copy.deepcopy(raw), base_dir=example.parent).model.backend == "nn"
    with pytest.raises(ConfigError, match=r"^priors\.alpha: .*training box"):
        config_from_dict(_set(copy.deepcopy(raw), "priors.alpha", [0.05, 10.0]), base_dir=example.parent)
    # Table-1 break radii leave the 2 pc - 2 kpc box at 200 Mpc (5" = 4.8 kpc)
    with pytest.raises(ConfigError, match=r"^priors\.break_r: .*Table-1 default"):
        config_from_dict(_set(raw, "galaxy.distance_mpc", 200.0), base_dir=example.parent)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda(example):
    with pytest.raises(ConfigError, match=r"^sampler\.device: .*CUDA is not available"):
        config_from_dict(_set(_base(), "sampler.device", "cuda"), base_dir=example.parent)


def test_step_sizes_and_trials(example):
    raw = _set(_set(_base(), "sampler.kind", "mala"), "sampler.step_sizes", [0.05, 0.1, 0.2])
    cfg = config_from_dict(raw, base_dir=example.parent)
    assert cfg.sampler.step_sizes == (0.05, 0.1, 0.2) and cfg.sampler.n_step_trials == 3
    with pytest.raises(ConfigError, match=r"^sampler\.n_step_trials"):
        config_from_dict(_set(raw, "sampler.n_step_trials", 5), base_dir=example.parent)
    assert cfg.gridding.kwargs() == dict(width=1.0, beta=2.0, min_count=5, max_halfwidth=2.5, grow_step=0.5)


def test_overlap_weights_key(example):
    assert config_from_dict(_base(), base_dir=example.parent).likelihood.overlap_weights is True
    for value in (False, True):
        raw = _set(_base(), "likelihood.overlap_weights", value)
        cfg = config_from_dict(raw, base_dir=example.parent)
        assert cfg.likelihood.overlap_weights is value
        assert tomllib.loads(cfg.to_toml_str())["likelihood"]["overlap_weights"] is value  # round trip
    with pytest.raises(ConfigError, match=r"^likelihood\.overlap_weights: expects true or false, got 'yes'$"):
        config_from_dict(_set(_base(), "likelihood.overlap_weights", "yes"), base_dir=example.parent)
    with pytest.raises(ConfigError, match=r"did you mean likelihood\.overlap_weights\?"):
        config_from_dict(_set(_base(), "likelihood.overlap_weight", False), base_dir=example.parent)


def test_sampler_defaults_by_kind(example):
    s = config_from_dict(_base(), base_dir=example.parent).sampler  # kind left out: NUTS
    assert s.kind == "nuts" and s.target_acceptance == 0.8 and s.draws == 1000
    assert (s.warmup, s.max_tree_depth, s.until_converged, s.block_draws, s.max_draws, s.max_wall_s) == \
        (500, 10, True, 250, 10000, 0.0)
    m = config_from_dict(_set(_base(), "sampler.kind", "mala"), base_dir=example.parent).sampler
    assert m.kind == "mala" and m.target_acceptance == 0.574 and m.draws == 2000 and m.until_converged is False
    assert (m.burn_in_stages, m.burn_in_steps, m.n_step_trials, m.step_trial_steps, m.thin, m.mass_matrix) == \
        (3, 500, 6, 200, 1, "fisher")
    # given values win; max_draws follows a larger first block; max_wall_s in seconds
    raw = _base()
    raw["sampler"].update(target_acceptance=0.95, draws=20000, max_wall_s=3600, until_converged=False)
    s = config_from_dict(raw, base_dir=example.parent).sampler
    assert (s.target_acceptance, s.draws, s.max_draws, s.max_wall_s, s.until_converged) == \
        (0.95, 20000, 20000, 3600.0, False)
    raw = _set(_set(_base(), "sampler.kind", "mala"), "sampler.target_acceptance", 0.6)
    assert config_from_dict(raw, base_dir=example.parent).sampler.target_acceptance == 0.6


@pytest.mark.parametrize("kind,key,value,needle", [
    ("hmc", None, None, 'sampler.kind: expects one of "nuts", "mala", got \'hmc\''),
    ("nuts", "max_draws", 999, "sampler.max_draws: expects an integer >= sampler.draws = 1000"),
    ("nuts", "max_wall_s", -5, "sampler.max_wall_s: expects a time >= 0 [s] (0 = no limit), got -5"),
    ("nuts", "thin", 2, 'sampler.thin: applies to sampler.kind = "mala" only, got it with kind = "nuts"'),
    ("nuts", "mass_matrix", "adaptive", 'sampler.mass_matrix: applies to sampler.kind = "mala" only'),
    ("mala", "warmup", 200, 'sampler.warmup: applies to sampler.kind = "nuts" only, got it with kind = "mala"'),
    ("mala", "until_converged", True, 'sampler.until_converged: applies to sampler.kind = "nuts" only'),
])
def test_sampler_kind_errors(example, kind, key, value, needle):
    raw = _set(_base(), "sampler.kind", kind)
    if key:
        raw["sampler"][key] = value
    with pytest.raises(ConfigError) as e:
        config_from_dict(raw, base_dir=example.parent)
    assert str(e.value).startswith(needle) and "\n" not in str(e.value), str(e.value)


def test_default_kind_named_in_the_error(example):
    with pytest.raises(ConfigError, match=r'^sampler\.burn_in_stages: .*kind = "nuts" \(the default\)$'):
        config_from_dict(_set(_base(), "sampler.burn_in_stages", 2), base_dir=example.parent)


@pytest.mark.parametrize("kind", ["nuts", "mala"])
def test_sampler_round_trip_writes_only_its_kind(example, tmp_path, kind):
    raw = _set(_base(), "sampler.kind", kind)
    raw["sampler"].update(dict(warmup=300, max_draws=5000, max_wall_s=60.5) if kind == "nuts" else
                          dict(burn_in_steps=40, thin=2, mass_matrix="adaptive"))
    cfg = config_from_dict(raw, base_dir=example.parent)
    written = tomllib.loads(cfg.to_toml_str())["sampler"]
    from nuker_mge_plugin.inference.config import SAMPLER_KIND_KEYS
    other = SAMPLER_KIND_KEYS["mala" if kind == "nuts" else "nuts"]
    assert written["kind"] == kind and not set(written) & set(other)
    assert set(SAMPLER_KIND_KEYS[kind]) - {"step_sizes"} <= set(written)
    out = tmp_path / "again" / "fit.toml"
    out.parent.mkdir()
    out.write_text(cfg.to_toml_str())
    assert load_config(out).sampler == cfg.sampler


@pytest.mark.parametrize("name", ["ngc4697_fit.toml", "ngc4697_fit_quick.toml"])
def test_shipped_fit_examples_parse(tmp_path, name):
    from pathlib import Path

    import nuker_mge_plugin
    src = Path(nuker_mge_plugin.__file__).parent / "examples" / name
    p = tmp_path / name
    p.write_text(src.read_text())
    cfg = load_config(p, check_files=False)
    s = cfg.sampler
    if name == "ngc4697_fit.toml":  # the demo: the new default, drawn until converged
        assert s.kind == "nuts" and s.until_converged and s.max_draws >= s.draws
    else:  # the smoke run: short, and never drawn until converged
        assert s.draws <= 50 and not s.until_converged
        assert s.kind == "mala" or s.warmup <= 50


def test_sampler_space_defaults_to_the_prior_box(example):
    assert config_from_dict(_base(), base_dir=example.parent).sampler.space == "box"
    s = config_from_dict(_set(_base(), "sampler.space", "logit"), base_dir=example.parent).sampler
    assert s.space == "logit"
    with pytest.raises(ConfigError, match=r"^sampler\.space: expects one of"):
        config_from_dict(_set(_base(), "sampler.space", "unit"), base_dir=example.parent)
    with pytest.raises(ConfigError, match=r'^sampler\.space: applies to sampler\.kind = "nuts" only'):
        config_from_dict(_set(_set(_base(), "sampler.kind", "mala"), "sampler.space", "box"), base_dir=example.parent)
