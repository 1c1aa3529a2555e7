"""The method's steps on a run directory: one public function per ``skill-lens`` subcommand.

Each step takes a :class:`~skill_lens.workflow.runs.Run`, validates its options before any work, reads the
artifacts it needs through the run (which checks their lineage), computes, writes its artifact
beside the run with its lineage, and returns the result. The CLI only parses options, calls one
step and prints; notebooks and :func:`demo` call the same functions.

>>> import tempfile
>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.tuning import TuneConfig
>>> run = tune(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
>>> result = probe(run)
>>> skill = neurons(run, top=0.25)
>>> curve = perturb(run, method="zero", fractions=[0, 0.1], controls=1)
>>> len(skill), [p.name for p in sorted(run.path.glob("perturb_zero.*"))]
(32, ['perturb_zero.csv', 'perturb_zero.json'])
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Sequence

from skill_lens.base.memory import check_fits
from skill_lens.model.loading import resources
from skill_lens.probing.statistics import count_dtype
from skill_lens.workflow.runs import Run

__all__ = ["tune", "tune_seeds", "probe", "neurons", "seeds", "perturb", "patch", "robustness", "report", "demo",
           "demo_summary", "top_neurons", "check_top", "check_positive"]


def check_top(top: float, flag: str = "--top") -> float | int:
    """``top`` is a fraction in (0, 1) or a whole number of neurons; returns it as a fraction or an int.

    >>> check_top(0.02), check_top(5.0)
    (0.02, 5)
    >>> check_top(1.5)
    Traceback (most recent call last):
    ...
    ValueError: --top must be a fraction in (0, 1) or a whole number of neurons >= 1, got 1.5
    """
    if not (0 < top < 1 or (top >= 1 and float(top).is_integer())):
        raise ValueError(f"{flag} must be a fraction in (0, 1) or a whole number of neurons >= 1, got {top}")
    return int(top) if top >= 1 else top


def check_positive(**values) -> None:
    """Each keyword (an option's value) must be at least 1; the error names the flag.

    >>> check_positive(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: --batch-size must be at least 1, got 0
    """
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or value < 1):
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def tune(out, model, task, config, task_args: dict | None = None, *, overwrite: bool = False,
         reuse: bool = False) -> Run:
    """Tune a soft prompt into the run directory ``out``: :meth:`Run.create <skill_lens.workflow.runs.Run.create>`."""
    return Run.create(out, model, task, config, task_args, overwrite=overwrite, reuse=reuse)


def tune_seeds(out, model, task, config, seeds: Sequence[int], task_args: dict | None = None, *,
               overwrite: bool = False) -> list[Run]:
    """One run per seed, ``OUT/seed-<s>`` (:func:`skill_lens.workflow.seeds.seed_dir`), tuned with ``config`` and that
    seed; a finished run of the very same settings is reused, so an interrupted call resumes where it stopped.
    Probe each run, then aggregate them with :func:`seeds` (``skill-lens seeds OUT``)."""
    import dataclasses

    from skill_lens.workflow.seeds import parse_seeds, seed_dir

    seeds = parse_seeds(list(seeds))
    if (Path(out) / "run.json").exists():
        raise ValueError(f"{out} is a run; give --seeds a new --out directory (it will hold one run per seed).")
    configs = [dataclasses.replace(config, seed=s) for s in seeds]  # validated before any tuning
    return [Run.create(seed_dir(out, s), model, task, c, task_args, overwrite=overwrite, reuse=True)
            for s, c in zip(seeds, configs)]


def seeds(group, top: float = 0.01, aggregate: str = "max"):
    """Aggregate the probed seed runs of ``group`` (a :class:`~skill_lens.workflow.seeds.SeedGroup`) into
    ``DIR/seeds.safetensors``: each seed's scores, their mean (the paper's aggregate) and the ranking's
    replicability (Spearman between seeds, top ``top`` overlap). Returns the
    :class:`~skill_lens.workflow.seeds.SeedScores`."""
    from skill_lens.workflow.seeds import combine_seeds

    scores = combine_seeds(group.runs, check_top(top), aggregate)
    group.save_seeds(scores)
    return scores


def probe(run: Run, batch_size: int = 32, pooling: bool = False, *, permutations: int = 0,
          permutation_seed: int = 0):
    """Probe every FFN neuron of ``run`` (``RUN/predictivity.safetensors``); resumes after a kill, shards
    under ``torchrun``. With ``permutations=K`` also the permutation null (K label permutations per
    split), summarised in the sidecar under ``null`` (:meth:`~skill_lens.probing.probe.ProbeResult.null_summary`:
    family-wise 5% threshold, significant neurons overall and per layer). Returns the
    :class:`~skill_lens.probing.probe.ProbeResult`."""
    from skill_lens.probing.probe import probe as probe_

    check_positive(batch_size=batch_size)
    if permutations < 0:
        raise ValueError(f"--permutations must be 0 (no null) or a number of label permutations, got {permutations}")
    m, task = run.meta, run.task  # counts [K, L, P, d_mlp] of one split at a time, in the type its size needs
    size = count_dtype(max(len(task.dev), len(task.test))).itemsize
    check_fits(2 * size * permutations * m["n_layers"] * m["prompt_length"] * m["d_mlp"],
               f"the permutation null of {permutations} permutations", "pass fewer --permutations")
    pm = run.prompted()

    def save(result) -> None:
        result.meta["resources"] = resources(run.model)  # where it was computed (another step may differ)
        if permutations:
            result.meta["null"] = result.null_summary()
        run.save_probe_result(result)

    from skill_lens.data.distributed import rank_world

    # under torchrun the job's rank 0 holds the run's lock (and writes the result); the others are the same step
    with run.writing("probe") if rank_world()[0] == 0 else contextlib.nullcontext():
        return probe_(pm, task, batch_size, pooling, checkpoint=run.path, on_result=save,
                      permutations=permutations, permutation_seed=permutation_seed, input_cache=run.input_cache)


def top_neurons(result, k: int, aggregate: str = "max") -> list[tuple[str, float, float | None]]:
    """``[("L1.N5", dev score, test score or None)]`` of the ``k`` best neurons by dev score.

    >>> import torch
    >>> from skill_lens.probing.result import ProbeResult
    >>> top_neurons(ProbeResult(torch.zeros(1, 1, 3), torch.tensor([[[0.5, 0.125, 0.75]]])), 1)
    [('L0.N1', 0.875, None)]
    """
    from skill_lens.model.anatomy import NeuronLayout
    from skill_lens.probing.neurons import NeuronSet

    dev = result.scores("dev", aggregate=aggregate)
    test = result.scores("test", aggregate=aggregate) if result.test_acc is not None else None
    top = dev.flatten().topk(min(k, dev.numel())).indices
    N, layout = dev.shape[1], NeuronLayout.from_json(result.meta.get("layout"))  # experts: L3.E5.N812
    label = layout.label if layout.moe else NeuronSet.label
    return [(label(int(i) // N, int(i) % N), dev.flatten()[i].item(),
             None if test is None else test.flatten()[i].item()) for i in top]


def neurons(run: Run, top: float = 0.02, *, per_layer: bool = False, aggregate: str = "max"):
    """Select the skill neurons by dev predictivity into ``RUN/neurons.safetensors``; return the
    :class:`~skill_lens.probing.neurons.NeuronSet` (its ``scores`` are the dev scores). ``top`` is of all
    neurons unless ``per_layer=True`` (of each layer), as everywhere in the library. ``run`` may also be
    a :class:`~skill_lens.workflow.seeds.SeedGroup`: the neurons are then selected by the mean over its seeds."""
    top = check_top(top)
    with run.writing("neurons"):
        return _select(run, run.probe_result(), top, per_layer, aggregate)


def _select(run, result, top, per_layer: bool, aggregate: str):
    from skill_lens.probing.neurons import NeuronSet

    scores = result.scores("dev", aggregate=aggregate)
    meta = {**{k: result.meta[k] for k in ("model", "family", "n_layers", "d_mlp", "d_model", "task",
                                           "prompt_length", "layout") if k in result.meta},
            "hook_names": list(result.hook_names), "aggregate": aggregate, "per_layer": per_layer, "top": top,
            "scored_on": result.meta.get("scored_on", "dev predictivity")}
    ns = NeuronSet.from_scores(scores, top=top, per_layer=per_layer, meta=meta)
    run.save_neurons(ns)
    return ns


def perturb(run: Run, method: str = "gaussian", fractions: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1),
            controls: int = 3, per_layer: bool = False, std: float = 1.0, split: str = "dev", positions="prompt",
            per: str = "token", aggregate: str = "max", seed: int = 0, batch_size: int = 32, *, draws: int = 1,
            bootstrap: int = 1000):
    """Suppression curve of ``run``'s top neurons (by dev predictivity) against random neurons, written to
    ``RUN/perturb_<method>.json`` and ``.csv``; resumes after a kill. ``draws`` Gaussian noise draws per
    neuron set; the gap (random minus skill accuracy) comes with a paired bootstrap 95% interval over
    examples, draws and controls (``gap_ci_low``, ``gap_ci_high``). Under ``torchrun`` each process runs a
    share of every row's batches and rank 0 writes the files. Returns the
    :class:`~skill_lens.intervening.suppression.SuppressionCurve`."""
    from skill_lens.intervening.suppression import METHODS, check_fractions

    fractions = check_fractions(fractions)
    check_positive(batch_size=batch_size)
    if method not in METHODS or split not in ("dev", "test"):
        raise ValueError(f"--method must be one of {', '.join(METHODS)} and --split dev or test, got {method!r}, "
                         f"{split!r}")
    if controls < 0 or not std >= 0:
        raise ValueError(f"--controls and --std must be >= 0, got {controls} and {std}")
    sets = len(fractions) * (1 + controls)  # a [L, d_mlp] mask per set; a row per set and draw, a byte per example
    check_fits(sets * (run.meta["n_layers"] * run.meta["d_mlp"] + 200)
               + sets * draws * (len(getattr(run.task, split)) + 400),
               f"{len(fractions)} fractions x (1 + {controls} control sets) x {draws} draws",
               "pass fewer --controls or --draws")
    from skill_lens.data.distributed import rank_world

    # under torchrun rank 0 holds the run's lock and writes the curve; the others are the same step
    with run.writing("perturb") if rank_world()[0] == 0 else contextlib.nullcontext():
        return _perturb(run, method, fractions, controls, per_layer, std, split, positions, per, aggregate, seed,
                        batch_size, draws, bootstrap)


def _perturb(run, method, fractions, controls, per_layer, std, split, positions, per, aggregate, seed, batch_size,
             draws, bootstrap):
    from skill_lens.intervening.suppression import suppression_curve

    result, task = run.probe_result(), run.task
    name = f"perturb_{method}"
    curve = suppression_curve(run.prompted(), getattr(task, split), result.scores("dev", aggregate=aggregate),
                              fractions=fractions, method=method, controls=controls, per_layer=per_layer,
                              baseline=result.baseline, std=std, positions=positions, per=per, seed=seed,
                              batch_size=batch_size, checkpoint=run.path / f"{name}.checkpoint.safetensors",
                              draws=draws, bootstrap=bootstrap, input_cache=run.input_cache)
    curve.meta.update(task=task.name, split=split, aggregate=aggregate,  # no path: a moved run makes the same bytes
                      selected_on="dev predictivity", resources=resources(run.model))
    from skill_lens.data.distributed import rank_world

    if rank_world()[0] == 0:  # every rank has the same curve
        run.save_result("perturb", name, curve.to_dict(), curve.to_pandas())
    return curve


def patch(run: Run, source_text: str, target_text: str, top: float | None = None, per_layer: bool = False,
          positions: str = "prompt"):
    """Patch ``run``'s skill neurons from ``source_text`` into ``target_text``
    (:func:`skill_lens.intervening.patching.patch`): ``RUN/neurons.safetensors`` unless ``top`` picks the top
    neurons by dev predictivity (default 2% when there is no neuron file)."""
    from skill_lens.probing.neurons import NeuronSet
    from skill_lens.intervening.patching import patch as patch_

    for flag, text in (("--source-text", source_text), ("--target-text", target_text)):
        if not str(text).strip():
            raise ValueError(f"{flag} is empty; pass a text to run.")
    if top is not None or not run.file("neurons").exists():
        chosen = NeuronSet.from_scores(run.probe_result().scores("dev"), top=check_top(0.02 if top is None else top),
                                       per_layer=per_layer)
    else:
        chosen = run.neurons()
    return patch_(run.prompted(), source_text, target_text, chosen, positions=positions)


def robustness(run: Run, source: str, ks: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.2), seed: int = 0,
               adv_baseline: bool = False, curve_fractions: Sequence[float] = (0, 0.05, 0.1),
               method: str = "gaussian", controls: int = 1, patch_top: float = 0.02, batch_size: int = 32) -> dict:
    """The analyses of :mod:`skill_lens.studies.robustness` on ``run`` and the adversarial ``source``; written to
    ``RUN/robustness_<name>.json`` and ``.csv``. Returns ``{"result", "repair", "adversarial", "paths"}``."""
    from skill_lens.studies.robustness import adversarial_split

    if not ks or any(not 0 < k <= 1 for k in ks):
        raise ValueError(f"--ks must be fractions in (0, 1], got {list(ks)}")
    if batch_size < 1 or controls < 0 or not 0 <= patch_top <= 1:
        raise ValueError("--batch-size must be >= 1, --controls >= 0 and --patch-top in [0, 1]")
    task = run.task
    adv = adversarial_split(source, task, "dev", seed)  # validates before anything is written
    with run.writing("robustness"):
        return _robustness(run, source, task, adv, ks, seed, adv_baseline, curve_fractions, method, controls,
                           patch_top, batch_size)


def _robustness(run, source, task, adv, ks, seed, adv_baseline, curve_fractions, method, controls, patch_top,
                batch_size) -> dict:
    from skill_lens.probing.neurons import NeuronSet
    from skill_lens.studies.robustness import neuron_robustness, patch_repair, source_name

    pm = run.prompted()
    result = neuron_robustness(pm, task, adv, ks, adv_baseline=adv_baseline, curve_fractions=curve_fractions,
                               method=method, controls=controls, batch_size=batch_size, seed=seed)
    out = {"source": source, "seed": seed, **result.to_dict()}  # the run: its lineage (by content, not path)
    repair = None
    if patch_top > 0 and not source.startswith("advglue"):
        repair = patch_repair(pm, task.dev, adv, NeuronSet.from_scores(result.clean_scores, patch_top), batch_size)
        out["repair"] = {"top": patch_top, **repair.to_dict()}
    paths = run.save_result("robustness", f"robustness_{source_name(source)}", out, result.to_pandas())
    return {"result": result, "repair": repair, "adversarial": adv, "paths": paths}


def report(run: Run, out=None, views: bool = True, n_neurons: int = 8, n_examples: int = 3) -> Path:
    """The self-contained HTML report of ``run`` (``RUN/report.html`` or ``out``): :func:`skill_lens.workflow.report.write_report`."""
    from skill_lens.workflow.report import write_report

    check_positive(neurons=n_neurons, examples=n_examples)
    return write_report(run, out=out, include_views=views, n_neurons=n_neurons, n_examples=n_examples)


def demo(model, task, out, config, controls: int = 3, top: float = 0.02, task_args: dict | None = None,
         log=print) -> dict:
    """The whole method into ``out``: tune (or reuse the same finished run), probe, select, perturb, report.

    ``log`` receives a line as each step starts and :func:`demo_summary` at the end. Returns the
    run, probe result, neurons, curve, report path and each step's seconds (``"seconds"``).

    >>> import tempfile
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.tuning import TuneConfig
    >>> lines = []
    >>> done = demo(tiny_model(), tiny_task(), tempfile.mkdtemp(), TuneConfig(prompt_length=2, steps=2, eval_every=2),
    ...             controls=1, top=0.25, log=lines.append)
    >>> done["report"].exists(), "suppression" in lines[-1], sorted(done["seconds"])
    (True, True, ['neurons', 'perturb', 'probe', 'report', 'tune'])
    """
    import time

    top = check_top(top)
    seconds, done, t0 = {}, {}, time.perf_counter()
    sizes = f"{len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test"
    plan = [("tune", f"tuning a {config.prompt_length}-token soft prompt for {task.name} ({sizes})",
             lambda: tune(out, model, task, config, task_args, reuse=True)),
            ("probe", "probing every FFN neuron at every prompt position", lambda: probe(done["run"])),
            ("neurons", f"selecting the top {top:.0%} of neurons per layer by dev predictivity",
             lambda: neurons(done["run"], top=top, per_layer=True)),
            ("perturb", f"suppression curve: Gaussian noise on the top skill neurons vs {controls} random sets",
             lambda: perturb(done["run"], "gaussian", controls=controls)),
            ("report", "writing the report", lambda: report(done["run"]))]
    for i, (name, what, step) in enumerate(plan):
        log(f"[{i + 1}/{len(plan)} {time.perf_counter() - t0:5.0f}s] {what}")
        start = time.perf_counter()
        done["run" if name == "tune" else name] = step()
        seconds[name] = time.perf_counter() - start
    done["seconds"] = seconds
    log(demo_summary(done))
    return done


def _gap_text(row: dict) -> str:
    """``"12.2 points at 10% (95% CI 5.0 to 19.5)"``: a gap is stated with its interval."""
    ci = "" if row.get("gap_ci_low") is None or row["gap_ci_low"] != row["gap_ci_low"] else \
        f" (95% CI {100 * row['gap_ci_low']:.1f} to {100 * row['gap_ci_high']:.1f})"
    return f"{100 * row['gap']:.1f} points at {row['fraction']:.0%}{ci}"


def demo_summary(done: dict) -> str:
    """The demo's closing lines: accuracies, top neurons, suppression gaps, the report, where the time went."""
    run, curve, acc = done["run"], done["perturb"], done["run"].meta["accuracy"]
    ci = run.meta.get("accuracy_ci") or {}
    a = lambda k: f"{acc[k]:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")  # noqa: E731
    rows = [r for r in curve.summary() if r["fraction"] > 0]
    lines = [f"\nskill_lens demo: {run.meta['model']} on {run.task.name}",
             f"  soft prompt      dev {a('dev')}  test {a('test')}" + ("  (95% Wilson intervals)" if ci else ""),
             f"  hard prompt      dev {a('hard_prompt_dev')}  test {a('hard_prompt_test')}",
             "  top neurons      " + ", ".join(f"{n} {d:.3f}" + ("" if t is None else f" ({t:.3f})")
                                            for n, d, t in top_neurons(done["probe"], 3)) + "  (dev predictivity; test)",
             f"  skill neurons    {len(done['neurons'])} selected (per layer)",
             "  suppression      " + ", ".join(f"{r['fraction']:.0%}: {r['skill_accuracy']:.3f} vs "
                                               f"{r['random_accuracy_mean']:.3f}" for r in rows)
             + "  (dev accuracy, skill vs random)",
             "  largest gap      " + _gap_text(max(curve.summary(), key=lambda r: r["gap"])),
             f"  report           {done['report']}",
             f"  run directory    {run.path}  ({sum(done['seconds'].values()) / 60:.1f} min: "
             + ", ".join(f"{k} {v:.0f}s" for k, v in done["seconds"].items()) + ")"]
    return "\n".join(lines)
