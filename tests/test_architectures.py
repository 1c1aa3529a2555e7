"""The coverage table: every architecture in ``skill_lens.model.tiny.ARCHITECTURES`` through the whole method
on the command line, as a new user would run it, with the outcomes checked.

Each architecture is a tiny random model (2 layers, hidden 32, an FFN width unequal to 4 x hidden and to
hidden; experts where the architecture has them) saved as a local directory with its tokenizer, and a
60-row CSV task: ``tune -> probe -> neurons -> perturb -> patch -> prune -> report`` (the report holds the
circuitsvis views), in-process (:func:`skill_lens.cli.main`). What is checked, besides every step exiting 0:

* ``describe`` reads the FFN this list says (kind and width), and the probe's tensors are
  ``[layers, P, width]`` with that width, experts included;
* zero-ablating every neuron changes the label logits (``perturb`` at fraction 1);
* patching a text with its own activations changes nothing; from another text, something;
* the pruned model's FFN weights are narrower; pruning that keeps every neuron gives the unpruned logits,
  and pruning half gives the unpruned model's logits with the removed neurons fixed at their constants;
* an architecture with no FFN, or one TransformerLens does not support, is refused at ``tune`` in one line.

The README's coverage table is rendered from this list (:func:`table`); ``python tests/test_architectures.py``
rewrites it, and :func:`test_the_readme_table_is_this_list` keeps the two equal.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from clitools import cli

from skill_lens.intervening.interventions import mean_ablate
from skill_lens.intervening.pruning import load_pruned, parameter_count, prune, pruning_info, top_per_expert
from skill_lens.model.loading import describe
from skill_lens.model.tiny import ARCHITECTURES, tiny_dir, tiny_task
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.prompting.evaluation import prompted
from skill_lens.workflow.runs import Run

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("tune", "probe", "neurons", "perturb", "patch", "prune", "viz")

# What describe() must read from each tiny model (layer 0); refused architectures: None.
FFN = {
    "gpt2": "MLP 64 (Conv1D)", "gpt_neo": "MLP 48", "gptj": "parallel MLP 48", "gpt_neox": "parallel MLP 48",
    "opt": "MLP 48", "bloom": "MLP 128", "falcon": "parallel MLP 48", "llama": "gated MLP 48",
    "mistral": "gated MLP 48", "mixtral": "gated MoE 4 experts x 24", "qwen2": "gated MLP 48",
    "qwen2_moe": "gated MoE 4 experts x 24 + shared 40", "qwen3": "gated MLP 48",
    "qwen3_moe": "gated MoE 4 experts x 24", "gemma": "gated MLP 48", "gemma2": "gated MLP 48",
    "gemma3": "gated MLP 48", "phi": "parallel MLP 48", "phi3": "fused gated MLP 48", "stablelm": "gated MLP 48",
    "olmo": "gated MLP 48", "olmo2": "gated MLP 48", "olmoe": "gated MoE 4 experts x 24", "gpt_bigcode": "MLP 48",
    "starcoder2": "MLP 48", "smollm3": "gated MLP 48", "granite": "gated MLP 48", "cohere": "parallel gated MLP 48",
    "codegen": "parallel MLP 48", "glm": "fused gated MLP 48", "deepseek_v3": "gated MoE 4 experts x 24 + shared 24",
    "bert": "MLP 48", "roberta": "MLP 48", "t5": "MLP 48", "bart": "MLP 48",
    "mamba": None, "rwkv": None, "distilbert": None, "llama4": None,
}
TUNE = ["--prompt-length", "2", "--steps", "2", "--eval-every", "2", "--batch-size", "8", "--train-size", "30",
        "--dev-size", "15", "--test-size", "15"]


def width(ffn: str) -> int:
    """The neurons per layer a description names: ``MLP 48`` -> 48, ``MoE 4 experts x 24 + shared 40`` -> 136."""
    m = re.search(r"MoE (\d+) experts x (\d+)(?: \+ shared (\d+))?", ffn)
    return int(m[1]) * int(m[2]) + int(m[3] or 0) if m else int(re.search(r"MLP (\d+)", ffn)[1])


def test_the_list_covers_every_tiny_architecture():
    assert list(FFN) == list(ARCHITECTURES)
    assert all((FFN[a] is None) == (ARCHITECTURES[a].refused is not None) for a in FFN)
    assert all(width(f) not in (32, 128) for a, f in FFN.items() if f and a != "bloom")  # BLOOM's is fixed at 4 x


@pytest.fixture(scope="module")
def task_csv(tmp_path_factory) -> Path:
    """The tiny sentiment task, 60 rows, as a CSV whose labels are the label words."""
    t = tiny_task(n_train=30, n_dev=15, n_test=15)
    path = tmp_path_factory.mktemp("task") / "task.csv"
    rows = [(x, y) for s in t.splits().values() for x, y in zip(s.texts, s.labels)]
    path.write_text("text,label\n" + "".join(f"{x},{['bad', 'good'][y]}\n" for x, y in rows))
    return path


def _ok(*argv) -> str:
    rc, out, err = cli(*argv)
    assert rc == 0, f"skill-lens {argv[0]} failed: {err}"
    return out


@pytest.mark.parametrize("arch", list(FFN))
def test_the_whole_method_runs_on(arch, tmp_path, task_csv):
    model_dir, run = tiny_dir(arch, tmp_path / "model"), tmp_path / "run"
    if FFN[arch] is None:  # refused at tune, in one line, before writing anything
        rc, out, err = cli("tune", "--model", model_dir, "--task", f"csv:{task_csv}", "--out", run, *TUNE)
        assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert ARCHITECTURES[arch].refused.split()[-1] in err and not run.exists()
        return
    _ok("tune", "--model", model_dir, "--task", f"csv:{task_csv}", "--out", run, *TUNE)
    r = Run.open(run)
    info, n = describe(r.model), width(FFN[arch])
    assert info.layers[0].describe() == FFN[arch] and info.widths == (n, n) and r.meta["d_mlp"] == n
    _ok("probe", run)
    assert tuple(r.probe_result().dev_acc.shape) == (2, 2, n)
    out = _ok("neurons", run, "--top", "0.25")
    assert (".E" in out) == info.layout.moe  # experts' neurons are named L1.E2.N3
    _check_perturb(run)
    _check_patch(run, r, 2 * n)
    _check_prune(run, r, info)
    _ok("report", run, "--neurons", "2", "--examples", "1")
    views = (run / "report.html").read_text().split("<h2>Neuron views</h2>")[1]
    assert 'class="slv-legend"' in views and "error" not in views.lower()  # static views of the best neurons


def _check_perturb(run: Path) -> None:
    _ok("perturb", run, "--method", "zero", "--fractions", "0,1", "--controls", "0", "--positions", "all")
    rows = {row["fraction"]: row["logit_diff"] for row in __import__("json").loads(
        (run / "perturb_zero.json").read_text())["rows"] if row["set"] == "skill"}
    assert abs(rows[1.0] - rows[0.0]) > 1e-6, rows  # every neuron zeroed changes the logits


def _check_patch(run: Path, r: Run, every: int) -> None:
    out = _ok("patch", run, "--source-text", "the film was good", "--target-text", "the film was good",
              "--top", every)
    target, patched = (re.search(rf"^\s+{k}: (\S+=.*)$", out, re.M)[1] for k in ("target", "patched"))
    assert target == patched, out  # its own activations change nothing
    from skill_lens.workflow import steps

    other = steps.patch(r, "the film was good", "the plot was bad", top=every, positions="all")
    moved, apart = (other.patched - other.target).abs().max(), (other.source - other.target).abs().max()
    assert apart > 0 and moved > 1e-3 * apart, (moved, apart)  # another text's activations move the logits


def _check_prune(run: Path, r: Run, info) -> None:
    _ok("prune", run, "--keep", "0.5", "--repeats", "1", "--calibration-size", "8", "--protect-massive", "0")
    pruned = load_pruned(run / "pruned", device="cpu")
    assert all(w < n for w, n in zip(describe(pruned).widths, info.widths))
    assert parameter_count(pruned, ffn_only=True) < parameter_count(r.model, ffn_only=True)
    pm = r.prompted()
    batch = pm.encode(["the film was good", "a dull boring plot"])
    with torch.no_grad():
        full = pm.label_logits(batch)
        everything = prune(r.model, torch.ones(info.shape, dtype=torch.bool), torch.randn(info.shape))
        torch.testing.assert_close(_on(everything, r, pm).label_logits(batch), full, atol=1e-5, rtol=1e-4)
        half = top_per_expert(torch.rand(info.shape), 0.5, info.layout)
        constants = torch.randn(info.shape) * 0.1
        small = prune(r.model, half, constants, scores=torch.rand(info.shape))
        kept = torch.zeros(info.shape, dtype=torch.bool)
        for l, idx in pruning_info(small).kept.items():
            kept[l, idx] = True
        fixed = pm.label_logits(batch, fwd_hooks=mean_ablate(r.model, ~kept, constants, positions="all"))
        torch.testing.assert_close(_on(small, r, pm).label_logits(batch), fixed, atol=1e-5, rtol=1e-4)


def _on(model, r: Run, pm):
    """The run's prompt on another model (a pruned one)."""
    return prompted(model, r.task, SoftPrompt(pm.prompt.embedding, meta={**pm.prompt.meta, **describe(model).as_meta()}))


# ----------------------------------------------------------------------------- the README's table
BEGIN, END = "<!-- coverage table: python tests/test_architectures.py -->", "<!-- end of coverage table -->"


def table() -> str:
    """The README's coverage table, from :data:`FFN`, :data:`STEPS` and the architectures' refusals."""
    head = ["architecture", "FFN per layer, as `describe` reads it", *STEPS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arch, ffn in FFN.items():
        a = ARCHITECTURES[arch]
        cells = ["✓"] * len(STEPS) if ffn else [f"refused: {a.refused}"] + [""] * (len(STEPS) - 1)
        lines.append("| " + " | ".join([a.title, f"`{ffn}`" if ffn else "", *cells]) + " |")
    passing = sum(f is not None for f in FFN.values())
    return (f"{BEGIN}\n{passing} of {len(FFN)} architectures pass every step (tiny random models, "
            f"`tests/test_architectures.py`):\n\n" + "\n".join(lines) + f"\n{END}")


def test_the_readme_table_is_this_list():
    text = (ROOT / "README.md").read_text()
    assert BEGIN in text and END in text, "README.md has no coverage table; run python tests/test_architectures.py"
    assert text[text.index(BEGIN): text.index(END) + len(END)] == table(), \
        "the README's coverage table is stale; run python tests/test_architectures.py"


if __name__ == "__main__":  # rewrite the README's table from this list
    readme = ROOT / "README.md"
    text = readme.read_text()
    if BEGIN not in text:
        sys.exit(f"put the lines\n{BEGIN}\n{END}\nin README.md where the table goes, then run this again")
    readme.write_text(text[: text.index(BEGIN)] + table() + text[text.index(END) + len(END):])
