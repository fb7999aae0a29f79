"""Configuration keys declared once: a dataclass field whose metadata carries its check, unit and doc.

Every section of a TOML configuration is a frozen dataclass; every key of it is a field made by
:func:`key`, which holds the key's default (the field's), how a value is checked (``kind`` and
bounds), its unit and its documentation. From that one declaration come

* the reading and checking of a file's table (:func:`read_section`), with one-line errors naming
  ``section.key`` and what it expects, and a suggestion for a misspelt key;
* the list of valid keys of a section (:func:`section_keys`);
* the reference documentation of every key (:func:`reference_rst`, the docs' configuration page)
  and a commented template (:func:`template_toml`, ``nuker-mge fit --print-config``).

Keys whose check needs other keys (``kind = "custom"``) are read by the section's own code, but
are declared, defaulted and documented here like the rest.
"""

import dataclasses
import difflib
import json
import math
import tomllib
from pathlib import Path

__all__ = ["REQUIRED", "key", "keys_of", "section_keys", "suggest", "Section", "read_section", "document", "read_toml",
           "reference_rst", "template_toml"]

#: The default of a required key (the field has no default).
REQUIRED = dataclasses.MISSING

_KINDS = ("number", "integer", "boolean", "choice", "string", "strings", "custom")


@dataclasses.dataclass(frozen=True)
class Key:
    """How one configuration key is checked and documented (a field's ``metadata["key"]``)."""

    kind: str
    doc: str
    unit: str = ""
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple = ()
    what: str | None = None
    default_text: str | None = None   # a default that depends on other keys, in words
    only: str | None = None            # "kind = ..." the key applies to (documentation)
    nonempty: bool = False             # a string that must not be blank

    def expects(self):
        """What a value must be, in words (the error messages' "expects ...")."""
        if self.what:
            return self.what
        if self.kind == "boolean":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(json.dumps(c) for c in self.choices)
        if self.kind == "string":
            return "a non-empty string" if self.nonempty else "a string"
        if self.kind == "strings":
            return "a list of strings"
        base = "a finite number" if self.kind == "number" else "an integer"
        parts = [f"> {self.gt:g}" if self.gt is not None else None, f">= {self.ge:g}" if self.ge is not None else None,
                 f"< {self.lt:g}" if self.lt is not None else None, f"<= {self.le:g}" if self.le is not None else None]
        parts = [p for p in parts if p]
        return base + (" " + " and ".join(parts) if parts else "")


def key(default=REQUIRED, *, kind, doc, unit="", gt=None, ge=None, lt=None, le=None, choices=(), what=None,
        default_text=None, only=None, nonempty=False):
    """A dataclass field declaring one configuration key (see the module docstring).

    Parameters
    ----------
    default : object
        The key's default (:data:`REQUIRED`: none, the key must be given).
    kind : {"number", "integer", "boolean", "choice", "string", "strings", "custom"}
        How :func:`read_section` checks a value (``"strings"``: a list of strings, read as a
        tuple); ``"custom"``: the section's own code does.
    doc : str
        What the key means, with its unit (reST).
    unit : str
        The unit, for the reference table (``"arcsec"``, ``"Hz"``; ``""``: dimensionless).
    gt, ge, lt, le : float, optional
        Bounds of a number or integer.
    choices : tuple
        The valid values of a ``"choice"``.
    what : str, optional
        What a value must be, in words, when the bounds alone do not say it well.
    default_text : str, optional
        A default that depends on other keys, in words (the field's own default is then a placeholder).
    only : str, optional
        The setting the key applies to (``'kind = "nuts"'``), for the documentation.
    nonempty : bool
        A ``"string"`` that must not be blank.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind = {kind!r} is invalid: choose one of {', '.join(_KINDS)}")
    if kind == "choice" and not choices:
        raise ValueError("a choice key needs its choices")
    meta = {"key": Key(kind=kind, doc=" ".join(doc.split()), unit=unit, gt=gt, ge=ge, lt=lt, le=le,
                       choices=tuple(choices), what=what, default_text=default_text, only=only,
                       nonempty=nonempty)}
    return dataclasses.field(default=default, metadata=meta)


def keys_of(cls):
    """``name -> (field, Key)`` of the configuration keys of the section dataclass ``cls``, in order."""
    return {f.name: (f, f.metadata["key"]) for f in dataclasses.fields(cls) if "key" in f.metadata}


def section_keys(cls):
    """The valid key names of the section dataclass ``cls``, in declaration order."""
    return tuple(keys_of(cls))


def suggest(word, choices):
    """The closest of ``choices`` to a misspelt ``word`` ("PA" -> "pa", "mbh" -> "log10_mbh"), or None."""
    m = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if not m:
        w = word.lower()
        m = [c for c in choices if c.lower() == w] or [c for c in choices if w and w in c.lower()]
    return m[0] if m else None


class Section:
    """Reads one TOML table key by key: refuses unknown keys, checks each value, remembers which were given.

    Errors are ``error_cls`` (a ``ValueError``) with one line ``section.key: expects ..., got ...``.
    """

    def __init__(self, name, raw, valid, error_cls=ValueError):
        self.name, self.raw, self.error_cls = name, raw, error_cls
        unknown = [k for k in raw if k not in valid]
        if unknown:
            k = unknown[0]
            s = suggest(k, valid)
            hint = f" (did you mean {name}.{s}?)" if s else f" (valid: {', '.join(valid)})"
            raise error_cls(f"{name}.{k}: unknown key{hint}")

    def given(self, key):
        return key in self.raw

    def _fail(self, key, what, v):
        raise self.error_cls(f"{self.name}.{key}: expects {what}, got {v!r}")

    def get(self, key, default):
        if key not in self.raw:
            if default is REQUIRED:
                raise self.error_cls(f"{self.name}.{key}: required key is missing")
            return default
        return self.raw[key]

    def value(self, name, spec, default):
        """Read key ``name`` by its :class:`Key` ``spec``; ``default`` when it is not given."""
        v = self.get(name, default)
        if name not in self.raw:
            return v
        if spec.kind == "number":
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if ok:
                v = float(v)
                ok = _in_bounds(v, spec)
            if not ok:
                self._fail(name, spec.expects(), self.raw[name])
        elif spec.kind == "integer":
            if not (isinstance(v, int) and not isinstance(v, bool) and _in_bounds(v, spec)):
                self._fail(name, spec.expects(), v)
        elif spec.kind == "boolean":
            if not isinstance(v, bool):
                self._fail(name, spec.expects(), v)
        elif spec.kind == "choice":
            if v not in spec.choices:
                self._fail(name, spec.expects(), v)
        elif spec.kind == "string":
            if not isinstance(v, str) or (spec.nonempty and not v.strip()):
                self._fail(name, spec.expects(), v)
        elif spec.kind == "strings":
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                self._fail(name, spec.expects(), v)
            v = tuple(v)
        return v


def read_toml(path, what, error_cls=ValueError):
    """The parsed TOML document at ``path``, or ``error_cls`` with one line naming the file.

    ``what`` names the kind of file in the messages (``"configuration"``, ``"survey"``, ``"mock"``):
    ``PATH: WHAT file not found``, ``PATH: expects a WHAT file, got a directory``, ``PATH: invalid
    TOML: ...``.
    """
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise error_cls(f"{p}: {what} file not found") from None
    except IsADirectoryError:
        raise error_cls(f"{p}: expects a {what} file, got a directory") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error_cls(f"{p}: invalid TOML: {e}") from None


def _in_bounds(v, spec):
    return ((spec.gt is None or v > spec.gt) and (spec.ge is None or v >= spec.ge)
            and (spec.lt is None or v < spec.lt) and (spec.le is None or v <= spec.le))


def read_section(cls, s, *, defaults=None, checks=None, skip=()):
    """The checked values of the section dataclass ``cls``'s keys in the table ``s`` (a :class:`Section`).

    Parameters
    ----------
    cls : dataclass type
        The section, its keys declared with :func:`key`.
    s : Section
        The file's table.
    defaults : dict, optional
        ``name -> default`` for keys whose default depends on other keys (or on the data).
    checks : dict, optional
        ``name -> dict(ge=..., what=...)``: bounds that depend on other keys, replacing the declared ones.
    skip : iterable of str
        Keys not read here (``"custom"`` keys are never read here).

    Returns
    -------
    dict
        ``name -> value`` of every key read (its default when not given).
    """
    defaults, checks = defaults or {}, checks or {}
    out = {}
    for name, (f, spec) in keys_of(cls).items():
        if spec.kind == "custom" or name in skip:
            continue
        if name in checks:
            spec = dataclasses.replace(spec, **checks[name])
        default = defaults.get(name, f.default)
        out[name] = s.value(name, spec, default)
    return out


# ---------------------------------------------------------------------------- documentation
def _default_text(f, spec):
    if spec.default_text:
        return spec.default_text
    if f.default is REQUIRED:
        return "required"
    v = f.default
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "[" + ", ".join(json.dumps(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _valid_text(spec):
    """What a value must be, with its unit unless the words already give it."""
    valid = spec.expects() if spec.kind != "custom" else (spec.what or "see the meaning")
    return valid if not spec.unit or f"[{spec.unit}" in valid else f"{valid} [{spec.unit}]"


def reference_rst(sections):
    """reST of every key of ``sections`` (``[(section name, dataclass, intro), ...]``), one table each."""
    out = []
    for name, cls, intro in sections:
        out += [f".. rubric:: [{name}]", "", " ".join(intro.split()), "", ".. list-table::", "   :header-rows: 1",
                "   :widths: 18 14 14 54", "", "   * - key", "     - default", "     - valid", "     - meaning"]
        for k, (f, spec) in keys_of(cls).items():
            meaning = spec.doc + (f" Only with {spec.only}." if spec.only else "")
            out += [f"   * - ``{k}``", f"     - {_default_text(f, spec)}", f"     - {_valid_text(spec)}",
                    f"     - {meaning}"]
        out.append("")
    return "\n".join(out)


def template_toml(sections):
    """A commented TOML file of every key of ``sections`` at its default.

    Keys that are required, have no plain default, or apply to one setting only (``only``) are
    written as comments, so that the file reads back once the required keys are filled in.
    """
    out = []
    for name, cls, intro in sections:
        out += [f"# {line}" for line in _wrap(" ".join(intro.split()))]
        out.append(f"[{name}]")
        for k, (f, spec) in keys_of(cls).items():
            out += [f"# {line}" for line in _wrap(spec.doc.replace("``", ""))]
            d = _default_text(f, spec)
            if d in ("required", "none") or spec.default_text:
                out.append(f"# {k} = ...    ({d}{f'; only with {spec.only}' if spec.only else ''})")
            elif spec.only:
                out.append(f"# {k} = {d}    (only with {spec.only})")
            else:
                out.append(f"{k} = {d}")
        out.append("")
    return "\n".join(out)


def _wrap(text, width=98):
    import textwrap
    return textwrap.wrap(text, width) or [""]


def document(cls, intro):
    """Set the section dataclass ``cls``'s docstring from ``intro`` and its keys' declarations."""
    lines = [intro, ""]
    for k, (f, spec) in keys_of(cls).items():
        only = f" Only with {spec.only}." if spec.only else ""
        lines += [f"{k} : default {_default_text(f, spec)}",
                  f"    {spec.doc}{only} Valid: {_valid_text(spec)}.", ""]
    cls.__doc__ = "\n".join(lines).rstrip() + "\n"
    return cls
