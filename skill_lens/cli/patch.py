"""``skill-lens patch RUN``: patch the skill neurons' activations from a source text into a target text."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("patch", help="patch skill neurons from a source text into a target text, print the effect")
    p.add_argument("run", help="run directory with predictivity.safetensors (`skill-lens probe RUN`)")
    p.add_argument("--source-text", required=True)
    p.add_argument("--target-text", required=True)
    p.add_argument("--top", type=float, help="fraction (0 < top < 1) or number of neurons by dev predictivity "
                                             "(default: RUN/neurons.safetensors if present, else 0.02)")
    p.add_argument("--per-layer", action="store_true", help="with --top: the top fraction of every layer")
    p.add_argument("--positions", choices=("prompt", "predict"), default="prompt")
    p.set_defaults(func=run)


def run(args, run_obj=None) -> int:
    """Parsed arguments -> patching; ``run_obj`` injects an opened :class:`~skill_lens.runs.Run` (tests)."""
    from skill_lens.cli.neurons import check_top
    from skill_lens.runs import Run

    if args.top is not None:
        check_top(args.top)
    for name in ("source_text", "target_text"):
        if not getattr(args, name).strip():
            raise ValueError(f"--{name.replace('_', '-')} is empty; pass a text to run.")
    patch_run(run_obj or Run.open(args.run), args.source_text, args.target_text, args.top, args.per_layer,
              args.positions)
    return 0


def run_neurons(run, top: float | None = None, per_layer: bool = False):
    """The neurons to patch: the top ``top`` by dev predictivity, or ``RUN/neurons.safetensors``, or the top 2%."""
    from skill_lens.artifacts import ArtifactError
    from skill_lens.models import describe
    from skill_lens.neurons import NeuronSet
    from skill_lens.predictivity import select_top
    from skill_lens.probe import ProbeResult

    path, info = Path(run.path), describe(run.model)
    if top is None and (path / "neurons.safetensors").exists():
        return NeuronSet.load(path / "neurons.safetensors", expect_shape=info.shape, expect_model=info.name)
    if not (path / "predictivity.safetensors").exists():
        raise ArtifactError(f"{path} has no predictivity.safetensors; run `skill-lens probe {path}` first.")
    scores = ProbeResult.load(path / "predictivity.safetensors", run.model).scores()
    top = 0.02 if top is None else (int(top) if top >= 1 else top)
    return NeuronSet.from_mask(select_top(scores, top, per_layer=per_layer), meta={"model": info.name})


def patch_run(run, source_text: str, target_text: str, top: float | None = None, per_layer: bool = False,
              positions: str = "prompt"):
    """Patch ``run``'s skill neurons from ``source_text`` into ``target_text`` and print the effect.

    >>> import tempfile, contextlib, io
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> from skill_lens.cli.probe import probe_run
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     _ = probe_run(r)
    ...     result = patch_run(r, "a good film", "a bad film", top=0.1)
    >>> result.n_neurons, result.patched.shape
    (13, torch.Size([1, 2]))
    """
    from skill_lens.patching import patch

    neurons = run_neurons(run, top, per_layer)
    result = patch(run.prompted(), source_text, target_text, neurons, positions=positions)
    print(f"patching {len(neurons)} skill neurons at {positions} positions of {run.meta['model']}")
    print(f"  source: {source_text!r}\n  target: {target_text!r}")
    print(result.table())
    return result
