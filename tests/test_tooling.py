"""Tooling a fresh clone relies on: `make test` lints then tests, markers are strict, pins agree."""

import configparser
import io
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


def test_make_test_builds_the_docs_with_warnings_as_errors():
    deps, _ = _make_recipe("test")
    assert "docs" in deps
    _, docs = _make_recipe("docs")
    assert "sphinx-build -W --keep-going" in docs and "-b html docs docs/_build/html" in docs
    makefile = (ROOT / "Makefile").read_text()
    extras = re.search(r"^EXTRAS \?= (\S+)$", makefile, flags=re.M).group(1).split(",")
    assert "docs" in extras and "docs" in _setup_cfg()["options.extras_require"]
    pinned = (ROOT / "compat" / "py311-jampy8-kinms3.txt").read_text()
    assert re.search(r"^# extras: (\S+)$", pinned, flags=re.M).group(1).split(",") == extras
    for tool in ("sphinx", "docutils", "numpydoc", "sphinx-argparse", "furo"):
        assert re.search(rf"^{tool}==\S+$", pinned, flags=re.M), tool
    assert "docs/_build/" in (ROOT / ".gitignore").read_text().splitlines()
    conf = (ROOT / "docs" / "conf.py").read_text()
    assert "sphinx.ext.autodoc" in conf and "numpydoc" in conf and "sphinxarg.ext" in conf


def test_python_requires_has_tomllib():
    """The configuration reader (schema.read_toml) imports tomllib (Python 3.11+): setup.cfg must not promise 3.10."""
    assert _setup_cfg()["options"]["python_requires"].strip() == ">=3.11"
    assert re.search(r"^import tomllib$|^from tomllib import", (ROOT / "nuker_mge_plugin" / "schema.py"
                                                                 ).read_text(), flags=re.M)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _run_bar(stream, **kwargs):
    from nuker_mge_plugin._progress import progress_bar

    with progress_bar(total=50, file=stream, desc="work", mininterval=0, miniters=1, **kwargs) as bar:
        shown = not bar.disable  # (closing a bar disables it)
        for _ in range(50):
            bar.update(1)
    return shown, stream.getvalue()


def test_progress_bar_writes_no_frames_to_a_file_or_pipe(monkeypatch):
    monkeypatch.delenv("NUKER_MGE_PROGRESS", raising=False)
    shown, out = _run_bar(io.StringIO())
    assert not shown and "\r" not in out and out == ""


def test_progress_bar_on_a_terminal_and_when_forced(monkeypatch):
    monkeypatch.delenv("NUKER_MGE_PROGRESS", raising=False)
    shown, out = _run_bar(_Terminal())
    assert shown and "\r" in out and "50/50" in out
    monkeypatch.setenv("NUKER_MGE_PROGRESS", "1")  # a batch job that wants its bars anyway
    shown, out = _run_bar(io.StringIO())
    assert shown and "\r" in out
    shown, out = _run_bar(io.StringIO(), disable=True)  # --no-progress still wins
    assert not shown and out == ""
    monkeypatch.setenv("NUKER_MGE_PROGRESS", "0")
    shown, out = _run_bar(_Terminal())
    assert not shown and out == ""


def test_progress_bar_throttles_and_wraps_iterables(monkeypatch):
    from nuker_mge_plugin import _progress

    monkeypatch.setenv("NUKER_MGE_PROGRESS", "1")
    bar = _progress.progress_bar(range(3), file=io.StringIO())
    assert bar.mininterval == _progress.MININTERVAL == 0.5
    assert list(bar) == [0, 1, 2]
    monkeypatch.delenv("NUKER_MGE_PROGRESS")
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # the default stream: a pipe here
    bar = _progress.progress_bar(total=3)
    assert bar.disable
    bar.close()
