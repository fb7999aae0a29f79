"""README.rst as a new user meets it: every Python block runs as written, every figure has a recipe."""

import importlib.metadata
import importlib.util
import os
import re
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.rst"

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


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_readme_has_python_blocks_and_markers_parse():
    assert len(BLOCKS) >= 3
    text = "\n".join([
        "intro", "", ".. requires: kinms>=3", "", ".. code-block:: python", "", "   x = 1", "   y = 2", "",
        "after", "", ".. skip-test: gpu", "", ".. code-block:: python", "", "   raise SystemExit", "",
        ".. code-block:: python", "", "   z = 3", ""])
    got = python_blocks(text)
    assert [b[1] for b in got] == ["x = 1\ny = 2\n", "raise SystemExit\n", "z = 3\n"]
    assert [b[2] for b in got] == [{"requires": "kinms>=3"}, {"skip-test": "gpu"}, {}]


@pytest.mark.parametrize("line,code,marks", BLOCKS, ids=[f"README.rst:{b[0]}" for b in BLOCKS])
def test_readme_python_block_runs(line, code, marks, tmp_path, monkeypatch):
    if "skip-test" in marks:
        pytest.skip(f"README.rst:{line} is marked skip-test: {marks['skip-test']}")
    if "requires" in marks:
        name, _, version = marks["requires"].partition(">=")
        have = _major(name.strip())
        if have is None or have < int(version):
            pytest.skip(f"README.rst:{line} needs {marks['requires']} (installed: {have})")
    import matplotlib
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)  # blocks may write files (mge.save)
    exec(compile(code, f"README.rst:{line}", "exec"), {"__name__": "__readme__"})


def _readme_images():
    return re.findall(r"^\.\. image:: (\S+)$", README.read_text(encoding="utf-8"), flags=re.M)


def test_every_readme_figure_exists_and_has_a_recipe():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    images = _readme_images()
    assert images and all(p.startswith("docs/") for p in images)
    assert sorted(os.path.basename(p) for p in images) == sorted(mf.FIGURES)
    for p in images:
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
    for name in ("metrics.rst", "conventions.rst", "file_formats.rst", "design.rst", "references.rst"):
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
