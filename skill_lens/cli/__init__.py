"""``skill-lens``: one subcommand per module in this package, each defining ``register(subparsers)``.

Each ``register`` adds a parser whose ``func`` default takes the parsed arguments.
Errors that name their fix (``ValueError`` and subclasses) are printed without a traceback, in one line,
exit status 2; Ctrl-C exits with 130 and SIGTERM with 143, each in one line (a step's outputs are committed
whole or not at all, and its checkpoint resumes).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from skill_lens.base.signals import Terminated, sigterm_interrupts

__all__ = ["main", "add_task_args", "task_from_args"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skill-lens", description="Find and use skill neurons in transformers.")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        import os

        os.environ["SKILL_LENS_QUIET"] = "1"
    try:
        with sigterm_interrupts():
            result = args.func(args)
    except (ValueError, OSError) as e:  # errors that name their fix; no traceback
        print(f"skill-lens {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was written is whole, the checkpoint resumes
        how = "terminated" if isinstance(e, Terminated) else "interrupted"
        print(f"skill-lens {args.command}: {how}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    return int(result or 0)


def add_task_args(p: argparse.ArgumentParser) -> None:
    """The options that pick a task and its sizes (shared by ``tune`` and ``demo``)."""
    p.add_argument("--task", default="rotten_tomatoes", help="task name or spec (hf:, csv:, jsonl:, json:, parquet:)")
    p.add_argument("--train-size", type=int, default=400)
    p.add_argument("--dev-size", type=int, default=200)
    p.add_argument("--test-size", type=int, default=200)
    p.add_argument("--text-column"), p.add_argument("--text-b-column"), p.add_argument("--label-column")
    p.add_argument("--label-words", help="comma-separated verbalizer words, one per label")
    p.add_argument("--binary", help="binary subtask: positive-vs-negative, neutral-vs-rest, one-vs-rest:LABEL")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the split and subsampling")
    p.add_argument("--clamp", action="store_true", help="take a whole split when it has fewer examples than asked "
                                                        "for (recorded in run.json) instead of refusing")


def task_from_args(args) -> tuple[object, dict]:
    """Load the task the options describe; return it with the keyword arguments that rebuild it."""
    from skill_lens.data.sources import load_task

    kwargs = {
        "train_size": args.train_size, "dev_size": args.dev_size, "test_size": args.test_size,
        "seed": args.data_seed, "text_column": args.text_column, "text_b_column": args.text_b_column,
        "label_column": args.label_column, "binary": args.binary,
        "label_words": args.label_words.split(",") if args.label_words else None, "clamp": args.clamp or None,
    }
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return load_task(args.task, **kwargs), kwargs


if __name__ == "__main__":
    raise SystemExit(main())
