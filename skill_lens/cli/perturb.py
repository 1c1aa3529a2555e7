"""``skill-lens perturb RUN``: suppression curve of the top skill neurons against random neurons.

Reads ``RUN/predictivity.safetensors`` (scores and baseline of ``skill-lens probe RUN``), writes
``RUN/perturb_<method>.json`` (every set's numbers) and ``RUN/perturb_<method>.csv`` (one row per
fraction), and prints the table.
"""

from __future__ import annotations

from pathlib import Path

PREDICTIVITY_FILE = "predictivity.safetensors"


def register(sub) -> None:
    from skill_lens.curves import METHODS

    p = sub.add_parser("perturb", help="suppression curve: perturb the top skill neurons vs random neurons "
                                       "(writes RUN/perturb_<method>.json/.csv; resumes after a kill)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--method", choices=METHODS, default="gaussian")
    p.add_argument("--fractions", default="0,0.01,0.02,0.05,0.1", help="comma-separated fractions in [0, 1]")
    p.add_argument("--controls", type=int, default=3, help="random neuron sets per fraction")
    p.add_argument("--per-layer", action="store_true", help="the top fraction of every layer (default: of all)")
    p.add_argument("--std", type=float, default=1.0, help="standard deviation of the Gaussian noise")
    p.add_argument("--per", choices=("token", "example"), default="token", help="fresh noise per token or example")
    p.add_argument("--split", choices=("dev", "test"), default="dev", help="split the accuracy is measured on")
    p.add_argument("--positions", default="prompt", help="prompt, input, predict, all, or indices like 0,1,-1")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="neuron score over prompt positions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=run)


def parse_fractions(text: str) -> list[float]:
    """``"0,0.01,0.1"`` -> ``[0.0, 0.01, 0.1]``, each checked to lie in [0, 1].

    >>> parse_fractions("0, 0.05")
    [0.0, 0.05]
    >>> parse_fractions("0,x")
    Traceback (most recent call last):
    ...
    ValueError: --fractions must be comma-separated numbers such as 0,0.01,0.05, got '0,x'
    """
    from skill_lens.curves import check_fractions

    try:
        values = [float(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--fractions must be comma-separated numbers such as 0,0.01,0.05, got {text!r}") from None
    return check_fractions(values)


def parse_positions(text):
    """``"prompt"`` stays a role; ``"0,1,-1"`` becomes explicit indices (checked).

    >>> parse_positions("predict"), parse_positions("0,-1").indices
    (Positions(role='predict', indices=()), (0, -1))
    """
    from skill_lens.interventions import InterventionError, Positions

    if isinstance(text, str) and text.replace(",", "").replace("-", "").replace(" ", "").isdigit():
        return Positions.of([int(x) for x in text.split(",") if x.strip()])
    try:
        return Positions.of(text)
    except InterventionError as e:
        raise InterventionError(f"--positions: {e}") from None


def check_args(args) -> None:
    """Validate everything cheap before loading a model."""
    parse_fractions(args.fractions)
    parse_positions(args.positions)
    if args.controls < 0:
        raise ValueError(f"--controls must be >= 0, got {args.controls}")
    if not args.std >= 0:
        raise ValueError(f"--std must be >= 0, got {args.std}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")


def run(args, run_obj=None) -> int:
    """Parsed arguments -> curve; ``run_obj`` injects an opened :class:`~skill_lens.runs.Run` (tests)."""
    from skill_lens.artifacts import ArtifactError
    from skill_lens.runs import Run

    check_args(args)
    run_ = run_obj or Run.open(args.run)
    if not (Path(run_.path) / PREDICTIVITY_FILE).exists():
        raise ArtifactError(f"{run_.path} has no {PREDICTIVITY_FILE}; run `skill-lens probe {run_.path}` first.")
    perturb_run(run_, method=args.method, fractions=parse_fractions(args.fractions), controls=args.controls,
                per_layer=args.per_layer, std=args.std, split=args.split, positions=parse_positions(args.positions),
                per=args.per, aggregate=args.aggregate, seed=args.seed, batch_size=args.batch_size)
    return 0


def perturb_run(run, method: str = "gaussian", fractions=(0.0, 0.01, 0.02, 0.05, 0.1), controls: int = 3,
                per_layer: bool = False, std: float = 1.0, split: str = "dev", positions="prompt",
                per: str = "token", aggregate: str = "max", seed: int = 0, batch_size: int = 32):
    """Suppression curve of ``run``'s skill neurons (dev predictivity), saved beside the run and printed.

    >>> import tempfile, contextlib, io
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> from skill_lens.cli.probe import probe_run
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     _ = probe_run(r)
    ...     curve = perturb_run(r, "zero", [0, 0.1], controls=1)
    >>> len(curve.rows), (r.path / "perturb_zero.csv").exists()
    (4, True)
    """
    from skill_lens.artifacts import atomic_write, write_json
    from skill_lens.curves import suppression_curve
    from skill_lens.probe import ProbeResult

    path = Path(run.path)
    result = ProbeResult.load(path / PREDICTIVITY_FILE, run.model)
    task = run.task
    out = path / f"perturb_{method}"
    curve = suppression_curve(run.prompted(), getattr(task, split), result.scores(aggregate, "dev"),
                              fractions=fractions, method=method, controls=controls, per_layer=per_layer,
                              baseline=result.baseline, std=std, positions=positions, per=per, seed=seed,
                              batch_size=batch_size, checkpoint=out.with_suffix(".checkpoint.json"))
    curve.meta.update(run=str(path), task=task.name, split=split, aggregate=aggregate,
                      selected_on="dev predictivity")
    write_json(out.with_suffix(".json"), curve.to_dict())
    with atomic_write(out.with_suffix(".csv")) as f:
        curve.to_pandas().to_csv(f, index=False)
    print(f"suppression curve on {run.meta['model']} / {task.name} {split} ({len(getattr(task, split))} examples), "
          f"method {method}" + (f" std {std} per {per}" if method == "gaussian" else "")
          + f", {controls} random controls, {'per layer' if per_layer else 'global'} top fractions:")
    print(curve.table())
    print(f"wrote {out}.json and {out}.csv")
    return curve
