import json
import subprocess
import sys

import numpy as np
import pytest

from nuker_mge_plugin import MGE
from nuker_mge_plugin.cli import main

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
    assert set(summary["parameters"]) == {"log10_mbh", "inclination", "pa", "systemic_velocity", "flux"}
    assert summary["chains"] == 2 and summary["draws"] == 20 and summary["truth"]["log10_mbh"]["value"] == 8.11
    for name in ("posterior.nc", "config.toml", "map.json", "corner.png", "mbh.png", "vcirc.png", "traces.png",
                 "maps.png"):
        assert (fit / name).stat().st_size > 0, name


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
