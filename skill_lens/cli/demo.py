"""``skill-lens demo``: the main job, the whole method end to end on the default model and task
(:func:`skill_lens.workflow.steps.demo`): tune, probe, select, perturb, report, then the key figures.

Every step writes into one run directory; rerun the same command after an interruption: a finished
tuning of the same settings is reused, an interrupted step resumes.
"""

from __future__ import annotations

from skill_lens.cli import SIZES
from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.data.sources import TaskOptions, load_task
from skill_lens.model.loading import load_model
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.workflow import steps
from skill_lens.workflow.steps import DemoOptions


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole method on smollm2-135m and rotten_tomatoes: tune, probe, select, "
                                    "perturb, report (about 5 min on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="run directory (resumes if it exists)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten_tomatoes")
    add_options(p, TuneConfig, only=("steps",))
    add_options(p, DemoOptions)
    add_model_args(p, run=False)
    p.set_defaults(func=run)


def run(args) -> int:
    config, load, options = options_from_args(args, TuneConfig), model_args(args), options_from_args(args, DemoOptions)
    sizes = TaskOptions(**SIZES)
    steps.demo(load_model(args.model, **load), load_task(args.task, sizes), args.out, config, options,
               task_args=sizes.as_args())
    return 0
