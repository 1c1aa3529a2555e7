"""``skill-lens demo``: the main job, the whole method end to end on the default model and task.

Tune a soft prompt, probe every FFN neuron, select the skill neurons, perturb them against random
neurons, and write the HTML report; then print the key figures and the report's path. Every step
writes into one run directory and resumes after an interruption (rerun the same command).
"""

from __future__ import annotations

import time

SIZES = {"train_size": 400, "dev_size": 200, "test_size": 200, "seed": 0}


def register(sub) -> None:
    p = sub.add_parser("demo", help="the whole method on smollm2-135m and rotten_tomatoes: tune, probe, select, "
                                    "perturb, report (about 10 min on 2 cores)")
    p.add_argument("--out", default="runs/demo", help="run directory (resumes if it exists)")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--task", default="rotten_tomatoes")
    p.add_argument("--steps", type=int, default=150, help="prompt-tuning steps (batch 16)")
    p.add_argument("--controls", type=int, default=3, help="random neuron sets per fraction")
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.models import load_model
    from skill_lens.tasks import load_task
    from skill_lens.tuning import TuneConfig

    task = load_task(args.task, **SIZES)
    model = load_model(args.model)
    pipeline(model, task, args.out, TuneConfig(steps=args.steps), controls=args.controls, task_args=SIZES)
    return 0


def pipeline(model, task, out, config, controls: int = 3, top: float = 0.02, task_args: dict | None = None) -> dict:
    """Tune, probe, select, perturb and report into ``out``; print progress and :func:`summary`.

    >>> import tempfile, contextlib, io
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> with contextlib.redirect_stdout(io.StringIO()) as printed:
    ...     done = pipeline(tiny_model(), tiny_task(), tempfile.mkdtemp(), TuneConfig(prompt_length=2, steps=2,
    ...                     eval_every=2), controls=1, top=0.25)
    >>> done["report"].exists(), "suppression" in printed.getvalue()
    (True, True)
    """
    from skill_lens.cli.neurons import select_neurons
    from skill_lens.cli.perturb import perturb_run
    from skill_lens.cli.probe import probe_run
    from skill_lens.report import write_report
    from skill_lens.runs import Run

    t0 = time.perf_counter()
    clock = lambda: f"{time.perf_counter() - t0:5.0f}s"  # noqa: E731
    sizes = f"{len(task.train)} train / {len(task.dev)} dev / {len(task.test)} test"
    name = model.__dict__.get("_skill_lens_name", "the model")
    print(f"[1/5 {clock()}] tuning a {config.prompt_length}-token soft prompt on {name} for {task.name} ({sizes})")
    run_ = Run.create(out, model, task, config, task_args)
    print(f"[2/5 {clock()}] probing {run_.meta['n_layers']} x {run_.meta['d_mlp']} FFN neurons at every prompt "
          "position")
    result = probe_run(run_)
    print(f"[3/5 {clock()}] selecting the top {top:.0%} of neurons per layer by dev predictivity")
    neurons = select_neurons(run_.path, top=top, per_layer=True)
    print(f"[4/5 {clock()}] suppression curve: Gaussian noise on the top skill neurons vs {controls} random sets")
    curve = perturb_run(run_, "gaussian", controls=controls)
    print(f"[5/5 {clock()}] writing the report")
    report = write_report(run_)
    print(summary(run_, result, neurons, curve, report, time.perf_counter() - t0))
    return {"run": run_, "probe": result, "neurons": neurons, "curve": curve, "report": report}


def summary(run, result, neurons, curve, report, seconds: float) -> str:
    """The demo's closing lines: accuracies, top neurons, suppression gaps, where the report is."""
    from skill_lens.cli.probe import top_neurons

    acc = run.meta["accuracy"]
    lines = [f"\nskill_lens demo: {run.meta['model']} on {run.task.name}",
             f"  soft prompt      dev {acc['dev']:.3f}  test {acc['test']:.3f}",
             f"  hard prompt      dev {acc['hard_prompt_dev']:.3f}  test {acc['hard_prompt_test']:.3f}",
             "  top neurons      " + ", ".join(f"{n} {d:.3f}" + ("" if t is None else f" ({t:.3f})")
                                            for n, d, t in top_neurons(result, 3)) + "  (dev predictivity; test)",
             f"  skill neurons    {len(neurons.pairs())} selected (per layer)",
             "  suppression      " + ", ".join(f"{r['fraction']:.0%}: {r['skill_accuracy']:.3f} vs "
                                               f"{r['random_accuracy_mean']:.3f}"
                                               for r in curve.summary() if r["fraction"] > 0)
             + "  (dev accuracy, skill vs random)",
             f"  largest gap      {max(r['gap'] for r in curve.summary()) * 100:.1f} points",
             f"  report           {report}",
             f"  run directory    {run.path}  ({seconds / 60:.1f} min)"]
    return "\n".join(lines)
