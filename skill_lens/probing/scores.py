"""Neuron scores from accuracies: pure tensor functions, no model (Wang et al. 2022).

* ``predictivity = max(acc, 1 - acc)`` (:func:`predictivity`), aggregated over prompt positions
  (:func:`aggregate_positions`) and combined over runs such as tuning seeds (:func:`combine_runs`);
* neurons: :func:`rank`, :func:`select_top`, :func:`merge_subtasks` (multi-class tasks);
* comparisons: :func:`spearman`, :func:`top_k_overlap`.

>>> predictivity(torch.tensor([0.25, 0.5, 0.9])).tolist()
[0.75, 0.5, 0.8999999761581421]
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["predictivity", "aggregate_positions", "combine_runs", "rank", "best", "select_top", "merge_subtasks",
           "check_scores", "spearman", "top_k_overlap"]


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


def combine_runs(preds: Sequence[Float[Tensor, "layer d_mlp"]] | Float[Tensor, "run layer d_mlp"],
                   how: str = "mean") -> Float[Tensor, "layer d_mlp"]:
    """Combine scores of several runs (seeds, prompts): their ``"mean"`` (the paper) or ``"min"``.

    >>> combine_runs([torch.tensor([[0.5, 1.0]]), torch.tensor([[0.75, 0.5]])], "min").tolist()
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


def best(scores: Float[Tensor, "layer d_mlp"], k: int, held: Float[Tensor, "layer d_mlp"] | None = None,
         within: Bool[Tensor, "layer d_mlp"] | None = None, label=None) -> list[tuple[str, float, float | None]]:
    """The ``k`` best neurons by ``scores`` in :func:`rank` order (of those in ``within``, when given):
    ``[(label, score, held-out score or None)]``, labels like ``"L24.N1152"`` (or ``label(layer, index)``,
    e.g. a set's expert names).

    >>> s = torch.tensor([[0.5, 0.9], [0.9, 0.1]])
    >>> best(s, 2), best(s, 1, held=1 - s), best(s, 5, within=torch.tensor([[True, False], [False, True]]))
    ([('L0.N1', 0.9, None), ('L1.N0', 0.9, None)], [('L0.N1', 0.9, 0.1)], [('L0.N0', 0.5, None), ('L1.N1', 0.1, None)])
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranked = rank(scores if within is None else scores.masked_fill(~within, -math.inf)).tolist()
    ranked = ranked if within is None else [p for p in ranked if within[p[0], p[1]]]
    name = label or (lambda l, n: f"L{l}.N{n}")
    return [(name(l, n), round(float(scores[l, n]), 6), None if held is None else round(float(held[l, n]), 6))
            for l, n in ranked[:k]]


def select_top(scores: Float[Tensor, "layer d_mlp"], top: float | int, *,
               per_layer: bool = False) -> Bool[Tensor, "layer d_mlp"]:
    """Mask of the best neurons. ``top``: a fraction in (0, 1] (rounded, at least 1) or an int count,
    of all neurons, or with ``per_layer`` of each layer. Ties as in :func:`rank`.

    >>> s = torch.tensor([[0.9, 0.8, 0.7], [0.1, 0.2, 0.6]])
    >>> select_top(s, 2).int().tolist(), select_top(s, 1, per_layer=True).int().tolist()
    ([[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 0, 1]])
    """
    check_scores(scores)
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
        check_scores(s)
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
    check_scores(scores)
    return torch.sort(scores.flatten(), descending=True, stable=True).indices


def check_scores(scores: Tensor) -> None:
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
