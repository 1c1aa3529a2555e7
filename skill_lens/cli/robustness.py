"""``skill-lens robustness RUN --adversarial SOURCE``: skill neurons on clean vs adversarial data
(:func:`skill_lens.workflow.steps.robustness`; writes ``RUN/robustness_<name>.json`` and ``.csv``)."""

from __future__ import annotations

from skill_lens.cli._parse import add_model_args, model_args, parse_fractions


def register(sub) -> None:
    p = sub.add_parser("robustness", help="skill neurons on clean vs adversarial data "
                                          "(writes RUN/robustness_<name>.json and .csv)")
    p.add_argument("run", help="run directory made by `skill-lens tune`")
    p.add_argument("--adversarial", required=True, metavar="SOURCE",
                   help="advglue:sst2[:PATH] (AdvGLUE; without PATH from the hub) or a perturbation of the "
                        "run's dev split: typos:0.1, word_deletion:0.2, word_swap:0.2, distractor:1.0 ...")
    p.add_argument("--ks", default="0.01,0.02,0.05,0.1,0.2", help="fractions of neurons for the top-k overlaps")
    p.add_argument("--seed", type=int, default=0, help="seed of perturbations, halves and curves")
    p.add_argument("--adv-baseline", action="store_true",
                   help="also score with the baseline from half of the adversarial data")
    p.add_argument("--curve-fractions", default="0,0.05,0.1", help="suppression curve fractions ('' for none)")
    p.add_argument("--method", choices=("gaussian", "zero", "mean"), default="gaussian", help="suppression method")
    p.add_argument("--controls", type=int, default=1, help="random neuron sets per curve fraction")
    p.add_argument("--patch-top", type=float, default=0.02,
                   help="fraction of neurons (top clean predictivity) patched for the repair; 0 to skip")
    p.add_argument("--batch-size", type=int, default=32)
    add_model_args(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow import steps
    from skill_lens.workflow.runs import Run

    ks, fractions = parse_fractions(args.ks), parse_fractions(args.curve_fractions)
    run_ = Run.open(args.run, **model_args(args))
    out = steps.robustness(run_, args.adversarial, ks, seed=args.seed, adv_baseline=args.adv_baseline,
                           curve_fractions=fractions, method=args.method, controls=args.controls,
                           patch_top=args.patch_top, batch_size=args.batch_size)
    result, repair = out["result"], out["repair"]
    print(f"{args.adversarial}: {len(out['adversarial'])} adversarial examples ({run_.task.name} dev)")
    print(result.summary_text())
    if repair is not None:
        print(f"patching repair ({repair.n_neurons} clean skill neurons, top {args.patch_top:g}): adversarial "
              f"{repair.adversarial_accuracy:.3f} -> patched {repair.patched_accuracy:.3f} (clean "
              f"{repair.clean_accuracy:.3f}); recovered {repair.recovered:.3f}")
    print("wrote " + " and ".join(str(p) for p in out["paths"] if p is not None))
    return 0
