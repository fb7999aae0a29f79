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
