"""The method's steps on a run directory: one public function per ``skill-lens`` subcommand.

Each step takes a :class:`~skill_lens.workflow.runs.Run` and one options object, validated when made, before
any work (:class:`~skill_lens.probing.probe.ProbeOptions`, :class:`NeuronOptions`, :class:`PerturbOptions`,
:class:`PatchOptions`, :class:`~skill_lens.studies.robustness.RobustnessOptions`,
:class:`~skill_lens.workflow.report.ReportOptions`, :class:`~skill_lens.workflow.seeds.SeedOptions`; or the
object's fields as keywords). It reads the artifacts it needs through the run (which checks their lineage),
computes, writes its artifact beside the run with its lineage, and returns the result. The CLI's flags are
generated from the same options; it parses them, calls one step and prints; notebooks and :func:`demo` call
the same functions.

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
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from skill_lens.base.memory import check_fits
from skill_lens.base.options import Options, option
from skill_lens.data.distributed import rank_world
from skill_lens.intervening.interventions import Positions
from skill_lens.intervening.patching import patch as patch_
from skill_lens.intervening.suppression import DEFAULT_FRACTIONS, CurveOptions, suppression_curve
from skill_lens.model.loading import resources
from skill_lens.model.layout import NeuronLayout
from skill_lens.probing.neurons import NeuronSet, check_top
from skill_lens.probing.probe import ProbeOptions, probe as probe_
from skill_lens.probing.result import AGGREGATES
from skill_lens.probing.scores import best
from skill_lens.probing.statistics import count_dtype
from skill_lens.studies.adversarial_sources import adversarial_split, source_name
from skill_lens.studies.robustness import RobustnessOptions, neuron_robustness, patch_repair
from skill_lens.workflow.report import ReportOptions, write_report
from skill_lens.workflow.runs import Run
from skill_lens.workflow.seeds import SeedOptions, combine_seeds, parse_seeds, seed_dir

__all__ = ["tune", "tune_seeds", "probe", "neurons", "seeds", "perturb", "patch", "robustness", "report", "demo",
           "demo_summary", "top_neurons", "NeuronOptions", "PerturbOptions", "PatchOptions", "DemoOptions"]


@dataclass
class NeuronOptions(Options):
    """Which neurons :func:`neurons` selects, validated when made; the flags of ``skill-lens neurons``.

    >>> NeuronOptions(top=5.0).top
    5
    """

    top: float = option(0.02, "fraction of neurons (0 < top < 1), or a whole number of neurons (>= 1)")
    per_layer: bool = option(False, "the top fraction of every layer (default: of all neurons, as everywhere)",
                             off_flag=("--global", "the top fraction of all neurons"))
    aggregate: str = option("max", "over prompt positions", choices=AGGREGATES)

    def __post_init__(self):
        self.top = check_top(self.top)
        self.check_bool("per_layer")
        self.check_choice("aggregate", AGGREGATES)


@dataclass
class PerturbOptions(CurveOptions):
    """A suppression curve of a run's top neurons by dev predictivity: the curve's :class:`CurveOptions
    <skill_lens.intervening.suppression.CurveOptions>` and how a neuron's score is read over prompt
    positions; the flags of ``skill-lens perturb``.

    >>> PerturbOptions(method="zero", aggregate="mean").aggregate
    'mean'
    """

    aggregate: str = option("max", "neuron score over prompt positions", choices=AGGREGATES)

    def __post_init__(self):
        super().__post_init__()
        self.check_choice("aggregate", AGGREGATES)


@dataclass
class PatchOptions(Options):
    """Which neurons :func:`patch` patches, and where, validated when made; the flags of ``skill-lens patch``
    (which offers ``prompt`` and ``predict`` positions; in Python any
    :class:`~skill_lens.intervening.interventions.Positions` will do).

    >>> PatchOptions(top=0.1, positions="predict").positions
    'predict'
    """

    top: float | None = option(None, "fraction (0 < top < 1) or number of neurons by dev predictivity (default: "
                                     f"RUN/neurons.safetensors if present, else {NeuronOptions.top:g})", type=float)
    per_layer: bool = option(False, "with --top: the top fraction of every layer")
    positions: str = option("prompt", "where the activations are patched", choices=("prompt", "predict"))

    def __post_init__(self):
        self.top = None if self.top is None else check_top(self.top)
        self.check_bool("per_layer")
        try:
            Positions.of(self.positions)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{self.label('positions')}: {e}") from None


def tune(out, model, task, config, task_args: dict | None = None, *, overwrite: bool = False,
         reuse: bool = False) -> Run:
    """Tune a soft prompt into the run directory ``out``: :meth:`Run.create <skill_lens.workflow.runs.Run.create>`."""
    return Run.create(out, model, task, config, task_args, overwrite=overwrite, reuse=reuse)


def tune_seeds(out, model, task, config, seeds: Sequence[int], task_args: dict | None = None, *,
               overwrite: bool = False) -> list[Run]:
    """One run per seed, ``OUT/seed-<s>`` (:func:`skill_lens.workflow.seeds.seed_dir`), tuned with ``config`` and that
    seed; a finished run of the very same settings is reused, so an interrupted call resumes where it stopped.
    Probe each run, then aggregate them with :func:`seeds` (``skill-lens seeds OUT``)."""
    seeds = parse_seeds(list(seeds))
    if (Path(out) / "run.json").exists():
        raise ValueError(f"{out} is a run; give --seeds a new --out directory (it will hold one run per seed).")
    configs = [dataclasses.replace(config, seed=s) for s in seeds]  # validated before any tuning
    return [Run.create(seed_dir(out, s), model, task, c, task_args, overwrite=overwrite, reuse=True)
            for s, c in zip(seeds, configs)]


def seeds(group, options: SeedOptions | None = None, **overrides):
    """Aggregate the probed seed runs of ``group`` (a :class:`~skill_lens.workflow.seeds.SeedGroup`) into
    ``DIR/seeds.safetensors``: each seed's scores, their mean (the paper's aggregate) and the ranking's
    replicability (Spearman between seeds, top ``top`` overlap), as ``options`` say (a
    :class:`~skill_lens.workflow.seeds.SeedOptions`, or its fields as keywords). Returns the
    :class:`~skill_lens.workflow.seeds.SeedScores`."""
    scores = combine_seeds(group.runs, SeedOptions.build(options, **overrides))
    group.save_seeds(scores)
    return scores


def probe(run: Run, options: ProbeOptions | None = None, **overrides):
    """Probe every FFN neuron of ``run`` (``RUN/predictivity.safetensors``) as ``options`` say (a
    :class:`~skill_lens.probing.probe.ProbeOptions`, or its fields as keywords); resumes after a kill, shards
    under ``torchrun``. With ``permutations=K`` also the permutation null (K label permutations per
    split), summarised in the sidecar under ``null`` (:meth:`~skill_lens.probing.result.ProbeResult.null_summary`:
    family-wise 5% threshold, significant neurons overall and per layer). Returns the
    :class:`~skill_lens.probing.result.ProbeResult`."""
    opts = ProbeOptions.build(options, **overrides)
    m, task = run.meta, run.task  # counts [K, L, P, d_mlp] of one split at a time, in the type its size needs
    size = count_dtype(max(len(task.dev), len(task.test))).itemsize
    check_fits(2 * size * opts.permutations * m["n_layers"] * m["prompt_length"] * m["d_mlp"],
               f"the permutation null of {opts.permutations} permutations", "pass fewer --permutations")
    pm = run.prompted()

    def save(result) -> None:
        result.meta["resources"] = resources(run.model)  # where it was computed (another step may differ)
        if opts.permutations:
            result.meta["null"] = result.null_summary()
        run.save_probe_result(result)

    # under torchrun the job's rank 0 holds the run's lock (and writes the result); the others are the same step
    with run.writing("probe") if rank_world()[0] == 0 else contextlib.nullcontext():
        return probe_(pm, task, opts, checkpoint=run.path, on_result=save, input_cache=run.input_cache)


def top_neurons(result, k: int, aggregate: str = "max") -> list[tuple[str, float, float | None]]:
    """``[("L1.N5", dev score, test score or None)]`` of the ``k`` best neurons by dev score (``result``: a
    :class:`~skill_lens.probing.result.ProbeResult` or the seeds' :class:`~skill_lens.workflow.seeds.SeedScores`).

    >>> import torch
    >>> from skill_lens.probing.result import ProbeResult
    >>> top_neurons(ProbeResult(torch.zeros(1, 1, 3), torch.tensor([[[0.5, 0.125, 0.75]]])), 1)
    [('L0.N1', 0.875, None)]
    """
    test = result.scores("test", aggregate=aggregate) if result.test_acc is not None else None
    layout = NeuronLayout.from_json(result.meta.get("layout"))  # experts: L3.E5.N812
    return best(result.scores("dev", aggregate=aggregate), k, test, label=layout.label if layout.moe else None)


def neurons(run: Run, options: NeuronOptions | None = None, **overrides):
    """Select the skill neurons by dev predictivity into ``RUN/neurons.safetensors`` as ``options`` say (a
    :class:`NeuronOptions`, or its fields as keywords); return the :class:`~skill_lens.probing.neurons.NeuronSet`
    (its ``scores`` are the dev scores). ``top`` is of all neurons unless ``per_layer=True`` (of each layer), as
    everywhere in the library. ``run`` may also be a :class:`~skill_lens.workflow.seeds.SeedGroup`: the neurons
    are then selected by the mean over its seeds."""
    o = NeuronOptions.build(options, **overrides)
    with run.writing("neurons"):
        result = run.probe_result()
        scores = result.scores("dev", aggregate=o.aggregate)
        meta = {**{k: result.meta[k] for k in ("model", "family", "n_layers", "d_mlp", "d_model", "task",
                                               "prompt_length", "layout") if k in result.meta},
                "hook_names": list(result.hook_names), "aggregate": o.aggregate, "per_layer": o.per_layer,
                "top": o.top, "scored_on": result.meta.get("scored_on", "dev predictivity")}
        ns = NeuronSet.from_scores(scores, top=o.top, per_layer=o.per_layer, meta=meta)
        run.save_neurons(ns)
    return ns


def perturb(run: Run, options: PerturbOptions | None = None, **overrides):
    """Suppression curve of ``run``'s top neurons (by dev predictivity) against random neurons, written to
    ``RUN/perturb_<method>.json`` and ``.csv``, as ``options`` say (a :class:`PerturbOptions`, or its fields as
    keywords); resumes after a kill. ``draws`` Gaussian noise draws per neuron set; the gap (random minus skill
    accuracy) comes with a paired bootstrap 95% interval over examples, draws and controls (``gap_ci_low``,
    ``gap_ci_high``). Under ``torchrun`` each process runs a share of every row's batches and rank 0 writes the
    files. Returns the :class:`~skill_lens.intervening.curve.SuppressionCurve`."""
    o = PerturbOptions.build(options, **overrides)
    n_fractions = len(o.fractions if o.fractions is not None else DEFAULT_FRACTIONS)
    sets = n_fractions * (1 + o.controls)  # a [L, d_mlp] mask per set; a row per set and draw, a byte per example
    check_fits(sets * (run.meta["n_layers"] * run.meta["d_mlp"] + 200)
               + sets * o.draws * (len(getattr(run.task, o.split)) + 400),
               f"{n_fractions} fractions x (1 + {o.controls} control sets) x {o.draws} draws",
               "pass fewer --controls or --draws")
    # under torchrun rank 0 holds the run's lock and writes the curve; the others are the same step
    with run.writing("perturb") if rank_world()[0] == 0 else contextlib.nullcontext():
        result, task = run.probe_result(), run.task
        name = f"perturb_{o.method}"
        curve = suppression_curve(run.prompted(), getattr(task, o.split), result.scores("dev", aggregate=o.aggregate),
                                  o, baseline=result.baseline, checkpoint=run.path / f"{name}.checkpoint.safetensors",
                                  input_cache=run.input_cache)
        curve.meta.update(task=task.name, split=o.split, aggregate=o.aggregate,  # no path: a moved run, same bytes
                          selected_on="dev predictivity", resources=resources(run.model))
        if rank_world()[0] == 0:  # every rank has the same curve
            run.save_result("perturb", name, curve.to_dict(), curve.to_pandas())
    return curve


def patch(run: Run, source_text: str, target_text: str, options: PatchOptions | None = None, **overrides):
    """Patch ``run``'s skill neurons from ``source_text`` into ``target_text``
    (:func:`skill_lens.intervening.patching.patch`) as ``options`` say (a :class:`PatchOptions`, or its fields as
    keywords): ``RUN/neurons.safetensors`` unless ``top`` picks the top neurons by dev predictivity (the
    default of :class:`NeuronOptions` when there is no neuron file)."""
    o = PatchOptions.build(options, **overrides)
    for flag, text in (("--source-text", source_text), ("--target-text", target_text)):
        if not str(text).strip():
            raise ValueError(f"{flag} is empty; pass a text to run.")
    if o.top is not None or not run.file("neurons").exists():
        chosen = NeuronSet.from_scores(run.probe_result().scores("dev"), top=NeuronOptions.top if o.top is None
                                       else o.top, per_layer=o.per_layer)
    else:
        chosen = run.neurons()
    return patch_(run.prompted(), source_text, target_text, chosen, positions=o.positions)


def robustness(run: Run, source: str, options: RobustnessOptions | None = None, **overrides) -> dict:
    """The analyses of :mod:`skill_lens.studies.robustness` on ``run`` and the adversarial ``source``, as ``options``
    say (a :class:`~skill_lens.studies.robustness.RobustnessOptions`, or its fields as keywords); written to
    ``RUN/robustness_<name>.json`` and ``.csv``. Returns ``{"result", "repair", "adversarial", "paths"}``."""
    o = RobustnessOptions.build(options, **overrides)
    task = run.task
    adv = adversarial_split(source, task, o.split, o.seed)  # validates before anything is written
    with run.writing("robustness"):
        pm = run.prompted()
        result = neuron_robustness(pm, task, adv, o)
        out = {"source": source, "seed": o.seed, **result.to_dict()}  # the run: its lineage (by content, not path)
        repair = None
        if o.patch_top > 0 and not source.startswith("advglue"):
            clean_top = NeuronSet.from_scores(result.clean_scores, o.patch_top)
            repair = patch_repair(pm, getattr(task, o.split), adv, clean_top, o.batch_size)
            out["repair"] = {"top": o.patch_top, **repair.to_dict()}
        paths = run.save_result("robustness", f"robustness_{source_name(source)}", out, result.to_pandas())
    return {"result": result, "repair": repair, "adversarial": adv, "paths": paths}


def report(run: Run, out=None, options: ReportOptions | None = None, **overrides) -> Path:
    """The self-contained HTML report of ``run`` (``RUN/report.html`` or ``out``) as ``options`` say (a
    :class:`~skill_lens.workflow.report.ReportOptions`, or its fields as keywords):
    :func:`skill_lens.workflow.report.write_report`."""
    return write_report(run, out, ReportOptions.build(options, **overrides))


@dataclass
class DemoOptions(Options):
    """What :func:`demo` does after tuning, validated when made; the flags of ``skill-lens demo``.

    >>> DemoOptions(permutations=-1)
    Traceback (most recent call last):
    ...
    ValueError: permutations (--permutations) must be a whole number of at least 0, got -1.
    """

    top: float = option(NeuronOptions.top, "the skill neurons: this fraction of all neurons by dev predictivity "
                                           "(or a whole number of neurons)")
    controls: int = option(CurveOptions.controls, "random neuron sets per fraction of the suppression curve")
    permutations: int = option(100, "label permutations of the probe's chance level (a family-wise 5% threshold; "
                                    "0: none)")

    def __post_init__(self):
        self.top = check_top(self.top)
        self.check_int("controls", 0)
        self.check_int("permutations", 0)


def demo(model, task, out, config, options: DemoOptions | None = None, *, task_args: dict | None = None,
         log=print, **overrides) -> dict:
    """The whole method into ``out``: tune (or reuse the same finished run), probe with a permutation null
    (``permutations`` label permutations; 0: none), select, perturb, report, as ``options`` say (a
    :class:`DemoOptions`, or its fields as keywords).

    One definition of skill neurons throughout: the top ``top`` of **all** FFN neurons by dev
    predictivity (max over prompt positions). The selected set is that, the suppression curve perturbs
    the top fractions of the same ranking (``top`` among them), and the report's views show its best.

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
    o = DemoOptions.build(options, **overrides)
    top, controls, permutations = o.top, o.controls, o.permutations
    seconds, done, t0 = {}, {}, time.perf_counter()
    sizes = f"{len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test"
    plan = [("tune", f"tuning a {config.prompt_length}-token soft prompt for {task.name} ({sizes})",
             lambda: tune(out, model, task, config, task_args, reuse=True)),
            ("probe", "probing every FFN neuron at every prompt position"
             + (f", and {permutations} label permutations for the chance level" if permutations else ""),
             lambda: probe(done["run"], permutations=permutations)),
            ("neurons", f"selecting the top {top:.0%} of all neurons by dev predictivity",
             lambda: neurons(done["run"], top=top)),
            ("perturb", f"suppression curve: Gaussian noise on the top skill neurons vs {controls} random sets",
             lambda: perturb(done["run"], method="gaussian", fractions=sorted({0.0, 0.01, top, 0.05, 0.1}),
                             controls=controls)),
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


def _null_text(result, ns) -> str:
    """``"0.673 (family-wise 5%, 100 label permutations): 3,112 of 46,080 neurons above it, 922 of 922 skill neurons"``."""
    if result.null_max_dev is None:
        return "not computed (skill-lens probe RUN --permutations 100)"
    mask, total = result.significant(), result.dev_acc.shape[0] * result.dev_acc.shape[-1]
    skill = int((mask & ns.mask).sum())
    return (f"{result.fwer_threshold():.3f} (family-wise 5%, {len(result.null_max_dev)} label permutations): "
            f"{int(mask.sum()):,} of {total:,} neurons above it, {skill} of {len(ns)} skill neurons")


def demo_summary(done: dict) -> str:
    """The demo's closing lines: accuracies, top neurons, the chance level, suppression gaps, the report, the time."""
    run, curve, acc = done["run"], done["perturb"], done["run"].meta["accuracy"]
    ci = run.meta.get("accuracy_ci") or {}
    a = lambda k: f"{acc[k]:.3f}" + (f" [{ci[k][0]:.3f}, {ci[k][1]:.3f}]" if ci.get(k) else "")  # noqa: E731
    rows = [r for r in curve.summary() if r["fraction"] > 0]
    ns = done["neurons"]
    how = f"top {ns.meta['top']:.0%} of {'each layer' if ns.meta.get('per_layer') else 'all'}" \
        if isinstance(ns.meta.get("top"), float) else "selected"
    lines = [f"\nskill_lens demo: {run.meta['model']} on {run.task.name}",
             f"  soft prompt      dev {a('dev')}  test {a('test')}" + ("  (95% Wilson intervals)" if ci else ""),
             f"  hard prompt      dev {a('hard_prompt_dev')}  test {a('hard_prompt_test')}",
             "  top neurons      " + ", ".join(f"{n} {d:.3f}" + ("" if t is None else f" ({t:.3f})")
                                            for n, d, t in top_neurons(done["probe"], 3)) + "  (dev predictivity; test)",
             f"  chance level     {_null_text(done['probe'], ns)}",
             f"  skill neurons    {len(ns)} ({how}, by dev predictivity)",
             "  suppression      " + ", ".join(f"{r['fraction']:.0%}: {r['skill_accuracy']:.3f} vs "
                                               f"{r['random_accuracy_mean']:.3f}" for r in rows)
             + "  (dev accuracy, skill vs random)",
             "  largest gap      " + _gap_text(max(curve.summary(), key=lambda r: r["gap"])),
             f"  report           {done['report']}",
             f"  run directory    {run.path}  ({sum(done['seconds'].values()) / 60:.1f} min: "
             + ", ".join(f"{k} {v:.0f}s" for k, v in done["seconds"].items()) + ")"]
    return "\n".join(lines)
