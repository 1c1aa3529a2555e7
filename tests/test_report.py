"""The HTML report: sections from artifacts, escaping of dataset text, offline rendering in Chromium."""

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from browser import browse, needs_chromium
from skill_lens.cli import main
from skill_lens.probing.result import ProbeResult
from skill_lens.workflow.report import write_report
from skill_lens.workflow.runs import Run
from skill_lens.data.tasks import Task
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig

EVIL = ["<script>alert(1)</script> the movie was good", "</script><img src=x onerror=alert(1)> bad plot"]
TOP = (1, 7)  # the neuron the synthetic predictivity makes best


def evil_task() -> Task:
    t = tiny_task()
    dev = (EVIL + t.dev.texts[2:], t.dev.labels)
    return Task.from_lists("tiny <b>evil</b>", t.label_names, t.label_words, train=(t.train.texts, t.train.labels),
                           dev=dev, test=(t.test.texts, t.test.labels), hard_prompt=t.hard_prompt)


def write_artifacts(run: Run) -> None:
    """Each kind of result, written through the run (so with its lineage), plus a user's matrix and a pruned dir."""
    d = run.path
    g = torch.Generator().manual_seed(0)
    dev = 0.5 + 0.2 * (torch.rand(2, 2, 64, generator=g) - 0.5)
    dev[TOP[0], 1, TOP[1]] = 0.05  # predictivity 0.95: the top neuron
    run.save_probe_result(ProbeResult(torch.zeros(2, 2, 64), dev, dev.clone(), meta={"model": "tiny-causal"}))
    from skill_lens.intervening.curve import SuppressionCurve
    from skill_lens.studies.robustness import RobustnessResult, overlaps

    rows = [{"fraction": f, "set": s, "draw": k, "n_neurons": 2, "accuracy": a, "logit_diff": 0.0}
            for f, skill in ((0.0, 0.9), (0.05, 0.6), (0.1, 0.5))
            for s, k, a in [("skill", 0, skill), ("random", 0, 0.9 - f / 2), ("random", 1, 0.88 - f / 2)]]
    run.save_result("perturb", "perturb_zero", SuppressionCurve(rows, [0.0, 0.05, 0.1], "zero").to_dict())
    rob = RobustnessResult(torch.rand(2, 64, generator=g), torch.rand(2, 64, generator=g), {"clean": 0.9}, 0.5,
                           [0.4, 0.6], overlaps(torch.rand(2, 64, generator=g), torch.rand(2, 64, generator=g),
                                                [0.05, 0.2, 0.5]))
    run.save_result("robustness", "robustness_typo", rob.to_dict())
    from skill_lens.probing.neurons import NeuronSet

    mask = torch.zeros(2, 64, dtype=torch.bool)
    mask[1, 7] = mask[0, 3] = mask[0, 19] = True
    run.save_neurons(NeuronSet.from_mask(mask, {"model": "tiny-causal"}))
    (d / "spearman.json").write_text(json.dumps({"matrix": [[1, 0.4], [0.4, 1]], "labels": ["a<i>", "b"]}))
    (d / "pruned").mkdir()
    (d / "pruned" / "pruning.json").write_text(json.dumps(
        {"base_model": "tiny-causal", "d_mlp": 64, "kept": {"0": [1, 2], "1": [7]}, "widths": {"0": 2, "1": 1},
         "position": "mean", "baseline_source": "predictivity.safetensors"}))
    (d / "pruned" / "config.json").write_text("{}")  # HF files in a pruned model dir are not results


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    r = Run.create(d, tiny_model(), evil_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    write_artifacts(r)
    return r


@pytest.fixture(scope="module")
def report(run) -> str:
    return write_report(run).read_text()


def test_report_has_every_section(report, run):
    for heading in ("How these numbers were made", "Accuracy", "Skill neuron predictivity", "Neuron views",
                    "Suppression, pruning, robustness, analyses", "Run details"):
        assert f"<h2>{heading}</h2>" in report
    # predictivity, neurons per layer, suppression, overlap, heatmap
    assert report.count('src="data:image/png;base64,') == 5
    assert "L1.N7" in report.split("<h3>Top")[1].split("</table>")[0].split("</tr>")[1]  # first row: the top neuron
    views = report.split("<h2>Neuron views</h2>")[1]
    assert re.findall(r'<label for="slt[0-9a-f]+-r\d">([^<]*)</label>', views)[0] == "L1.N7 0.950"  # best first
    assert "pruned model pruned/" in report and "3 of 128" in report
    assert "config.json" not in report
    assert f"{run.meta['accuracy']['dev']:.3f}" in report


def test_the_report_argues_its_case(report):
    """A summary, one definition of skill neurons, a methods paragraph, chance explained, columns explained."""
    head = report.split("<h2>Accuracy</h2>")[0]
    assert "The tuned prompt reaches" in head and "The best neuron, L1.N7, scores 0.950" in head
    assert "no permutation null was run" in head  # said, not hidden
    assert head.count("Skill neurons are") == 1 and "Model: tiny-causal (causal, 2 layers x 64 FFN neurons" in head
    for part in ("Task:", "Prompt:", "Probe:", "Selection:", "Perturbation:", "Controls:", "Intervals:"):
        assert part in head
    assert "so even a neuron that carries no information scores above 0.5" in report
    assert "<li><b>train baseline there</b>: the neuron&#x27;s mean activation over the train split" in report
    assert "<li><b>gap 95% CI</b>: paired bootstrap interval" in report


def test_results_read_like_a_results_section(report):
    """Each result of ours is a paragraph with its numbers, not a dump of its JSON fields."""
    assert "<h3>Suppression: zero ablation (perturb_zero.json)</h3>" in report and "meta.model" not in report
    # hand-made rows carry no per-example results, so no interval: said, not invented
    assert "Largest gap at 10% of neurons: the skill set leaves 0.500, random sets 0.840 (34.0 points, 95% CI n/a)" \
        in report
    assert "<th>gap (points)</th>" in report and "<td>0.840 ± 0.010</td>" in report
    assert "<h3>Robustness (robustness_typo.json)</h3>" in report and "<th>top k (fraction)</th>" in report


def test_dataset_text_is_escaped_everywhere(report):
    for evil in EVIL + ["<b>evil</b>", "a<i>"]:
        assert evil not in report
    assert "tiny &lt;b&gt;evil&lt;/b&gt;" in report  # the task's name
    assert report.count("<img ") == report.count('<img alt="')  # only our figures are images
    assert "<script" not in report  # the views are static HTML: no script to inject into


def test_report_needs_no_network(report):
    assert "Content-Security-Policy" in report and "default-src 'none'" in report
    assert not re.search(r"<script[^>]*\bsrc=", report)
    assert not re.search(r"""(src|href)=["']?https?:""", report)
    assert not re.search(r"""from\s*["']https?:""", report) and "unpkg" not in report


def _copy(run, tmp_path, *names, model=None) -> Path:
    for name in ("run.json", "prompt.safetensors", *names):
        shutil.copy(run.path / name, tmp_path / name)
    meta = json.loads((tmp_path / "run.json").read_text())
    meta["model"] = model or meta["model"]
    (tmp_path / "run.json").write_text(json.dumps(meta))
    return tmp_path


def test_report_without_model_or_optional_artifacts(tmp_path, run):
    _copy(run, tmp_path, model="no-such-model-anywhere")  # nothing may try to load it
    (tmp_path / "notes.json").write_text("{not json")  # a user's file: a note, not an error
    with pytest.warns(UserWarning, match="notes.json"):
        page = write_report(tmp_path, views=False).read_text()
    assert "skill-lens probe" in page and "Neuron views left out" in page
    assert "notes.json could not be read" in page
    assert "CircuitsVis" not in page


def test_a_corrupt_or_foreign_result_of_ours_stops_the_report(tmp_path, run):
    _copy(run, tmp_path, "perturb_zero.json")
    (tmp_path / "perturb_zero.json").write_text("{not json")
    with pytest.raises(ValueError, match="perturb_zero.json is not valid JSON"):
        write_report(tmp_path, views=False)
    (tmp_path / "perturb_zero.json").write_text(json.dumps({"method": "zero", "fractions": []}))
    with pytest.raises(ValueError, match="records no lineage"):
        write_report(tmp_path, views=False)
    assert not (tmp_path / "report.html").exists()


def test_views_that_cannot_run_become_a_note(tmp_path, run):
    _copy(run, tmp_path, "predictivity.safetensors", "predictivity.safetensors.json", model=str(tmp_path / "nope"))
    with pytest.warns(UserWarning, match="neuron views"):
        page = write_report(tmp_path).read_text()
    assert "neuron views could not be shown" in page and "<h3>Top 20 neurons of all</h3>" in page


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path):
    with pytest.raises(ValueError, match="skill-lens tune"):
        write_report(tmp_path)
    assert not (tmp_path / "report.html").exists()


def test_cli(tmp_path, run, capsys):
    out = tmp_path / "n.html"
    assert main(["report", str(run.path), "--out", str(out), "--no-views"]) == 0
    assert "Neuron views left out" in out.read_text() and f"wrote {out}" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "not a finished run" in capsys.readouterr().err


@needs_chromium
def test_report_renders_in_headless_chromium(run, report, tmp_path):
    page = run.path / "report.html"
    flags = ["--enable-logging=stderr", "--v=0", "--window-size=1200,4000"]
    shot = tmp_path / "shot.png"
    r = browse(page.as_uri(), tmp_path, *flags, f"--screenshot={shot}", budget_ms=5000)
    console = [l for l in r.stderr.splitlines() if "CONSOLE" in l]
    errors = [l for l in console if re.search(r"Uncaught|Error|Refused|Content Security Policy|Failed to load", l)]
    assert not errors, "\n".join(errors)
    dom = browse(page.as_uri(), tmp_path, *flags, "--dump-dom", budget_ms=5000).stdout
    assert dom.count('class="slv-legend"') >= 2  # the views are there without any script
    assert '<img src="x"' not in dom and "onerror=\"alert" not in dom
    from PIL import Image

    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape == (4000, 1200, 3)
    assert (rgb.mean(-1) < 200).mean() > 0.02  # text, tables and figures: not a blank page
    assert ((rgb.max(-1) - rgb.min(-1)) > 100).sum() > 500  # saturated colour: token panels and curves
    shutil.copy(shot, "/tmp/report_shot.png") if os.environ.get("SKILL_LENS_KEEP_SHOT") else None


def test_the_report_shows_the_null_threshold_and_how_many_neurons_pass(tmp_path):
    from skill_lens.workflow import steps

    run = steps.tune(tmp_path / "run", tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    result = steps.probe(run, permutations=19)
    steps.neurons(run, top=0.1)
    page = write_report(run, views=False).read_text()
    t, n = result.fwer_threshold(), int(result.significant().sum())
    assert f"{n:,} of 128 neurons are above the family-wise 5% threshold of {t:.3f}" in page
    assert f"the family-wise 5% threshold {t:.3f} from 19 label permutations" in page  # the summary at the top
    assert "Chance: the dev labels permuted 19 times" in page and "<th>family-wise p</th>" in page
