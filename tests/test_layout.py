"""The package reads as its map says (CONTRIBUTING.md): one folder per stage of the method, none importing
from a later one; no module reaches into another's private names, the CLI only parses and prints, no
function is too long to read in one sitting, and one module decides how a prompted forward pass runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "skill_lens"
MODULES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60  # code lines of a function body, its docstring not counted
MAX_CLI_LINES = 80  # a subcommand: its options (argparse help texts are most of it), one call, the printing
# The folders along the method, bottom-up: a module imports only from its own folder or an earlier one.
FOLDERS = ("base", "store", "data", "model", "prompting", "probing", "intervening", "studies", "views",
           "workflow", "cli")


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


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skill_lens."):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("skill_lens.")]
    return out


def _upward_imports(path: Path) -> list[str]:
    """Imports (at module top or inside functions; docstrings do not count) of a later folder's module."""
    parts = path.relative_to(PACKAGE).parts
    if len(parts) == 1:  # the package's own __init__: the flat, lazy `import skill_lens as sl`
        return []
    own = FOLDERS.index(parts[0])
    return [f"line {line}: {module}" for line, module in _imported_modules(path)
            if module.split(".")[1] in FOLDERS and FOLDERS.index(module.split(".")[1]) > own]


def test_every_module_lives_in_a_folder_of_the_method():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], "each module belongs in one of the folders " + ", ".join(FOLDERS)
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(FOLDERS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_later_folder(path):
    assert _upward_imports(path) == []


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


# The one owner of a prompted forward pass (prompted_model) and where the plain model is made (fast_path).
FORWARD_OWNERS = ("prompting/prompted_model.py", "model/fast_path.py")


def _forward_choices(path: Path) -> list[str]:
    """Places that pick how a forward runs (the plain model, the base model) instead of asking
    ``PromptedModel.label_logits``: calls of ``plain_model(...)`` or ``<x>.base_model(...)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", None))
            if name in ("plain_model", "base_model"):
                found.append(f"line {node.lineno}: {name}(...)")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_only_the_prompted_model_decides_how_a_forward_runs(path):
    if path.relative_to(PACKAGE).as_posix() not in FORWARD_OWNERS:
        assert _forward_choices(path) == [], "ask PromptedModel.label_logits (fwd_hooks=, pm.with_hooks) instead"


def test_the_checks_can_fail(tmp_path):
    bad = tmp_path / "skill_lens" / "data" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from skill_lens.probing.probe import _stream\n\ndef f():\n" + "    x = 1\n" * 61)
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "skill_lens"
    try:
        assert _private_imports(bad) == ["skill_lens.probing.probe._stream"]
        assert _long_functions(bad) == ["f (61 lines)"]
        assert _upward_imports(bad) == ["line 1: skill_lens.probing.probe"]
        bad.write_text("def f(model):\n    return model.original_model.base_model(input_ids=None)\n")
        assert _forward_choices(bad) == ["line 2: base_model(...)"]
    finally:
        PACKAGE = saved
