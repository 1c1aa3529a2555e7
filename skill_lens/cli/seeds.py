"""``skill-lens seeds DIR`` (or ``RUN RUN ... --out DIR``): aggregate probed seed runs of one task, the
predictivity's mean over seeds and the ranking's replicability (:func:`skill_lens.workflow.steps.seeds`)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("seeds", help="mean predictivity over seed runs and its replicability between seeds "
                                     "(writes DIR/seeds.safetensors; `skill-lens neurons DIR` selects from it)")
    p.add_argument("runs", nargs="+", help="a directory of seed runs (`skill-lens tune --seeds 0,1,2 --out DIR`), "
                                           "or several run directories (with --out)")
    p.add_argument("--out", help="directory for the aggregate (default: the one directory of seed runs)")
    p.add_argument("--top", type=float, default=0.01, help="top fraction (or number) of neurons whose overlap "
                                                           "between seeds is measured")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="over prompt positions, per run")
    p.add_argument("--show", type=int, default=5, help="how many top neurons (mean over seeds) to print")
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.workflow.seeds import SeedGroup, replicability_text

    steps.check_top(args.top)
    group = SeedGroup.of(args.runs, args.out)
    agg = steps.seeds(group, args.top, args.aggregate)
    m = agg.meta
    print(f"{len(group.runs)} seed runs of {m['model']} on {m['task']} (seeds {', '.join(map(str, m['seeds']))}); "
          f"dev predictivity ({args.aggregate} over positions) of {m['n_layers']} x {m['d_mlp']} neurons:")
    for line in replicability_text(m["replicability"]["dev"]):
        print("  " + line)
    print(f"top {args.show} neurons by the mean over seeds (dev):")
    for name, dev, test in steps.top_neurons(agg, args.show, args.aggregate):
        print(f"  {name}  {dev:.3f}" + (f"  ({test:.3f} test)" if test is not None else ""))
    print(f"wrote {group.file('seeds')}")
    return 0
