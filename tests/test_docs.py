"""The API reference site (``make docs``, which CI runs): every module has a page, the nav finds every
notebook, docstrings become the Markdown mkdocstrings renders, and the built site fetches nothing."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"docs_{name}", DOCS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _public_modules() -> set[str]:
    out = set()
    for path in (ROOT / "skill_lens").rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            out.add(".".join(parts))
    return out


def _documented() -> list[str]:
    return [m for page in sorted((DOCS / "api").glob("*.md"))
            for m in re.findall(r"^::: (\S+)\s*$", page.read_text(), flags=re.MULTILINE)]


def test_every_public_module_has_exactly_one_api_section():
    documented = _documented()
    assert sorted(set(documented)) == sorted(documented), "a module is documented twice"
    assert set(documented) == _public_modules()


def _nav_files(entries) -> list[str]:
    out = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for v in values:
            out += _nav_files(v) if isinstance(v, list) else [v]
    return out


def test_nav_pages_exist_and_the_notebook_glob_finds_every_notebook():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    hooks = _load("hooks")
    nav = _nav_files(hooks.on_config({"nav": config["nav"], "docs_dir": str(DOCS)})["nav"])
    assert all((DOCS / page).is_file() for page in nav), [p for p in nav if not (DOCS / p).is_file()]
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks and [p.split("/")[-1] for p in nav if p.endswith(".ipynb")] == notebooks
    assert (DOCS / "notebooks").resolve() == (ROOT / "notebooks").resolve()


def test_a_nav_glob_that_matches_nothing_is_an_error():
    with pytest.raises(ValueError, match="matches no file"):
        _load("hooks").on_config({"nav": [{"Notebooks": ["nothing/*.ipynb"]}], "docs_dir": str(DOCS)})


def test_docstrings_become_markdown_with_links_to_documented_objects():
    griffe = pytest.importorskip("griffe")
    rst = _load("griffe_rst")
    pkg = griffe.load("skill_lens", search_paths=[str(ROOT)])
    obj = pkg["probing.scores.select_top"]
    text = ("Ties as in :func:`rank`, see :class:`~skill_lens.probing.neurons.NeuronSet` and :meth:`x <NeuronSet.from_scores>`,\n"
            "not :class:`torch.Tensor` nor :func:`_check_acts`. Example::\n\n    code\n\n"
            ">>> 1 + 1\n2\n\nAfter.")
    out = rst.to_markdown(text, lambda m: rst._role(pkg, obj, m))
    assert out.split("\n") == [
        "Ties as in [`rank`][skill_lens.probing.scores.rank], see [`NeuronSet`][skill_lens.probing.neurons.NeuronSet] and "
        "[`x`][skill_lens.probing.neurons.NeuronSet.from_scores],",
        "not `torch.Tensor` nor `_check_acts`. Example:", "", "    code", "",
        "```pycon", ">>> 1 + 1", "2", "```", "", "After."]


def test_roles_inside_doctests_and_fences_are_left_alone():
    rst = _load("griffe_rst")
    text = ">>> f(':func:`x`')\n\n```\n:func:`y`\n```"
    assert rst.to_markdown(text, lambda m: "LINK") == "```pycon\n>>> f(':func:`x`')\n```\n\n```\n:func:`y`\n```"


def test_a_site_that_fetches_a_script_or_stylesheet_is_reported(tmp_path):
    check = _load("check_site")
    (tmp_path / "index.html").write_text(
        '<a href="https://example.org">a link is fine</a><link rel="stylesheet" href="//fonts.example/x.css">'
        '<pre><code>"https://unpkg.com/shown-as-code.js"</code></pre>')
    (tmp_path / "a.css").write_text('@import url("https://cdn.example/y.css");')
    assert check.remote_assets(tmp_path) == ["index.html: //fonts.example/x.css", "a.css: https://cdn.example/y.css"]
    assert check.main(["check_site", str(tmp_path)]) == 1
    (tmp_path / "index.html").write_text('<script src="assets/local.js"></script>')
    (tmp_path / "a.css").write_text("")
    assert check.main(["check_site", str(tmp_path)]) == 0
