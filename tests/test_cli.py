import json
import re
import subprocess
import sys
import warnings

import pytest
import torch

from nuker_mge_plugin import MGE, __version__
from nuker_mge_plugin.cli import build_parser, main

ARGS = ["--sigma-b", "5e4", "--r-b", "1.2", "--alpha", "2", "--beta", "1.9", "--gamma", "0.3", "--qobs", "0.7",
        "--distance", "11.4"]


def test_convert_writes_table_and_plot(tmp_path, capsys):
    out, png = tmp_path / "m.txt", tmp_path / "m.png"
    assert main(["convert", *ARGS, "-o", str(out), "--inc", "70", "--mbh", "1e8", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "within 1\"" in text and "within 10\"" in text and "max |MGE/Nuker - 1|" in text and "km/s" in text
    assert MGE.load(out).table.shape == (64, 3)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo(tmp_path, capsys):
    """The demo's whole story in its quick form: MGE, KinMS mock, gridding, MAP, Fisher, MALA, results."""
    assert main(["demo", "--quick", "--no-progress", "--out", str(tmp_path)]) == 0
    mge = MGE.load(tmp_path / "ngc4697_like_mge.txt")
    assert mge.distance == 11.4
    v = mge.vcirc([5.0], 76.0, 1.3e8)
    assert 150 < v[0] < 400   # a massive early-type galaxy
    assert (tmp_path / "ngc4697_like_mge.png").exists()
    text = capsys.readouterr().out
    assert "log10 M_BH = " in text and "truth 8.110" in text and "R-hat" in text
    fit = tmp_path / "fit_quick"
    summary = json.loads((fit / "summary.json").read_text())
    # 20 draws are not converged: the demo says so in one warning line (the last), and exits 0 all the same
    assert not summary["diagnostics"]["converged"] and summary["diagnostics"]["failing"]
    last = text.strip().splitlines()[-1]
    assert last.startswith("warning: the chains have NOT converged") and "Do not quote" in last, last
    assert last in summary["warnings"]
    assert summary["sampler"]["kind"] in ("nuts", "mala") and summary["sampler"]["draws_per_chain"] == 20
    assert set(summary["parameters"]) == {"log10_mbh", "inclination", "pa", "systemic_velocity", "flux"}
    assert summary["chains"] == 2 and summary["draws"] == 20 and summary["truth"]["log10_mbh"]["value"] == 8.11
    for name in ("posterior.nc", "config.toml", "map.json", "corner.png", "mbh.png", "vcirc.png", "traces.png",
                 "maps.png"):
        assert (fit / name).stat().st_size > 0, name
    # the standard products (inference/products.py)
    for name in ("data_cube.fits", "model_cube.fits", "residual_cube.fits", "model_sky.fits", "data_mom0.fits",
                 "data_mom1.fits", "pv_data.fits", "pv.png", "results.ecsv"):
        assert (fit / name).stat().st_size > 0, name
    assert "log10_mbh" in (fit / "results.ecsv").read_text()


@pytest.mark.parametrize("bad,match", [
    (["--beta", "0.1"], "beta"), (["--qobs", "2"], "qobs"), (["--distance", "-3"], "distance"),
    (["--alpha", "nan"], "alpha"), (["--r-b", "1000"], "r_b"),
])
def test_bad_parameters_one_line_exit_2(tmp_path, bad, match):
    args = list(ARGS)
    i = args.index(bad[0])
    args[i + 1] = bad[1]
    proc = subprocess.run([sys.executable, "-m", "nuker_mge_plugin.cli", "convert", *args, "-o",
                           str(tmp_path / "x.txt")], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and match in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.txt").exists()


def test_console_script_installed():
    import shutil
    exe = shutil.which("nuker-mge", path=str(__import__("pathlib").Path(sys.executable).parent))
    assert exe is not None
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "convert" in proc.stdout


def _run(argv, capsys):
    """``main(argv)``: (exit status, stdout, stderr lines)."""
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err.strip().splitlines()


def _one_line_error(rc, err, *needles):
    assert rc == 2, (rc, err)
    assert len(err) == 1 and err[0].startswith("nuker-mge: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])


# ----------------------------------------------------------------------------- item 3: values refused


@pytest.mark.parametrize("extra,needle", [
    (["--inc", "76", "--mbh", "-5"], "--mbh -5 is invalid"),
    (["--inc", "76", "--mbh", "nan"], "--mbh nan is invalid"),
    (["--inc", "76", "--mbh", "inf"], "--mbh inf is invalid"),
    (["--inc", "76", "--mbh", "1e300"], "--mbh 1e+300 is invalid"),
    (["--inc", "nan"], "--inc nan is invalid"),
    (["--inc", "120"], "--inc 120 is invalid"),
    (["--inc", "-76"], "--inc -76 is invalid"),
    (["--inc", "30"], "cannot deproject"),
    (["--mbh", "1e8"], "--mbh needs --inc"),
])
def test_velocity_options_refused_before_writing(tmp_path, capsys, extra, needle):
    out = tmp_path / "i.txt"
    rc, text, err = _run(["convert", *ARGS, "-o", str(out), *extra], capsys)
    _one_line_error(rc, err, needle)
    assert text == "" and list(tmp_path.iterdir()) == []


def test_faster_than_light_refused(tmp_path, capsys):
    args = list(ARGS)
    args[1] = "1e12"  # the largest sigma_b nuker_to_mge accepts: v_c ~ 1e6 km/s
    rc, _, err = _run(["convert", *args, "-o", str(tmp_path / "i.txt"), "--inc", "70"], capsys)
    _one_line_error(rc, err, "faster than light")
    assert list(tmp_path.iterdir()) == []


def test_sigma_b_beyond_float64_refused(tmp_path, capsys):
    args = list(ARGS)
    args[1] = "1e300"
    rc, _, err = _run(["convert", *args, "-o", str(tmp_path / "i.txt"), "--inc", "70"], capsys)
    _one_line_error(rc, err, "sigma_b", "1e+12")


def test_velocities_printed_with_four_digits(tmp_path, capsys):
    rc, text, _ = _run(["convert", *ARGS, "-o", str(tmp_path / "i.txt"), "--inc", "70", "--mbh", "1e8"], capsys)
    assert rc == 0
    line = next(ln for ln in text.splitlines() if ln.startswith("jampy v_c"))
    values = line.split(": ", 1)[1].removesuffix(" km/s").split(", ")
    assert len(values) == 3 and all(len(v.replace(".", "")) <= 4 for v in values), line
    assert "M_BH = 1e+08 Msun" in line


# ----------------------------------------------------------------------------- item 4: clear messages


@pytest.mark.parametrize("value,needle", [("-6e4", "sigma_b = -60000 is invalid: it must be > 0"),
                                          ("-inf", "sigma_b = -inf is invalid"),
                                          ("-.5", "sigma_b = -0.5 is invalid"),
                                          ("-6E+4", "sigma_b = -60000 is invalid")])
def test_negative_numbers_are_values(tmp_path, capsys, value, needle):
    """'--sigma-b -6e4' reaches the range check (argparse alone reads it as a missing value)."""
    args = list(ARGS)
    args[1] = value
    rc, _, err = _run(["convert", *args, "-o", str(tmp_path / "i.txt")], capsys)
    _one_line_error(rc, err, needle)
    assert "expected one argument" not in err[0]


def test_nn_backend_error_names_the_option(tmp_path, capsys):
    args = list(ARGS)
    args[args.index("--alpha") + 1] = "20"
    rc, _, err = _run(["convert", *args, "--backend", "nn", "-o", str(tmp_path / "i.txt")], capsys)
    _one_line_error(rc, err, "training box", "--backend exact")
    assert "backend='exact'" not in err[0]


def _png_width(path):
    import matplotlib.image
    return matplotlib.image.imread(str(path)).shape[1]


def test_plot_without_inc_draws_the_profile_only(tmp_path, capsys):
    png = tmp_path / "p.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log-scale or empty-panel warning
        rc, text, _ = _run(["convert", *ARGS, "-o", str(tmp_path / "i.txt"), "--plot", str(png)], capsys)
    assert rc == 0 and f"wrote {png}" in text and "km/s" not in text
    assert _png_width(png) < 700  # one column: no velocity panel drawn for an inclination nobody gave


def test_plot_with_inc_and_no_black_hole_has_no_empty_panel(tmp_path, capsys):
    png = tmp_path / "p.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rc, text, _ = _run(["convert", *ARGS, "-o", str(tmp_path / "i.txt"), "--inc", "70", "--plot", str(png)],
                           capsys)
    assert rc == 0 and "M_BH = 0 Msun" in text
    assert _png_width(png) > 1000


def test_plot_format_from_extension_and_message_names_the_real_file(tmp_path, capsys):
    pdf = tmp_path / "p.pdf"
    rc, text, _ = _run(["convert", *ARGS, "-o", str(tmp_path / "i.txt"), "--plot", str(pdf)], capsys)
    assert rc == 0 and f"wrote {pdf}" in text and pdf.read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.txt", "p.pdf"]


@pytest.mark.parametrize("beta,wording", [("1.8", "whole 64-Gaussian table (cut at sigma = 10 kpc"),
                                          ("2.0", "total diverges for beta = 2 <= 2"),
                                          ("2.6", "Msun, total ")])
def test_total_mass_wording(tmp_path, capsys, beta, wording):
    args = list(ARGS)
    args[args.index("--beta") + 1] = beta
    rc, text, _ = _run(["convert", *args, "-o", str(tmp_path / "i.txt")], capsys)
    assert rc == 0 and wording in text, text


# ----------------------------------------------------------------------------- item 5: help and version


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"nuker-mge {__version__}"


def test_bare_command_prints_usage_and_commands(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: nuker-mge")
    for cmd in ("convert", "mock", "fit", "demo", "train"):
        assert re.search(rf"^\s+{cmd}\s+\S", err, flags=re.M), cmd


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return parser, sub.choices


def test_help_texts_show_defaults_and_no_rst(capsys):
    parser, subs = _subparsers()
    assert "``" not in parser.format_help() and "nuker-mge COMMAND --help" in parser.format_help()
    for name, p in subs.items():
        text = " ".join(p.format_help().split())
        assert "``" not in text, name
        for action in p._actions:
            if action.help is None or not action.option_strings or action.required:
                continue
            if action.default not in (None, False) and action.default is not argparse_suppress():
                assert f"(default: {action.default})" in text, (name, action.dest)
    conv = " ".join(subs["convert"].format_help().split())
    assert "(default: exact)" in conv and "(default: None)" not in conv


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


def test_every_option_documented():
    _, subs = _subparsers()
    for name, p in subs.items():
        for action in p._actions:
            assert action.help, (name, action.dest)  # --help included
    train = subs["train"]
    assert len([a for a in train._actions if a.option_strings]) >= 30


# ----------------------------------------------------------------------------- train's command line


@pytest.mark.parametrize("bad,needle", [
    (["--minutes", "-1"], "--minutes: -1 is invalid"), (["--minutes", "0"], "--minutes: 0 is invalid"),
    (["--minutes", "nan"], "--minutes: nan is invalid"), (["--steps", "0"], "--steps: 0 is invalid"),
    (["--steps", "2.5"], "--steps: '2.5' is not an integer"), (["--steps", "5", "--batch", "-3"], "--batch"),
    (["--steps", "5", "--lr", "0"], "--lr"), (["--steps", "5", "--hard-fraction", "1"], "--hard-fraction"),
])
def test_train_refuses_bad_numbers(tmp_path, capsys, bad, needle):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exc:
        main(["train", "--out", str(out), *bad])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists()


@pytest.mark.parametrize("extra,needle", [
    ([], "give --minutes or --steps"),
    (["--steps", "5", "--lr", "1e-4", "--lr-min", "1e-3"], "--lr-min"),
    (["--steps", "5", "--hard-fraction", "0.5", "--hard-pool", "10", "--hard-keep", "20"], "--hard-keep"),
    (["--steps", "5", "--init-from", "no/such/file.pt"], "--init-from"),
])
def test_train_refuses_inconsistent_options_before_creating_out(tmp_path, capsys, extra, needle):
    out = tmp_path / "run"
    rc, _, err = _run(["train", "--out", str(out), *extra], capsys)
    _one_line_error(rc, err, needle)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_train_cuda_without_gpu_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    rc, _, err = _run(["train", "--out", str(out), "--device", "cuda", "--steps", "5"], capsys)
    _one_line_error(rc, err, "--device cuda", "no CUDA device")
    assert not out.exists()


def test_train_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("keep")
    rc, _, err = _run(["train", "--out", str(f), "--steps", "5"], capsys)
    _one_line_error(rc, err, "is not a folder")
    assert f.read_text() == "keep"


def test_train_module_entry_point_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nuker_mge_plugin.emulator.train", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip() == "nuker-mge train: error: give --minutes or --steps"


# ----------------------------------------------------------------------------- fit --strict


@pytest.fixture
def fake_fit(monkeypatch):
    """``nuker-mge fit`` with the fit replaced: run_fit returns a summary whose verdict the test picks."""
    import nuker_mge_plugin.inference.config as config
    import nuker_mge_plugin.inference.fit as fit
    calls = {}

    def run_fit(cfg, out_dir=None, *, resume=False, progress=True, log=print):
        calls.update(cfg=cfg, out_dir=out_dir, resume=resume, progress=progress)
        log("max R-hat 1.300, ...; wrote out")  # what the real fit prints last before the verdict
        if not calls["converged"]:
            log("warning: the chains have NOT converged (...)")
        return {"diagnostics": {"converged": calls["converged"]}}

    monkeypatch.setattr(config, "load_config", lambda path: f"config from {path}")
    monkeypatch.setattr(fit, "run_fit", run_fit)
    return calls


@pytest.mark.parametrize("strict,converged,status", [(True, False, 3), (True, True, 0), (False, False, 0),
                                                     (False, True, 0)])
def test_fit_strict_exit_status(fake_fit, capsys, strict, converged, status):
    fake_fit["converged"] = converged
    argv = ["fit", "cfg.toml", "--out", "o", "--no-progress"] + (["--strict"] if strict else [])
    rc, text, err = _run(argv, capsys)
    assert rc == status and fake_fit["cfg"] == "config from cfg.toml" and fake_fit["out_dir"] == "o"
    assert ("NOT converged" in text) is (not converged)  # the warning is printed either way ...
    # ... and with --strict one line on stderr says why the exit status is 3
    assert err == (["nuker-mge: the chains have not converged (--strict): exit status 3"] if status == 3 else [])


def test_fit_strict_help():
    _, subs = _subparsers()
    text = " ".join(subs["fit"].format_help().split())
    assert "--strict" in text and "exit status 3 when the chains have not converged" in text
    assert "R-hat <= 1.01" in text and "warning:" in text
