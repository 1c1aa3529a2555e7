"""``skill-lens seeds DIR`` (or ``RUN RUN ... --out DIR``): aggregate probed seed runs of one task, the
predictivity's mean over seeds and the ranking's replicability (:func:`skill_lens.workflow.steps.seeds`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_options, options_from_args
from skill_lens.workflow import steps
from skill_lens.workflow.seeds import SeedGroup, SeedOptions, replicability_text


def register(sub) -> None:
    p = sub.add_parser("seeds", help="mean predictivity over seed runs and its replicability between seeds "
                                     "(writes DIR/seeds.safetensors; `skill-lens neurons DIR` selects from it)")
    p.add_argument("runs", nargs="+", help="a directory of seed runs (`skill-lens tune --seeds 0,1,2 --out DIR`), "
                                           "or several run directories (with --out)")
    p.add_argument("--out", help="directory for the aggregate (default: the one directory of seed runs)")
    add_options(p, SeedOptions)
    p.add_argument("--show", type=int, default=5, help="how many top neurons (mean over seeds) to print")
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, SeedOptions)
    group = SeedGroup.of(args.runs, args.out)
    agg = steps.seeds(group, opts)
    m = agg.meta
    print(f"{len(group.runs)} seed runs of {m['model']} on {m['task']} (seeds {', '.join(map(str, m['seeds']))}); "
          f"dev predictivity ({opts.aggregate} over positions) of {m['n_layers']} x {m['d_mlp']} neurons:")
    for line in replicability_text(m["replicability"]["dev"]):
        print("  " + line)
    print(f"top {args.show} neurons by the mean over seeds (dev):")
    for name, dev, test in steps.top_neurons(agg, args.show, opts.aggregate):
        print(f"  {name}  {dev:.3f}" + (f"  ({test:.3f} test)" if test is not None else ""))
    print(f"wrote {group.file('seeds')}")
    return 0
