"""The package's layout shows its architecture: no import cycle between modules (imports inside
functions included), and the model-free layers import nothing of the physics above them."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "nuker_mge_plugin"


def _modules():
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def _imports(mods):
    """module -> the package's modules it imports anywhere in its text (a package's own submodules
    left out: an ``__init__`` re-exporting them is not a dependency on itself)."""
    graph = {}
    for mod, f in mods.items():
        here = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                deps.update(n for n in [name, *(f"{name}.{a.name}" for a in node.names)] if n in mods)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
        graph[mod] = {d for d in deps if d != mod and not d.startswith(mod + ".")}
    return graph


def _cycle(graph):
    """One import cycle as a list of modules, or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_no_import_cycle():
    graph = _imports(_modules())
    assert "nuker_mge_plugin.cli" in graph and graph["nuker_mge_plugin.cli"]   # the walk sees imports
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_sampling_is_model_free():
    """sampling/ may use the package's file and progress helpers, nothing of the physics or the pipeline."""
    graph = _imports(_modules())
    allowed = {"nuker_mge_plugin._files", "nuker_mge_plugin._progress"}
    for mod, deps in graph.items():
        if mod.startswith("nuker_mge_plugin.sampling"):
            outside = {d for d in deps if not d.startswith("nuker_mge_plugin.sampling")} - allowed
            assert not outside, (mod, sorted(outside))


def test_both_cell_models_follow_the_cell_model_protocol(tmp_path):
    """The visibility cells and an image cube's Fourier modes have what the fit uses of them."""
    import numpy as np
    from astropy.io import fits

    from nuker_mge_plugin.dynamics.coords import SkyGrid
    from nuker_mge_plugin.dynamics.gridder import grid_visibilities
    from nuker_mge_plugin.dynamics.visibilities import GriddedModel
    from nuker_mge_plugin.image import BeamFourierCells, read_image_cube
    from nuker_mge_plugin.model.cells import CellModel

    n, cell = 16, 0.5
    grid = SkyGrid(n, n, cell)
    rng = np.random.default_rng(0)
    umax = 0.5 / (cell * 4.84813681109536e-06)
    u, v = rng.uniform(-umax / 2, umax / 2, (2, 4000))
    vis = rng.normal(size=4000) + 1j * rng.normal(size=4000)
    gv = grid_visibilities(u, v, vis, np.ones(4000), np.zeros(4000, int), grid, 1)
    h = fits.Header()
    h["CTYPE1"], h["CDELT1"], h["CRPIX1"], h["CRVAL1"] = "RA---SIN", -cell / 3600, n // 2 + 1, 180.0
    h["CTYPE2"], h["CDELT2"], h["CRPIX2"], h["CRVAL2"] = "DEC--SIN", cell / 3600, n // 2 + 1, 10.0
    h["CTYPE3"], h["CRPIX3"], h["CRVAL3"], h["CDELT3"], h["CUNIT3"] = "VRAD", 1.0, 1300e3, -20e3, "m/s"
    h["RESTFRQ"], h["BUNIT"], h["BMAJ"], h["BMIN"], h["BPA"] = 230.538e9, "Jy/beam", 2 / 3600, 1.4 / 3600, 30.0
    fits.PrimaryHDU(np.zeros((3, n, n), np.float32), h).writeto(tmp_path / "c.fits")
    image_cells = BeamFourierCells(read_image_cube(tmp_path / "c.fits", rms_jy_beam=0.01), grid, noise="beam")
    for cells in (GriddedModel(gv, grid), image_cells):
        assert isinstance(cells, CellModel), type(cells)
        assert cells.vis.shape == cells.sigma.shape == cells.n_eff.shape == (cells.n_cells,)
    assert not isinstance(object(), CellModel)


def test_run_dir_states(tmp_path):
    from nuker_mge_plugin.pipeline.rundir import RunDir

    run = RunDir(str(tmp_path / "fit"))
    assert run.state() == "new" and not run.started and run.summary_json == tmp_path / "fit" / "summary.json"
    run.chains.mkdir(parents=True)
    assert run.state() == "resume" and run.started
    run.summary_json.write_text("{}")
    assert run.state() == "done"
