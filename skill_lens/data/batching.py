"""Length-bucketed batches of a split: every pass over a split batches examples of similar length.

A batch pads to its longest row, so batches in the split's own order waste most of a forward on
texts of mixed length (``rotten_tomatoes_subjectivity``: 48% of positions are padding at 32 per
batch). :func:`length_batches` sorts the examples by their encoded length (ties by index) and cuts
the sorted order into batches: a pure function of the split, the prompted model's template and the
batch size, so every pass, a resumed one included, sees the same batches. Callers put results back
in the split's order (:func:`skill_lens.prompting.evaluation.predict` does; the probe only adds sums).

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.evaluation import hard_prompt_model
>>> task = tiny_task()
>>> pm = hard_prompt_model(tiny_model(), task)
>>> batches = length_batches(pm, task.dev, 8)
>>> sorted(i for b in batches for i in b) == list(range(len(task.dev))), [len(b) for b in batches]
(True, [8, 8, 8, 8])
>>> pad_fraction(token_lengths(pm, task.dev), batches) <= pad_fraction(token_lengths(pm, task.dev), None, 8)
True
"""

from __future__ import annotations

from typing import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["token_lengths", "length_batches", "pad_fraction", "in_order"]

_CHUNK = 256  # examples tokenized at a time when measuring lengths


def token_lengths(pm, split) -> Int[Tensor, " n"]:
    """Each example's encoded length under ``pm`` (template, special tokens, prompt and truncation included).

    Tokenizes only, through :meth:`~skill_lens.prompting.prompted_model.PromptedModel.encode_split`, so it counts exactly
    the positions a forward pass runs.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> token_lengths(hard_prompt_model(tiny_model(), tiny_task()), tiny_task().dev).shape
    torch.Size([32])
    """
    return torch.cat([pm.encode_split(split, slice(s, s + _CHUNK)).attention_mask.sum(1)
                      for s in range(0, len(split), _CHUNK)])


def length_batches(pm, split, batch_size: int, lengths: Int[Tensor, " n"] | None = None) -> list[list[int]]:
    """The split's indices sorted by encoded length (stable: ties keep their order), cut into batches of at
    most ``batch_size`` examples and at most ``batch_size`` times the median length in padded positions.

    The token cap splits the long tail (a few texts ten times the median) into small batches of
    similar length, which keeps both the padding and a batch's memory near those of a typical one.
    ``lengths`` replaces the encoded lengths (e.g. those of the input part alone).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> pm, dev = hard_prompt_model(tiny_model(), tiny_task()), tiny_task().dev
    >>> order = [i for b in length_batches(pm, dev, 8) for i in b]
    >>> lengths = token_lengths(pm, dev)[order]
    >>> bool((lengths[1:] >= lengths[:-1]).all())
    True
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if len(split) == 0:
        return []
    lengths = token_lengths(pm, split) if lengths is None else lengths
    budget = batch_size * int(lengths.median())
    batches: list[list[int]] = []
    ordered = torch.sort(lengths, stable=True)
    for n, i in zip(ordered.values.tolist(), ordered.indices.tolist()):
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * n <= budget:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_fraction(lengths: Sequence[int] | Tensor, batches: Sequence[Sequence[int]] | None,
                 batch_size: int | None = None) -> float:
    """The fraction of positions that are padding when ``lengths`` run as ``batches`` (or, with
    ``batches=None``, in the split's order ``batch_size`` at a time).

    >>> round(pad_fraction([1, 3, 1, 3], None, 2), 3), pad_fraction([1, 3, 1, 3], [[0, 2], [1, 3]])
    (0.333, 0.0)
    """
    lengths = torch.as_tensor(lengths)
    if batches is None:
        batches = [list(range(s, min(s + batch_size, len(lengths)))) for s in range(0, len(lengths), batch_size)]
    run = sum(len(b) * int(lengths[list(b)].max()) for b in batches if len(b))
    return 1.0 - float(lengths.sum()) / run if run else 0.0


def in_order(parts: Sequence[Tensor], batches: Sequence[Sequence[int]]) -> Tensor:
    """Put per-batch results (rows in each batch's order) back in the split's order.

    >>> in_order([torch.tensor([10, 30]), torch.tensor([20])], [[0, 2], [1]]).tolist()
    [10, 20, 30]
    """
    index = torch.tensor([i for b in batches for i in b], dtype=torch.long)
    rows = torch.cat(list(parts))
    out = torch.empty_like(rows)
    out[index.to(rows.device)] = rows
    return out
