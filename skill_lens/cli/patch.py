"""``skill-lens patch RUN``: patch the skill neurons' activations from a source text into a target text
(:func:`skill_lens.workflow.steps.patch`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args


def register(sub) -> None:
    p = sub.add_parser("patch", help="patch skill neurons from a source text into a target text, print the effect")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--source-text", required=True)
    p.add_argument("--target-text", required=True)
    p.add_argument("--top", type=float, help="fraction (0 < top < 1) or number of neurons by dev predictivity "
                                             "(default: RUN/neurons.safetensors if present, else 0.02)")
    p.add_argument("--per-layer", action="store_true", help="with --top: the top fraction of every layer")
    p.add_argument("--positions", choices=("prompt", "predict"), default="prompt")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.workflow.runs import Run

    if args.top is not None:
        steps.check_top(args.top)
    for flag, text in (("--source-text", args.source_text), ("--target-text", args.target_text)):
        if not text.strip():
            raise ValueError(f"{flag} is empty; pass a text to run.")
    run_ = Run.open(args.run, **model_args(args))
    result = steps.patch(run_, args.source_text, args.target_text, args.top, args.per_layer, args.positions)
    print(f"patching {result.n_neurons} skill neurons at {args.positions} positions of {run_.meta['model']}")
    print(f"  source: {args.source_text!r}\n  target: {args.target_text!r}")
    print(result.table())
    return 0
