"""``skill-lens prune RUN``: keep the skill neurons, fold the rest into biases, (re-tune,) time it
(:func:`skill_lens.studies.pruning_study.prune_run`; writes ``RUN/pruned`` with ``prune_summary.json``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.studies.pruning_study import PruneOptions, prune_run, summary_text
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("prune", help="a smaller model keeping only the most predictive FFN neurons "
                                     "(writes RUN/pruned, with prune_summary.json)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--out", default=None, help="output directory (default: RUN/pruned): new, empty, or a pruned "
                                               "model of ours, which is replaced")
    add_options(p, PruneOptions)
    p.add_argument("--retune-steps", type=int, default=0, help="re-tune the prompt on the pruned model for N steps")
    p.add_argument("--retune-lr", type=float, default=None, help="re-tuning learning rate (default: the run's)")
    p.add_argument("--retune-schedule", default="linear",
                   help="re-tuning learning rate after warmup: 'linear' decay (default) or 'constant'")
    add_model_args(p)
    p.set_defaults(func=run)


def options(args) -> PruneOptions:
    """The parsed flags as a validated :class:`~skill_lens.studies.pruning_study.PruneOptions`, the re-tuning flags
    gathered in its ``retune``.

    >>> from skill_lens.cli import build_parser
    >>> options(build_parser().parse_args(["prune", "RUN", "--position", "1", "--retune-steps", "5"])).retune
    {'steps': 5, 'schedule': 'linear'}
    """
    retune = {"steps": args.retune_steps, "schedule": args.retune_schedule} if args.retune_steps else None
    if args.retune_steps < 0 or (args.retune_lr is not None and not args.retune_lr > 0):
        raise ValueError(f"--retune-steps must be >= 0 and --retune-lr positive, got {args.retune_steps}, "
                         f"{args.retune_lr}")
    if retune is not None and args.retune_lr is not None:
        retune["lr"] = args.retune_lr
    return options_from_args(args, PruneOptions, retune=retune)


def run(args) -> int:
    opts = options(args)
    print(summary_text(prune_run(Run.open(args.run, **model_args(args)), opts, args.out)))
    return 0
