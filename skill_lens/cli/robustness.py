"""``skill-lens robustness RUN --adversarial SOURCE``: skill neurons on clean vs adversarial data.

Writes ``RUN/robustness_<name>.json`` (accuracy, Spearman, overlaps, curves, repair) and
``RUN/robustness_<name>.csv`` (the overlap table, one row per k), both atomically.
"""

from __future__ import annotations

from pathlib import Path


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
    p.set_defaults(func=run)


def _floats(text: str, what: str) -> list[float]:
    """Comma-separated floats.

    >>> _floats("0.01, 0.1", "--ks"), _floats("", "--curve-fractions")
    ([0.01, 0.1], [])
    """
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated numbers such as 0.01,0.05, got {text!r}") from None


def run(args, run_obj=None) -> int:
    """Parsed arguments -> :func:`robustness_run`; ``run_obj`` injects an opened Run (tests)."""
    from skill_lens.runs import Run

    ks = _floats(args.ks, "--ks")
    if not ks or any(not 0 < k <= 1 for k in ks):
        raise ValueError(f"--ks must be fractions in (0, 1], got {args.ks!r}")
    if args.batch_size < 1 or args.controls < 0 or not 0 <= args.patch_top <= 1:
        raise ValueError("--batch-size must be >= 1, --controls >= 0 and --patch-top in [0, 1]")
    robustness_run(run_obj or Run.open(args.run), args.adversarial, ks, seed=args.seed,
                   adv_baseline=args.adv_baseline, curve_fractions=_floats(args.curve_fractions, "--curve-fractions"),
                   method=args.method, controls=args.controls, patch_top=args.patch_top, batch_size=args.batch_size)
    return 0


def robustness_run(run, source: str, ks=(0.01, 0.02, 0.05, 0.1, 0.2), seed: int = 0, adv_baseline: bool = False,
                   curve_fractions=(0, 0.05, 0.1), method: str = "gaussian", controls: int = 1,
                   patch_top: float = 0.02, batch_size: int = 32) -> dict:
    """Run the analyses of :mod:`skill_lens.robustness` on ``run`` and ``source``; write, print, return the dict.

    >>> import tempfile, contextlib, io, json
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> config = TuneConfig(prompt_length=2, steps=2, eval_every=2)
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), config)
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     out = robustness_run(r, "word_swap:0.5", ks=[0.05], curve_fractions=[])
    >>> sorted(p.name for p in r.path.glob("robustness_*")), out["spearman"] is not None
    (['robustness_word_swap_0.5.csv', 'robustness_word_swap_0.5.json'], True)
    """
    from skill_lens.artifacts import atomic_write, write_json
    from skill_lens.neurons import NeuronSet
    from skill_lens.robustness import adversarial_split, neuron_robustness, patch_repair, source_name

    task, name = run.task, source_name(source)
    adv = adversarial_split(source, task, "dev", seed)  # validates before anything is written
    pm = run.prompted()
    result = neuron_robustness(pm, task, adv, ks, adv_baseline=adv_baseline, curve_fractions=curve_fractions,
                               method=method, controls=controls, batch_size=batch_size, seed=seed)
    out = {"run": str(run.path), "source": source, "seed": seed, **result.to_dict()}
    repair = None
    if patch_top > 0 and not source.startswith("advglue"):
        neurons = NeuronSet.from_scores(result.clean_scores, patch_top)
        repair = patch_repair(pm, task.dev, adv, neurons, batch_size)
        out["repair"] = {"top": patch_top, **repair.to_dict()}
    json_path, csv_path = (Path(run.path) / f"robustness_{name}.{ext}" for ext in ("json", "csv"))
    write_json(json_path, out)
    with atomic_write(csv_path) as f:
        result.to_pandas().to_csv(f, index=False)

    a = result.accuracy
    print(f"{source}: {len(adv)} adversarial examples vs {a['clean']['n']} clean ({task.name} dev)")
    print(f"accuracy  clean {a['clean']['accuracy']:.3f}  adversarial {a['adversarial']['accuracy']:.3f}  "
          f"drop {a['accuracy_drop']:+.3f}" + (f"  consistency {a['consistency']:.3f}" if a["paired"] else ""))
    print(f"Spearman (clean vs adversarial predictivity, {result.clean_scores.numel()} neurons): {result.spearman:.3f}")
    if result.adv_self:
        print("adversarial-baseline scores: " + ", ".join(f"{k}={v}" for k, v in result.adv_self.items()
                                                          if not isinstance(v, list)))
    print("top-k overlap |clean ∩ adversarial| / k:")
    print(result.table())
    for key, curve in result.curves.items():
        print(f"suppression on adversarial data, {key.replace('_', ' ')} ({curve.method}):")
        print(curve.table())
    if repair is not None:
        print(f"patching repair ({repair.n_neurons} clean skill neurons, top {patch_top:g}): adversarial "
              f"{repair.adversarial_accuracy:.3f} -> patched {repair.patched_accuracy:.3f} (clean "
              f"{repair.clean_accuracy:.3f}); recovered {repair.recovered:.3f}")
    print(f"wrote {json_path} and {csv_path}")
    return out
