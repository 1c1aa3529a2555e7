"""``skill-lens tune``: tune a soft prompt and write a run directory (:func:`skill_lens.steps.tune`)."""

from __future__ import annotations

from skill_lens.cli import add_task_args, task_from_args
from skill_lens.cli._parse import add_model_args, model_args


def register(sub) -> None:
    p = sub.add_parser("tune", help="tune a soft prompt for a task (writes RUN/prompt.safetensors, RUN/run.json)")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a local HF directory, or a Hub name")
    p.add_argument("--out", default="runs/default", help="run directory (new, or an interrupted tuning to resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-tune a finished run in --out, removing everything derived from its old prompt")
    add_task_args(p)
    add_model_args(p, run=False)
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, help="truncate inputs to this many tokens")
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens import steps
    from skill_lens.models import load_model
    from skill_lens.tuning import TuneConfig

    config = TuneConfig(prompt_length=args.prompt_length, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        eval_every=args.eval_every, patience=args.patience, seed=args.seed,
                        max_length=args.max_length)  # validates before the slow parts
    load = model_args(args)
    task, task_args = task_from_args(args)
    run_ = steps.tune(args.out, load_model(args.model, **load), task, config, task_args, overwrite=args.overwrite)
    acc, fmt = run_.meta["accuracy"], lambda x: "n/a" if x is None else f"{x:.3f}"
    print(f"tuned {run_.meta['prompt_length']}-token prompt on {run_.meta['model']} for {task.name} "
          f"({len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test)")
    print(f"dev accuracy {acc['dev']:.3f} (hard prompt {acc['hard_prompt_dev']:.3f}); "
          f"test accuracy {fmt(acc['test'])} (hard prompt {fmt(acc['hard_prompt_test'])})")
    print(f"wrote {run_.file('prompt')} and {run_.file('run')}")
    return 0
