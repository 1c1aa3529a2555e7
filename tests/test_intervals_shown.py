"""Intervals where results are shown: run.json's accuracy_ci, the report's accuracy table, the gap panel."""

from __future__ import annotations

import json

import torch

from skill_lens import plots
from skill_lens.intervening.suppression import suppression_curve
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.workflow.report import write_report
from skill_lens.workflow.runs import Run
from skill_lens.model.tiny import tiny_model, tiny_task
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.prompting.evaluation import prompted


def test_run_json_has_wilson_intervals_and_old_runs_still_open(tmp_path):
    run = Run.create(tmp_path / "r", tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    acc, ci = run.meta["accuracy"], run.meta["accuracy_ci"]
    assert set(ci) == set(acc)
    for k, (lo, hi) in ci.items():
        assert 0 <= lo <= acc[k] <= hi <= 1 and hi - lo > 0.1  # 32 examples: a wide interval
    page = write_report(run, include_views=False).read_text()
    assert f"{acc['dev']:.3f} [{ci['dev'][0]:.3f}, {ci['dev'][1]:.3f}]" in page and "Wilson 95% interval" in page
    meta = json.loads(run.file("run").read_text())
    del meta["accuracy_ci"]  # a run made before intervals
    run.file("run").write_text(json.dumps(meta))
    old = Run.open(run.path)
    assert "accuracy_ci" not in old.meta and "Wilson" not in write_report(old, include_views=False).read_text()


def test_the_suppression_plot_shows_the_gap_interval():
    model, task = tiny_model(), tiny_task()
    pm = prompted(model, task, SoftPrompt.init(model, 2))
    curve = suppression_curve(pm, task, torch.rand(2, 64), [0, 0.2], method="zero", controls=2)
    for form in (curve.to_dict(), curve.to_pandas()):
        fig = plots.suppression_curves(form)
        assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "gap (points)"
        assert len(fig.axes[1].collections) >= 1  # the shaded interval
    no_controls = suppression_curve(pm, task, torch.rand(2, 64), [0, 0.2], method="zero", controls=0)
    assert len(plots.suppression_curves(no_controls.to_dict()).axes) == 1  # no interval, no panel
