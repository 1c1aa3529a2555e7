"""``skill-lens demo``: the main job, end to end on the default model and task."""

from __future__ import annotations

import time


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole method on smollm2-135m and rotten_tomatoes (about 10 min on 2 cores)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=150)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.models import load_model
    from skill_lens.runs import Run
    from skill_lens.tasks import load_task
    from skill_lens.tuning import TuneConfig

    t0 = time.perf_counter()
    sizes = {"train_size": 400, "dev_size": 200, "test_size": 200, "seed": 0}
    task = load_task("rotten_tomatoes", **sizes)
    model = load_model(args.model)
    print(f"[1/1] tuning an 8-token prompt on {args.model} for rotten_tomatoes (400 train / 200 dev)")
    run = Run.create(args.out, model, task, TuneConfig(steps=args.steps), sizes)
    acc = run.meta["accuracy"]
    print(f"\nskill_lens demo: {args.model} on rotten_tomatoes")
    print(f"  soft prompt   dev {acc['dev']:.3f}  test {acc['test']:.3f}")
    print(f"  hard prompt   dev {acc['hard_prompt_dev']:.3f}  test {acc['hard_prompt_test']:.3f}")
    print(f"  run directory {run.path}  ({time.perf_counter() - t0:.0f}s)")
    return 0
