"""``skill-lens``: one subcommand per module in this package, each defining ``register(subparsers)``.

Each ``register`` adds a parser whose ``func`` default takes the parsed arguments.
Errors that name their fix (``ValueError`` and subclasses) are printed without a traceback, in one line,
exit status 2; Ctrl-C exits with 130 and SIGTERM with 143, each in one line (a step's outputs are committed
whole or not at all, and its checkpoint resumes).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

# The CLI imports the library at the top, like every module. Lazy imports would save little: every
# subcommand's flags are generated from the library's options classes, so building the parser (also for
# `skill-lens --help`) imports the library anyway, as perturb's parser already did (METHODS) when the
# subcommands imported lazily. Measured under the heavy lock on 2 cores, medians of 5 runs alternating:
# `skill-lens --help` 4.1 s with the lazy imports, 4.5 s with these; importing
# skill_lens.intervening.suppression alone 4.0 s (torch 1.0 s of it).
from skill_lens.base.signals import Terminated, sigterm_interrupts
from skill_lens.cli._parse import add_options, options_from_args
from skill_lens.data.sources import TaskOptions, load_task

__all__ = ["main", "build_parser", "add_task_args", "task_from_args", "SIZES"]


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


# What tune and demo take of a task unless told otherwise: sized for a 2-core CPU (the library's default is
# the whole split).
SIZES = {"train_size": 400, "dev_size": 200, "test_size": 200}


def add_task_args(p: argparse.ArgumentParser) -> None:
    """The options that pick a task and its sizes (shared by ``tune`` and ``demo``): ``--task`` and the flags
    of :class:`~skill_lens.data.sources.TaskOptions`, sized by :data:`SIZES`."""
    p.add_argument("--task", default="rotten_tomatoes", help="task name or spec (hf:, csv:, jsonl:, json:, parquet:)")
    add_options(p, TaskOptions, defaults=SIZES)


def task_from_args(args) -> tuple[object, dict]:
    """Load the task the options describe; return it with the keyword arguments that rebuild it."""
    opts = options_from_args(args, TaskOptions)
    return load_task(args.task, opts), opts.as_args()


if __name__ == "__main__":
    raise SystemExit(main())
