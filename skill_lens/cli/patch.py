"""``skill-lens patch RUN``: patch the skill neurons' activations from a source text into a target text
(:func:`skill_lens.workflow.steps.patch`)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.workflow import steps
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("patch", help="patch skill neurons from a source text into a target text, print the effect")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--source-text", required=True)
    p.add_argument("--target-text", required=True)
    add_options(p, steps.PatchOptions)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, steps.PatchOptions)
    for flag, text in (("--source-text", args.source_text), ("--target-text", args.target_text)):
        if not text.strip():
            raise ValueError(f"{flag} is empty; pass a text to run.")
    run_ = Run.open(args.run, **model_args(args))
    result = steps.patch(run_, args.source_text, args.target_text, opts)
    print(f"patching {result.n_neurons} skill neurons at {opts.positions} positions of {run_.meta['model']}")
    print(f"  source: {args.source_text!r}\n  target: {args.target_text!r}")
    print(result.table())
    return 0
