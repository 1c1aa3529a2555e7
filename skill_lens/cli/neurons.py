"""``skill-lens neurons RUN``: select skill neurons by dev predictivity (:func:`skill_lens.workflow.steps.neurons`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("neurons", help="select the most predictive neurons (writes RUN/neurons.safetensors)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`), or a "
                               "directory of seeds aggregated by `skill-lens seeds DIR` (mean over seeds)")
    p.add_argument("--top", type=float, default=0.02,
                   help="fraction of neurons (0 < top < 1), or a whole number of neurons (>= 1)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--per-layer", dest="per_layer", action="store_true", default=False,
                       help="the top fraction of every layer (default: of all neurons, as everywhere)")
    scope.add_argument("--global", dest="per_layer", action="store_false", help="the top fraction of all neurons")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="over prompt positions")
    p.add_argument("--show", type=int, default=10, help="how many neurons to print")
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.workflow.seeds import open_scored

    steps.check_top(args.top)
    run_ = open_scored(args.run)  # a run, or a directory of aggregated seeds (mean over seeds)
    ns = steps.neurons(run_, args.top, per_layer=args.per_layer, aggregate=args.aggregate)
    L, N = ns.shape
    print(f"selected {len(ns)} of {L * N} neurons ({'per layer' if args.per_layer else 'global'}, "
          f"top {args.top}, {args.aggregate} over positions) by dev predictivity:")
    for layer, idx in sorted(ns.pairs(), key=lambda p: -ns.scores[p].item())[: args.show]:
        print(f"  {ns.name(layer, idx)}  {ns.scores[layer, idx].item():.3f}")
    print(f"wrote {run_.file('neurons')}")
    return 0
