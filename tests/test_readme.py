"""README.rst as a new user meets it: every Python block runs as written (the README's and those of
docs/python.rst), every figure has a recipe, and the measurements live in docs/validation.rst."""

import importlib.metadata
import importlib.util
import os
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.rst"
DOCS = ROOT / "docs"
#: Files whose Python blocks are run: the README and the docs page of Python examples.
RUN_BLOCKS_OF = (README, DOCS / "python.rst")

# A block is skipped only when an RST comment right before it says why:
#   .. skip-test: gpu | long        never run here
#   .. requires: NAME>=MAJOR        run only when that host package is installed at that major version
_MARK = re.compile(r"^\.\. (skip-test|requires): *(.+?) *$")


def python_blocks(text):
    """(line number, code, {marker: value}) of every ``.. code-block:: python`` in ``text``."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        marks, j = {}, i - 1
        while j >= 0 and (not lines[j].strip() or _MARK.match(lines[j])):
            m = _MARK.match(lines[j])
            if m:
                marks[m.group(1)] = m.group(2)
            elif marks or j < i - 1:
                break  # only the comments directly above (one blank line apart) count
            j -= 1
        body, k = [], i + 1
        while k < len(lines) and (not lines[k].strip() or lines[k].startswith("   ")):
            body.append(lines[k])
            k += 1
        blocks.append((i + 1, textwrap.dedent("\n".join(body)).strip() + "\n", marks))
    return blocks


def _major(dist):
    try:
        return int(importlib.metadata.version(dist).split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


BLOCKS = [(f"{p.relative_to(ROOT)}:{line}", code, marks) for p in RUN_BLOCKS_OF
          for line, code, marks in python_blocks(p.read_text(encoding="utf-8"))]


def test_readme_has_python_blocks_and_markers_parse():
    assert sum(b[0].startswith("README.rst:") for b in BLOCKS) >= 2
    assert sum(b[0].startswith("docs/python.rst:") for b in BLOCKS) >= 3
    assert any("requires" in b[2] for b in BLOCKS if b[0].startswith("README.rst:"))
    text = "\n".join([
        "intro", "", ".. requires: kinms>=3", "", ".. code-block:: python", "", "   x = 1", "   y = 2", "",
        "after", "", ".. skip-test: gpu", "", ".. code-block:: python", "", "   raise SystemExit", "",
        ".. code-block:: python", "", "   z = 3", ""])
    got = python_blocks(text)
    assert [b[1] for b in got] == ["x = 1\ny = 2\n", "raise SystemExit\n", "z = 3\n"]
    assert [b[2] for b in got] == [{"requires": "kinms>=3"}, {"skip-test": "gpu"}, {}]


@pytest.mark.parametrize("where,code,marks", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_python_block_runs(where, code, marks, tmp_path, monkeypatch):
    if "skip-test" in marks:
        pytest.skip(f"{where} is marked skip-test: {marks['skip-test']}")
    if "requires" in marks:
        name, _, version = marks["requires"].partition(">=")
        have = _major(name.strip())
        if have is None or have < int(version):
            pytest.skip(f"{where} needs {marks['requires']} (installed: {have})")
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # blocks may write files (mge.save)
    exec(compile(code, where, "exec"), {"__name__": "__readme__"})


def _images(path):
    return re.findall(r"^\.\. image:: (\S+)$", path.read_text(encoding="utf-8"), flags=re.M)


def _readme_images():
    return _images(README)


def test_every_readme_figure_exists_and_has_a_recipe():
    """The README shows a few figures, the docs pages the rest: each one exactly a make_figures figure."""
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    images = _readme_images()
    assert images and all(p.startswith("docs/") for p in images) and len(images) <= 3
    assert {os.path.basename(p) for p in images} <= set(mf.FIGURES)
    in_docs = {p for page in sorted(DOCS.glob("*.rst")) for p in _images(page)}
    assert all("/" not in p for p in in_docs), in_docs  # pages sit beside the figures
    assert {os.path.basename(p) for p in images} | in_docs == set(mf.FIGURES)
    for p in [*images, *(f"docs/{name}" for name in in_docs)]:
        assert (ROOT / p).stat().st_size > 10_000, p
    assert {g for g, _ in mf.FIGURES.values()} == set(mf.GROUPS)
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^docs-figures:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert rule and "make_figures.py" in rule.group(1) and all(g in rule.group(1) for g in mf.GROUPS)


def test_docs_figures_quick_regenerates_demo_mge(tmp_path, monkeypatch):
    """``make docs-figures-quick``'s recipe draws the demo's figure (here into a scratch docs/)."""
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    monkeypatch.setattr(mf, "DOCS", str(tmp_path))
    assert mf.main(["quick"]) == 0
    png = tmp_path / "demo_mge.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["demo_mge.png"]  # no temporary file left


def test_docs_cited_instead_of_missing_files():
    """No file cites METRICS.md or DESIGN.md (not in the repository); the docs they became exist."""
    for name in ("metrics.rst", "conventions.rst", "file_formats.rst", "design.rst", "references.rst",
                 "validation.rst", "fitting.rst", "python.rst", "cli.rst", "install.rst", "api.rst"):
        assert (ROOT / "docs" / name).stat().st_size > 1000, name
    owned = [README, *sorted((ROOT / "nuker_mge_plugin").glob("*.py")), *sorted((ROOT / "tests").glob("*.py")),
             *sorted((ROOT / "nuker_mge_plugin" / "emulator").glob("*.py")),
             *sorted((ROOT / "nuker_mge_plugin" / "adapters").glob("*.py"))]
    bad = [f"{p.relative_to(ROOT)}:{i}" for p in owned if p.name != "test_readme.py"
           for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
           if "METRICS.md" in line or "DESIGN.md" in line]
    assert not bad, bad
    refs = (ROOT / "docs" / "references.rst").read_text(encoding="utf-8")
    assert "Neural Deprojection of Galaxy Stellar Mass Profiles" in refs and "Yantovski-Barth" in refs


#: Measurements the README used to quote, each now in docs/validation.rst beside its script.
MOVED_MEASUREMENTS = [
    "log10 M_BH = 8.103, 68% HDI 8.098–8.109, truth 8.110",       # the demo fit
    "validation/m5_recovery.py\n--cases sparse --seeds 21,22,23,24,25",  # overlap weights (M5)
    "8 prior draws x 200 Adam steps settled at log10 M_BH = 9.4",  # MAP screening
    "it predicts +0.0046 dex (+1.02 sigma) in log10 M_BH",          # sub-pixel check (M12)
    "3444 gradient evaluations",                                   # M7
    "72.5% +- 7.1% of the truths lie inside the 68%",              # M8 (Laplace)
    "60% +- 11% of the 20 truths",                                 # M8 (whole sampler)
    "65.8% of the truths' noise-free best fits lie",               # M10
    "4851 Fourier modes",                                          # NGC 4324
    "log10 M_BH = 8.120 (8.102–8.134",                             # kinms_fitter side by side
    "exact (default, mass-conserving)   7.2e-5      3.2e-3",       # M1 / M3 table
    "runs 1350 × faster than looping ``jampy.mge.vcirc``",         # M4
    "1.8% low at 3 × its largest σ",                               # M2
    "cube correlation ≥ 0.9998",                                   # cube vs KinMS
]


def _flat(text):
    return " ".join(text.split())


def test_measurements_moved_from_readme_to_validation_page():
    readme = _flat(README.read_text(encoding="utf-8"))
    validation = _flat((DOCS / "validation.rst").read_text(encoding="utf-8"))
    for quote in MOVED_MEASUREMENTS:
        assert _flat(quote) in validation, quote
        assert _flat(quote) not in readme, quote


def test_readme_is_a_users_page():
    """Short, the two commands of a fresh clone exactly, the workflows, the commands, how to cite."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert re.search(r"^   make demo   # ", text, flags=re.M) and re.search(r"^   make test   # ", text, flags=re.M)
    heads = re.findall(r"^(.+)\n-{3,}$", text, flags=re.M)
    for head in ("Install", "Fit ALMA visibilities", "Fit a cleaned data cube", "Command line", "Citing"):
        assert head in heads, heads
    assert "arXiv:2511.20746" in text and "NeurIPS 2025" in text
    assert 'a Hamiltonian (NUTS) sampler by default' in _flat(text)
    assert '``[sampler] kind = "mala"``' in text
    from nuker_mge_plugin.cli import build_parser
    commands = build_parser()._subparsers._group_actions[0].choices
    assert all(f"nuker-mge {c} " in text for c in commands), sorted(commands)


def test_readme_is_valid_restructuredtext():
    """PyPI renders long_description = file: README.rst; docutils must read it without a warning."""
    core = pytest.importorskip("docutils.core")
    import io
    errors = io.StringIO()
    core.publish_doctree(README.read_text(encoding="utf-8"),
                         settings_overrides={"warning_stream": errors, "report_level": 2, "halt_level": 5})
    assert not errors.getvalue(), errors.getvalue()
