"""The notebooks run top to bottom (on tiny models: SKILL_LENS_NOTEBOOK_FAST=1), each in its own kernel.

They run concurrently (a few kernels at a time) in one module fixture; each test then checks one
notebook's outputs: no errors, and circuitsvis' 1.3 MB bundle embedded at most once (in the first view's
output, the others using it).
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from browser import dump_dom, needs_chromium
from skill_lens.views.viz import circuitsvis_script

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
KERNELS = int(os.environ.get("SKILL_LENS_NOTEBOOK_KERNELS", "3"))


def _execute(path: Path):
    nb = nbformat.read(path, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                       allow_errors=True).execute()
    except Exception as e:  # a dead kernel or a timeout: reported by the notebook's own test
        return e
    return nb


@pytest.fixture(scope="module")
def executed():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKILL_LENS_NOTEBOOK_FAST", "1")  # inherited by the kernels
        mp.setenv("SKILL_LENS_QUIET", "1")
        with ThreadPoolExecutor(max_workers=KERNELS) as pool:
            return dict(zip(NOTEBOOKS, pool.map(_execute, NOTEBOOKS)))


def _html_outputs(nb) -> list[str]:
    """Every HTML output of the notebook, in order."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            html = o.get("data", {}).get("text/html")
            if html is not None:
                out.append("".join(html) if isinstance(html, list) else html)
    return out


def _bundle_marker() -> str:
    js = circuitsvis_script()
    return js[len(js) // 2:len(js) // 2 + 64]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, executed):
    nb = executed[path]
    assert not isinstance(nb, Exception), f"{path.name} did not finish: {nb!r}"
    errors = [f"{o.ename}: {o.evalue}" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_circuitsvis_bundle_at_most_once_per_notebook(path, executed):
    nb = executed[path]
    assert not isinstance(nb, Exception), f"{path.name} did not finish: {nb!r}"
    marker, outputs = _bundle_marker(), _html_outputs(nb)
    assert sum(o.count(marker) for o in outputs) <= 1
    views = [o for o in outputs if 'class="skill-lens-view"' in o]
    if views:  # the first view defines window.CircuitsVis, every view renders its panels with it
        assert views[0].count(marker) == 1 and views[0].index(marker) < views[0].index("CircuitsVis.render(")
        assert all(o.count("CircuitsVis.render(") >= 1 and 'class="cv-panel"' in o for o in views)


PLOTS = re.compile(r"\b(predictivity_by_layer|suppression_curves|heatmap|overlap_curves|pruning_tradeoff)\(")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_figure_cells_show_their_figure(path, executed):
    """A cell that draws a skill_lens.views.plots figure displays it as a picture (not '<Figure size ...>')."""
    nb = executed[path]
    assert not isinstance(nb, Exception), f"{path.name} did not finish: {nb!r}"
    cells = [c for c in nb.cells if c.cell_type == "code" and PLOTS.search(c.source)]
    for cell in cells:
        assert any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])), (path.name, cell.source)


def test_the_notebooks_draw_figures():
    """So that the check above is not empty: 01 and 03 draw figures, as every other notebook may."""
    drawn = {p.name for p in NOTEBOOKS if PLOTS.search(p.read_text())}
    assert {"01_quickstart.ipynb", "03_robustness.ipynb"} <= drawn


def test_some_notebook_shows_several_views(executed):
    """So that the bundle check above covers later views reusing the first one's library."""
    counts = {p.name: sum('class="skill-lens-view"' in o for o in _html_outputs(nb))
              for p, nb in executed.items() if not isinstance(nb, Exception)}
    assert max(counts.values()) >= 3, counts


@needs_chromium
def test_every_view_renders_from_the_notebooks_outputs(executed, tmp_path):
    """All HTML outputs of the notebook with the most views, in order on one page (as Jupyter shows them):
    every circuitsvis panel is drawn, the later views with the library the first one defined."""
    outputs = max((_html_outputs(nb) for nb in executed.values() if not isinstance(nb, Exception)),
                  key=lambda outs: sum('class="skill-lens-view"' in o for o in outs))
    dom = dump_dom("".join(f'<div class="output">{o}</div>' for o in outputs), tmp_path)
    panels = re.findall(r'<div id="(slv-[0-9a-f]+-\d+)" class="cv-panel"[^>]*>(.{0,200})', dom)
    assert len(panels) >= 3 and all(inner.startswith("<") and not inner.startswith("</div>") for _, inner in panels), panels
    assert ">(circuitsvis did not load)<" not in dom


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        assert all(c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), path.name
