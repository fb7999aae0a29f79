"""Configuration keys are declared once (nuker_mge_plugin/schema.py): the reader, the valid keys,
the reference docs and the --print-config template all come from the declarations."""

import dataclasses
import tomllib

import pytest

from nuker_mge_plugin import mock, survey
from nuker_mge_plugin.cli import main
from nuker_mge_plugin.config_reference import config_reference
from nuker_mge_plugin.inference import config as C
from nuker_mge_plugin.schema import REQUIRED, Section, keys_of

ALL_SECTIONS = [*C.SECTIONS, *survey.SECTIONS, ("observation", mock.MockObservationTable, "")]


def _minimal():
    return {"data": {"path": "obs.npz"}, "galaxy": {"distance_mpc": 11.4},
            "model": {"cell_arcsec": 0.1, "n_pix": 64}}


@pytest.mark.parametrize("name, cls", [(n, c) for n, c, _ in ALL_SECTIONS])
def test_every_key_is_declared_documented_and_its_default_passes_its_own_check(name, cls):
    keys = keys_of(cls)
    assert keys and set(keys) <= {f.name for f in dataclasses.fields(cls)}
    for k, (f, spec) in keys.items():
        assert len(spec.doc) > 10 and "  " not in spec.doc, (name, k)
        if f.default is REQUIRED or f.default is None or spec.kind == "custom":
            continue
        if spec.kind == "choice":
            assert f.default in spec.choices, (name, k)
        # the declared default, written in a file, is accepted
        raw = {k: list(f.default) if isinstance(f.default, tuple) else f.default}
        assert Section(name, raw, tuple(keys)).value(k, spec, REQUIRED) == f.default, (name, k)


def test_reader_defaults_are_the_declared_defaults():
    cfg = C.config_from_dict(_minimal(), check_files=False)
    dynamic = {"max_draws", "max_halfwidth"}   # declared with default_text: they depend on other keys
    for name, cls, _ in C.SECTIONS:
        sec = getattr(cfg, name)
        for k, (f, spec) in keys_of(cls).items():
            if f.default is REQUIRED or k in dynamic or (name, k) == ("data", "path"):
                continue
            assert getattr(sec, k) == f.default, (name, k, getattr(sec, k), f.default)
    assert C._SECTION_KEYS["sampler"] == tuple(keys_of(C.SamplerConfig))


def test_print_config_template_reads_back_and_names_every_key(capsys):
    assert main(["fit", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert text == C.config_template()
    for name, cls, _ in C.SECTIONS:
        assert f"[{name}]" in text
        for k in keys_of(cls):
            assert f"{k} = " in text, (name, k)
    raw = tomllib.loads(text)
    for sec, d in _minimal().items():
        raw[sec].update(d)
    cfg = C.config_from_dict(raw, check_files=False)
    assert cfg.sampler.kind == "nuts" and cfg.priors["log10_mbh"].low == C.TABLE1["log10_mbh"][0]
    default = C.config_from_dict(_minimal(), check_files=False)   # the template is the defaults:
    assert dataclasses.replace(cfg, priors=None) == dataclasses.replace(default, priors=None)
    ranges = [[(p.name, p.kind, p.low, p.high, p.value) for p in c.priors] for c in (cfg, default)]
    assert ranges[0] == ranges[1]


@pytest.mark.parametrize("which", ["fit", "survey", "mock"])
def test_reference_names_every_key(which):
    text = config_reference(which)
    sections = {"fit": C.SECTIONS, "survey": survey.SECTIONS,
                "mock": [("observation", mock.MockObservationTable, "")]}[which]
    for name, cls, _ in sections:
        assert f".. rubric:: [{name}]" in text
        for k in keys_of(cls):
            assert f"``{k}``" in text, (which, name, k)
    if which == "fit":
        assert all(f"``{n}``" in text for n in C.TABLE1)
    with pytest.raises(ValueError, match="which"):
        config_reference("other")


def test_mock_file_errors_name_the_key(tmp_path):
    p = tmp_path / "m.toml"
    truth = "\n".join(f"{k} = {0.5 * (lo + hi)}" for k, (lo, hi, _, _) in C.TABLE1.items())
    p.write_text(f"[galaxy]\ndistance_mpc = 11.4\n[truth]\n{truth}\n[observation]\nn_antt = 3\n")
    with pytest.raises(ValueError, match=r"observation\.n_antt: unknown key \(did you mean observation\.n_ant\?\)"):
        mock.load_mock_config(p)
    p.write_text(f"[galaxy]\ndistance_mpc = 11.4\n[truth]\n{truth}\n[observation]\nn_pix = 4\nseed = 3\n")
    with pytest.raises(ValueError, match=r"observation\.n_pix: expects an integer >= 8, got 4"):
        mock.load_mock_config(p)
    p.write_text(f"[galaxy]\ndistance_mpc = 11.4\n[truth]\n{truth}\n[observation]\nseed = 3\nha_range_h = [-1, 1]\n")
    truth_, d, obs = mock.load_mock_config(p)
    assert obs == {"seed": 3, "ha_range_h": (-1.0, 1.0)} and d == 11.4 and len(truth_) == 15
