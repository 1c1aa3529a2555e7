"""Skill neurons on clean vs adversarial data: SmolLM2-135M, a prompt tuned on Rotten Tomatoes, AdvGLUE sst2.

Reports accuracy on the clean dev split and on AdvGLUE sst2 (same labels: 0 negative, 1 positive),
Spearman's correlation of clean vs adversarial neuron predictivity (baseline from clean train, max over
prompt positions, all 30 x 1536 neurons) and the top-k overlaps. ``--perturb typos:0.1`` adds a paired
perturbation of the dev split with the patching repair of the top 2% clean skill neurons.

    python benchmarks/robustness_advglue.py [--run RUN] [--advglue PATH] [--wait 1800]

With ``--run``, waits (up to ``--wait`` seconds) for ``RUN/run.json`` and reuses that run; without it,
tunes a prompt (400 train / 200 dev, prompt length 8, ``TuneConfig`` defaults) into ``--out``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def get_run(args):
    from skill_lens.workflow.runs import Run

    if args.run:
        deadline = time.monotonic() + args.wait
        while not (Path(args.run) / "run.json").exists() and time.monotonic() < deadline:
            time.sleep(15)
        if (Path(args.run) / "run.json").exists():
            return Run.open(args.run)
        if args.no_tune:
            raise SystemExit(f"{args.run}/run.json did not appear within {args.wait} s (--no-tune: not tuning)")
        print(f"{args.run}/run.json did not appear within {args.wait} s; tuning a run of our own")
    from skill_lens.model.loading import load_model
    from skill_lens.data.sources import load_task
    from skill_lens.prompting.tuning import TuneConfig

    task_args = {"train_size": 400, "dev_size": 200, "test_size": 200}
    task = load_task("rotten_tomatoes", **task_args)
    out = args.out or tempfile.mkdtemp(prefix="rt_run_")
    return Run.create(out, load_model("smollm2-135m"), task, TuneConfig(prompt_length=8), task_args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a finished rotten_tomatoes run directory (e.g. runs/rt)")
    ap.add_argument("--wait", type=float, default=1800, help="seconds to wait for RUN/run.json")
    ap.add_argument("--out", help="where to tune when there is no --run (default: a temp dir)")
    ap.add_argument("--no-tune", action="store_true", help="exit instead of tuning when --run does not appear")
    ap.add_argument("--advglue", default=str(ROOT.parent / "shared" / "data" / "adv_glue_dev.json"))
    ap.add_argument("--ks", default="0.01,0.02,0.05,0.1,0.2")
    ap.add_argument("--perturb", help="also a paired perturbation of dev (e.g. typos:0.1) with patching repair")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    from skill_lens.probing.neurons import NeuronSet
    from skill_lens.studies.robustness import adversarial_split, neuron_robustness, patch_repair

    t0 = time.perf_counter()
    run = get_run(args)
    task, pm = run.task, run.prompted()
    adv = adversarial_split(f"advglue:sst2:{args.advglue}", task)
    ks = [float(k) for k in args.ks.split(",")]
    print(f"run {run.path}: {run.meta['model']}, {task.name} train {len(task.train)} dev {len(task.dev)}; "
          f"AdvGLUE sst2 {len(adv)} examples")
    r = neuron_robustness(pm, task, adv, ks, curve_fractions=(), batch_size=args.batch_size)
    a = r.accuracy
    print(f"accuracy clean dev {a['clean']['accuracy']:.3f}, AdvGLUE sst2 {a['adversarial']['accuracy']:.3f} "
          f"(logit diff {a['clean']['logit_diff']:.3f} vs {a['adversarial']['logit_diff']:.3f})")
    print(f"Spearman clean vs adversarial predictivity: {r.spearman:.3f} "
          f"(per layer: min {min(r.spearman_per_layer):.3f}, max {max(r.spearman_per_layer):.3f})")
    print(r.table())
    if args.perturb:
        p_adv = adversarial_split(args.perturb, task, "dev", seed=0)
        p = neuron_robustness(pm, task, p_adv, ks, curve_fractions=(), batch_size=args.batch_size)
        rep = patch_repair(pm, task.dev, p_adv, NeuronSet.from_scores(r.clean_scores, 0.02), args.batch_size)
        print(f"{args.perturb}: acc {p.accuracy['adversarial']['accuracy']:.3f}, Spearman {p.spearman:.3f}, "
              f"overlap {dict(zip(ks, [round(x, 3) for x in p.overlap['total']]))}")
        print(f"patching repair (top 2%, {rep.n_neurons} neurons): adversarial {rep.adversarial_accuracy:.3f} -> "
              f"patched {rep.patched_accuracy:.3f} (clean {rep.clean_accuracy:.3f}), recovered {rep.recovered:.3f}")
    o5 = r.overlap["total"][ks.index(0.05)] if 0.05 in ks else float("nan")
    print(f"elapsed {time.perf_counter() - t0:.0f} s")
    print(f"RESULT clean_acc={a['clean']['accuracy']:.4f} adv_acc={a['adversarial']['accuracy']:.4f} "
          f"spearman={r.spearman:.4f} overlap_5pct={o5:.4f}")


if __name__ == "__main__":
    main()
