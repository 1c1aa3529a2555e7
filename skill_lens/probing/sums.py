"""The probe's running sums: one rank's accumulators per pass, kind and hook, one split at a time, checkpointed.

:func:`skill_lens.probing.probe.probe` streams batches through forward hooks that add to a :class:`Sums`:
float64 means on train (:class:`~skill_lens.probing.statistics.MeanAccumulator`), agreement counts on each
evaluation split (:class:`~skill_lens.probing.statistics.AgreementAccumulator`, and with a permutation null
:class:`~skill_lens.probing.statistics.NullAccumulator`). A finished evaluation split keeps only its result
(:meth:`Sums.finish`); :meth:`Sums.save` and :meth:`Sums.resume` put the state in a
:class:`~skill_lens.store.checkpoint.Checkpoint` and back, and :meth:`Sums.total` adds the ranks' sums.
"""

from __future__ import annotations

import torch
from torch import Tensor

from skill_lens.data.distributed import all_reduce_, rank_world
from skill_lens.probing.statistics import AgreementAccumulator, MeanAccumulator, NullAccumulator, count_dtype
from skill_lens.store.checkpoint import Checkpoint

__all__ = ["Sums"]


class Sums:
    """This rank's running sums, ``local[pass][kind][i]``: float64 means on train, agreement counts after.

    Accumulator ``i`` holds one hook's neurons, of layer ``layers[i]`` (a dense layer has one hook, a mixture
    of experts two: experts, shared expert); ``shapes[kind][i]`` is its ``[1, P, width]``, and ``null`` the
    number of permutations. Kind ``"routing"`` (MoE router counts) is summed on train only. An accumulator
    stays empty until its first batch (so sums are added in the same order with or without a checkpoint, bit
    for bit); an empty shard's sums count as zeros when reduced across ranks.

    >>> import tempfile; from pathlib import Path
    >>> sums = Sums(["train", "dev"], {"prompt": [(1, 2, 3), (1, 2, 3)]}, layers=[0, 1])
    >>> _ = sums.local["train"]["prompt"][0].add(torch.ones(4, 1, 2, 3))
    >>> ck = Checkpoint(Path(tempfile.mkdtemp()) / "sums.safetensors", {"probe": 1}, "probe")
    >>> sums.save(ck, {"pass": "train", "batch": 1})
    >>> again = Sums(["train", "dev"], {"prompt": [(1, 2, 3), (1, 2, 3)]}, layers=[0, 1])
    >>> again.resume(ck), again.local["train"]["prompt"][0].count, again.local["train"]["prompt"][1].count
    ({'pass': 'train', 'batch': 1}, 4, 0)
    >>> sums.join([torch.zeros(1, 2, 3), torch.ones(1, 2, 3)]).shape  # [n_layers, P, d_mlp]
    torch.Size([2, 2, 3])
    """

    def __init__(self, passes: list[str], shapes: dict[str, list[tuple[int, int, int]]], layers: list[int],
                 null: int = 0, sizes: dict[str, int] | None = None):
        self.passes, self.shapes, self.layers = passes, shapes, layers
        self.null_shapes = [(null, *shape) for shape in shapes["prompt"]] if null else None
        self.local = {p: {k: [MeanAccumulator() if p == "train" else AgreementAccumulator() for _ in shapes[k]]
                          for k in shapes if p == "train" or k != "routing"} for p in passes}
        self.done: dict[str, dict[str, Tensor]] = {}  # a finished evaluation pass's result; its counts are dropped
        if null:  # the permutation counts [K, 1, P, width] of each evaluation pass, in the split's count type
            for p in passes[1:]:
                cap = (sizes or {}).get(p, 2**31 - 1)
                self.local[p]["null"] = [NullAccumulator(capacity=cap) for _ in shapes["prompt"]]

    def finish(self, p: str, result: dict[str, Tensor]) -> None:
        """Keep evaluation pass ``p``'s result and drop its statistics (the permutation counts are the probe's
        largest memory: one split's at a time)."""
        self.done[p] = result
        self.local[p] = {}

    def join(self, parts: list[Tensor]) -> Tensor:
        """Per-accumulator ``[1, ..., width]`` tensors as ``[n_layers, ..., d_mlp]``: each layer's hooks side by side."""
        layers = sorted(set(self.layers))
        return torch.cat([torch.cat([t for t, l in zip(parts, self.layers) if l == layer], -1) for layer in layers])

    def save(self, ckpt: Checkpoint, position: dict) -> None:
        """Every non-empty accumulator's state and finished pass's result (tensors), and ``position`` (the pass
        and batches done)."""
        done = {f"done.{p}.{key}": t for p, result in self.done.items() for key, t in result.items()}
        ckpt.save({**done, **{f"{p}.{k}.{i}.{key}": t for p, by_kind in self.local.items()
                              for k, accs in by_kind.items() for i, a in enumerate(accs) if _count(a)
                              for key, t in a.state_dict().items()}}, position)

    def resume(self, ckpt: Checkpoint | None) -> dict:
        """Restore the sums of ``ckpt`` (when it exists) and return its position; else the start."""
        saved = ckpt.load() if ckpt is not None else None
        if saved is None:
            return {"pass": self.passes[0], "batch": 0}
        tensors, position = saved
        for p in self.passes:
            result = {key[len(f"done.{p}."):]: t for key, t in tensors.items() if key.startswith(f"done.{p}.")}
            if result:
                self.finish(p, result)
        for p, by_kind in self.local.items():
            for k, accs in by_kind.items():
                for i, a in enumerate(accs):
                    prefix = f"{p}.{k}.{i}."
                    state = {key[len(prefix):]: t for key, t in tensors.items() if key.startswith(prefix)}
                    if state:
                        accs[i] = type(a).from_state_dict(state)
        return position

    def total(self, p: str, k: str) -> list:
        """Pass ``p``'s accumulators of ``k`` summed over all ranks (this rank's own with no process group)."""
        accs = self.local[p][k]
        if rank_world()[1] == 1:
            return accs
        shapes = self.null_shapes if k == "null" else self.shapes[k]
        return [all_reduce_(type(a).from_state_dict(a.state_dict() if _count(a) else _zero_state(a, shape)))
                for a, shape in zip(accs, shapes)]


def _count(acc) -> int:
    return acc.count if isinstance(acc, MeanAccumulator) else acc.n


def _zero_state(acc, shape) -> dict[str, Tensor]:
    if isinstance(acc, MeanAccumulator):
        return {"sum": torch.zeros(shape, dtype=torch.float64), "count": torch.tensor(0)}
    if isinstance(acc, NullAccumulator):
        return {"agree": torch.zeros(shape, dtype=count_dtype(acc.capacity)), "n": torch.tensor(0)}
    return {"agree": torch.zeros(shape, dtype=torch.int64), "n": torch.tensor(0)}
