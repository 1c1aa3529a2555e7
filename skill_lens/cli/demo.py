"""``skill-lens demo``: the main job, the whole method end to end on the default model and task
(:func:`skill_lens.workflow.steps.demo`): tune, probe, select, perturb, report, then the key figures.

Every step writes into one run directory; rerun the same command after an interruption: a finished
tuning of the same settings is reused, an interrupted step resumes.
"""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args

SIZES = {"train_size": 400, "dev_size": 200, "test_size": 200, "seed": 0}


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole method on smollm2-135m and rotten_tomatoes: tune, probe, select, "
                                    "perturb, report (about 5 min on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="run directory (resumes if it exists)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--steps", type=int, default=150, help="prompt-tuning steps (batch 16)")
    p.add_argument("--controls", type=int, default=3, help="random neuron sets per fraction")
    add_model_args(p, run=False)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.model.loading import load_model
    from skill_lens.data.sources import load_task
    from skill_lens.prompting.tuning import TuneConfig

    config, load = TuneConfig(steps=args.steps), model_args(args)
    if args.controls < 0:
        raise ValueError(f"--controls must be >= 0, got {args.controls}")
    task = load_task(args.task, **SIZES)
    steps.demo(load_model(args.model, **load), task, args.out, config, controls=args.controls, task_args=SIZES)
    return 0
