"""Griffe extension for the API reference: our reST-ish docstrings as the Markdown mkdocstrings renders.

The docstrings are written for ``help()`` and doctest: ``literal`` (already a Markdown code span),
:func:`name` roles, ``paragraph::`` literal blocks and bare ``>>>`` doctest blocks. Before rendering,
each docstring is rewritten (the source is untouched):

* a role becomes a cross-reference ``[`name`][skill_lens.module.name]`` when ``name`` resolves to
  a documented object of the package (tried in the object's class, its module, then ``skill_lens``),
  else a plain code span: a reference to torch or to a private helper never breaks the build;
* a doctest block becomes a fenced ``pycon`` block (Markdown would read ``>>>`` as quotes);
* ``paragraph::`` becomes ``paragraph:`` (the indented block after it is already Markdown code).

Loaded from mkdocs.yml (``extensions: [docs/griffe_rst.py:RstToMarkdown]``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(func|class|meth|mod|attr|data|obj|exc):`([^`]+)`")
ROOT = "skill_lens"


def _walk(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


def _documented(pkg: griffe.Module, path: str) -> bool:
    """``path`` names an object the reference renders: public all the way down, with a docstring."""
    parts = path.split(".")
    if parts[0] != ROOT or any(p.startswith("_") for p in parts[1:]):
        return False
    try:
        obj = pkg[".".join(parts[1:])] if len(parts) > 1 else pkg
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return False
    if obj.is_alias:
        try:
            obj = obj.final_target
        except (griffe.AliasResolutionError, griffe.CyclicAliasError):
            return False
        if not _documented(pkg, obj.path):
            return False
    return obj.is_module or obj.is_class or obj.has_docstring


def _resolve(pkg: griffe.Module, obj: griffe.Object, name: str) -> str | None:
    """The canonical path of ``name`` as seen from ``obj``'s docstring, or None."""
    scopes = [o.path for o in (obj, obj.parent) if o is not None and (o.is_class or o.is_module)]
    module = obj if obj.is_module else obj.module
    candidates = [f"{scope}.{name}" for scope in scopes] + [f"{module.path}.{name}", name, f"{ROOT}.{name}"]
    suffix = [o.path for o in _walk(pkg) if o.path.endswith("." + name) and _documented(pkg, o.path)]
    candidates += suffix if len(suffix) == 1 else []   # e.g. PromptedModel.label_logits from another module
    for path in candidates:
        if _documented(pkg, path):
            try:
                target = pkg[path.split(".", 1)[1]] if "." in path else pkg
                return target.final_target.path if target.is_alias else target.path
            except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
                continue
    return None


def _role(pkg: griffe.Module, obj: griffe.Object, match: re.Match) -> str:
    target = match.group(2).strip().lstrip("!")
    titled = re.fullmatch(r"(.*?)\s*<([^>]+)>", target)          # :meth:`title <target>`
    if titled:
        shown, path = titled.group(1), _resolve(pkg, obj, titled.group(2).rstrip("()"))
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"
    shown = target.lstrip("~")
    if target.startswith("~"):
        shown = shown.rsplit(".", 1)[-1]
    path = _resolve(pkg, obj, target.lstrip("~").rstrip("()"))
    return f"[`{shown}`][{path}]" if path else f"`{shown}`"


def to_markdown(text: str, role) -> str:
    """Rewrite one docstring (see the module docstring); ``role(match)`` renders a role."""
    out: list[str] = []
    fence = False
    doctest: str | None = None          # the open doctest block's indentation
    for line in text.split("\n"):
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if doctest is not None and not stripped:
            out.append(doctest + "```")
            doctest = None
        if stripped.startswith("```"):
            fence = not fence
        elif not fence and doctest is None and stripped.startswith(">>>"):
            out.append(indent + "```pycon")
            doctest = indent
        elif not fence and doctest is None:
            line = ROLE.sub(role, line)
            if line.endswith("::") and not line.rstrip(":").endswith(" "):
                line = line[:-1]
        out.append(line)
    if doctest is not None:
        out.append(doctest + "```")
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the package once it is loaded (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        if pkg.path != ROOT:
            return
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value, lambda m, o=obj: _role(pkg, o, m))
