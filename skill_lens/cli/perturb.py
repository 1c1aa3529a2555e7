"""``skill-lens perturb RUN``: suppression curve of the top skill neurons against random neurons
(:func:`skill_lens.workflow.steps.perturb`; writes ``RUN/perturb_<method>.json`` and ``.csv``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.data.distributed import init_from_env, rank_world
from skill_lens.workflow import steps
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("perturb", help="suppression curve: perturb the top skill neurons vs random neurons "
                                       "(writes RUN/perturb_<method>.json/.csv; resumes after a kill)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    add_options(p, steps.PerturbOptions)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, steps.PerturbOptions)
    run_ = Run.open(args.run, **model_args(args))
    init_from_env()  # under torchrun, each process runs a share of every row (docs/cluster.md)
    curve = steps.perturb(run_, opts)
    if rank_world()[0] != 0:
        return 0
    n = len(getattr(run_.task, opts.split))
    print(f"suppression curve on {run_.meta['model']} / {run_.task.name} {opts.split} ({n} examples), method "
          f"{opts.method}" + (f" std {opts.std} per {opts.per}" if opts.method == "gaussian" else "")
          + f", {opts.controls} random controls, {'per layer' if opts.per_layer else 'global'} top fractions:")
    print(curve.table())
    print(f"wrote {run_.path / f'perturb_{opts.method}'}.json and .csv")
    return 0
