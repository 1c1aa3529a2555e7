"""Task specificity of skill neurons on SmolLM2-135M: do tasks of one type share skill neurons?

Tunes a soft prompt per task (two sentiment tasks, two ethics tasks), probes every FFN neuron,
and prints the Spearman correlation of the neuron predictivities between tasks (Wang et al. 2022,
Fig. 5: within-type correlations exceed cross-type ones). Small sizes, so it runs in about
15-20 minutes on 2 CPU cores.

    python benchmarks/specificity.py [--data-dir ../shared/data] [--steps 70] [--seeds 0]

The ethics tasks (ETHICS justice and deontology, ``label,scenario[,excuse]`` CSVs) are read from
``--data-dir`` (default: ``shared/data`` beside the repository, ``../shared/data`` from its root);
when the files are absent they are skipped with a message.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository; the shared data sit beside it

from skill_lens.analyses import specificity_matrix
from skill_lens.models import load_model
from skill_lens.probe import probe
from skill_lens.tasks import load_task
from skill_lens.tuning import TuneConfig, evaluate, hard_prompt_model, prompted, tune


def tasks(args) -> dict:
    """name -> (type, load_task kwargs)."""
    sizes = dict(train_size=args.train_size, dev_size=args.dev_size, test_size=args.test_size)
    out = {"rotten_tomatoes": ("sentiment", dict(spec="rotten_tomatoes", **sizes)),
           "tweets_pos_neg": ("sentiment", dict(spec="tweets", binary="positive-vs-negative", **sizes))}
    data = Path(args.data_dir)
    for name, extra in (("justice", {}), ("deontology", {"text_b_column": "excuse"})):
        path = data / f"ethics_{name}_train.csv"
        if not path.exists():
            print(f"skipping ethics_{name}: {path} not found (pass --data-dir)", flush=True)
            continue
        out[f"ethics_{name}"] = ("ethics", dict(spec=f"csv:{path}", text_column="scenario", **extra, **sizes))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"),
                    help="folder of ethics_{justice,deontology}_train.csv (default: ../shared/data from the repository)")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--train-size", type=int, default=200)
    ap.add_argument("--dev-size", type=int, default=100)
    ap.add_argument("--test-size", type=int, default=20)
    ap.add_argument("--steps", type=int, default=70)
    ap.add_argument("--prompt-length", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", help="write the matrix as JSON here")
    args = ap.parse_args()

    t0 = time.perf_counter()
    model = load_model(args.model)
    specs = tasks(args)
    scores, types = {}, {}
    for name, (kind, kwargs) in specs.items():
        task = load_task(kwargs.pop("spec"), **kwargs)
        runs = []
        for seed in args.seeds:
            print(f"{name} seed {seed}: tuning {args.steps} steps, then probing  [{time.perf_counter() - t0:.0f}s]",
                  flush=True)
            cfg = TuneConfig(prompt_length=args.prompt_length, steps=args.steps, eval_every=max(1, args.steps // 2),
                             seed=seed, max_length=args.max_length)
            result = tune(model, task, cfg)
            pm = prompted(model, task, result.prompt, args.max_length)
            runs.append(probe(pm, task, splits=("dev",)).scores())
            hard = evaluate(hard_prompt_model(model, task, args.max_length), task.dev)["accuracy"]
            print(f"{name} seed {seed}: dev accuracy {result.dev_accuracy:.3f} (hard prompt {hard:.3f}); "
                  f"max predictivity {runs[-1].max():.3f}  [{time.perf_counter() - t0:.0f}s]", flush=True)
        scores[name], types[name] = runs, kind

    m = specificity_matrix(scores, types)
    import pandas as pd

    with pd.option_context("display.width", 250, "display.max_columns", None, "display.precision", 3):
        print("\nSpearman correlation of neuron predictivities (diagonal: across seeds, 1 for one seed)")
        print(m.to_pandas())
    print(f"types: {types}")
    if m.within_type is None or m.cross_type is None:
        print("need two tasks of one type and tasks of two types to compare within- and cross-type correlation")
    else:
        verdict = "exceeds" if m.within_type > m.cross_type else "does NOT exceed"
        print(f"mean within-type correlation {m.within_type:.3f} {verdict} mean cross-type {m.cross_type:.3f}")
    if args.out:
        Path(args.out).write_text(json.dumps(m.to_dict(), indent=1))
    fmt = lambda x: "nan" if x is None else f"{x:.3f}"  # noqa: E731
    print(f"RESULT within_type={fmt(m.within_type)} cross_type={fmt(m.cross_type)} "
          f"tasks={len(scores)} seconds={time.perf_counter() - t0:.0f}")


if __name__ == "__main__":
    main()
