"""``skill-lens prune RUN``: keep the skill neurons, fold the rest into biases, (re-tune), time it (writes ``RUN/pruned``)."""

from __future__ import annotations

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
    p.add_argument("--retune-steps", type=int, default=0, help="re-tune the prompt on the pruned model for N steps")
    p.add_argument("--position", default="mean", help="baseline of prompt position INT, or 'mean' over positions")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="predictivity over prompt positions")
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

    >>> import argparse
    >>> check_args(argparse.Namespace(keep=0.02, retune_steps=0, position="1", batch_size=8, repeats=1))
    (0.02, 1)
    """
    if not (0 < args.keep <= 1 or (args.keep > 1 and float(args.keep).is_integer())):
        raise ValueError(f"--keep must be a fraction in (0, 1] or a whole number of neurons >= 1, got {args.keep}")
    for name in ("retune_steps", "batch_size", "repeats"):
        low = 0 if name == "retune_steps" else 1
        if getattr(args, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
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
    prune_run(run_, keep, layers, args.out, args.retune_steps, position, args.aggregate, args.batch_size,
              args.repeats)
    return 0


def prune_run(run, keep=0.02, layers=None, out=None, retune_steps: int = 0, position="mean", aggregate="max",
              batch_size: int = 32, repeats: int = 3) -> dict:
    """Prune ``run``'s model to its top ``keep`` neurons per layer in ``layers``, optionally re-tune the prompt,
    save to ``out`` (default ``RUN/pruned``), compare dev accuracy and inference time; return the numbers.

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
    import dataclasses

    from skill_lens.artifacts import write_json
    from skill_lens.predictivity import select_top
    from skill_lens.probe import ProbeResult
    from skill_lens.prompts import SoftPrompt
    from skill_lens.pruning import parameter_count, prune, pruning_info, save_pruned
    from skill_lens.tuning import TuneConfig, evaluate, prompted, tune

    path = Path(run.path) / "predictivity.safetensors"
    model, task = run.model, run.task
    result = ProbeResult.load(path, model)
    mask = select_top(result.scores(aggregate), keep, per_layer=True)
    pruned = prune(model, mask, result.baseline, layers=layers, position=position, baseline_source=str(path))
    prompt = run.prompt()
    max_length = run.meta["config"].get("max_length")
    pm = prompted(model, task, prompt, max_length)
    new_prompt = SoftPrompt(prompt.embedding, meta={**prompt.meta, **pruned_meta(pruned)})
    pm_pruned = prompted(pruned, task, new_prompt, max_length)
    acc = {}
    if retune_steps:
        acc["pruned"] = evaluate(pm_pruned, task.dev, batch_size)["accuracy"]
        fields = {f.name for f in dataclasses.fields(TuneConfig)}
        cfg = TuneConfig(**{k: v for k, v in run.meta["config"].items() if k in fields})
        cfg = dataclasses.replace(cfg, steps=retune_steps, eval_every=min(cfg.eval_every, retune_steps))
        tuned = tune(pruned, task, cfg, prompt=SoftPrompt(prompt.embedding, meta=new_prompt.meta))
        if tuned.dev_accuracy >= acc["pruned"]:  # the re-tuned prompt only replaces the old one if better on dev
            new_prompt = tuned.prompt
        pm_pruned = prompted(pruned, task, new_prompt, max_length)
    times, evals = time_models({"unpruned": pm, "pruned": pm_pruned}, task.dev, batch_size, repeats)
    acc["unpruned"] = evals["unpruned"]["accuracy"]
    acc["pruned_retuned" if retune_steps else "pruned"] = evals["pruned"]["accuracy"]
    out = save_pruned(pruned, out or Path(run.path) / "pruned", prompt=new_prompt)
    params = {"total": (parameter_count(pruned), parameter_count(model)),
              "ffn": (parameter_count(pruned, True), parameter_count(model, True))}
    info = pruning_info(pruned)
    summary = {"params": params, "accuracy": acc, "seconds": times, "widths": info.widths, "out": str(out),
               "speedup": times["unpruned"] / times["pruned"], "keep": keep, "layers": sorted(info.kept),
               "retune_steps": retune_steps, "dev_size": len(task.dev)}
    write_json(Path(out) / SUMMARY_FILE, summary)  # `skill-lens report` plots it
    pruned_layers = sorted(info.kept)
    print(f"pruned {len(pruned_layers)} layers ({_ranges(pruned_layers)}) of {run.meta['model']} to "
          f"{sorted(set(info.widths[l] for l in pruned_layers))} of {info.d_mlp} neurons each")
    for k, (a, b) in params.items():
        print(f"parameters kept ({k}): {a:,} of {b:,} ({a / b:.1%})")
    print(f"dev accuracy: unpruned {acc['unpruned']:.3f}, pruned {acc['pruned']:.3f}"
          + (f", pruned + re-tuned prompt {acc['pruned_retuned']:.3f}" if "pruned_retuned" in acc else ""))
    print(f"inference over {len(task.dev)} dev examples (median of {repeats}): unpruned {times['unpruned']:.2f}s, "
          f"pruned {times['pruned']:.2f}s (speedup {summary['speedup']:.2f}x)")
    print(f"wrote {out}")
    return summary


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
