"""Streaming statistics of activations for the probe: pure tensor code, no model (Wang et al. 2022).

For neuron ``n`` of layer ``l`` at prompt position ``p``: the baseline is its mean activation over the train
split (:class:`MeanAccumulator`); on dev/test, ``acc`` is the fraction of examples where
``1[a > baseline] == label`` (strict ``>``: a tie is "not above"; :class:`AgreementAccumulator`), and
:func:`~skill_lens.probing.scores.predictivity` is ``max(acc, 1 - acc)``. :class:`NullAccumulator` counts the
same agreements for ``K`` permuted label vectors at once (:func:`permuted_labels`), for the permutation null
(:mod:`skill_lens.probing.null`). Each batch at a time, mergeable; ``state_dict()`` holds tensors only, so an
all-reduce sum merges workers.

>>> acts = torch.tensor([1.0, 3.0, 0.0, 4.0]).view(4, 1, 1, 1)  # [batch layer pos d_mlp]
>>> base = MeanAccumulator().add(acts).mean()                    # 2.0
>>> AgreementAccumulator().add(acts, torch.tensor([0, 1, 0, 0]), base).accuracy().flatten().tolist()
[0.75]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["MeanAccumulator", "AgreementAccumulator", "permuted_labels", "NullAccumulator", "count_dtype"]


@dataclass
class MeanAccumulator:
    """Running float64 sum and count of activations ``[batch layer pos d_mlp]``: the train baseline.

    The shape is fixed by the first batch. The paper's pooling baselines need nothing extra:
    feed mean- or max-pooled activations as ``[batch layer 1 d_mlp]``.

    >>> m = MeanAccumulator().add(torch.ones(2, 1, 1, 3)).add(torch.zeros(2, 1, 1, 3))
    >>> m.count, m.mean().tolist()
    (4, [[[0.5, 0.5, 0.5]]])
    """

    sum: Float[Tensor, "layer pos d_mlp"] | None = None  # float64
    count: int = 0

    def add(self, acts: Float[Tensor, "batch layer pos d_mlp"]) -> "MeanAccumulator":
        _check_acts(acts, self.sum)
        batch_sum = acts.sum(0, dtype=torch.float64)
        self.sum = batch_sum if self.sum is None else self.sum.to(batch_sum.device) + batch_sum  # resumed: CPU
        self.count += acts.shape[0]
        return self

    def mean(self, dtype: torch.dtype = torch.float64) -> Float[Tensor, "layer pos d_mlp"]:
        """The mean so far; float64 by default, so thresholds are the exact mean (``.float()`` to store)."""
        if self.count == 0:
            raise ValueError("no activations were added, so there is no mean; add at least one batch "
                             "(is the train split empty?)")
        return (self.sum / self.count).to(dtype)

    def merge(self, other: "MeanAccumulator") -> "MeanAccumulator":
        """Add ``other``'s examples to this one (in place), as if its batches had been added here."""
        if other.sum is not None:
            _check_same(self.sum, other.sum, "merge")
            self.sum = other.sum.clone() if self.sum is None else self.sum + other.sum
        self.count += other.count
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """``{"sum": float64, "count": int64 scalar}``: checkpoints, or sum each tensor across workers."""
        if self.sum is None:
            raise ValueError("an empty accumulator has no shape yet; add a batch before saving or all-reducing")
        return {"sum": self.sum, "count": torch.tensor(self.count, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "MeanAccumulator":
        return cls(state["sum"].to(torch.float64).clone(), int(state["count"]))


@dataclass
class AgreementAccumulator:
    """Per-neuron count of examples with ``(a > baseline) == label`` (strict ``>``), and of examples.

    >>> acts = torch.tensor([0.0, 1.0, 1.0, 2.0]).view(4, 1, 1, 1)
    >>> a = AgreementAccumulator().add(acts, torch.tensor([0, 0, 1, 1]), torch.ones(1, 1, 1))
    >>> a.agree.item(), a.n, a.accuracy().item()   # the tie at 1.0 counts as "not above"
    (3, 4, 0.75)
    """

    agree: Int[Tensor, "layer pos d_mlp"] | None = None  # int64
    n: int = 0

    def add(self, acts: Float[Tensor, "batch layer pos d_mlp"], labels: Int[Tensor, " batch"],
            baseline: Float[Tensor, "layer pos d_mlp"]) -> "AgreementAccumulator":
        _check_acts(acts, self.agree)
        if tuple(baseline.shape) != tuple(acts.shape[1:]):
            raise ValueError(f"baseline has shape {tuple(baseline.shape)} but activations are "
                             f"{tuple(acts.shape)} [batch layer pos d_mlp]; pass the baseline of the same layers")
        labels = _check_labels(labels, acts.shape[0])
        above = acts.double() > baseline.to(acts.device, torch.float64)
        batch_agree = (above == labels.to(acts.device).view(-1, 1, 1, 1)).sum(0)
        self.agree = batch_agree if self.agree is None else self.agree.to(batch_agree.device) + batch_agree
        self.n += acts.shape[0]
        return self

    def accuracy(self) -> Float[Tensor, "layer pos d_mlp"]:
        """``agree / n`` in float64."""
        if self.n == 0:
            raise ValueError("no examples were added, so there is no accuracy; add at least one batch "
                             "(is the evaluation split empty?)")
        return self.agree.double() / self.n

    def merge(self, other: "AgreementAccumulator") -> "AgreementAccumulator":
        """Add ``other``'s counts to this one (in place)."""
        if other.agree is not None:
            _check_same(self.agree, other.agree, "merge")
            self.agree = other.agree.clone() if self.agree is None else self.agree + other.agree
        self.n += other.n
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """``{"agree": int64, "n": int64 scalar}``: checkpoints, or sum each tensor across workers."""
        if self.agree is None:
            raise ValueError("an empty accumulator has no shape yet; add a batch before saving or all-reducing")
        return {"agree": self.agree, "n": torch.tensor(self.n, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "AgreementAccumulator":
        return cls(state["agree"].to(torch.int64).clone(), int(state["n"]))


def _check_acts(acts: Tensor, running: Tensor | None) -> None:
    if acts.dim() != 4:
        raise ValueError(f"activations must be [batch layer pos d_mlp], got shape {tuple(acts.shape)}; "
                         "add missing axes with unsqueeze")
    if running is not None and tuple(acts.shape[1:]) != tuple(running.shape):
        raise ValueError(f"activations of shape [layer pos d_mlp]={tuple(acts.shape[1:])} do not match the "
                         f"{tuple(running.shape)} added before; use one accumulator per layer set and prompt length")
    bad = ~torch.isfinite(acts)
    if bad.any():
        layer = bad.transpose(0, 1).flatten(1).any(1).nonzero()[0].item()
        raise ValueError(f"non-finite activations in layer {layer} (of this batch); check the model dtype / inputs")


def _check_labels(labels, batch: int) -> Tensor:
    labels = torch.as_tensor(labels)
    if labels.shape != (batch,):
        raise ValueError(f"labels must be one per example, shape ({batch},), got {tuple(labels.shape)}")
    if not ((labels == 0) | (labels == 1)).all():
        raise ValueError(f"labels must be 0/1, got values {sorted(set(labels.tolist()))}; "
                         "split a multi-class task into binary subtasks (task.binarize(...)) first")
    return labels.bool()


def _check_same(a: Tensor | None, b: Tensor, what: str) -> None:
    if a is not None and a.shape != b.shape:
        raise ValueError(f"cannot {what} statistics of shape {tuple(a.shape)} and {tuple(b.shape)}; "
                         "they come from different layers, prompt lengths or models")


def permuted_labels(labels: Int[Tensor, " n"], permutations: int, seed: int) -> Bool[Tensor, "n k"]:
    """``K`` fixed permutations of a whole split's 0/1 labels: column ``k`` is ``labels[perm_k]``.

    A pure function of ``(labels, permutations, seed)``: ``perm_k`` is the ``k``-th ``torch.randperm(n)``
    of a CPU generator seeded with ``seed``, so rows can be sliced by batch or shard freely.

    >>> y = permuted_labels(torch.tensor([0, 0, 1, 1, 1]), 3, seed=0)
    >>> y.shape, y.sum(0).tolist(), torch.equal(y, permuted_labels(torch.tensor([0, 0, 1, 1, 1]), 3, seed=0))
    (torch.Size([5, 3]), [3, 3, 3], True)
    """
    labels = _check_labels(labels, len(labels))
    if permutations < 0:
        raise ValueError(f"permutations must be >= 0, got {permutations}")
    g = torch.Generator().manual_seed(int(seed))
    cols = [labels[torch.randperm(len(labels), generator=g)] for _ in range(permutations)]
    return torch.stack(cols, 1) if cols else torch.zeros(len(labels), 0, dtype=torch.bool)


def count_dtype(capacity: int) -> torch.dtype:
    """The smallest integer type that holds every count up to ``capacity`` exactly.

    >>> count_dtype(200), count_dtype(20_000), count_dtype(100_000)
    (torch.uint8, torch.int16, torch.int32)
    """
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if capacity <= torch.iinfo(dtype).max:
            return dtype
    return torch.int64


@dataclass
class NullAccumulator:
    """Per-permutation agreement counts ``[k layer pos d_mlp]``: :class:`AgreementAccumulator` for ``K``
    permuted label vectors at once, from one comparison with the baseline and one matmul per batch.

    With ``±1`` codes ``u = 2 * above - 1`` and ``v = 2 * y - 1``, ``v^T @ u`` is a batch's agreements minus
    disagreements (float32, exact: every entry is an integer of size at most the batch size). The counts
    ``agree`` are kept in the smallest integer type that holds ``capacity`` examples (:func:`count_dtype`:
    ``uint8`` for a split of up to 255 examples, ``int16`` up to 32767), a quarter or half of int32's memory:
    they are the probe's largest statistic (``K L P d_mlp`` per split). Checkpoints and all-reduces use them.

    >>> acts = torch.tensor([0.0, 1.0, 1.0, 2.0]).view(4, 1, 1, 1)
    >>> y = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 0]]).bool()     # two "permutations"
    >>> a = NullAccumulator(capacity=4).add(acts, y, torch.ones(1, 1, 1))
    >>> a.agree.flatten().tolist(), a.n, a.agree.dtype                 # as AgreementAccumulator, per column
    ([3, 1], 4, torch.uint8)
    """

    agree: Int[Tensor, "k layer pos d_mlp"] | None = None  # count_dtype(capacity)
    n: int = 0
    capacity: int = 2**31 - 1  # the most examples it will count (the split's size): sets the counts' type

    def add(self, acts: Float[Tensor, "batch layer pos d_mlp"], labels: Bool[Tensor, "batch k"],
            baseline: Float[Tensor, "layer pos d_mlp"]) -> "NullAccumulator":
        _check_acts(acts, None if self.agree is None else self.agree[0])
        B = acts.shape[0]
        if labels.dim() != 2 or labels.shape[0] != B:
            raise ValueError(f"permuted labels must be [batch k] with batch={B}, got {tuple(labels.shape)}; "
                             "slice the rows of permuted_labels(...) for this batch")
        if self.n + B > self.capacity or B >= 2**24:
            raise ValueError(f"{self.n + B} examples are more than this accumulator's capacity ({self.capacity}); "
                             "make it with the split's size as capacity (and batches under 2^24)")
        u = (acts.double() > baseline.to(acts.device, torch.float64)).flatten(1).float() * 2 - 1  # [B, LPN]
        v = labels.to(acts.device).float() * 2 - 1  # [B, K]
        batch = torch.mm(v.T, u).add_(B).mul_(0.5)  # this batch's agreements [K, LPN], exact integers
        if self.agree is None:
            self.agree = torch.zeros(labels.shape[1], *acts.shape[1:], dtype=count_dtype(self.capacity),
                                     device=acts.device)
        self.agree = self.agree.to(acts.device)  # a resumed checkpoint's counts come from the CPU
        self.agree.view(labels.shape[1], -1).add_(batch.to(self.agree.dtype))
        self.n += B
        return self

    def merge(self, other: "NullAccumulator") -> "NullAccumulator":
        """Add ``other``'s counts to this one (in place)."""
        if other.agree is not None:
            _check_same(self.agree, other.agree, "merge")
            if self.n + other.n > self.capacity:
                raise ValueError(f"merged counts of {self.n + other.n} examples exceed the capacity {self.capacity}")
            self.agree = other.agree.to(count_dtype(self.capacity)) if self.agree is None else \
                self.agree + other.agree.to(self.agree.device, self.agree.dtype)
        self.n += other.n
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """``{"agree": counts [k layer pos d_mlp], "n": int64 scalar}``: checkpoints, or all-reduce sums."""
        if self.agree is None:
            raise ValueError("an empty accumulator has no shape yet; add a batch before saving or all-reducing")
        return {"agree": self.agree, "n": torch.tensor(self.n, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "NullAccumulator":
        agree = state["agree"].clone()
        return cls(agree, int(state["n"]), torch.iinfo(agree.dtype).max)
