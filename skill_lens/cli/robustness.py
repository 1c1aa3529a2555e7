"""``skill-lens robustness RUN --adversarial SOURCE``: skill neurons on clean vs adversarial data
(:func:`skill_lens.workflow.steps.robustness`; writes ``RUN/robustness_<name>.json`` and ``.csv``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, add_options, model_args, options_from_args
from skill_lens.studies.robustness import RobustnessOptions
from skill_lens.workflow import steps
from skill_lens.workflow.runs import Run


def register(sub) -> None:
    p = sub.add_parser("robustness", help="skill neurons on clean vs adversarial data "
                                          "(writes RUN/robustness_<name>.json and .csv)")
    p.add_argument("run", help="run directory made by `skill-lens tune`")
    p.add_argument("--adversarial", required=True, metavar="SOURCE",
                   help="advglue:sst2[:PATH] (AdvGLUE; without PATH from the hub) or a perturbation of the "
                        "run's dev split: typos:0.1, word_deletion:0.2, word_swap:0.2, distractor:1.0 ...")
    add_options(p, RobustnessOptions)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    opts = options_from_args(args, RobustnessOptions)
    run_ = Run.open(args.run, **model_args(args))
    out = steps.robustness(run_, args.adversarial, opts)
    result, repair = out["result"], out["repair"]
    print(f"{args.adversarial}: {len(out['adversarial'])} adversarial examples ({run_.task.name} dev)")
    print(result.summary_text())
    if repair is not None:
        print(f"patching repair ({repair.n_neurons} clean skill neurons, top {opts.patch_top:g}): adversarial "
              f"{repair.adversarial_accuracy:.3f} -> patched {repair.patched_accuracy:.3f} (clean "
              f"{repair.clean_accuracy:.3f}); recovered {repair.recovered:.3f}")
    print("wrote " + " and ".join(str(p) for p in out["paths"] if p is not None))
    return 0
