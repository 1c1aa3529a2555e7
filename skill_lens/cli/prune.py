"""``skill-lens prune RUN``: keep the skill neurons, fold the rest into biases, (re-tune,) time it
(:func:`skill_lens.studies.pruning_study.prune_run`; writes ``RUN/pruned`` with ``prune_summary.json``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args, parse_layers
from skill_lens.studies.pruning_study import FOLDS


def register(sub) -> None:
    p = sub.add_parser("prune", help="a smaller model keeping only the most predictive FFN neurons "
                                     "(writes RUN/pruned, with prune_summary.json)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--keep", type=float, default=0.02,
                   help="per pruned layer: fraction of neurons kept (0 < keep <= 1) or a whole number >= 1")
    p.add_argument("--layers", default=None, help="layers to prune, e.g. '10-29' or '0,2,5-7' (default: all)")
    p.add_argument("--out", default=None, help="output directory (default: RUN/pruned): new, empty, or a pruned "
                                               "model of ours, which is replaced")
    p.add_argument("--fold", choices=FOLDS, default="calibrated",
                   help="what the removed neurons are fixed at: 'calibrated' (default), their mean over all tokens "
                        "under the pruned layers below (calibration.calibrate, on --calibration-size training "
                        "examples); 'baseline', the probe's train mean at the prompt positions (the paper's)")
    p.add_argument("--position", default="mean", help="with --fold baseline: the baseline of prompt position INT, "
                                                      "or 'mean' over positions")
    p.add_argument("--calibration-size", type=int, default=128, help="with --fold calibrated: training examples")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="predictivity over prompt positions")
    p.add_argument("--protect-massive", type=float, default=20.0, metavar="RATIO",
                   help="also keep neurons whose peak |activation| exceeds RATIO x their layer's median peak (the "
                        "attention sink's massive activations, calibration.massive_neurons), in place of the "
                        "least predictive kept ones: widths stay the same; 0 turns it off")
    p.add_argument("--retune-steps", type=int, default=0, help="re-tune the prompt on the pruned model for N steps")
    p.add_argument("--retune-train-size", type=int, default=None,
                   help="re-tune on N training examples of the run's task (same dev and test; default: the run's)")
    p.add_argument("--retune-lr", type=float, default=None, help="re-tuning learning rate (default: the run's)")
    p.add_argument("--retune-schedule", default="linear",
                   help="re-tuning learning rate after warmup: 'linear' decay (default) or 'constant'")
    p.add_argument("--control", action="store_true",
                   help="also re-tune the unpruned prompt with the same budget: the fair reference for the "
                        "accuracy drop when re-tuning gets more steps or data than the run's own tuning")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (median), models alternating")
    add_model_args(p)
    p.set_defaults(func=run)


def options(args):
    """The parsed flags as a validated :class:`~skill_lens.studies.pruning_study.PruneOptions`.

    >>> from skill_lens.cli import build_parser
    >>> options(build_parser().parse_args(["prune", "RUN", "--position", "1", "--retune-steps", "5"])).retune
    {'steps': 5, 'schedule': 'linear'}
    """
    from skill_lens.studies.pruning_study import PruneOptions

    position = int(args.position) if args.position.lstrip("-").isdigit() else args.position
    retune = {"steps": args.retune_steps, "schedule": args.retune_schedule} if args.retune_steps else None
    if args.retune_steps < 0 or (args.retune_lr is not None and not args.retune_lr > 0):
        raise ValueError(f"--retune-steps must be >= 0 and --retune-lr positive, got {args.retune_steps}, "
                         f"{args.retune_lr}")
    if retune is not None and args.retune_lr is not None:
        retune["lr"] = args.retune_lr
    return PruneOptions(keep=args.keep, layers=parse_layers(args.layers), fold=args.fold, position=position,
                        calibration_size=args.calibration_size, aggregate=args.aggregate,
                        protect_massive=args.protect_massive, retune=retune,
                        retune_train_size=args.retune_train_size, control=args.control, batch_size=args.batch_size,
                        repeats=args.repeats)


def run(args) -> int:
    from skill_lens.studies.pruning_study import prune_run, summary_text
    from skill_lens.workflow.runs import Run

    opts = options(args)
    print(summary_text(prune_run(Run.open(args.run, **model_args(args)), opts, args.out)))
    return 0
