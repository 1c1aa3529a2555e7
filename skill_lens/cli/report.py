"""``skill-lens report RUN``: one self-contained HTML report of a run (writes ``RUN/report.html``)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report of a run (writes RUN/report.html)")
    p.add_argument("run", help="run directory made by `skill-lens tune` (and later steps)")
    p.add_argument("--out", help="where to write the report (default RUN/report.html)")
    p.add_argument("--no-views", dest="views", action="store_false",
                   help="leave out the circuitsvis neuron views (they load and run the model)")
    p.add_argument("--neurons", type=int, default=8, help="how many top neurons the views show")
    p.add_argument("--examples", type=int, default=3, help="how many dev examples the views show")
    p.set_defaults(func=run)


def run(args, run_obj=None) -> int:
    """Parsed arguments -> report; ``run_obj`` injects an opened :class:`~skill_lens.runs.Run` (tests).

    >>> import argparse, tempfile, json, contextlib, io
    >>> from pathlib import Path
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "run.json").write_text(json.dumps({"model": "m", "task": {"name": "t"}, "accuracy": {}}))
    >>> with contextlib.redirect_stdout(io.StringIO()) as out:
    ...     rc = run(argparse.Namespace(run=str(d), out=None, views=False, neurons=8, examples=3))
    >>> rc, (d / "report.html").exists(), out.getvalue().startswith("wrote ")
    (0, True, True)
    """
    from skill_lens.report import write_report

    if args.neurons < 1 or args.examples < 1:
        raise ValueError(f"--neurons and --examples must be at least 1, got {args.neurons} and {args.examples}")
    if run_obj is None and args.views:
        from skill_lens.runs import Run

        run_obj = Run.open(args.run)  # the model loads only if the views need it
    path = write_report(args.run, out=args.out, include_views=args.views, run=run_obj,
                        n_neurons=args.neurons, n_examples=args.examples)
    print(f"wrote {path}")
    return 0
