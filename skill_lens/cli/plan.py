"""``skill-lens plan MODEL``: each step's expected peak memory and forward tokens, from the config alone
(:func:`skill_lens.workflow.plan.plan`; no weights are loaded)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plan", help="expected peak memory and forward tokens of tune, probe and perturb, from the "
                                    "model's config alone (nothing is loaded or run)")
    p.add_argument("model", help="smollm2-135m, a model directory, a config.json, or a Hub name")
    p.add_argument("--train-size", type=int, default=400)
    p.add_argument("--dev-size", type=int, default=200)
    p.add_argument("--test-size", type=int, default=200)
    p.add_argument("--tokens", type=int, default=64, help="median input tokens per example (template included)")
    p.add_argument("--dtype", help="float32 (default), bfloat16 or float16")
    p.add_argument("--prompt-length", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32, help="probe and perturb")
    p.add_argument("--tune-batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=150, help="tuning steps")
    p.add_argument("--permutations", type=int, default=0, help="the probe's permutation null")
    p.add_argument("--pooling", action="store_true")
    p.add_argument("--input-cache-mb", type=float, default=4096.0)
    p.add_argument("--controls", type=int, default=3)
    p.add_argument("--draws", type=int, default=1)
    p.add_argument("--budget", action="append", metavar="SIZE",
                   help="memory of one device, e.g. 80GiB or 24GiB (repeatable): whether each step fits in it")
    p.set_defaults(func=run)


def run(args) -> int:
    from skill_lens.workflow.plan import plan

    p = plan(args.model, {"train": args.train_size, "dev": args.dev_size, "test": args.test_size},
             dtype=args.dtype, tokens=args.tokens, prompt_length=args.prompt_length, batch_size=args.batch_size,
             tune_batch_size=args.tune_batch_size, steps=args.steps, permutations=args.permutations,
             pooling=args.pooling, input_cache_mb=args.input_cache_mb, controls=args.controls, draws=args.draws)
    print(p.table(*(args.budget or ())))
    print("GiB; peaks leave out the Python runtime and allocator slack (a few hundred MB). Where a step does not fit, "
          "--max-memory and --offload-folder place that many GiB of weights on the CPU or the disk.")
    return 0
