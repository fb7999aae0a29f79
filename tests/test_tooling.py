"""Tooling a fresh clone relies on: `make test` lints then tests, markers are strict, pins agree."""

import configparser
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def _make_recipe(target):
    text = (ROOT / "Makefile").read_text()
    m = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n)*)", text, flags=re.M)
    assert m, target
    return m.group(1).split(), m.group(2)


def test_make_test_runs_ruff_then_pytest():
    deps, recipe = _make_recipe("test")
    assert "lint" in deps and "pytest" in recipe
    _, lint = _make_recipe("lint")
    assert "ruff check ." in lint
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, flags=re.M)


def test_pytest_strict_markers_and_every_declared_marker_used():
    opts = _setup_cfg()["tool:pytest"]
    assert "--strict-markers" in opts["addopts"].split()
    declared = {ln.split(":")[0].strip() for ln in opts["markers"].strip().splitlines()}
    used = set()
    for p in (ROOT / "tests").glob("*.py"):
        used |= set(re.findall(r"pytest\.mark\.([a-z_]+)", p.read_text()))
    used |= {m for m in declared if any(f'"{m}" in item.keywords' in p.read_text()
                                       for p in (ROOT / "tests").glob("conftest.py"))}
    builtin = {"parametrize", "skipif", "skip", "xfail", "usefixtures", "filterwarnings"}
    assert declared <= used, f"declared but unused markers: {declared - used}"
    assert used - builtin <= declared, f"undeclared markers: {used - builtin - declared}"


def test_ruff_configured_and_pinned_everywhere_the_test_extra_is_installed():
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]
    assert conf["line-length"] == 120
    assert {"E", "F", "W", "N"} <= set(conf["lint"]["select"])
    assert {"N803", "N806", "E741"} <= set(conf["lint"]["ignore"])
    assert "exclude" not in conf and "per-file-ignores" not in conf["lint"]  # nothing of ours is exempt
    extras = _setup_cfg()["options.extras_require"]["test"].split()
    assert any(r.startswith("ruff") for r in extras)
    pins = {}
    for p in sorted((ROOT / "compat").glob("*.txt")):
        text = p.read_text()
        m = re.search(r"^ruff==(\S+)$", text, flags=re.M)
        assert m, f"{p.name} installs the test extra but does not pin ruff"
        pins[p.name] = m.group(1)
    assert len(set(pins.values())) == 1, pins


@pytest.mark.skipif(shutil.which("ruff", path=str(Path(sys.executable).parent)) is None
                    and subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                       capture_output=True).returncode != 0, reason="ruff not installed")
def test_ruff_configuration_is_live(tmp_path):
    """The repository's configuration flags what it should (and not the physics names it allows)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\n\ndef f(R, cellSize):\n    Sigma_b = R\n    l = cellSize\n    return Sigma_b + l\n"
                   + "x = 1;  y = 2\n" + "z = '" + "a" * 130 + "'\n")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config",
                           str(ROOT / "pyproject.toml"), "--output-format", "concise", str(bad)],
                          capture_output=True, text=True, cwd=ROOT)
    codes = set(re.findall(r":\d+:\d+: ([A-Z]+\d+)", proc.stdout))
    assert proc.returncode == 1 and codes == {"F401", "E702", "E501"}, proc.stdout + proc.stderr
