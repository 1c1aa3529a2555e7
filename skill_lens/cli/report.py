"""``skill-lens report RUN``: one self-contained HTML report of a run (:func:`skill_lens.workflow.steps.report`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args


def register(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report of a run (writes RUN/report.html)")
    p.add_argument("run", help="run directory made by `skill-lens tune` (and later steps)")
    p.add_argument("--out", help="where to write the report (default RUN/report.html; a new file or a report of ours)")
    p.add_argument("--no-views", dest="views", action="store_false",
                   help="leave out the circuitsvis neuron views (they load and run the model)")
    p.add_argument("--neurons", type=int, default=8, help="how many top neurons the views show")
    p.add_argument("--examples", type=int, default=3, help="how many dev examples the views show")
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.workflow.runs import Run

    steps.check_positive(neurons=args.neurons, examples=args.examples)
    path = steps.report(Run.open(args.run, **model_args(args)), out=args.out, views=args.views, n_neurons=args.neurons,
                        n_examples=args.examples)
    print(f"wrote {path}")
    return 0
