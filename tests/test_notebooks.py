"""The notebooks run top to bottom, each in its own kernel, on a tiny model the harness puts in place.

Each tutorial starts with one cell tagged ``parameters`` holding the real model and data (SmolLM2-135M,
Rotten Tomatoes). As papermill does, the harness inserts a cell after it that overrides those names with
a tiny random model and tiny data saved to temporary files (:data:`TINY`, :func:`tiny_inputs`), so every
cell runs in seconds; the reader never sees it. The notebooks run concurrently (a few kernels at a time)
in one module fixture, not quiet (as a reader runs them); each test then checks one notebook's outputs:
no errors, nothing on stderr, circuitsvis' 1.3 MB bundle embedded at most once.
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

# The tiny substitutes of each notebook's parameters ({model}, {task}... are files tiny_inputs() writes).
COMMON = {"MODEL": "{model}", "TASK": "csv:{task}", "TASK_ARGS": {}, "PROMPT_LENGTH": 2, "STEPS": 6}
TINY = {
    "01_quickstart": {**COMMON, "PERMUTATIONS": 19},
    "02_custom_ablation": COMMON,
    "03_robustness": COMMON,
    "04_analyses": {**COMMON, "TWEETS": "csv:{three}", "TWEETS_ARGS": {"label_words": ["awful", "story", "superb"]},
                    "NEUTRAL_WORDS": ["dull", "lovely"], "SEEDS": [0, 1], "TOP": 0.05,
                    "WORD_SETS": [["bad", "good"], ["awful", "great"]]},
    "05_patching_pruning_peft": {**COMMON, "TOP": 0.05, "PRUNE_LAYERS": [1], "KEEP": 0.25, "CALIBRATION_TEXTS": 16,
                                 "TIMING_REPEATS": 1, "PEFT_LR": 0.05, "ADAPTER_RANK": 4,
                                 "POSITIVE_TEXT": "the movie was superb", "NEGATIVE_TEXT": "the plot was dull"},
    "06_runs_and_steps": {**COMMON, "OUT": "{out}", "TOP": 0.05, "PRUNE_KEEP": 0.25, "PRUNE_LAYERS": [1]},
}


def tiny_inputs(root: Path) -> dict[str, str]:
    """A tiny causal model as a Hugging Face directory, the tiny sentiment task as train/dev/test CSVs (labels
    ``bad``/``good``, also its label words) and a three-class one (negative / neutral / positive)."""
    import random

    from skill_lens.model.tiny import tiny_hf, tiny_task, tiny_tokenizer

    model = root / "tiny_model"
    tiny_hf("causal").save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    for name, split in tiny_task().splits().items():
        (root / f"tiny_{name}.csv").write_text("text,label\n" + "".join(
            f"{x},{['bad', 'good'][y]}\n" for x, y in zip(split.texts, split.labels)))
    rng, words = random.Random(0), {"negative": "bad awful poor dull", "neutral": "", "positive": "good great fine nice"}
    filler = "the a movie film plot was is very quite and but it this story acting".split()
    for name, n in (("train", 48), ("dev", 24), ("test", 24)):
        rows = [(" ".join(rng.sample(filler, 4) + rng.sample(cue.split(), min(1, len(cue.split())))), label)
                for i in range(n) for label, cue in [list(words.items())[i % 3]]]
        (root / f"three_{name}.csv").write_text("text,label\n" + "".join(f"{x},{y}\n" for x, y in rows))
    return {"model": str(model), "task": str(root / "tiny_train.csv"), "three": str(root / "three_train.csv"),
            "out": str(root / "run")}


def _parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"a notebook needs exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def inject(nb, values: dict, files: dict[str, str]):
    """``nb`` with a cell after its parameters cell assigning ``values`` (``{model}``... filled from ``files``)."""
    fill = lambda v: v.format(**files) if isinstance(v, str) else v  # noqa: E731
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {fill(v)!r}" for k, v in values.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(_parameters_cell(nb) + 1, cell)
    return nb


def _execute(path: Path, root: Path):
    nb = nbformat.read(path, as_version=4)
    (root / path.stem).mkdir()
    inject(nb, TINY[path.stem], {**tiny_inputs(root / path.stem)})
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(root / path.stem)}},
                       allow_errors=True).execute()
    except Exception as e:  # a dead kernel or a timeout: reported by the notebook's own test
        return e
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    root = tmp_path_factory.mktemp("notebooks")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SKILL_LENS_QUIET", "0")  # as a reader runs them (inherited by the kernels): bars and all
        with ThreadPoolExecutor(max_workers=KERNELS) as pool:
            return dict(zip(NOTEBOOKS, pool.map(lambda p: _execute(p, root), NOTEBOOKS)))


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
    views = [o for o in outputs if "CircuitsVis.render(" in o]  # the picker; the other views are static HTML
    if views:  # the first defines window.CircuitsVis, every one renders its panels with it
        assert views[0].count(marker) == 1 and views[0].index(marker) < views[0].index("CircuitsVis.render(")
        assert all('class="cv-panel"' in o for o in views)


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
    every static view shows its first neuron's tab with a legend, every circuitsvis panel is drawn."""
    outputs = max((_html_outputs(nb) for nb in executed.values() if not isinstance(nb, Exception)),
                  key=lambda outs: sum('class="skill-lens-view"' in o for o in outs))
    tabs = re.findall(r'id="(slt[0-9a-f]+)"', "".join(outputs))
    check = ("<script>document.body.setAttribute('data-shown', [" + ",".join(
        f"getComputedStyle(document.getElementById('{t}-t0')).display" for t in tabs) + "].join(','));</script>")
    dom = dump_dom("".join(f'<div class="output">{o}</div>' for o in outputs) + check, tmp_path)
    assert len(tabs) >= 2 and f'data-shown="{",".join(["block"] * len(tabs))}"' in dom
    panels = re.findall(r'<div id="(slv-[0-9a-f]+-\d+)" class="cv-panel"[^>]*>(.{0,200})', dom)
    assert len(panels) >= 1 and all(inner.startswith("<") and not inner.startswith("</div>") for _, inner in panels)
    assert ">(circuitsvis did not load)<" not in dom


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_nothing_is_written_to_stderr(path, executed):
    """No warnings, no progress bars printed to stderr: what a reader sees is the cell's result."""
    nb = executed[path]
    assert not isinstance(nb, Exception), f"{path.name} did not finish: {nb!r}"
    stderr = [(i, "".join(o.get("text", ""))[:300]) for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.get("outputs", []) if o.output_type == "stream" and o.get("name") == "stderr"]
    assert not stderr, f"{path.name}: {stderr}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_tutorials_hold_no_test_scaffolding(path):
    """The tiny substitution lives here, not in the tutorial: it only overrides the parameters cell's names."""
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    assert not re.search(r"\btiny|\bFAST\b|SKILL_LENS_NOTEBOOK", text), path.name
    params = nb.cells[_parameters_cell(nb)].source
    assigned = set(re.findall(r"^(\w+)(?:, (\w+))? =", params, flags=re.M))
    names = {n for pair in assigned for n in pair if n}
    assert set(TINY[path.stem]) <= names, f"{path.name}: the harness overrides names the notebook does not define: " \
                                          f"{sorted(set(TINY[path.stem]) - names)}"
    assert path.stem in TINY


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), path.name
        assert all(c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), path.name
