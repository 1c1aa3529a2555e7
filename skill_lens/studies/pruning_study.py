"""Prune a tuned run with its skill neurons and measure what it costs: accuracy and inference time.

:func:`prune_run` keeps the top neurons by dev predictivity in the chosen layers (plus the
massive-activation neurons, :func:`skill_lens.intervening.calibration.massive_neurons`), fixes the rest at
constants folded into the bias (:func:`skill_lens.intervening.calibration.calibrate`, or the probe's baseline),
optionally re-tunes the prompt on the pruned model (and, as a control, the unpruned prompt with the
same budget), times both models alternately, and saves the pruned model with a summary that records
its lineage. ``skill-lens prune RUN`` is this function.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import torch

from skill_lens.store.artifacts import write_json
from skill_lens.store.kinds import KINDS, PRUNE_SUMMARY
from skill_lens.store.manifest import Folder

__all__ = ["prune_run", "PruneOptions", "retune_config", "time_models", "FOLDS", "SUMMARY_FILE", "summary_text"]

FOLDS = ("calibrated", "baseline")
SUMMARY_FILE = PRUNE_SUMMARY


@dataclasses.dataclass
class PruneOptions:
    """What to keep and how (validated on construction; the CLI's flags in brackets).

    >>> PruneOptions(keep=0.5, layers=[1]).keep
    0.5
    >>> PruneOptions(keep=1.5)
    Traceback (most recent call last):
    ...
    ValueError: --keep must be a fraction in (0, 1] or a whole number of neurons >= 1, got 1.5
    """

    keep: float | int = 0.02  # per pruned layer [--keep]
    layers: list[int] | None = None  # [--layers]; None: all
    fold: str = "calibrated"  # [--fold]
    position: str | int = "mean"  # [--position], with fold="baseline"
    calibration_size: int = 128  # [--calibration-size]
    aggregate: str = "max"  # [--aggregate]
    protect_massive: float = 20.0  # [--protect-massive]; 0: off
    retune: dict | None = None  # TuneConfig fields over the run's config, e.g. {"steps": 600}
    retune_train_size: int | None = None  # [--retune-train-size]
    control: bool = False  # [--control]
    batch_size: int = 32  # [--batch-size]
    repeats: int = 3  # [--repeats]

    def __post_init__(self):
        if not (0 < self.keep <= 1 or (self.keep > 1 and float(self.keep).is_integer())):
            raise ValueError(f"--keep must be a fraction in (0, 1] or a whole number of neurons >= 1, got {self.keep}")
        self.keep = int(self.keep) if self.keep > 1 else self.keep
        if self.fold not in FOLDS:
            raise ValueError(f"--fold must be one of {', '.join(FOLDS)}, got {self.fold!r}")
        if self.protect_massive < 0:
            raise ValueError(f"--protect-massive must be 0 (off) or a ratio > 1, got {self.protect_massive}")
        if self.position != "mean" and not isinstance(self.position, int):
            raise ValueError(f"--position must be 'mean' or a prompt position (an int), got {self.position!r}")
        for name, low in {"batch_size": 1, "repeats": 1, "calibration_size": 1, "retune_train_size": 1}.items():
            if (value := getattr(self, name)) is not None and value < low:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {low}, got {value}")
        if self.layers is not None and (not self.layers or min(self.layers) < 0):
            raise ValueError(f"--layers must name layers >= 0, got {self.layers}")


def retune_config(run, overrides: dict):
    """The run's :class:`~skill_lens.prompting.tuning.TuneConfig` with ``overrides`` (checked: unknown fields are errors).

    >>> from types import SimpleNamespace
    >>> retune_config(SimpleNamespace(meta={"config": {"steps": 150, "lr": 0.03}}), {"steps": 40}).eval_every
    25
    """
    from skill_lens.prompting.tuning import TuneConfig

    fields = {f.name for f in dataclasses.fields(TuneConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown re-tuning option(s) {unknown}; use TuneConfig fields ({', '.join(sorted(fields))})")
    cfg = TuneConfig(**{**{k: v for k, v in run.meta["config"].items() if k in fields}, **overrides})
    return dataclasses.replace(cfg, eval_every=min(cfg.eval_every, cfg.steps))


def time_models(pms: dict, split, batch_size: int = 32, repeats: int = 3) -> tuple[dict[str, float], dict]:
    """Median wall time of evaluating each prompted model on ``split`` (models alternate within each
    repeat), and each model's :func:`~skill_lens.prompting.tuning.evaluate` result.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> task = tiny_task()
    >>> times, evals = time_models({"a": hard_prompt_model(tiny_model(), task)}, task.dev, repeats=1)
    >>> sorted(times), sorted(evals["a"])
    (['a'], ['accuracy', 'accuracy_ci_high', 'accuracy_ci_low', 'logit_diff', 'n'])
    """
    from skill_lens.prompting.evaluation import evaluate

    times: dict[str, list[float]] = {k: [] for k in pms}
    evals = {}
    for _ in range(repeats):
        for name, pm in pms.items():
            t0 = time.perf_counter()
            evals[name] = evaluate(pm, split, batch_size)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}, evals


def prune_run(run, options: PruneOptions | None = None, out=None) -> dict:
    """Prune ``run``'s model as ``options`` say, (re-tune,) compare with the unpruned model, save the pruned
    model and its prompt to ``out`` (default ``RUN/pruned``) with ``prune_summary.json``; return the summary.

    ``out`` must be new, empty, or a pruned model this library wrote (replaced atomically).
    Dev accuracy picks the re-tuned prompt; test accuracy (``accuracy_test``) is never looked at.

    >>> import tempfile
    >>> from skill_lens.workflow import steps
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.tuning import TuneConfig
    >>> r = steps.tune(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> _ = steps.probe(r)
    >>> s = prune_run(r, PruneOptions(keep=0.25, layers=[1], repeats=1))
    >>> s["widths"], (r.path / "pruned" / "model.safetensors").exists(), (r.path / "pruned" / SUMMARY_FILE).exists()
    ({0: 64, 1: 16}, True, True)
    """
    from skill_lens.intervening.pruning import check_prunable, check_pruned_out

    opt = options or PruneOptions()
    out = check_pruned_out(Path(out) if out is not None else run.file("pruned"))
    if opt.layers is not None and max(opt.layers) >= run.meta["n_layers"]:
        raise ValueError(f"--layers {opt.layers}: the model has layers 0-{run.meta['n_layers'] - 1}")
    check_prunable(run.model, opt.layers)  # a layout that cannot be pruned: refused before any work
    retune = dict(opt.retune or {})
    config = retune_config(run, retune) if retune.get("steps") else None
    with run.writing("prune"), Folder(out).writing("prune") as tx:  # the model and its summary: one commit
        summary = _prune(run, opt, out, config)
        write_json(tx.path(SUMMARY_FILE, "pruned"), summary)  # `skill-lens report` plots it
    return summary


def _prune(run, opt: PruneOptions, out: Path, config) -> dict:
    from skill_lens.intervening.pruning import parameter_count, pruning_info, save_pruned
    from skill_lens.prompting.evaluation import evaluate

    result, model, task = run.probe_result(), run.model, run.task
    retune_task = run.task_with_train_size(opt.retune_train_size) if config and opt.retune_train_size else task
    pm = run.prompted()
    pruned, protected, source = _pruned_model(run, pm, result, opt)
    acc, history, pm_pruned = {}, {}, _prompted_on(pruned, run, pm.prompt)
    if config:
        acc["pruned"] = evaluate(pm_pruned, task.dev, opt.batch_size)["accuracy"]
        prompt, acc["pruned_retuned"], history["pruned"] = _retune(pruned, retune_task, config, pm_pruned.prompt,
                                                                   acc["pruned"])
        pm_pruned = _prompted_on(pruned, run, prompt)
    times, evals = time_models({"unpruned": pm, "pruned": pm_pruned}, task.dev, opt.batch_size, opt.repeats)
    key = "pruned_retuned" if config else "pruned"
    acc["unpruned"], acc[key] = evals["unpruned"]["accuracy"], evals["pruned"]["accuracy"]
    test = {"unpruned": pm, key: pm_pruned}
    if config and opt.control:
        control, acc["unpruned_retuned"], history["unpruned"] = _retune(model, retune_task, config, pm.prompt,
                                                                        acc["unpruned"])
        test["unpruned_retuned"] = _prompted_on(model, run, control)
    acc_test = {k: evaluate(p, task.test, opt.batch_size)["accuracy"] for k, p in test.items()} if len(task.test) else {}
    save_pruned(pruned, out, prompt=pm_pruned.prompt)
    info = pruning_info(pruned)
    summary = {"params": {"total": (parameter_count(pruned), parameter_count(model)),
                          "ffn": (parameter_count(pruned, True), parameter_count(model, True))},
               "accuracy": acc, "accuracy_test": acc_test, "seconds": times, "widths": info.widths, "out": str(out),
               "speedup": times["unpruned"] / times["pruned"], "keep": opt.keep, "layers": sorted(info.kept),
               "fold": opt.fold, "constants_from": source, "repeats": opt.repeats, "model": run.meta["model"],
               "protected": {l: protected[l].nonzero()[:, 0].tolist() for l in sorted(info.kept) if protected[l].any()},
               "retune": dataclasses.asdict(config) if config else None,
               "retune_train_size": len(retune_task.train) if config else None, "retune_history": history,
               "dev_size": len(task.dev), "test_size": len(task.test), "lineage": run.lineage("predictivity")}
    return summary


def _pruned_model(run, pm, result, opt: PruneOptions):
    """The pruned model, the massive neurons kept, and where the removed neurons' constants came from."""
    from skill_lens.intervening.calibration import calibrate, keep_also, massive_neurons
    from skill_lens.intervening.pruning import prune, top_per_expert
    from skill_lens.model.loading import describe

    scores = result.scores("dev", aggregate=opt.aggregate)
    mask = top_per_expert(scores, opt.keep, describe(run.model).layout)  # per layer; an MoE layer's per expert
    train = run.task.train
    texts = train.texts[: opt.calibration_size]
    texts_b = train.texts_b[: opt.calibration_size] if train.texts_b is not None else None
    protected = massive_neurons(pm, texts, opt.protect_massive, texts_b) if opt.protect_massive \
        else torch.zeros_like(mask)
    if opt.layers is not None:  # only the pruned layers need them
        protected[[l for l in range(len(mask)) if l not in opt.layers]] = False
    mask = keep_also(mask, protected, scores)
    if opt.fold == "calibrated":
        baseline = calibrate(pm, mask, opt.layers, texts, texts_b)
        source = f"calibrated on {len(texts)} training examples (calibration.calibrate), selected by the run's {KINDS['predictivity'].file}"
    else:
        baseline, source = result.baseline, f"the probe's baseline ({KINDS['predictivity'].file})"
    pruned = prune(run.model, mask, baseline, layers=opt.layers, scores=scores, position=opt.position,
                   baseline_source=source)  # scores: to give every expert as many neurons
    return pruned, protected, source


def _prompted_on(model, run, prompt):
    """``prompt`` on ``model`` (the pruned one, or the original) with the run's verbalizer and max length."""
    from skill_lens.model.loading import describe
    from skill_lens.prompting.prompts import SoftPrompt
    from skill_lens.prompting.evaluation import prompted

    prompt = SoftPrompt(prompt.embedding, meta={**prompt.meta, **describe(model).as_meta()})
    return prompted(model, run.task, prompt, run.meta["config"].get("max_length"))


def _retune(model, task, config, prompt, before: float):
    """Re-tune ``prompt`` on ``model``; keep the old prompt unless the new one is better on dev."""
    from skill_lens.prompting.prompts import SoftPrompt
    from skill_lens.prompting.tuning import tune

    tuned = tune(model, task, config, prompt=SoftPrompt(prompt.embedding.detach().clone(), meta=prompt.meta))
    history = [h for h in tuned.history if "dev_accuracy" in h]
    if tuned.dev_accuracy >= before:
        return tuned.prompt, tuned.dev_accuracy, history
    return prompt, before, history


def summary_text(s: dict) -> str:
    """The summary as the lines ``skill-lens prune`` prints."""
    acc, test, times, layers = s["accuracy"], s["accuracy_test"], s["seconds"], s["layers"]
    widths = sorted(set(s["widths"][l] for l in layers))
    lines = [f"pruned {len(layers)} layers ({_ranges(layers)}) of {s['model']} to {widths} neurons each "
             f"(removed neurons fixed at: {s['fold']})"]
    if s["protected"]:
        lines.append("kept for their massive activations: "
                     + ", ".join(f"L{l}.N{n}" for l, ns in s["protected"].items() for n in ns))
    lines += [f"parameters kept ({k}): {a:,} of {b:,} ({a / b:.1%})" for k, (a, b) in s["params"].items()]
    if s["retune"]:
        r = s["retune"]
        lines.append(f"re-tuned {r['steps']} steps (batch {r['batch_size']}, lr {r['lr']}, {r['schedule']}) on "
                     f"{s['retune_train_size']} training examples")
    names = {"unpruned": "unpruned", "unpruned_retuned": "unpruned + same re-tuning", "pruned": "pruned",
             "pruned_retuned": "pruned + re-tuned prompt"}
    lines.append(f"dev accuracy ({s['dev_size']}): " + ", ".join(f"{n} {acc[k]:.3f}" for k, n in names.items()
                                                                 if k in acc))
    if test:
        lines.append(f"test accuracy ({s['test_size']}, not used to pick prompts): "
                     + ", ".join(f"{n} {test[k]:.3f}" for k, n in names.items() if k in test))
    lines.append(f"inference over {s['dev_size']} dev examples (median of {s['repeats']}): unpruned "
                 f"{times['unpruned']:.2f}s, pruned {times['pruned']:.2f}s (speedup {s['speedup']:.2f}x)")
    lines.append(f"wrote {s['out']}")
    return "\n".join(lines)


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
