"""The package reads as its map says (CONTRIBUTING.md): no module reaches into another's private names, the
CLI only parses and prints, and no function is too long to read in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skill_lens"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60  # code lines of a function body, its docstring not counted
MAX_CLI_LINES = 80  # a subcommand: its options (argparse help texts are most of it), one call, the printing


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    own = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skill_lens") and node.module != own:
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.endswith("__")]
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_anothers_private_names(path):
    assert _private_imports(path) == []


def _long_functions(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant)
            start = body[1].lineno if has_doc and len(body) > 1 else body[0].lineno
            if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                out.append(f"{node.name} ({node.end_lineno - start + 1} lines)")
    return out


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_too_long_to_read(path):
    assert _long_functions(path) == []


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_the_cli_holds_no_library_logic(path):
    """A subcommand module parses, calls the library and prints: short, and no tensors or model code."""
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_CLI_LINES
    for needle in ("import torch", "torch.", "save_tensors", "write_json", "atomic_write", ".unlink(", "rmtree"):
        assert needle not in text, f"{path.name} does {needle!r}: that belongs in the library"


def test_library_modules_do_not_import_the_cli():
    for path in MODULES:
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        assert "skill_lens.cli" not in path.read_text(), f"{path.name} imports the CLI"


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "skill_lens" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("from skill_lens.probe import _stream\n\ndef f():\n" + "    x = 1\n" * 61)
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "skill_lens"
    try:
        assert _private_imports(bad) == ["skill_lens.probe._stream"]
        assert _long_functions(bad) == ["f (61 lines)"]
    finally:
        PACKAGE = saved
