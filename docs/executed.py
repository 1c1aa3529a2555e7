"""The tutorials as the docs site shows them: the current notebook's cells with the outputs of its run on the
real model (SmolLM2-135M and real data), kept in ``docs/executed/NAME.ipynb``.

``make docs-real`` (``docs/execute_notebooks.py``) executes each notebook and keeps a small copy
(:func:`shrink`): circuitsvis' 1.3 MB JavaScript bundle replaced by :data:`BUNDLE` (the build puts the
installed one back), emptied progress displays and timing metadata dropped. ``make docs``
(``docs/hooks.py``) renders :func:`merge` of the notebook and that copy: markdown from the notebook as it is
now, outputs from the run, refused (:class:`StaleOutputs`) when a code cell differs from the one that ran,
so the site never shows outputs of other code.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS, EXECUTED = ROOT / "notebooks", ROOT / "docs" / "executed"
BUNDLE = "<!-- skill_lens: circuitsvis bundle (restored by docs/hooks.py) -->"


class StaleOutputs(ValueError):
    """A notebook's code differs from the code its executed copy ran (or there is no copy)."""


def _code(nb) -> list[str]:
    return [c.source.strip() for c in nb.cells if c.cell_type == "code"]


def _bundle() -> str:
    from skill_lens.views.viz import circuitsvis_script

    return circuitsvis_script()


def _html(output) -> str | None:
    html = output.get("data", {}).get("text/html")
    return "".join(html) if isinstance(html, list) else html


def shrink(nb):
    """An executed notebook without what a repository should not keep: the circuitsvis bundle (a marker in its
    place), displays left empty (finished progress bars), execution timing.

    >>> nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")])
    >>> nb.cells[0].outputs = [nbformat.v4.new_output("display_data", {"text/html": "", "text/plain": "<HTML>"}),
    ...                        nbformat.v4.new_output("stream", name="stdout", text="ok")]
    >>> [o.output_type for o in shrink(nb).cells[0].outputs]
    ['stream']
    """
    nb, bundle = copy.deepcopy(nb), _bundle()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for o in cell.outputs:
            html = _html(o)
            if html is not None and not html.strip():
                continue
            if html is not None and bundle in html:
                o["data"]["text/html"] = html.replace(bundle, BUNDLE)
            kept.append(o)
        cell.outputs = kept
    return nb


def merge(source, executed, name: str = "the notebook"):
    """``source``'s cells with ``executed``'s outputs (and the circuitsvis bundle back in place); a
    :class:`StaleOutputs` error when their code cells differ.

    >>> src = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("new prose"),
    ...                                       nbformat.v4.new_code_cell("1 + 1")])
    >>> ran = copy.deepcopy(src); ran.cells[0].source = "old prose"
    >>> ran.cells[1].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "2"}, execution_count=1)]
    >>> out = merge(src, ran)
    >>> out.cells[0].source, out.cells[1].outputs[0]["data"]["text/plain"]
    ('new prose', '2')
    >>> src.cells[1].source = "1 + 2"
    >>> try:
    ...     merge(src, ran, "demo")
    ... except StaleOutputs as e:
    ...     print(str(e)[:58])
    demo: code cell 1 differs from the one whose outputs docs/
    """
    ours, theirs = _code(source), _code(executed)
    redo = f"run `make docs-real NOTEBOOKS={name}` (SmolLM2, under the heavy lock) and commit docs/executed/{name}.ipynb"
    if len(ours) != len(theirs):
        raise StaleOutputs(f"{name}: {len(ours)} code cells, but docs/executed/{name}.ipynb ran {len(theirs)}; {redo}")
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            raise StaleOutputs(f"{name}: code cell {i + 1} differs from the one whose outputs docs/executed/{name}.ipynb "
                               f"holds ({a[:60]!r} vs {b[:60]!r}); {redo}")
    out, bundle = copy.deepcopy(source), None
    ran = iter(c for c in executed.cells if c.cell_type == "code")
    for cell in out.cells:
        if cell.cell_type != "code":
            continue
        done = next(ran)
        cell.outputs, cell.execution_count = copy.deepcopy(done.outputs), done.execution_count
        for o in cell.outputs:
            html = _html(o)
            if html is not None and BUNDLE in html:
                bundle = bundle or _bundle()
                o["data"]["text/html"] = html.replace(BUNDLE, bundle)
    return out


def merged(name: str, out_dir: Path) -> Path:
    """Write :func:`merge` of ``notebooks/NAME.ipynb`` and ``docs/executed/NAME.ipynb`` to ``out_dir/NAME.ipynb``."""
    copy_path = EXECUTED / f"{name}.ipynb"
    if not copy_path.exists():
        raise StaleOutputs(f"{name} has no outputs from the real model: run `make docs-real NOTEBOOKS={name}` "
                           f"(SmolLM2, under the heavy lock) and commit docs/executed/{name}.ipynb")
    nb = merge(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4), nbformat.read(copy_path, as_version=4), name)
    out_dir.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out_dir / f"{name}.ipynb")
    return out_dir / f"{name}.ipynb"
