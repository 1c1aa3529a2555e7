"""``skill-lens report RUN``: one self-contained HTML report of a run (:func:`skill_lens.workflow.steps.report`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.workflow import steps
from skill_lens.workflow.report import ReportOptions
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report of a run (writes RUN/report.html)")
    p.add_argument("run", help="run directory made by `skill-lens tune` (and later steps)")
    p.add_argument("--out", help="where to write the report (default RUN/report.html; a new file or a report of ours)")
    add_options(p, ReportOptions)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, ReportOptions)
    print(f"wrote {steps.report(Run.open(args.run, **model_args(args)), args.out, opts)}")
    return 0
