"""Beyond one machine: the process group, shards of whole batches, all-reduced sums.

The probe's statistics are sums (float64 activation sums, int64 agreement counts, example counts),
so each rank of a ``torch.distributed`` job probes its :func:`shard` of every split and the sums are
added across ranks (:func:`all_reduce_`) before they become baselines or accuracies. The probe
itself is :func:`skill_lens.probing.probe.probe`: it shards and reduces whenever a process group with more
than one process is initialised, and checkpoints with ``checkpoint=DIR``.

Shards are contiguous runs of whole batches, so every rank sees exactly the batches a single
process would: predictivity equals the single-process probe exactly (baselines up to the order of
float64 additions).

Under ``torchrun`` (see ``docs/cluster.md``)::

    rank, world = init_from_env()                      # gloo on CPU, NCCL on GPUs
    result = probe(run.prompted(), run.task, checkpoint=run.path, on_result=save_it)

>>> rank_world()  # a plain python run: no process group
(0, 1)
"""

from __future__ import annotations

import math
import os

import torch
import torch.distributed as dist

from skill_lens.data.tasks import Split

__all__ = ["DistributedError", "init_from_env", "rank_world", "shard", "batch_range", "all_reduce_", "sum_across_ranks"]


class DistributedError(ValueError):
    """A shard or a distributed evaluation cannot be made as asked; the message names the fix."""


# ------------------------------------------------------------------ process group


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the ``torchrun`` process group described by ``RANK``/``WORLD_SIZE``; return ``(rank, world)``.

    Without those variables (a plain ``python`` run) nothing is initialised and this is ``(0, 1)``.
    The backend defaults to NCCL when CUDA is available (each process on ``cuda:LOCAL_RANK``), else gloo.

    >>> import os; os.environ.get("WORLD_SIZE") is None and init_from_env() == (0, 1)
    True
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":  # the rank's first GPU (each rank's share, when a device map splits its model)
            share = max(1, torch.cuda.device_count() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) * share)
        dist.init_process_group(backend)
    return rank, world


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the current process group, ``(0, 1)`` when there is none.

    >>> rank_world()
    (0, 1)
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def sum_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over every rank of the process group (a new CPU tensor); ``t`` itself without one.

    >>> sum_across_ranks(torch.ones(2)).tolist()
    [1.0, 1.0]
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return t
    nccl = dist.get_backend() == "nccl"  # NCCL reduces CUDA tensors only; gloo CPU ones
    wide = torch.int32 if t.dtype in (torch.uint8, torch.int8, torch.int16) else t.dtype  # NCCL has no int16
    s = t.to(torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu"), wide, copy=True)
    dist.all_reduce(s, op=dist.ReduceOp.SUM)
    return s.to("cpu", t.dtype)  # a count type holds the whole split's counts, so the sum fits


def shard(split: Split, rank: int, world: int, batch_size: int = 1) -> Split:
    """Rank ``rank``'s share of ``split``: a contiguous run of whole batches of ``batch_size``.

    Batched by ``batch_size``, the shards hold exactly the batches one process would run (so
    activations, which can depend on padding, are the same). Shards may be empty.

    >>> s = Split(list("abcdefg"), [0, 1, 0, 1, 0, 1, 0])
    >>> [shard(s, r, 2, batch_size=2).texts for r in (0, 1)]
    [['a', 'b', 'c', 'd'], ['e', 'f', 'g']]
    """
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"rank {rank} is not in a world of {world} processes; use 0 <= rank < world.")
    if batch_size < 1:
        raise DistributedError(f"batch size must be at least 1, got {batch_size}")
    n_batches = math.ceil(len(split) / batch_size)
    lo, hi = rank * n_batches // world, (rank + 1) * n_batches // world
    return split.subset(range(lo * batch_size, min(hi * batch_size, len(split))))


def batch_range(n_batches: int, rank: int, world: int) -> range:
    """Rank ``rank``'s share of a pass's ``n_batches`` batches: a contiguous run of them (possibly empty).

    The probe and suppression curves cut the split's length-sorted batches this way, so each rank
    runs exactly the batches one process runs, with the same padding: the same numbers bit for bit.

    >>> [list(batch_range(5, r, 2)) for r in (0, 1)]
    [[0, 1], [2, 3, 4]]
    """
    if world < 1 or not 0 <= rank < world:
        raise DistributedError(f"rank {rank} is not in a world of {world} processes; use 0 <= rank < world.")
    return range(rank * n_batches // world, (rank + 1) * n_batches // world)


def all_reduce_(acc):
    """Sum an accumulator's ``state_dict()`` tensors across all ranks, in place; returns ``acc``.

    Works for :class:`~skill_lens.probing.statistics.MeanAccumulator` and ``AgreementAccumulator`` (and
    anything with ``state_dict``/``from_state_dict``). With no process group it changes nothing.

    >>> from skill_lens.probing.statistics import MeanAccumulator
    >>> all_reduce_(MeanAccumulator().add(torch.ones(2, 1, 1, 3))).count
    2
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return acc
    summed = {key: sum_across_ranks(t) for key, t in acc.state_dict().items()}
    vars(acc).update(vars(type(acc).from_state_dict(summed)))
    return acc
