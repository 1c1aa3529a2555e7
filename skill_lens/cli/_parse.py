"""The command line's options: flags generated from the library's options classes, and the model flags.

Each step's settings are an options dataclass in the library (:mod:`skill_lens.base.options`): its fields
carry the default, the help text and the flag. :func:`add_options` adds one flag per field to a
subcommand's parser; :func:`options_from_args` builds the options object (validated) from the parsed flags.
"""

from __future__ import annotations

import argparse
import dataclasses

from skill_lens.base.options import flag_of
from skill_lens.model.loading import load_options


def _dest(cls, f) -> str | None:
    """Where argparse keeps a field's flag (``None``: no flag): the flag's name (``--data-seed``: ``data_seed``),
    or the field's name for a flag that turns an option off (``--no-views``: ``views``)."""
    flag = flag_of(cls, f.name)
    if flag is None:
        return None
    return f.name if f.default is True else flag.lstrip("-").replace("-", "_")


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def add_options(parser: argparse.ArgumentParser, cls, *, only=None, defaults: dict | None = None) -> None:
    """One flag per option of the dataclass ``cls`` that has one (``only``: these fields), with the field's
    help and default (``defaults`` overrides a default for this subcommand), choices and type.

    >>> from skill_lens.intervening.suppression import CurveOptions
    >>> p = argparse.ArgumentParser()
    >>> add_options(p, CurveOptions, only=("controls", "per_layer"))
    >>> vars(p.parse_args(["--controls", "2"]))
    {'controls': 2, 'per_layer': False}
    """
    taken = {a.dest for a in parser._actions}
    for f in dataclasses.fields(cls):
        dest = _dest(cls, f)
        if dest is None or (only is not None and f.name not in only):
            continue
        if dest in taken:
            raise ValueError(f"{cls.__name__}.{f.name}: another option of this subcommand is also kept in {dest!r}")
        m, flag = f.metadata, flag_of(cls, f.name)
        default = (defaults or {}).get(f.name, f.default)
        text = m.get("help", "").replace("%", "%%")
        if isinstance(f.default, bool):
            group = parser.add_mutually_exclusive_group() if m.get("off_flag") else parser
            group.add_argument(flag, dest=dest, action="store_false" if f.default else "store_true", default=default,
                               help=text)
            if m.get("off_flag"):
                off, off_help = m["off_flag"]
                group.add_argument(off, dest=dest, action="store_false", help=off_help)
            continue
        if default is not None and "default" not in text:
            text += f" (default: {_shown(default)})".replace("%", "%%")
        kind = str if m.get("parse") else m.get("type") or (type(default) if default is not None else str)
        parser.add_argument(flag, dest=dest, default=default, type=kind, choices=m.get("choices"),
                            metavar=m.get("metavar"), help=text)


def options_from_args(args: argparse.Namespace, cls, **extra):
    """The options object ``cls`` of the parsed flags (those :func:`add_options` added) and ``extra`` fields,
    validated; a flag's text is parsed by its field's ``parse`` (an error names the flag).

    >>> from skill_lens.intervening.suppression import CurveOptions
    >>> p = argparse.ArgumentParser()
    >>> add_options(p, CurveOptions)
    >>> options_from_args(p.parse_args(["--fractions", "0,0.1", "--method", "zero"]), CurveOptions).fractions
    (0.0, 0.1)
    >>> options_from_args(p.parse_args(["--fractions", "a"]), CurveOptions)
    Traceback (most recent call last):
    ...
    ValueError: --fractions 'a': use comma-separated numbers such as 0,0.01,0.05
    """
    values = {}
    for f in dataclasses.fields(cls):
        dest = _dest(cls, f)
        if dest is None or not hasattr(args, dest):
            continue
        value, parse = getattr(args, dest), f.metadata.get("parse")
        if parse is not None and isinstance(value, str):
            try:
                value = parse(value)
            except ValueError as e:
                raise ValueError(f"{flag_of(cls, f.name)} {value!r}: {e}") from None
        values[f.name] = value
    return cls(**{**values, **extra})


def add_model_args(p, run: bool = True) -> None:
    """``--device``/``--dtype`` of every step that runs a model (``run``: a step on a run, whose dtype defaults to
    the one it was tuned in) and its placement over devices; :func:`model_args` checks them."""
    p.add_argument("--device", help="auto (default: CUDA when available, else cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", help="float32, bfloat16 or float16 (default: " + (
        "the run's, as tuned)" if run else "float32, also on CUDA; bfloat16 halves memory)"))
    p.add_argument("--device-map", help='auto, balanced, sequential, or JSON {"module": device} (GPU, cpu, disk)')
    p.add_argument("--max-memory", help="weights per device, e.g. 0=70GiB,cpu=100GiB; --offload-folder DIR: the rest")
    p.add_argument("--offload-folder", help="directory for weights that fit on no device")
    p.add_argument("--memory-budget", help="what a step may use per device, e.g. cpu=20GiB: a batch over it halves")


def model_args(args) -> dict:
    """The checked keyword arguments of :func:`~skill_lens.model.loading.load_model` or ``Run.open``.

    >>> from skill_lens.cli import build_parser
    >>> model_args(build_parser().parse_args(["probe", "RUN", "--max-memory", "cpu=2GB"]))["device_map"]
    'auto'
    """
    return load_options(args.device, args.dtype, device_map=args.device_map, max_memory=args.max_memory,
                        offload_folder=args.offload_folder, memory_budget=args.memory_budget)
