"""``skill-lens neurons RUN``: select skill neurons from ``RUN/predictivity.safetensors``.

Writes ``RUN/neurons.safetensors`` (a :class:`~skill_lens.neurons.NeuronSet`) and prints the top neurons.
"""

from __future__ import annotations

from pathlib import Path

NEURONS_FILE = "neurons.safetensors"


def register(sub) -> None:
    p = sub.add_parser("neurons", help="select the most predictive neurons (writes RUN/neurons.safetensors)")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--top", type=float, default=0.02,
                   help="fraction of neurons (0 < top < 1), or a whole number of neurons (>= 1)")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("--per-layer", dest="per_layer", action="store_true", default=True,
                       help="the top fraction of every layer (default)")
    scope.add_argument("--global", dest="per_layer", action="store_false", help="the top fraction of all neurons")
    p.add_argument("--aggregate", choices=("max", "mean"), default="max", help="over prompt positions")
    p.add_argument("--show", type=int, default=10, help="how many neurons to print")
    p.set_defaults(func=run)


def check_top(top: float) -> None:
    """``top`` is a fraction in (0, 1) or a whole number of neurons.

    >>> check_top(0.02); check_top(5)
    >>> check_top(1.5)
    Traceback (most recent call last):
    ...
    ValueError: --top must be a fraction in (0, 1) or a whole number of neurons >= 1, got 1.5
    """
    if not (0 < top < 1 or (top >= 1 and float(top).is_integer())):
        raise ValueError(f"--top must be a fraction in (0, 1) or a whole number of neurons >= 1, got {top}")


def run(args) -> int:
    from skill_lens.artifacts import ArtifactError, read_json

    check_top(args.top)
    path = Path(args.run)
    meta = read_json(path / "run.json") if (path / "run.json").exists() else None
    if meta is None:
        raise ArtifactError(f"{path} is not a finished run (no run.json); run `skill-lens tune --out {path}` first.")
    if not (path / "predictivity.safetensors").exists():
        raise ArtifactError(f"{path} has no predictivity.safetensors; run `skill-lens probe {path}` first.")
    select_neurons(path, args.top, args.per_layer, args.aggregate, args.show, model_name=meta["model"])
    return 0


def select_neurons(run_dir, top: float = 0.02, per_layer: bool = True, aggregate: str = "max", show: int = 10,
                   model_name: str | None = None):
    """Select neurons by dev predictivity from ``run_dir/predictivity.safetensors``, save and print them.

    >>> import tempfile, torch, contextlib, io
    >>> from pathlib import Path
    >>> from skill_lens.probe import ProbeResult
    >>> d = Path(tempfile.mkdtemp())
    >>> ProbeResult(torch.zeros(2, 1, 8), torch.rand(2, 1, 8, generator=torch.Generator().manual_seed(0)),
    ...             meta={"model": "m"}).save(d / "predictivity.safetensors")
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     ns = select_neurons(d, top=0.25)
    >>> len(ns.pairs()), (d / "neurons.safetensors").exists()
    (4, True)
    """
    from skill_lens.artifacts import check_meta
    from skill_lens.neurons import NeuronSet
    from skill_lens.probe import ProbeResult

    check_top(top)
    run_dir = Path(run_dir)
    result = ProbeResult.load(run_dir / "predictivity.safetensors")
    if model_name is not None:
        check_meta(result.meta, {"model": model_name}, "predictivity file")
    scores = result.scores(aggregate)
    keep = ("model", "family", "n_layers", "d_mlp", "d_model", "task", "task_fingerprint", "prompt_length", "run")
    meta = {**{k: result.meta[k] for k in keep if k in result.meta}, "hook_names": list(result.hook_names),
            "aggregate": aggregate, "scored_on": "dev predictivity"}
    ns = NeuronSet.from_scores(scores, top=int(top) if top >= 1 else top, per_layer=per_layer, meta=meta)
    ns.save(run_dir / NEURONS_FILE)
    L, N = scores.shape
    print(f"selected {len(ns.pairs())} of {L * N} neurons ({'per layer' if per_layer else 'global'}, "
          f"top {top}, {aggregate} over positions) by dev predictivity:")
    for layer, idx in sorted(ns.pairs(), key=lambda p: -scores[p[0], p[1]].item())[:show]:
        print(f"  L{layer}.N{idx}  {scores[layer, idx].item():.3f}")
    print(f"wrote {run_dir / NEURONS_FILE}")
    return ns
