"""Beyond one machine, and nothing lost: sharded, all-reduced, resumable probing and evaluation.

The probe's statistics are sums (float64 activation sums, int64 agreement counts, example counts),
so each rank of a ``torch.distributed`` job probes its :func:`shard` of every split and the sums are
added across ranks (:func:`all_reduce_`) before they become baselines or accuracies. The train pass
is reduced *before* the dev/test passes, which threshold at the global baseline.

Shards are contiguous runs of whole batches, so every rank sees exactly the batches a single
process would: predictivity equals the single-process :func:`skill_lens.probe.probe` exactly
(baselines up to the order of float64 additions).

With ``run_dir``, :func:`probe_distributed` checkpoints each rank's local sums and its position
(split, batch) atomically every ``checkpoint_every`` batches, resumes from there after a kill, and
writes ``RUN/predictivity.safetensors`` only when every split is done. A checkpoint remembers what
it probes (:func:`probe_fingerprint`) and refuses to resume a different probe.

Under ``torchrun`` (see ``docs/cluster.md``)::

    rank, world = init_from_env()                      # gloo on CPU, NCCL on GPUs
    result = probe_distributed(run.prompted(), run.task, run_dir=run.path)

>>> from skill_lens.tiny import tiny_model, tiny_task
>>> from skill_lens.tuning import hard_prompt_model
>>> model, task = tiny_model(), tiny_task()
>>> probe_distributed(hard_prompt_model(model, task), task, splits=("dev",)).dev_acc.shape  # one process
torch.Size([2, 1, 64])
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist

from skill_lens.artifacts import ArtifactError, load_tensors, save_tensors
from skill_lens.models import describe
from skill_lens.predictivity import AgreementAccumulator, MeanAccumulator
from skill_lens.probe import ProbeError, ProbeResult, _check_binary, _check_hooks, _stream
from skill_lens.tasks import Split

__all__ = ["DistributedError", "init_from_env", "rank_world", "shard", "all_reduce_", "probe_fingerprint",
           "probe_distributed", "PREDICTIVITY_FILE"]

PREDICTIVITY_FILE = "predictivity.safetensors"


class DistributedError(ValueError):
    """A sharded or resumable probe cannot run as asked; the message names the fix."""


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


# ------------------------------------------------------------------ probing


def probe_fingerprint(pm, task, batch_size: int = 32, hook_names: Sequence[str] | None = None,
                      pooling: bool = False, splits: Sequence[str] = ("dev", "test")) -> dict:
    """What a probe checkpoint belongs to: model, task, prompt tensor hash, batch size, hooks, options.

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import hard_prompt_model
    >>> fp = probe_fingerprint(hard_prompt_model(tiny_model(), tiny_task()), tiny_task(), 8)
    >>> fp["model"], fp["batch_size"], fp["prompt"][:5]
    ('tiny-causal', 8, 'hard:')
    """
    info = describe(pm.model)
    names, _ = _check_hooks(info, hook_names)
    if pm.prompt is None:
        prompt = "hard:" + hashlib.sha256(pm.template.encode()).hexdigest()
    else:
        data = pm.prompt.embedding.detach().float().cpu().contiguous().numpy().tobytes()
        prompt = hashlib.sha256(data).hexdigest()
    return {"model": info.name, "task": task.fingerprint(), "prompt": prompt, "batch_size": batch_size,
            "hook_names": list(names), "pooling": pooling, "splits": list(splits), "max_length": pm.max_length}


def probe_distributed(pm, task, batch_size: int = 32, pooling: bool = False, splits: Sequence[str] = ("dev", "test"),
                      hook_names: Sequence[str] | None = None, run_dir=None,
                      checkpoint_every: int = 20) -> ProbeResult:
    """:func:`skill_lens.probe.probe`, sharded over the process group (if any) and resumable (with ``run_dir``).

    Every rank returns the same global :class:`~skill_lens.probe.ProbeResult`. With ``run_dir``,
    each rank checkpoints to ``run_dir/probe_checkpoint.RANKofWORLD.safetensors`` every
    ``checkpoint_every`` batches, rank 0 writes ``run_dir/predictivity.safetensors`` at the end,
    and the checkpoints are removed. Rerun the same command after a crash to resume.

    >>> import tempfile; from pathlib import Path
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import hard_prompt_model
    >>> model, task, d = tiny_model(), tiny_task(), Path(tempfile.mkdtemp())
    >>> r = probe_distributed(hard_prompt_model(model, task), task, 16, splits=("dev",), run_dir=d)
    >>> sorted(p.name for p in d.iterdir())
    ['predictivity.safetensors', 'predictivity.safetensors.json']
    """
    rank, world = rank_world()
    info = describe(pm.model)
    names, decoder = _check_hooks(info, hook_names)
    if batch_size < 1 or checkpoint_every < 1:
        raise ProbeError(f"batch size and checkpoint_every must be at least 1, got {batch_size}, {checkpoint_every}")
    if pooling and decoder:
        raise ProbeError("pooling averages over input tokens, which decoder hooks do not see; probe encoder hooks.")
    if set(splits) - {"dev", "test"}:
        raise ProbeError(f"unknown split(s) in {list(splits)}; probe 'dev' and/or 'test' (train gives the baselines).")
    _check_binary(task.train, "train", need_both=False)
    splits = [s for s in splits if s == "dev" or len(getattr(task, s)) > 0]
    for s in splits:
        _check_binary(getattr(task, s), s, need_both=(s == "dev"))
    passes = ["train", *splits]
    kinds = ["prompt", *(("mean_pool", "max_pool") if pooling else ())]
    P = 1 if decoder or pm.prompt is None else pm.prompt_length
    zeros = lambda k, dtype: torch.zeros(1, P if k == "prompt" else 1, info.d_mlp, dtype=dtype)  # noqa: E731
    local = {p: {k: [MeanAccumulator(zeros(k, torch.float64)) if p == "train" else
                     AgreementAccumulator(zeros(k, torch.int64)) for _ in names] for k in kinds} for p in passes}
    fingerprint = {**probe_fingerprint(pm, task, batch_size, names, pooling, splits), "shard": f"{rank}/{world}"}
    ckpt = Path(run_dir) / f"probe_checkpoint.{rank}of{world}.safetensors" if run_dir is not None else None
    position = {"pass": "train", "batch": 0}
    if ckpt is not None and ckpt.exists():
        position = _load_checkpoint(ckpt, fingerprint, local)

    base, out = {}, {}
    for p in passes:
        part, accs = shard(getattr(task, p), rank, world, batch_size), local[p]
        n_batches = math.ceil(len(part) / batch_size)
        done = passes.index(position["pass"])
        start = n_batches if passes.index(p) < done else position["batch"] if p == position["pass"] else 0
        if p == "train":
            feed = lambda k, i, a, y: accs[k][i].add(a)  # noqa: E731
        else:
            feed = lambda k, i, a, y: accs[k][i].add(a, y, base[k][i : i + 1])  # noqa: E731
        step = checkpoint_every if ckpt is not None else max(n_batches, 1)
        for b0 in range(start, n_batches, step):
            b1 = min(b0 + step, n_batches)
            _stream(pm, part.subset(range(b0 * batch_size, min(b1 * batch_size, len(part)))), batch_size,
                    names, decoder, kinds, feed, p)
            if ckpt is not None:
                _save_checkpoint(ckpt, fingerprint, local, {"pass": p, "batch": b1})
        total = {k: [all_reduce_(type(a).from_state_dict(a.state_dict())) for a in accs[k]] for k in kinds}
        if p == "train":
            base = {k: torch.cat([m.mean() for m in total[k]]) for k in kinds}  # float64 [L, P, N]
            out["baseline"] = base["prompt"].float()
        else:
            out[f"{p}_acc"] = torch.cat([a.accuracy() for a in total["prompt"]]).float()
            for k in kinds[1:]:
                out[f"{k}_{p}_acc"] = torch.cat([a.accuracy() for a in total[k]])[:, 0].float()

    sizes = {s: len(getattr(task, s)) for s in passes}
    prompt = pm.prompt.meta if pm.prompt is not None else {"prompt": "hard", "template": pm.template}
    meta = {**info.as_meta(), "task": task.name, "task_fingerprint": task.fingerprint(),
            "prompt_length": pm.prompt_length, "prompt_source": {k: v for k, v in prompt.items() if k != "model"},
            "world_size": world}
    result = ProbeResult(**{"dev_acc": None, **out}, sizes=sizes, hook_names=tuple(names), meta=meta)
    if ckpt is not None:
        if rank == 0:
            result.save(Path(run_dir) / PREDICTIVITY_FILE)
        if world > 1:
            dist.barrier()  # the result is on disk before any rank forgets its progress
        ckpt.unlink(missing_ok=True)
        Path(str(ckpt) + ".json").unlink(missing_ok=True)
    return result


def _save_checkpoint(path: Path, fingerprint: dict, local: dict, position: dict) -> None:
    """One atomic file: every pass's local sums (tensors) and the fingerprint and position (header)."""
    tensors = {f"{p}.{k}.{i}.{key}": t for p, by_kind in local.items() for k, accs in by_kind.items()
               for i, a in enumerate(accs) for key, t in a.state_dict().items()}
    save_tensors(path, tensors, {"fingerprint": fingerprint, "position": position})


def _load_checkpoint(path: Path, fingerprint: dict, local: dict) -> dict:
    tensors, meta = load_tensors(path)
    old = meta.get("fingerprint", {})
    diffs = [f"{k}: {old.get(k)!r} in the checkpoint, {v!r} now" for k, v in fingerprint.items() if old.get(k) != v]
    if diffs:
        raise ArtifactError(f"{path} is a checkpoint of a different probe ({'; '.join(diffs)}); rerun with the same "
                            "model, task, prompt, batch size, hooks and process count, or delete it to start over.")
    for p, by_kind in local.items():
        for k, accs in by_kind.items():
            for i, a in enumerate(accs):
                prefix = f"{p}.{k}.{i}."
                state = {key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)}
                vars(a).update(vars(type(a).from_state_dict(state)))
    return meta["position"]
