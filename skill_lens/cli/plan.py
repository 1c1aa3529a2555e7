"""``skill-lens plan MODEL``: each step's expected peak memory and forward tokens, from the config alone
(:func:`skill_lens.workflow.plan.plan`; no weights are loaded)."""

from __future__ import annotations

from skill_lens.cli._parse import add_options, options_from_args
from skill_lens.workflow.plan import PlanOptions, plan

SIZES = {"train": 400, "dev": 200, "test": 200}


def register(sub) -> None:
    p = sub.add_parser("plan", help="expected peak memory and forward tokens of tune, probe and perturb, from the "
                                    "model's config alone (nothing is loaded or run)")
    p.add_argument("model", help="smollm2-135m, a model directory, a config.json, or a Hub name")
    for split, n in SIZES.items():
        p.add_argument(f"--{split}-size", type=int, default=n, help=f"{split} examples (default: {n})")
    add_options(p, PlanOptions)
    p.add_argument("--budget", action="append", metavar="SIZE",
                   help="memory of one device, e.g. 80GiB or 24GiB (repeatable): whether each step fits in it")
    p.set_defaults(func=run)


def run(args) -> int:
    sizes = {split: getattr(args, f"{split}_size") for split in SIZES}
    print(plan(args.model, sizes, options_from_args(args, PlanOptions)).table(*(args.budget or ())))
    print("GiB; peaks leave out the Python runtime and allocator slack (a few hundred MB). Where a step does not fit, "
          "--max-memory and --offload-folder place that many GiB of weights on the CPU or the disk.")
    return 0
