"""``skill-lens prune RUN``: keep the skill neurons, fold the rest into biases, (re-tune), time it (writes ``RUN/pruned``)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

SUMMARY_FILE = "prune_summary.json"


def register(sub) -> None:
    p = sub.add_parser("prune", help="a smaller model keeping only the most predictive FFN neurons "
                                     "(writes RUN/pruned, with prune_summary.json)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--keep", type=float, default=0.02,
                   help="per pruned layer: fraction of neurons kept (0 < keep <= 1) or a whole number >= 1")
    p.add_argument("--layers", default=None, help="layers to prune, e.g. '10-29' or '0,2,5-7' (default: all)")
    p.add_argument("--out", default=None, help="output directory (default: RUN/pruned)")
    p.add_argument("--fold", choices=FOLDS, default="calibrated",
                   help="what the removed neurons are fixed at: 'calibrated' (default), their mean over all tokens "
                        "under the pruned layers below (calibration.calibrate, on --calibration-size training "
                        "examples); 'baseline', the probe's train mean at the prompt positions (the paper's)")
    p.add_argument("--position", default="mean", help="with --fold baseline: the baseline of prompt position INT, "
                                                      "or 'mean' over positions")
    p.add_argument("--calibration-size", type=int, default=128, help="with --fold calibrated: training examples")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="predictivity over prompt positions")
    p.add_argument("--protect-massive", type=float, default=20.0, metavar="RATIO",
                   help="also keep neurons whose peak |activation| exceeds RATIO x their layer's median peak (the "
                        "attention sink's massive activations, calibration.massive_neurons), in place of the "
                        "least predictive kept ones: widths stay the same; 0 turns it off")
    p.add_argument("--retune-steps", type=int, default=0, help="re-tune the prompt on the pruned model for N steps")
    p.add_argument("--retune-train-size", type=int, default=None,
                   help="re-tune on N training examples of the run's task (same dev and test; default: the run's)")
    p.add_argument("--retune-lr", type=float, default=None, help="re-tuning learning rate (default: the run's)")
    p.add_argument("--retune-schedule", default="linear",
                   help="re-tuning learning rate after warmup: 'linear' decay (default) or 'constant'")
    p.add_argument("--control", action="store_true",
                   help="also re-tune the unpruned prompt with the same budget: the fair reference for the "
                        "accuracy drop when re-tuning gets more steps or data than the run's own tuning")
    p.add_argument("--batch-size", type=int, default=32, help="evaluation batch size")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (median), models alternating")
    p.set_defaults(func=run)


def parse_layers(spec: str | None, n_layers: int | None = None) -> list[int] | None:
    """``"10-12,15"`` -> ``[10, 11, 12, 15]`` (checked against ``n_layers`` when given).

    >>> parse_layers("0,2-4")
    [0, 2, 3, 4]
    >>> parse_layers("3-1")
    Traceback (most recent call last):
    ...
    ValueError: --layers '3-1': ranges go low-high, e.g. '10-29'
    """
    if spec is None:
        return None
    layers = set()
    for part in spec.split(","):
        try:
            lo, _, hi = part.strip().partition("-")
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--layers {spec!r}: use layer numbers and ranges, e.g. '10-29' or '0,2,5-7'") from None
        if lo > hi or lo < 0:
            raise ValueError(f"--layers {spec!r}: ranges go low-high, e.g. '10-29'")
        layers.update(range(lo, hi + 1))
    if n_layers is not None and max(layers) >= n_layers:
        raise ValueError(f"--layers {spec!r}: the model has layers 0-{n_layers - 1}")
    return sorted(layers)


def check_args(args) -> tuple[float | int, str | int]:
    """Validate the numeric options before anything slow; return ``(keep, position)``.

    >>> from skill_lens.cli import build_parser
    >>> check_args(build_parser().parse_args(["prune", "RUN", "--position", "1"]))
    (0.02, 1)
    """
    if not (0 < args.keep <= 1 or (args.keep > 1 and float(args.keep).is_integer())):
        raise ValueError(f"--keep must be a fraction in (0, 1] or a whole number of neurons >= 1, got {args.keep}")
    if args.protect_massive < 0:
        raise ValueError(f"--protect-massive must be 0 (off) or a ratio > 1, got {args.protect_massive}")
    lows = {"retune_steps": 0, "batch_size": 1, "repeats": 1, "calibration_size": 1, "retune_train_size": 1}
    for name, low in lows.items():
        if (value := getattr(args, name)) is not None and value < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
    if args.retune_lr is not None and args.retune_lr <= 0:
        raise ValueError(f"--retune-lr must be positive, got {args.retune_lr}")
    from skill_lens.tuning import SCHEDULES

    if args.retune_schedule not in SCHEDULES:
        raise ValueError(f"--retune-schedule must be one of {', '.join(SCHEDULES)}, got {args.retune_schedule!r}")
    position = args.position
    if position != "mean":
        try:
            position = int(position)
        except ValueError:
            raise ValueError(f"--position must be 'mean' or a prompt position (an int), got {position!r}") from None
    keep = int(args.keep) if args.keep > 1 else args.keep
    return keep, position


def run(args, run_obj=None) -> int:
    """Parsed arguments -> prune; ``run_obj`` injects an opened :class:`~skill_lens.runs.Run` (tests)."""
    from skill_lens.artifacts import ArtifactError
    from skill_lens.runs import Run

    keep, position = check_args(args)
    run_ = run_obj or Run.open(args.run)
    layers = parse_layers(args.layers, run_.meta["n_layers"])
    if not (Path(run_.path) / "predictivity.safetensors").exists():
        raise ArtifactError(f"{run_.path} has no predictivity.safetensors; run `skill-lens probe {run_.path}` first.")
    retune = {"steps": args.retune_steps, "schedule": args.retune_schedule}
    if args.retune_lr is not None:
        retune["lr"] = args.retune_lr
    prune_run(run_, keep, layers, args.out, retune, args.retune_train_size, fold=args.fold, position=position,
              calibration_size=args.calibration_size, aggregate=args.aggregate,
              protect_massive=args.protect_massive, control=args.control, batch_size=args.batch_size,
              repeats=args.repeats)
    return 0


def prune_run(run, keep=0.02, layers=None, out=None, retune: dict | int | None = None,
              retune_train_size: int | None = None, fold: str = "calibrated", position="mean",
              calibration_size: int = 128, aggregate="max", protect_massive: float = 20.0, control: bool = False,
              batch_size: int = 32, repeats: int = 3) -> dict:
    """Prune ``run``'s model to its top ``keep`` neurons per layer in ``layers``, optionally re-tune the prompt,
    save to ``out`` (default ``RUN/pruned``), compare accuracy and inference time; return the numbers.

    ``fold`` picks the constants of the removed neurons (:data:`FOLDS`): ``"calibrated"``
    (:func:`skill_lens.calibration.calibrate` on ``calibration_size`` training examples) or ``"baseline"``
    (the probe's, at prompt ``position``). ``protect_massive`` keeps the neurons with massive
    activations (:func:`skill_lens.calibration.massive_neurons` at that ratio; 0: off) in place of the least
    predictive kept ones. ``retune`` is a number of steps or a dict of
    :class:`~skill_lens.tuning.TuneConfig` fields over the run's own config (``{"steps": 600, "schedule":
    "linear"}``); ``retune_train_size`` re-tunes on a larger training split with the same dev and test.
    ``control=True`` also re-tunes the unpruned prompt with that same budget (``unpruned_retuned``).
    Dev accuracy picks the re-tuned prompt; test accuracy (``accuracy_test``) is never looked at.

    >>> import tempfile, contextlib, io
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> from skill_lens.cli.probe import probe_run
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     _ = probe_run(r)
    ...     s = prune_run(r, keep=0.25, layers=[1], repeats=1)
    >>> s["widths"], (r.path / "pruned" / "model.safetensors").exists(), (r.path / "pruned" / SUMMARY_FILE).exists()
    ({0: 64, 1: 16}, True, True)
    """
    import torch

    from skill_lens.artifacts import write_json
    from skill_lens.calibration import calibrate, keep_also, massive_neurons
    from skill_lens.predictivity import select_top
    from skill_lens.probe import ProbeResult
    from skill_lens.prompts import SoftPrompt
    from skill_lens.pruning import parameter_count, prune, pruning_info, save_pruned
    from skill_lens.tuning import evaluate, prompted

    if fold not in FOLDS:
        raise ValueError(f"fold must be one of {FOLDS}, got {fold!r}")
    retune = {"steps": retune} if isinstance(retune, int) else dict(retune or {})
    config = retune_config(run, retune) if retune.get("steps") else None
    path = Path(run.path) / "predictivity.safetensors"
    model, task = run.model, run.task
    retune_task = run.task_with_train_size(retune_train_size) if config and retune_train_size else task
    result = ProbeResult.load(path, model)
    scores = result.scores(aggregate)
    mask = select_top(scores, keep, per_layer=True)
    prompt = run.prompt()
    max_length = run.meta["config"].get("max_length")
    pm = prompted(model, task, prompt, max_length)
    texts = task.train.texts[:calibration_size]
    texts_b = task.train.texts_b[:calibration_size] if task.train.texts_b is not None else None
    protected = massive_neurons(pm, texts, protect_massive, texts_b) if protect_massive else torch.zeros_like(mask)
    if layers is not None:  # only the pruned layers need them
        protected[[l for l in range(len(mask)) if l not in layers]] = False
    mask = keep_also(mask, protected, scores)
    if fold == "calibrated":
        baseline = calibrate(pm, mask, layers, texts, texts_b)
        source = f"calibrated on {len(texts)} training examples (calibration.calibrate), selected by {path}"
    else:
        baseline, source = result.baseline, str(path)
    pruned = prune(model, mask, baseline, layers=layers, position=position, baseline_source=source)
    new_prompt = SoftPrompt(prompt.embedding, meta={**prompt.meta, **pruned_meta(pruned)})
    pm_pruned = prompted(pruned, task, new_prompt, max_length)
    acc, history = {}, {}
    if config:
        acc["pruned"] = evaluate(pm_pruned, task.dev, batch_size)["accuracy"]
        new_prompt, acc["pruned_retuned"], history["pruned"] = _retune(pruned, retune_task, config, new_prompt,
                                                                       acc["pruned"])
        pm_pruned = prompted(pruned, task, new_prompt, max_length)
    times, evals = time_models({"unpruned": pm, "pruned": pm_pruned}, task.dev, batch_size, repeats)
    acc["unpruned"] = evals["unpruned"]["accuracy"]
    acc["pruned_retuned" if config else "pruned"] = evals["pruned"]["accuracy"]
    test = {"unpruned": pm, "pruned_retuned" if config else "pruned": pm_pruned}
    if config and control:
        control_prompt, acc["unpruned_retuned"], history["unpruned"] = _retune(model, retune_task, config, prompt,
                                                                               acc["unpruned"])
        test["unpruned_retuned"] = prompted(model, task, control_prompt, max_length)
    acc_test = {k: evaluate(p, task.test, batch_size)["accuracy"] for k, p in test.items()} if len(task.test) else {}
    out = save_pruned(pruned, out or Path(run.path) / "pruned", prompt=new_prompt)
    params = {"total": (parameter_count(pruned), parameter_count(model)),
              "ffn": (parameter_count(pruned, True), parameter_count(model, True))}
    info = pruning_info(pruned)
    summary = {"params": params, "accuracy": acc, "accuracy_test": acc_test, "seconds": times, "widths": info.widths,
               "out": str(out), "speedup": times["unpruned"] / times["pruned"], "keep": keep,
               "layers": sorted(info.kept), "fold": fold,
               "protected": {l: protected[l].nonzero()[:, 0].tolist() for l in sorted(info.kept) if protected[l].any()},
               "retune": dataclasses.asdict(config) if config else None,
               "retune_train_size": len(retune_task.train) if config else None, "retune_history": history,
               "dev_size": len(task.dev), "test_size": len(task.test)}
    write_json(Path(out) / SUMMARY_FILE, summary)  # `skill-lens report` plots it
    _print_summary(run, summary, info, repeats)
    return summary


FOLDS = ("calibrated", "baseline")


def retune_config(run, overrides: dict):
    """The run's :class:`~skill_lens.tuning.TuneConfig` with ``overrides`` (checked: unknown fields are errors).

    >>> from types import SimpleNamespace
    >>> retune_config(SimpleNamespace(meta={"config": {"steps": 150, "lr": 0.03}}), {"steps": 40}).eval_every
    25
    """
    from skill_lens.tuning import TuneConfig

    fields = {f.name for f in dataclasses.fields(TuneConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown re-tuning option(s) {unknown}; use TuneConfig fields ({', '.join(sorted(fields))})")
    cfg = TuneConfig(**{k: v for k, v in run.meta["config"].items() if k in fields})
    cfg = dataclasses.replace(cfg, **overrides)
    return dataclasses.replace(cfg, eval_every=min(cfg.eval_every, cfg.steps))


def _retune(model, task, config, prompt, before: float):
    """Re-tune ``prompt`` on ``model``; keep the old prompt unless the new one is better on dev."""
    from skill_lens.prompts import SoftPrompt
    from skill_lens.tuning import tune

    tuned = tune(model, task, config, prompt=SoftPrompt(prompt.embedding, meta=prompt.meta))
    history = [h for h in tuned.history if "dev_accuracy" in h]
    if tuned.dev_accuracy >= before:
        return tuned.prompt, tuned.dev_accuracy, history
    return prompt, before, history


def _print_summary(run, s: dict, info, repeats: int) -> None:
    acc, test, times, layers = s["accuracy"], s["accuracy_test"], s["seconds"], s["layers"]
    print(f"pruned {len(layers)} layers ({_ranges(layers)}) of {run.meta['model']} to "
          f"{sorted(set(info.widths[l] for l in layers))} of {info.d_mlp} neurons each "
          f"(removed neurons fixed at: {s['fold']})")
    if s["protected"]:
        print("kept for their massive activations: " + ", ".join(f"L{l}.N{n}" for l, ns in s["protected"].items()
                                                                   for n in ns))
    for k, (a, b) in s["params"].items():
        print(f"parameters kept ({k}): {a:,} of {b:,} ({a / b:.1%})")
    if s["retune"]:
        r = s["retune"]
        print(f"re-tuned {r['steps']} steps (batch {r['batch_size']}, lr {r['lr']}, {r['schedule']}) on "
              f"{s['retune_train_size']} training examples")
    names = {"unpruned": "unpruned", "unpruned_retuned": "unpruned + same re-tuning", "pruned": "pruned",
             "pruned_retuned": "pruned + re-tuned prompt"}
    shown = [k for k in names if k in acc]
    print(f"dev accuracy ({s['dev_size']}): " + ", ".join(f"{names[k]} {acc[k]:.3f}" for k in shown))
    if test:
        print(f"test accuracy ({s['test_size']}, not used to pick prompts): "
              + ", ".join(f"{names[k]} {test[k]:.3f}" for k in names if k in test))
    print(f"inference over {s['dev_size']} dev examples (median of {repeats}): unpruned {times['unpruned']:.2f}s, "
          f"pruned {times['pruned']:.2f}s (speedup {s['speedup']:.2f}x)")
    print(f"wrote {s['out']}")


def pruned_meta(pruned) -> dict:
    from skill_lens.models import describe

    return describe(pruned).as_meta()


def time_models(pms: dict, split, batch_size: int = 32, repeats: int = 3) -> tuple[dict[str, float], dict]:
    """Median wall time of evaluating each prompted model on ``split`` (models alternate within each
    repeat), and each model's :func:`~skill_lens.tuning.evaluate` result.

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import hard_prompt_model
    >>> task = tiny_task()
    >>> times, evals = time_models({"a": hard_prompt_model(tiny_model(), task)}, task.dev, repeats=1)
    >>> sorted(times), sorted(evals["a"])
    (['a'], ['accuracy', 'logit_diff', 'n'])
    """
    from skill_lens.tuning import evaluate

    times: dict[str, list[float]] = {k: [] for k in pms}
    evals = {}
    for _ in range(repeats):
        for name, pm in pms.items():
            t0 = time.perf_counter()
            evals[name] = evaluate(pm, split, batch_size)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, evals


def _ranges(layers: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``'1-3,7'``."""
    parts, start = [], None
    for i, l in enumerate(layers):
        if start is None:
            start = l
        if i + 1 == len(layers) or layers[i + 1] != l + 1:
            parts.append(f"{start}-{l}" if l > start else str(l))
            start = None
    return ",".join(parts)
