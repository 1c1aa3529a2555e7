"""Neuron predictivity from activations: pure tensor functions, no model (Wang et al. 2022).

For neuron ``n`` of layer ``l`` at prompt position ``p``: the baseline is its mean activation over
the train split; on dev/test, ``acc`` is the fraction of examples where ``1[a > baseline] == label``
(strict ``>``: a tie is "not above"), and ``predictivity = max(acc, 1 - acc)``.

* streaming statistics: :class:`MeanAccumulator`, :class:`AgreementAccumulator` (one batch at a
  time, mergeable; ``state_dict()`` holds tensors only, so an all-reduce sum merges workers);
* scores ``[layer, d_mlp]``: :func:`predictivity`, :func:`aggregate_positions`, :func:`aggregate_runs`;
* neurons: :func:`rank`, :func:`select_top`, :func:`merge_subtasks` (multi-class tasks);
* comparisons: :func:`spearman`, :func:`top_k_overlap`;
* a family-wise permutation null: :func:`permuted_labels`, :class:`NullAccumulator`, :func:`null_maxima`,
  :func:`fwer_threshold`, :func:`significant`, :func:`adjusted_p_values` (max-statistic, Westfall–Young).

>>> acts = torch.tensor([1.0, 3.0, 0.0, 4.0]).view(4, 1, 1, 1)  # [batch layer pos d_mlp]
>>> base = MeanAccumulator().add(acts).mean()                    # 2.0
>>> acc = AgreementAccumulator().add(acts, torch.tensor([0, 1, 0, 0]), base).accuracy()
>>> predictivity(acc).flatten().tolist()
[0.75]
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["MeanAccumulator", "AgreementAccumulator", "predictivity", "aggregate_positions", "aggregate_runs",
           "rank", "select_top", "merge_subtasks", "spearman", "top_k_overlap",
           "permuted_labels", "NullAccumulator", "null_maxima", "fwer_threshold", "significant", "adjusted_p_values"]


# ------------------------------------------------------------------ streaming statistics


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


# ------------------------------------------------------------------ scores


def predictivity(acc: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    """``max(acc, 1 - acc)``: a neuron that is reliably *below* its baseline is as predictive.

    >>> predictivity(torch.tensor([0.25, 0.5, 0.875])).tolist()
    [0.75, 0.5, 0.875]
    """
    return torch.maximum(acc, 1 - acc)


def aggregate_positions(pred: Float[Tensor, "layer pos d_mlp"], how: str = "max") -> Float[Tensor, "layer d_mlp"]:
    """One score per neuron: the ``"max"`` (the paper) or ``"mean"`` over prompt positions.

    >>> aggregate_positions(torch.tensor([[[0.5], [0.75]]]), "mean").tolist()
    [[0.625]]
    """
    if pred.dim() != 3:
        raise ValueError(f"predictivity must be [layer pos d_mlp], got shape {tuple(pred.shape)}")
    if how not in ("max", "mean"):
        raise ValueError(f"unknown aggregation {how!r} over positions; use 'max' or 'mean'")
    return pred.amax(1) if how == "max" else pred.mean(1)


def aggregate_runs(preds: Sequence[Float[Tensor, "layer d_mlp"]] | Float[Tensor, "run layer d_mlp"],
                   how: str = "mean") -> Float[Tensor, "layer d_mlp"]:
    """Combine scores of several runs (seeds, prompts): their ``"mean"`` (the paper) or ``"min"``.

    >>> aggregate_runs([torch.tensor([[0.5, 1.0]]), torch.tensor([[0.75, 0.5]])], "min").tolist()
    [[0.5, 0.5]]
    """
    if how not in ("mean", "min"):
        raise ValueError(f"unknown aggregation {how!r} over runs; use 'mean' or 'min'")
    if not isinstance(preds, Tensor):
        preds = list(preds)
        if not preds:
            raise ValueError("no runs given; pass at least one score tensor")
        shapes = sorted({tuple(p.shape) for p in preds})
        if len(shapes) > 1:
            raise ValueError(f"runs have different shapes {shapes}; only aggregate runs of the same model and hooks")
        preds = torch.stack(preds)
    return preds.mean(0) if how == "mean" else preds.amin(0)


# ------------------------------------------------------------------ selection


def rank(scores: Float[Tensor, "layer d_mlp"]) -> Int[Tensor, "k 2"]:
    """``(layer, index)`` of every neuron, best first; ties go to the lower layer, then the lower index.

    >>> rank(torch.tensor([[0.5, 0.9], [0.9, 0.1]])).tolist()
    [[0, 1], [1, 0], [0, 0], [1, 1]]
    """
    order = _order(scores)
    return torch.stack([order // scores.shape[1], order % scores.shape[1]], 1)


def select_top(scores: Float[Tensor, "layer d_mlp"], top: float | int, *,
               per_layer: bool = False) -> Bool[Tensor, "layer d_mlp"]:
    """Mask of the best neurons. ``top``: a fraction in (0, 1] (rounded, at least 1) or an int count,
    of all neurons, or with ``per_layer`` of each layer. Ties as in :func:`rank`.

    >>> s = torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.6]])
    >>> select_top(s, 2).int().tolist(), select_top(s, 1, per_layer=True).int().tolist()
    ([[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 1]])
    """
    _check_scores(scores)
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    if per_layer:
        k = _n_top(top, scores.shape[1], " per layer")
        mask.scatter_(1, torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k], True)
    else:
        mask.view(-1)[_order(scores)[: _n_top(top, scores.numel())]] = True
    return mask


def merge_subtasks(scores_list: Sequence[Float[Tensor, "layer d_mlp"]], top: float | int,
                   per_layer: bool = False) -> Bool[Tensor, "layer d_mlp"]:
    """Skill neurons of a multi-class task from its binary subtasks' scores, an equal count from each.

    ``k`` is counted as in :func:`select_top`; the top ``k // n_subtasks`` of every subtask's ranking
    are taken, then each ranking in turn adds its best neuron not yet chosen, until ``k`` are chosen.

    >>> a, b = torch.tensor([[0.9, 0.8, 0.1, 0.2]]), torch.tensor([[0.9, 0.1, 0.8, 0.7]])
    >>> merge_subtasks([a, b], 3).int().tolist()   # a: N0 (shared with b), then a: N1, b: N2
    [[1, 1, 1, 0]]
    """
    scores_list = list(scores_list)
    if not scores_list:
        raise ValueError("no subtask scores given; pass one [layer d_mlp] tensor per binary subtask")
    shapes = sorted({tuple(s.shape) for s in scores_list})
    if len(shapes) > 1:
        raise ValueError(f"subtask scores have different shapes {shapes}; score all subtasks on the same model")
    for s in scores_list:
        _check_scores(s)
    L, N = shapes[0]
    mask = torch.zeros(L, N, dtype=torch.bool, device=scores_list[0].device)
    if per_layer:
        k = _n_top(top, N, " per layer")
        for layer in range(L):
            orders = [torch.sort(s[layer], descending=True, stable=True).indices.tolist() for s in scores_list]
            mask[layer, _round_robin(orders, k)] = True
    else:
        mask.view(-1)[_round_robin([_order(s).tolist() for s in scores_list], _n_top(top, L * N))] = True
    return mask


def _round_robin(orders: list[list[int]], k: int) -> list[int]:
    n = len(orders)
    chosen = dict.fromkeys(i for order in orders for i in order[: k // n])  # an ordered set
    pos, turn = [k // n] * n, 0
    while len(chosen) < k:
        order, t = orders[turn % n], turn % n
        while order[pos[t]] in chosen:  # everything before pos[t] is chosen, so an unchosen one follows
            pos[t] += 1
        chosen[order[pos[t]]] = None
        turn += 1
    return list(chosen)


def _order(scores: Tensor) -> Tensor:
    """Flat indices, best score first, ties by lower flat index (lower layer, then lower index)."""
    _check_scores(scores)
    return torch.sort(scores.flatten(), descending=True, stable=True).indices


def _check_scores(scores: Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be [layer d_mlp], got shape {tuple(scores.shape)}; "
                         "aggregate positions first (aggregate_positions)")
    if scores.is_floating_point() and scores.isnan().any():
        raise ValueError("scores contain NaN; check the accuracies they were computed from")


def _n_top(top: float | int, n: int, where: str = "") -> int:
    if isinstance(top, bool) or not isinstance(top, numbers.Real):
        raise ValueError(f"top must be a fraction in (0, 1] or an int count of neurons, got {top!r}")
    if isinstance(top, numbers.Integral):
        if not 1 <= top <= n:
            raise ValueError(f"top={top} neurons asked, but there are {n}{where}; ask for 1 to {n}")
        return int(top)
    if not 0 < top <= 1:
        raise ValueError(f"top={top} is not a fraction in (0, 1]; pass an int to ask for a count of neurons")
    return max(1, math.floor(top * n + 0.5))


# ------------------------------------------------------------------ comparisons


def spearman(a: Float[Tensor, "..."], b: Float[Tensor, "..."]) -> float:
    """Spearman's rank correlation of two equal-shape score tensors (flattened; ties get average ranks).

    >>> spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([30.0, 20.0, 10.0]))
    -1.0
    >>> round(spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])) ** 2, 6)
    0.9
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot correlate scores of shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                         "compare scores of the same model and hooks")
    if a.numel() < 2:
        raise ValueError(f"Spearman's correlation needs at least 2 values, got {a.numel()}")
    if a.isnan().any() or b.isnan().any():
        raise ValueError("scores contain NaN; Spearman's correlation is undefined")
    ra, rb = _average_ranks(a.flatten()), _average_ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = (ra.square().sum() * rb.square().sum()).sqrt()
    if denom == 0:
        raise ValueError("one of the score tensors is constant, so Spearman's correlation is undefined")
    return float(((ra * rb).sum() / denom).clamp(-1.0, 1.0))


def _average_ranks(x: Tensor) -> Tensor:
    """1-based ranks in float64; tied values share the mean of the ranks they span."""
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def top_k_overlap(a: Float[Tensor, "layer d_mlp"], b: Float[Tensor, "layer d_mlp"], k_frac: float | int,
                  per_layer: bool = False) -> float:
    """``|top-k(a) ∩ top-k(b)| / k``, with ``k_frac`` and ``per_layer`` as ``top`` in :func:`select_top`.

    >>> s = torch.tensor([[0.9, 0.8, 0.1, 0.2]])
    >>> top_k_overlap(s, s, 0.5), top_k_overlap(s, torch.tensor([[0.9, 0.1, 0.8, 0.2]]), 0.5)
    (1.0, 0.5)
    """
    if a.shape != b.shape:
        raise ValueError(f"cannot compare scores of shapes {tuple(a.shape)} and {tuple(b.shape)}; "
                         "compare scores of the same model and hooks")
    ma, mb = select_top(a, k_frac, per_layer=per_layer), select_top(b, k_frac, per_layer=per_layer)
    return (ma & mb).sum().item() / ma.sum().item()


# ------------------------------------------------------------------ permutation null (family-wise)


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


@dataclass
class NullAccumulator:
    """Per-permutation agreement counts ``[k layer pos d_mlp]``: :class:`AgreementAccumulator` for ``K``
    permuted label vectors at once, from one comparison with the baseline and one in-place matmul.

    With ``±1`` codes ``u = 2 * above - 1`` and ``v = 2 * y - 1``, ``v^T @ u`` is agreements minus
    disagreements, so each batch is one ``addmm_`` into ``diff`` (float32, ``[k layer pos d_mlp]``:
    exact, since every partial sum is an integer of size at most ``n < 2^24``). ``agree`` is
    ``(n + diff) / 2`` as int32; checkpoints and all-reduces use it.

    >>> acts = torch.tensor([0.0, 1.0, 1.0, 2.0]).view(4, 1, 1, 1)
    >>> y = torch.tensor([[0, 1], [0, 1], [1, 0], [1, 0]]).bool()     # two "permutations"
    >>> a = NullAccumulator().add(acts, y, torch.ones(1, 1, 1))
    >>> a.agree.flatten().tolist(), a.n                                # as AgreementAccumulator, per column
    ([3, 1], 4)
    """

    diff: Float[Tensor, "k layer pos d_mlp"] | None = None  # float32: agreements - disagreements
    n: int = 0

    @property
    def agree(self) -> Int[Tensor, "k layer pos d_mlp"] | None:
        """Agreement counts (int32)."""
        return None if self.diff is None else ((self.diff + self.n) / 2).round().to(torch.int32)

    def add(self, acts: Float[Tensor, "batch layer pos d_mlp"], labels: Bool[Tensor, "batch k"],
            baseline: Float[Tensor, "layer pos d_mlp"]) -> "NullAccumulator":
        _check_acts(acts, None if self.diff is None else self.diff[0])
        B = acts.shape[0]
        if labels.dim() != 2 or labels.shape[0] != B:
            raise ValueError(f"permuted labels must be [batch k] with batch={B}, got {tuple(labels.shape)}; "
                             "slice the rows of permuted_labels(...) for this batch")
        if self.n + B >= 2**24:
            raise ValueError(f"{self.n + B} examples are too many for exact float32 counts; probe fewer (< 2^24)")
        u = (acts.double() > baseline.to(acts.device, torch.float64)).flatten(1).float() * 2 - 1  # [B, LPN]
        v = labels.to(acts.device).float() * 2 - 1  # [B, K]
        if self.diff is None:
            self.diff = torch.zeros(labels.shape[1], *acts.shape[1:], dtype=torch.float32, device=acts.device)
        self.diff = self.diff.to(acts.device)  # a resumed checkpoint's counts come from the CPU
        self.diff.view(labels.shape[1], -1).addmm_(v.T, u)
        self.n += B
        return self

    def merge(self, other: "NullAccumulator") -> "NullAccumulator":
        """Add ``other``'s counts to this one (in place)."""
        if other.diff is not None:
            _check_same(self.diff, other.diff, "merge")
            self.diff = other.diff.clone() if self.diff is None else self.diff + other.diff
        self.n += other.n
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """``{"agree": int32 [k layer pos d_mlp], "n": int64 scalar}``: checkpoints, or all-reduce sums."""
        if self.diff is None:
            raise ValueError("an empty accumulator has no shape yet; add a batch before saving or all-reducing")
        return {"agree": self.agree, "n": torch.tensor(self.n, dtype=torch.int64)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor]) -> "NullAccumulator":
        n = int(state["n"])
        return cls(state["agree"].to(torch.float32) * 2 - n, n)


def null_maxima(agree: Int[Tensor, "k layer pos d_mlp"],
                n: int) -> tuple[Float[Tensor, " k"], Float[Tensor, "k layer"]]:
    """Per permutation, the max predictivity over all neurons and positions, and per layer (float32).

    Computed as the real scores are (float64 accuracy rounded to float32, then ``max(acc, 1 - acc)``),
    so a neuron with the same count as a permutation's best gets the bit-identical score.

    >>> best, per_layer = null_maxima(torch.tensor([[[[1, 3]], [[2, 2]]]]), 4)   # k=1, 2 layers, P=1, N=2
    >>> best.tolist(), per_layer.tolist()
    ([0.75], [[0.75, 0.5]])
    """
    if agree.dim() != 4:
        raise ValueError(f"permutation counts must be [k layer pos d_mlp], got shape {tuple(agree.shape)}")
    if n < 1:
        raise ValueError("no examples were counted, so there is no null; is the evaluation split empty?")
    layer_max = predictivity((agree.double() / n).float()).amax((2, 3))
    return layer_max.amax(1), layer_max


def _n_exceed(alpha: float, k: int) -> int:
    """``floor(alpha (K + 1))``: how many permutation maxima may reach a significant score, plus one."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return math.floor(alpha * (k + 1) + 1e-9)


def fwer_threshold(maxima: Float[Tensor, "k *layer"], alpha: float = 0.05) -> Float[Tensor, "*layer"]:
    """The family-wise ``(1 - alpha)`` critical value: the ``r``-th largest of the ``K`` permutation
    maxima, ``r = floor(alpha (K + 1))`` (``inf`` when ``r = 0``: too few permutations for ``alpha``).

    A score strictly above it is significant at level ``alpha`` over all neurons (of the layer, for
    per-layer maxima ``[k layer]``); exactly when its :func:`adjusted_p_values` is ``<= alpha``.

    >>> m = torch.arange(1.0, 20.0) / 32              # K = 19 maxima 1/32 .. 19/32
    >>> fwer_threshold(m, 0.05).item(), fwer_threshold(m, 0.1).item(), fwer_threshold(m, 0.01).item()
    (0.59375, 0.5625, inf)
    """
    if maxima.dim() not in (1, 2) or maxima.shape[0] == 0:
        raise ValueError(f"permutation maxima must be [k] or [k layer] with k >= 1, got {tuple(maxima.shape)}; "
                         "probe with permutations > 0")
    r = _n_exceed(alpha, maxima.shape[0])
    if r == 0:
        return torch.full(maxima.shape[1:], math.inf, dtype=maxima.dtype)
    return torch.sort(maxima, dim=0, descending=True).values[r - 1]


def significant(scores: Float[Tensor, "layer d_mlp"], maxima: Float[Tensor, "k *layer"],
                alpha: float = 0.05) -> Bool[Tensor, "layer d_mlp"]:
    """Neurons whose score is strictly above :func:`fwer_threshold` (per layer for maxima ``[k layer]``).

    >>> significant(torch.tensor([[0.9, 0.6], [0.7, 0.95]]), torch.full((19,), 0.8)).tolist()
    [[True, False], [False, True]]
    """
    _check_scores(scores)
    t = fwer_threshold(maxima, alpha).to(scores.device)
    return scores > (t[:, None] if t.dim() == 1 else t)


def adjusted_p_values(scores: Float[Tensor, "layer d_mlp"],
                      maxima: Float[Tensor, "k *layer"]) -> Float[Tensor, "layer d_mlp"]:
    """Family-wise adjusted p-values ``(1 + #{k: max_k >= s}) / (1 + K)`` (float64): the max-statistic
    (Westfall–Young single-step) adjustment, valid over all neurons at once (of the layer, for
    maxima ``[k layer]``). ``p <= alpha`` exactly when :func:`significant` says so.

    >>> adjusted_p_values(torch.tensor([[0.9, 0.6]]), torch.tensor([0.5, 0.7, 0.8])).tolist()
    [[0.25, 0.75]]
    """
    _check_scores(scores)
    if maxima.dim() not in (1, 2) or maxima.shape[0] == 0:
        raise ValueError(f"permutation maxima must be [k] or [k layer] with k >= 1, got {tuple(maxima.shape)}")
    m = maxima.to(scores.device)
    m = m[:, :, None] if m.dim() == 2 else m[:, None, None]
    return (1 + (m >= scores[None]).sum(0, dtype=torch.float64)) / (1 + maxima.shape[0])
