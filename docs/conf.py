"""Sphinx configuration of the nuker-mge-plugin documentation.

``make docs`` runs ``sphinx-build -W --keep-going -b html docs docs/_build/html``: every warning
raised by a page of this folder fails the build. The package's docstrings are written as plain
text as much as reStructuredText (``|V - M|^2``, aligned tables, underlined sub-headings), and
they are not edited from here: :func:`_prepare_docstring` adjusts the little that would render
badly (absolute-value bars, short underlines, free-form sections that numpydoc would drop), and
:class:`_DocstringMarkupFilter` keeps the remaining docutils markup complaints about *docstrings*
(never about the pages here, never autodoc's import errors) from counting as warnings;
``NUKER_MGE_DOCS_STRICT=1 make docs`` lists them.
"""

import importlib
import logging
import os
import pkgutil
import re
import sys
import warnings

from sphinx.util.docutils import SphinxDirective

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import nuker_mge_plugin  # noqa: E402

project = "nuker-mge-plugin"
author = "the nuker-mge-plugin developers"
copyright = "2025, " + author
version = release = nuker_mge_plugin.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinxarg.ext",
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path = []
html_theme = "furo"
html_title = f"nuker-mge-plugin {release}"
html_static_path = []
# Docstrings and --help texts are full of options (--inc) and quotes in code: no typographic changes.
smartquotes = False

# autodoc: members in source order, one entry per object (packages are documented without their
# re-exported members; api.rst documents each object in the module that defines it).
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True, "ignore-module-all": True}
autodoc_typehints = "none"

# numpydoc: the package's docstrings follow its section layout (Parameters / Returns / Raises).
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# numpydoc also parses each docstring for the signature, and says so on stderr when a section is
# not one of its own; _prepare_docstring keeps those sections' text, so the notices are noise.
warnings.filterwarnings("ignore", message=r"(Unknown section|potentially wrong underline)",
                        category=UserWarning, module=r"numpydoc\.docscrape")

# Cross-references to names the docs do not define are not errors; nor is a docstring's short
# reference that two modules could answer (``mala``: inference.mala re-exports sampling.mala).
nitpicky = False
suppress_warnings = ["ref.python"]

# Section names numpydoc keeps (any other underlined heading in a class or function docstring would
# be dropped with its text: those are turned into rubrics under Notes instead).
_NUMPYDOC_SECTIONS = {
    "Parameters", "Returns", "Yields", "Receives", "Raises", "Warns", "Other Parameters", "Attributes",
    "Methods", "See Also", "Notes", "Warnings", "References", "Examples", "Signature",
}
_UNDERLINE = re.compile(r"^\s*([-=~^])\1{2,}\s*$")
_PROTECTED = re.compile(r"``.*?``|`[^`]*`")  # inline literals and interpreted text keep their bars


def _escape_bars(line):
    """Escape ``|`` outside inline literals (``|x|`` is an absolute value, not a substitution)."""
    stripped = line.lstrip()
    if "|" not in line or stripped == "|" or stripped.startswith(("| ", "+-", "+=")):  # line blocks, grid tables
        return line
    out, pos = [], 0
    for m in _PROTECTED.finditer(line):
        out.append(line[pos:m.start()].replace("|", r"\|"))
        out.append(m.group(0))
        pos = m.end()
    out.append(line[pos:].replace("|", r"\|"))
    return "".join(out)


def _indent(line):
    return len(line) - len(line.lstrip())


def _prepare_docstring(app, what, name, obj, options, lines):
    """Make a plain-text docstring safe for reStructuredText without changing its words."""
    # 1. absolute-value bars, outside literal blocks (the lines after a paragraph ending in '::')
    literal_indent = None
    for i, line in enumerate(lines):
        if literal_indent is not None:
            if line.strip() and _indent(line) <= literal_indent:
                literal_indent = None
            else:
                continue
        lines[i] = _escape_bars(line)
        if line.rstrip().endswith("::"):
            literal_indent = _indent(line)
    # 2. underlines shorter than their heading are lengthened
    for i in range(1, len(lines)):
        m = _UNDERLINE.match(lines[i])
        title = lines[i - 1]
        if m and title.strip() and not _UNDERLINE.match(title) and len(lines[i].rstrip()) < len(title.rstrip()):
            lines[i] = lines[i].rstrip() + m.group(1) * (len(title.rstrip()) - len(lines[i].rstrip()))
    if what == "module":
        return  # module docstrings are passed through as reStructuredText, headings included
    # 3. free-form sections of classes and functions ('Call', 'Memory', ...): under Notes
    heads = [i for i in range(len(lines) - 1)
             if lines[i].strip() and _UNDERLINE.match(lines[i + 1]) and lines[i + 1].strip()[0] == "-"
             and (i == 0 or not lines[i - 1].strip())]
    if not any(lines[i].strip() not in _NUMPYDOC_SECTIONS for i in heads):
        return
    bounds = heads + [len(lines)]
    head, known, extra = lines[:heads[0]], [], []
    for a, b in zip(bounds[:-1], bounds[1:]):
        title, body = lines[a].strip(), lines[a + 2:b]
        if title in _NUMPYDOC_SECTIONS:
            known.append((title, body))
        else:
            extra += ["", f".. rubric:: {title}", "", *body]
    for k, (title, body) in enumerate(known):
        if title == "Notes":
            known[k] = (title, [*body, *extra])
            break
    else:
        known.append(("Notes", extra))
    new = list(head)
    for title, body in known:
        new += [title, "-" * len(title), *body]
        if new[-1].strip():
            new.append("")
    lines[:] = new


class _DocstringMarkupFilter(logging.Filter):
    """Drop docutils' markup warnings located in a Python docstring; everything else goes through."""

    def filter(self, record):
        location = str(getattr(record, "location", "") or "")
        return not (getattr(record, "type", None) == "docutils" and "docstring of " in location)


class PackageModules(SphinxDirective):
    """``.. package-modules:: PACKAGE``: an ``automodule`` for each public sub-module, found at build time.

    For a package whose modules are still moving (``sampling``): a module added or renamed is
    documented without editing api.rst.
    """

    required_arguments = 1

    def run(self):
        package = importlib.import_module(self.arguments[0])
        names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))
        # a module that moved stays importable under its old name as an alias of the new one: document it once
        names = [n for n in names if importlib.import_module(f"{package.__name__}.{n}").__name__
                 == f"{package.__name__}.{n}"]
        text = "\n".join(f".. automodule:: {package.__name__}.{name}\n" for name in names)
        return self.parse_text_to_nodes(text)


class ConfigReference(SphinxDirective):
    """``.. config-reference:: fit | survey | mock``: the reference of every key of that file, generated
    from the keys' declarations (nuker_mge_plugin/schema.py), so that it cannot drift from the code."""

    required_arguments = 1

    def run(self):
        from nuker_mge_plugin.config_reference import config_reference
        return self.parse_text_to_nodes(config_reference(self.arguments[0]))


def setup(app):
    app.add_directive("package-modules", PackageModules)
    app.add_directive("config-reference", ConfigReference)
    app.connect("autodoc-process-docstring", _prepare_docstring, priority=100)  # before numpydoc (500)
    if os.environ.get("NUKER_MGE_DOCS_STRICT") != "1":  # =1: list the docstrings' markup warnings too
        for handler in logging.getLogger("sphinx").handlers:  # before the filter that counts warnings
            handler.filters.insert(0, _DocstringMarkupFilter())
    return {"parallel_read_safe": True}
