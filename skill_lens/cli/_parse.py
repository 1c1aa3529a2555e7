"""Parsers of the option strings several subcommands share (lists of numbers, layers, positions, device, dtype)."""

from __future__ import annotations


def parse_fractions(text: str) -> list[float]:
    """``"0,0.01,0.1"`` -> ``[0.0, 0.01, 0.1]``.

    >>> parse_fractions("0, 0.05")
    [0.0, 0.05]
    """
    try:
        return [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--fractions must be comma-separated numbers such as 0,0.01,0.05, got {text!r}") from None


def parse_positions(text: str):
    """``"prompt"`` stays a role; ``"0,1,-1"`` becomes explicit indices (checked).

    >>> parse_positions("predict"), parse_positions("0,-1").indices
    (Positions(role='predict', indices=()), (0, -1))
    """
    from skill_lens.intervening.interventions import InterventionError, Positions

    if text.replace(",", "").replace("-", "").replace(" ", "").isdigit():
        return Positions.of([int(x) for x in text.split(",") if x.strip()])
    try:
        return Positions.of(text)
    except InterventionError as e:
        raise InterventionError(f"--positions: {e}") from None


def parse_layers(spec: str | None) -> list[int] | None:
    """``"10-12,15"`` -> ``[10, 11, 12, 15]``.

    >>> parse_layers("0,2-4")
    [0, 2, 3, 4]
    >>> parse_layers("3-1")
    Traceback (most recent call last):
    ...
    ValueError: --layers '3-1': ranges go low-high, e.g. '10-29'
    """
    if spec is None:
        return None
    layers = set()
    for part in spec.split(","):
        try:
            lo, _, hi = part.strip().partition("-")
            lo, hi = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"--layers {spec!r}: use layer numbers and ranges, e.g. '10-29' or '0,2,5-7'") from None
        if lo > hi or lo < 0:
            raise ValueError(f"--layers {spec!r}: ranges go low-high, e.g. '10-29'")
        layers.update(range(lo, hi + 1))
    return sorted(layers)


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
    from skill_lens.model.loading import load_options

    return load_options(args.device, args.dtype, args.device_map, args.max_memory, args.offload_folder,
                        args.memory_budget)
