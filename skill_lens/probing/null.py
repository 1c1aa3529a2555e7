"""The family-wise permutation null of predictivity (max statistic, Westfall–Young): pure tensor functions.

The probe counts, for ``K`` permuted label vectors, each neuron's agreements
(:class:`~skill_lens.probing.statistics.NullAccumulator`); per permutation, the best score over all neurons
(:func:`null_maxima`) gives the threshold a real score must beat (:func:`fwer_threshold`), the neurons that do
(:func:`significant`) and adjusted p-values (:func:`adjusted_p_values`).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from skill_lens.probing.scores import check_scores, predictivity

__all__ = ["null_maxima", "fwer_threshold", "significant", "adjusted_p_values"]


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
    # max(f(c), 1 - f(c)) over neurons, f(c) = float32(c / n) non-decreasing: only the extreme counts matter,
    # so no float copy of the counts is made
    flat = agree.flatten(2)
    hi, lo = ((c.double() / n).float() for c in (flat.amax(2), flat.amin(2)))
    layer_max = torch.maximum(predictivity(hi), predictivity(lo))
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
    check_scores(scores)
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
    check_scores(scores)
    if maxima.dim() not in (1, 2) or maxima.shape[0] == 0:
        raise ValueError(f"permutation maxima must be [k] or [k layer] with k >= 1, got {tuple(maxima.shape)}")
    m = maxima.to(scores.device)
    m = m[:, :, None] if m.dim() == 2 else m[:, None, None]
    return (1 + (m >= scores[None]).sum(0, dtype=torch.float64)) / (1 + maxima.shape[0])
