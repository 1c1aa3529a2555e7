"""``skill-lens probe RUN``: probe every FFN neuron of a tuned run (writes ``RUN/predictivity.safetensors``)."""

from __future__ import annotations

from pathlib import Path

PREDICTIVITY_FILE = "predictivity.safetensors"


def register(sub) -> None:
    p = sub.add_parser("probe", help="baselines and predictivity of every FFN neuron "
                                     "(writes RUN/predictivity.safetensors; resumes after a kill; "
                                     "shards under torchrun)")
    p.add_argument("run", help="run directory made by `skill-lens tune`")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooling", action="store_true", help="also the mean-/max-pooling baselines of the paper")
    p.set_defaults(func=run)


def run(args, run_obj=None) -> int:
    """Parsed arguments -> probe; ``run_obj`` injects an opened :class:`~skill_lens.runs.Run` (tests)."""
    from skill_lens.distributed import init_from_env
    from skill_lens.runs import Run

    check_batch_size(args.batch_size)
    init_from_env()  # under torchrun, each process probes a shard (docs/cluster.md)
    probe_run(run_obj or Run.open(args.run), args.batch_size, args.pooling)
    return 0


def check_batch_size(batch_size: int) -> None:
    from skill_lens.probe import ProbeError

    if batch_size < 1:
        raise ProbeError(f"--batch-size must be at least 1, got {batch_size}")


def probe_run(run, batch_size: int = 32, pooling: bool = False, show: int = 5):
    """Probe ``run``'s prompted model on its task, save ``RUN/predictivity.safetensors``, print the top neurons.

    >>> import tempfile, contextlib, io
    >>> from skill_lens.runs import Run
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import TuneConfig
    >>> config = TuneConfig(prompt_length=2, steps=2, eval_every=2)
    >>> r = Run.create(tempfile.mkdtemp(), tiny_model(), tiny_task(), config)
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     result = probe_run(r)
    >>> (r.path / "predictivity.safetensors").exists(), result.dev_acc.shape
    (True, torch.Size([2, 2, 64]))
    """
    from skill_lens.distributed import probe_distributed, rank_world

    check_batch_size(batch_size)
    # checkpoints in RUN/ as it goes: after a kill, the same command resumes; under torchrun, shards
    result = probe_distributed(run.prompted(), run.task, batch_size=batch_size, pooling=pooling, run_dir=run.path)
    if rank_world()[0] != 0:
        return result
    result.meta["run"] = str(run.path)
    result.meta["run_task_fingerprint"] = run.meta["task"]["fingerprint"]
    path = Path(run.path) / PREDICTIVITY_FILE
    result.save(path)
    print(f"probed {len(result.hook_names)} layers x {result.baseline.shape[-1]} neurons at "
          f"{result.baseline.shape[1]} positions ({result.sizes})")
    print(f"top {show} neurons by dev predictivity (test in brackets):")
    for name, dev, test in top_neurons(result, show):
        print(f"  {name}  {dev:.3f}" + (f"  ({test:.3f})" if test is not None else ""))
    print(f"wrote {path}")
    return result


def top_neurons(result, k: int, aggregate: str = "max") -> list[tuple[str, float, float | None]]:
    """``[(\"L1.N5\", dev score, test score or None)]`` of the ``k`` best neurons by dev score.

    >>> import torch
    >>> from skill_lens.probe import ProbeResult
    >>> top_neurons(ProbeResult(torch.zeros(1, 1, 3), torch.tensor([[[0.5, 0.125, 0.75]]])), 1)
    [('L0.N1', 0.875, None)]
    """
    dev = result.scores(aggregate, "dev")
    test = result.scores(aggregate, "test") if result.test_acc is not None else None
    top = dev.flatten().topk(min(k, dev.numel())).indices
    N = dev.shape[1]
    return [(f"L{int(i) // N}.N{int(i) % N}", dev.flatten()[i].item(),
             None if test is None else test.flatten()[i].item()) for i in top]
