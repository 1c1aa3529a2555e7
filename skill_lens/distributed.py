"""Beyond one machine: the process group, shards of whole batches, all-reduced sums (and evaluation).

The probe's statistics are sums (float64 activation sums, int64 agreement counts, example counts),
so each rank of a ``torch.distributed`` job probes its :func:`shard` of every split and the sums are
added across ranks (:func:`all_reduce_`) before they become baselines or accuracies. The probe
itself is :func:`skill_lens.probe.probe`: it shards and reduces whenever a process group with more
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

from skill_lens.tasks import Split
from skill_lens.tuning import check_labels, predict, score_logits

__all__ = ["DistributedError", "init_from_env", "rank_world", "shard", "all_reduce_", "evaluate_distributed"]


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
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
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


def _reduce_device() -> torch.device:
    """NCCL reduces CUDA tensors only; gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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


def all_reduce_(acc):
    """Sum an accumulator's ``state_dict()`` tensors across all ranks, in place; returns ``acc``.

    Works for :class:`~skill_lens.predictivity.MeanAccumulator` and ``AgreementAccumulator`` (and
    anything with ``state_dict``/``from_state_dict``). With no process group it changes nothing.

    >>> from skill_lens.predictivity import MeanAccumulator
    >>> all_reduce_(MeanAccumulator().add(torch.ones(2, 1, 1, 3))).count
    2
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return acc
    device, summed = _reduce_device(), {}
    for key, t in acc.state_dict().items():
        t = t.to(device, copy=True)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        summed[key] = t.cpu()
    vars(acc).update(vars(type(acc).from_state_dict(summed)))
    return acc


# ------------------------------------------------------------------ evaluation


def evaluate_distributed(pm, split: Split, fwd_hooks=(), batch_size: int = 32) -> dict:
    """:func:`skill_lens.tuning.evaluate` over the process group: correct counts and logit-diff sums are summed.

    Accuracy equals the single-process value exactly; ``logit_diff`` up to float rounding. For
    suppression curves pass ``interventions.per_batch(pm, make_hooks)`` as ``pm``.

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import hard_prompt_model
    >>> model, task = tiny_model(), tiny_task()
    >>> evaluate_distributed(hard_prompt_model(model, task), task.dev)["n"]
    32
    """
    if split is None or len(split) == 0:
        raise DistributedError("the evaluation split is empty; pass a split with examples (e.g. task.dev).")
    rank, world = rank_world()
    part = shard(split, rank, world, batch_size)
    stats = torch.zeros(3, dtype=torch.float64)  # correct, sum of logit differences, n
    check_labels(pm, split)
    if len(part):
        correct, diff = score_logits(predict(pm, part, batch_size, fwd_hooks), part.labels)
        stats += torch.stack([correct.sum().double(), diff.double().sum(),
                              torch.tensor(float(len(part)), dtype=torch.float64)])
    if world > 1:
        s = stats.to(_reduce_device())
        dist.all_reduce(s, op=dist.ReduceOp.SUM)
        stats = s.cpu()
    correct, diff, n = stats.tolist()
    return {"accuracy": (torch.tensor(correct, dtype=torch.float32) / int(n)).item(), "logit_diff": diff / n,
            "n": int(n)}
