"""``skill-lens tune``: tune a soft prompt and write a run directory (:func:`skill_lens.workflow.steps.tune`)."""

from __future__ import annotations

from skill_lens.cli import add_task_args, task_from_args
from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.model.loading import load_model
from skill_lens.prompting.tuning import TuneConfig
from skill_lens.workflow import steps
from skill_lens.workflow.seeds import parse_seeds


def register(sub) -> None:
    p = sub.add_parser("tune", help="tune a soft prompt for a task (writes RUN/prompt.safetensors, RUN/run.json)")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m, a local HF directory, or a Hub name")
    p.add_argument("--out", default="runs/default", help="run directory (new, or an interrupted tuning to resume)")
    p.add_argument("--overwrite", action="store_true",
                   help="re-tune a finished run in --out, removing everything derived from its old prompt")
    add_task_args(p)
    add_model_args(p, run=False)
    add_options(p, TuneConfig)
    p.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2: one run per seed in OUT/seed-S (reused when "
                                   "finished); probe each, then `skill-lens seeds OUT`")
    p.set_defaults(func=run)


def run(args) -> int:
    config = options_from_args(args, TuneConfig)  # validates before the slow parts
    seeds, load = parse_seeds(args.seeds) if args.seeds is not None else None, model_args(args)
    task, task_args = task_from_args(args)
    model = load_model(args.model, **load)
    runs = [steps.tune(args.out, model, task, config, task_args, overwrite=args.overwrite)] if seeds is None else \
        steps.tune_seeds(args.out, model, task, config, seeds, task_args, overwrite=args.overwrite)
    print(f"tuned {config.prompt_length}-token prompt{'s' * (len(runs) > 1)} on {runs[0].meta['model']} for "
          f"{task.name} ({len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test)")
    for run_ in runs:
        acc, ci = run_.meta["accuracy"], run_.meta.get("accuracy_ci") or {}
        fmt = lambda k: "n/a" if acc.get(k) is None else f"{acc[k]:.3f}" + (  # noqa: E731
            f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")
        print(("" if seeds is None else f"seed {run_.meta['seed']}: ") + f"dev accuracy {fmt('dev')} (hard prompt "
              f"{fmt('hard_prompt_dev')}); test accuracy {fmt('test')} (hard prompt {fmt('hard_prompt_test')})")
    print("[95% Wilson intervals]; wrote " + ", ".join(str(r.path) for r in runs)
          + ("" if seeds is None else f"\nnext: `skill-lens probe` each run, then `skill-lens seeds {args.out}`"))
    return 0
