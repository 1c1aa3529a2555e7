"""``skill-lens perturb RUN``: suppression curve of the top skill neurons against random neurons
(:func:`skill_lens.workflow.steps.perturb`; writes ``RUN/perturb_<method>.json`` and ``.csv``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args, parse_fractions, parse_positions


def register(sub) -> None:
    from skill_lens.intervening.suppression import METHODS

    p = sub.add_parser("perturb", help="suppression curve: perturb the top skill neurons vs random neurons "
                                       "(writes RUN/perturb_<method>.json/.csv; resumes after a kill)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--method", choices=METHODS, default="gaussian")
    p.add_argument("--fractions", default="0,0.01,0.02,0.05,0.1", help="comma-separated fractions in [0, 1]")
    p.add_argument("--controls", type=int, default=3, help="random neuron sets per fraction")
    p.add_argument("--per-layer", action="store_true", help="the top fraction of every layer (default: of all)")
    p.add_argument("--std", type=float, default=1.0, help="standard deviation of the Gaussian noise")
    p.add_argument("--per", choices=("token", "example"), default="token", help="fresh noise per token or example")
    p.add_argument("--split", choices=("dev", "test"), default="dev", help="split the accuracy is measured on")
    p.add_argument("--positions", default="prompt", help="prompt, input, predict, all, or indices like 0,1,-1")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="neuron score over prompt positions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--draws", type=int, default=1, help="Gaussian noise draws per neuron set (the gap's interval "
                                                        "covers examples, draws and controls)")
    p.add_argument("--batch-size", type=int, default=32)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.data.distributed import init_from_env, rank_world
    from skill_lens.workflow import steps
    from skill_lens.workflow.runs import Run

    fractions, positions = parse_fractions(args.fractions), parse_positions(args.positions)
    run_ = Run.open(args.run, **model_args(args))
    init_from_env()  # under torchrun, each process runs a share of every row (docs/cluster.md)
    curve = steps.perturb(run_, args.method, fractions, args.controls, args.per_layer, args.std, args.split,
                          positions, args.per, args.aggregate, args.seed, args.batch_size, draws=args.draws)
    if rank_world()[0] != 0:
        return 0
    n = len(getattr(run_.task, args.split))
    print(f"suppression curve on {run_.meta['model']} / {run_.task.name} {args.split} ({n} examples), method "
          f"{args.method}" + (f" std {args.std} per {args.per}" if args.method == "gaussian" else "")
          + f", {args.controls} random controls, {'per layer' if args.per_layer else 'global'} top fractions:")
    print(curve.table())
    print(f"wrote {run_.path / f'perturb_{args.method}'}.json and .csv")
    return 0
