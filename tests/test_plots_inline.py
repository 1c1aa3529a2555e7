"""skill_lens.views.plots figures display inline in Jupyter, as Jupyter renders them: a fresh kernel, no %matplotlib."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]

CELLS = {
    "heatmap": 'import torch\nfrom skill_lens import plots\nplots.heatmap(torch.eye(2), ["a", "b"])',
    "predictivity_by_layer": "import torch\nimport skill_lens as sl\n"
                             "sl.plots.predictivity_by_layer(torch.rand(3, 8), prompt_accuracy=0.8)",
    "suppression_curves": "from skill_lens.views.plots import suppression_curves\n"
                          "suppression_curves({'fractions': [0, .1], 'skill': [.9, .5], 'random': [[.9, .9], [.8, .9]]})",
    "overlap_curves": "from skill_lens.views.plots import overlap_curves\noverlap_curves([1, 5], {'total': [.2, .5]})",
    "pruning_tradeoff": "from skill_lens.views.plots import pruning_tradeoff\n"
                        "pruning_tradeoff([{'label': 'full', 'accuracy': .9, 'speedup': 1.0}])",
}


def _run(cells: list[str], monkeypatch) -> nbformat.NotebookNode:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's skill_lens
    monkeypatch.delenv("MPLBACKEND", raising=False)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    errors = [o for c in nb.cells for o in c.outputs if o.output_type == "error"]
    assert not errors, errors
    return nb


def test_every_plot_renders_as_png_in_a_fresh_kernel(monkeypatch):
    nb = _run(list(CELLS.values()), monkeypatch)
    for name, cell in zip(CELLS, nb.cells):
        results = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert results and "image/png" in results[0]["data"], (name, cell.outputs)


def test_a_plain_figure_does_not_render_without_matplotlib_set_up(monkeypatch):
    """The check above can fail: a bare matplotlib Figure in the same kernel shows only text."""
    nb = _run(["from matplotlib.figure import Figure\nfig = Figure()\nfig.add_subplot()\nfig"], monkeypatch)
    data = nb.cells[0].outputs[0]["data"]
    assert "image/png" not in data and data["text/plain"].startswith("<Figure")
