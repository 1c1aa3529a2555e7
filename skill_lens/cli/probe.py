"""``skill-lens probe RUN``: probe every FFN neuron of a tuned run (:func:`skill_lens.workflow.steps.probe`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.data.distributed import init_from_env, rank_world
from skill_lens.probing.probe import ProbeOptions
from skill_lens.workflow import steps
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("probe", help="baselines and predictivity of every FFN neuron "
                                     "(writes RUN/predictivity.safetensors; resumes after a kill; "
                                     "shards under torchrun)")
    p.add_argument("run", help="run directory made by `skill-lens tune`")
    add_options(p, ProbeOptions)
    p.add_argument("--show", type=int, default=5, help="how many top neurons to print")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, ProbeOptions)
    run_ = Run.open(args.run, **model_args(args))
    init_from_env()  # under torchrun, each process probes a shard (docs/cluster.md)
    result = steps.probe(run_, opts)
    if rank_world()[0] != 0:
        return 0
    print(f"probed {len(result.hook_names)} layers x {result.baseline.shape[-1]} neurons at "
          f"{result.baseline.shape[1]} positions ({result.sizes})")
    print(f"top {args.show} neurons by dev predictivity (test in brackets):")
    for name, dev, test in steps.top_neurons(result, args.show):
        print(f"  {name}  {dev:.3f}" + (f"  ({test:.3f})" if test is not None else ""))
    for split, null in result.null_summary().items() if opts.permutations else ():
        if isinstance(null, dict):
            print(f"{split}: family-wise 5% threshold {null['fwer_threshold']:.3f} ({opts.permutations} label "
                  f"permutations); {null['significant']} neurons above it (per layer: "
                  f"{', '.join(map(str, null['significant_per_layer']))})")
    print(f"wrote {run_.file('predictivity')}")
    return 0
