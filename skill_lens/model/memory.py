"""Memory: what a step may use, what it used, and what it does when it runs out.

* :func:`halving` runs a step at a batch size and, when a batch runs out of memory, runs it again from
  the start at half that batch: the result is the result of a run started at the smaller batch (the
  batches, their padding and every sum are those of that run), and it says so once. Out of memory is
  CUDA's ``torch.OutOfMemoryError``, the CPU allocator's or MPS's failure (:func:`is_out_of_memory`), or
  :class:`OutOfBudget`: a batch whose peak went over the step's :class:`Budget` (``--memory-budget``).
* :class:`Budget` measures a batch's peak: on CUDA the allocator's peak since the batch began, on the
  CPU the process's anonymous resident memory while the activations are alive.
* :class:`TensorPeak` counts the bytes of live tensors an operation at a time (any device, ``meta``
  included): what :func:`skill_lens.model.plan.plan` is checked against on small models, where a
  process's resident memory is mostly the Python runtime.

>>> calls = []
>>> def step(batch_size):
...     calls.append(batch_size)
...     if batch_size > 8:
...         raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
...     return f"done at {batch_size}"
>>> halving(step, 32, "probe"), calls
('done at 8', [32, 16, 8])
"""

from __future__ import annotations

import gc
import os
import re
from typing import TYPE_CHECKING, Callable, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from skill_lens.base.progress import say

if TYPE_CHECKING:
    from skill_lens.store.checkpoint import Checkpoint

__all__ = ["OutOfBudget", "is_out_of_memory", "halving", "halved_start", "Budget", "TensorPeak", "resident_bytes", "peak_resident_bytes",
           "reset_peak_resident"]

T = TypeVar("T")

_CPU_OOM = re.compile(r"out of memory|can't allocate memory|not enough memory|MPS backend out of memory", re.I)


class OutOfBudget(torch.OutOfMemoryError):
    """A batch used more memory than the step's budget allows (``--memory-budget``); a kind of out of memory."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` means a batch did not fit: CUDA's, the CPU allocator's, MPS's, or :class:`OutOfBudget`.

    >>> is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory")), is_out_of_memory(ValueError("bad label"))
    (True, False)
    >>> is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB"))
    True
    """
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and bool(_CPU_OOM.search(str(error))))


def halving(run: Callable[[int], T], batch_size: int, what: str, flag: str = "--batch-size",
            before_retry: Callable[[int], None] | None = None) -> T:
    """``run(batch_size)``; while it runs out of memory, ``run(batch_size // 2)`` from the start, down to 1.

    ``before_retry(old_batch_size)`` runs before each new start (a step removes its own checkpoint of the
    larger batch there). Once finished at a smaller batch it says so, once. Other errors, and running out
    at batch size 1, propagate (the latter naming what to change).

    >>> halving(lambda b: b, 4, "probe")
    4
    """
    size = batch_size
    while True:
        try:
            result = run(size)
            break
        except Exception as e:  # noqa: BLE001 - only out-of-memory errors are handled; the rest re-raise
            if not is_out_of_memory(e):
                raise
            if size == 1:
                raise type(e)(f"{what} ran out of memory at {flag} 1 ({str(e).splitlines()[0][:200]}); place part "
                              "of the model elsewhere (--device-map auto, --max-memory, --offload-folder), use "
                              "--dtype bfloat16, or raise --memory-budget") from e
            del e
            free_memory()
            if before_retry is not None:
                before_retry(size)
            size = max(1, size // 2)
    if size != batch_size:
        say(f"skill_lens: {what} ran out of memory at {flag} {batch_size}, so it ran again at {size}: "
            f"its results are those of a run with {flag} {size}")
    return result


def halved_start(checkpoint_at: Callable[[int], "Checkpoint"], batch_size: int) -> int:
    """The batch size a halving step starts at: ``batch_size``, or the smaller one an earlier run of the very same
    step halved to and left a checkpoint at (so the same command resumes it after a kill).

    ``checkpoint_at(size)`` is the step's checkpoint at ``size``, whose identity records ``halved_from`` (the
    size asked for) whenever ``size`` is smaller; a checkpoint of anything else is left to the step to judge.

    >>> import tempfile; from pathlib import Path; from skill_lens.store.checkpoint import Checkpoint
    >>> d = Path(tempfile.mkdtemp())
    >>> at = lambda size: Checkpoint(d / "c.safetensors", {"job": 1, "batch_size": size,
    ...                                                    **({"halved_from": 32} if size < 32 else {})})
    >>> at(8).save({}, {"done": 3})
    >>> halved_start(at, 32), halved_start(at, 16)
    (8, 16)
    """
    old = checkpoint_at(batch_size).stored_identity() or {}
    size = old.get("batch_size")
    same = old.get("halved_from") == batch_size and isinstance(size, int) and 1 <= size < batch_size and \
        checkpoint_at(size).identity == old
    return size if same else batch_size


def free_memory() -> None:
    """Return what a failed batch left behind: Python garbage, and the CUDA allocator's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ measuring
def resident_bytes(anonymous: bool = True) -> int:
    """This process's resident memory now, in bytes; ``anonymous`` leaves out pages of mapped files (weights
    memory-mapped from a checkpoint or an offload folder, which the kernel drops when it needs them).

    >>> resident_bytes() > 0
    True
    """
    with open("/proc/self/statm") as f:
        size, resident, shared, *_ = map(int, f.read().split())
    return (resident - shared if anonymous else resident) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The peak resident memory (``VmHWM``) of this process since it began or since :func:`reset_peak_resident`.

    >>> peak_resident_bytes() >= resident_bytes(anonymous=False) > 0
    True
    """
    with open("/proc/self/status") as f:
        return int(re.search(r"VmHWM:\s+(\d+)\s+kB", f.read()).group(1)) * 1024


def reset_peak_resident() -> bool:
    """Start :func:`peak_resident_bytes` afresh from the current resident memory (Linux ``clear_refs``);
    ``False`` where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Budget:
    """The memory a step may use on each device it computes on: ``limits`` in bytes by device key (``0``, ``1``
    ... for GPUs, ``"cpu"``), as ``--memory-budget`` gives them; no limits: never out of budget.

    :meth:`start` before a batch, :meth:`check` while its activations are alive (e.g. from the last
    layer's hook): it raises :class:`OutOfBudget` when the batch went over, which :func:`halving` treats
    as out of memory. On CUDA the check reads the allocator's peak since :meth:`start`; on the CPU the
    process's anonymous resident memory at the moment of the check.

    >>> Budget({"cpu": 1}).check()
    Traceback (most recent call last):
    ...
    skill_lens.model.memory.OutOfBudget: a batch used ... of cpu memory, over the budget of 1 byte (--memory-budget cpu=...)
    """

    def __init__(self, limits: dict | None = None):
        self.limits = dict(limits or {})

    def __bool__(self) -> bool:
        return bool(self.limits)

    def start(self) -> None:
        for key in self.limits:
            if isinstance(key, int) and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats(key)

    def check(self) -> None:
        for key, limit in self.limits.items():
            if isinstance(key, int):
                used = torch.cuda.max_memory_allocated(key) if torch.cuda.is_available() else 0
            else:
                used = resident_bytes() if key == "cpu" else 0
            if used > limit:
                raise OutOfBudget(f"a batch used {used / 2**20:.0f} MiB of {_name(key)} memory, over the budget of "
                                  f"{_size(limit)} (--memory-budget {key}=...)")


def _name(key) -> str:
    return f"cuda:{key}" if isinstance(key, int) else str(key)


def _size(n: int) -> str:
    return "1 byte" if n == 1 else f"{n / 2**20:.0f} MiB"


class TensorPeak(TorchDispatchMode):
    """Inside the block, the peak of the bytes held by live tensors made inside it (``peak``), per operation.

    Tensors that existed before (the weights) are not counted. Exact for what the operations return; a
    kernel's own scratch space is not seen. On ``meta`` tensors it measures a forward without running it.

    >>> with TensorPeak() as m:
    ...     a = torch.ones(1024)            # 4 KiB
    ...     b = a * 2                       # + 4 KiB
    ...     del a, b
    ...     c = torch.ones(256)
    >>> m.peak, m.now
    (8192, 1024)
    """

    def __init__(self):
        super().__init__()
        from torch.multiprocessing.reductions import StorageWeakRef

        self._ref = StorageWeakRef
        self.live: dict[int, tuple] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self._sweep()
        out = func(*args, **(kwargs or {}))
        seen = {self._ref(t.untyped_storage()).cdata for t in torch.utils._pytree.tree_leaves((args, kwargs))
                if isinstance(t, torch.Tensor)}  # a view or an in-place result allocates nothing
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                ref = self._ref(t.untyped_storage())
                if ref.cdata not in self.live and ref.cdata not in seen:
                    self.live[ref.cdata] = (ref, t.untyped_storage().nbytes())
                    self.now += self.live[ref.cdata][1]
        self.peak = max(self.peak, self.now)
        return out

    def _sweep(self) -> None:
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.now -= self.live.pop(key)[1]

    def __exit__(self, *exc):
        self._sweep()
        return super().__exit__(*exc)
