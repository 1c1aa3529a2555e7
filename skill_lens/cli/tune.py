"""``skill-lens tune``: tune a soft prompt and write a run directory."""

from __future__ import annotations

from skill_lens.cli import add_task_args, task_from_args


def register(sub) -> None:
    p = sub.add_parser("tune", help="tune a soft prompt for a task (writes RUN/prompt.safetensors, RUN/run.json)")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a local HF directory, or a Hub name")
    p.add_argument("--out", default="runs/default", help="run directory")
    add_task_args(p)
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.03)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--patience", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, help="truncate inputs to this many tokens")
    p.set_defaults(func=run)


def config_from_args(args):
    from skill_lens.tuning import TuneConfig

    return TuneConfig(prompt_length=args.prompt_length, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      eval_every=args.eval_every, patience=args.patience, seed=args.seed, max_length=args.max_length)


def run(args) -> int:
    from skill_lens.models import load_model
    from skill_lens.runs import Run

    config = config_from_args(args)  # validate everything before the slow parts
    task, task_args = task_from_args(args)
    model = load_model(args.model)
    run = Run.create(args.out, model, task, config, task_args)
    acc = run.meta["accuracy"]
    print(f"tuned {run.meta['prompt_length']}-token prompt on {run.meta['model']} for {task.name} "
          f"({len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test)")
    print(f"dev accuracy {acc['dev']:.3f} (hard prompt {acc['hard_prompt_dev']:.3f}); "
          f"test accuracy {_fmt(acc['test'])} (hard prompt {_fmt(acc['hard_prompt_test'])})")
    print(f"wrote {run.path}/prompt.safetensors and {run.path}/run.json")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"
