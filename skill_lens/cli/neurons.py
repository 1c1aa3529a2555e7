"""``skill-lens neurons RUN``: select skill neurons by dev predictivity (:func:`skill_lens.workflow.steps.neurons`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_options, options_from_args
from skill_lens.workflow import steps
from skill_lens.workflow.seeds import open_scored


def register(sub) -> None:
    p = sub.add_parser("neurons", help="select the most predictive neurons (writes RUN/neurons.safetensors)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`), or a "
                               "directory of seeds aggregated by `skill-lens seeds DIR` (mean over seeds)")
    add_options(p, steps.NeuronOptions)
    p.add_argument("--show", type=int, default=10, help="how many neurons to print")
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, steps.NeuronOptions)
    run_ = open_scored(args.run)  # a run, or a directory of aggregated seeds (mean over seeds)
    ns = steps.neurons(run_, opts)
    L, N = ns.shape
    print(f"selected {len(ns)} of {L * N} neurons ({'per layer' if opts.per_layer else 'global'}, "
          f"top {opts.top}, {opts.aggregate} over positions) by dev predictivity:")
    for layer, idx in sorted(ns.pairs(), key=lambda p: -ns.scores[p].item())[: args.show]:
        print(f"  {ns.name(layer, idx)}  {ns.scores[layer, idx].item():.3f}")
    print(f"wrote {run_.file('neurons')}")
    return 0
