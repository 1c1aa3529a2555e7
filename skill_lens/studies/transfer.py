"""Prompt transferability (Wang et al. 2022, section 6): a source prompt on a target task, and its indicator.

:func:`transferability` (the source prompt on the target task, relative to the target's own prompt),
its indicator :func:`activation_overlap` / :func:`overlap_matrix` (how many neurons the two prompts turn on
together) and :func:`indicator_correlation` (how well the overlap predicts the transfer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from skill_lens.base.progress import progress
from skill_lens.intervening.interventions import neuron_mask
from skill_lens.model.loading import describe
from skill_lens.probing.capture import capture_hooks, probed_positions
from skill_lens.probing.scores import spearman
from skill_lens.prompting.evaluation import evaluate
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import PromptError
from skill_lens.studies.tables import AnalysisError, Matrix, Result, TransferMatrix, check_names

__all__ = ["transferability", "Overlap", "activation_overlap", "OverlapMatrix", "overlap_matrix",
           "indicator_correlation"]


def _as_list(v) -> list[PromptedModel]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def transferability(prompts: Mapping[str, PromptedModel | Sequence[PromptedModel]], tasks: Mapping,
                    split: str = "dev", batch_size: int = 32) -> TransferMatrix:
    """Zero-shot prompt transfer: each source prompt on each target's ``split`` with the target's
    verbalizer and template, as accuracy relative to the target's own prompt(s).

    ``prompts[name]`` is the task's ``PromptedModel``, or a list of them (seeds): accuracies are
    averaged over them. ``values[s, t] = mean acc(s's prompts on t) / mean acc(t's prompts on t)``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task

    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> transferability({"a": pm, "b": pm}, {"a": task, "b": task}).values.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    names = check_names(prompts, tasks, "transferability")
    lists = {n: _as_list(prompts[n]) for n in names}
    models = {id(pm.model) for v in lists.values() for pm in v}
    if len(models) > 1:
        raise AnalysisError("the prompts were tuned on different models; transfer across models needs a projector.")
    if hard := [n for n, v in lists.items() if any(pm.prompt is None for pm in v)]:
        raise AnalysisError(f"{hard} have no soft prompt; transferability compares tuned soft prompts.")
    acc = torch.empty(len(names), len(names), dtype=torch.float64)
    for j, t in enumerate(names):
        data, tgt = getattr(tasks[t], split), lists[t][0]
        for i, s in enumerate(names):
            accs = [evaluate(PromptedModel(tgt.model, src.prompt, tgt.verbalizer, tgt.template, tgt.pair_template,
                                           tgt.max_length), data, batch_size)["accuracy"] for src in lists[s]]
            acc[i, j] = sum(accs) / len(accs)
    own = {t: float(acc[j, j]) for j, t in enumerate(names)}
    denom = acc.diagonal()[None, :]
    rel = torch.where(denom > 0, acc / denom.clamp(min=1e-12), torch.full_like(acc, float("nan")))
    return TransferMatrix(names, names, rel, "relative accuracy", acc, own)


@dataclass
class Overlap(Result):
    """Activation overlap of two prompted models over a split: all neurons, and the given ones."""

    all: float
    skill: float | None
    metric: str
    n_examples: int


def activation_overlap(pm_a: PromptedModel, pm_b: PromptedModel, split, neurons=None, threshold: float = 0.0,
                       metric: str = "cosine", batch_size: int = 32) -> Overlap:
    """Overlap rate of *activated* neurons (Su et al. 2022, "On Transferability of Prompt Tuning").

    For each example, a neuron is activated at a probed position (the prompt positions; the
    prediction position without a soft prompt) when its FFN activation (``hook_post``) exceeds
    ``threshold`` (0, as in the papers; for SiLU/SwiGLU models ``act > 0`` means "writes along
    the neuron's output direction" -- a consistent, if arbitrary, cut). The binary activation
    states of ``pm_a`` and ``pm_b`` (``[L, P, d_mlp]``) are compared with ``metric``: ``"cosine"``
    (Su et al.'s ON, ``|A & B| / sqrt(|A| |B|)``) or ``"jaccard"`` (``|A & B| / |A | B|``), and
    averaged over examples. ``neurons`` (a ``NeuronSet`` or ``[L, d_mlp]`` mask, e.g. the target
    task's top 20% skill neurons, ``NeuronSet.from_scores(scores, 0.2)``) restricts the comparison for
    ``skill``. Identical prompts give 1; two empty activation sets count as identical.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task

    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> activation_overlap(pm, pm, task.dev).all
    1.0
    """
    if metric not in ("cosine", "jaccard"):
        raise AnalysisError(f"unknown metric {metric!r}; use 'cosine' or 'jaccard'.")
    if pm_a.model is not pm_b.model:
        raise AnalysisError("activation_overlap compares two prompts on one model; the models differ.")
    if pm_a.prompt_length != pm_b.prompt_length:
        raise PromptError(f"activation_overlap compares neurons position by position, but the prompts have lengths "
                          f"{pm_a.prompt_length} and {pm_b.prompt_length}; use prompts of the same length.")
    if split is None or len(split) == 0:
        raise AnalysisError("the split is empty; pass a split with examples (e.g. task.dev).")
    mask = neuron_mask(pm_a.model, neurons) if neurons is not None else None
    sums, n = {"all": 0.0, "skill": 0.0}, len(split)
    for start in progress(range(0, n, batch_size), desc="overlap"):
        a, b = (_states(pm, split, start, batch_size, threshold) for pm in (pm_a, pm_b))  # [B, L, P, N]
        sums["all"] += float(_overlap(a, b, metric).sum())
        if mask is not None:
            m = mask[None, :, None, :].to(a.device)
            sums["skill"] += float(_overlap(a & m, b & m, metric).sum())
    return Overlap(sums["all"] / n, sums["skill"] / n if mask is not None else None, metric, n)


def _states(pm, split, start, size, threshold) -> Tensor:
    batch = pm.encode_split(split, slice(start, start + size))

    def active(act: Tensor, name: str) -> Tensor:
        sel = probed_positions(act, batch, decoder=False, hard=pm.prompt is None)
        return sel > threshold

    info = describe(pm.model)
    hooks, got = capture_hooks([seg.hook for layer in info.layers for seg in layer.segments], select=active)
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=hooks)
    return torch.stack([torch.cat([got[seg.hook] for seg in layer.segments], -1) for layer in info.layers], dim=1)


def _overlap(a: Tensor, b: Tensor, metric: str) -> Tensor:
    a, b = a.flatten(1), b.flatten(1)
    inter, na, nb = (a & b).sum(1).double(), a.sum(1).double(), b.sum(1).double()
    denom = (na * nb).sqrt() if metric == "cosine" else na + nb - inter
    # two empty activation sets agree completely
    return torch.where(denom > 0, inter / denom.clamp(min=1e-12), torch.ones_like(inter))


@dataclass
class OverlapMatrix(Matrix):
    """``values[s, t]``: overlap over all neurons; ``skill[s, t]``: over target ``t``'s skill neurons."""

    skill: Tensor | None = None
    metric: str = "cosine"


def overlap_matrix(pms: Mapping[str, PromptedModel], tasks: Mapping, neurons: Mapping | None = None,
                   split: str = "dev", metric: str = "cosine", batch_size: int = 32) -> OverlapMatrix:
    """:func:`activation_overlap` for every (source, target) pair, on the target's ``split``,
    restricted for ``skill`` to the target's ``neurons[t]`` (e.g. its top 20% skill neurons).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task

    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> overlap_matrix({"a": pm, "b": pm}, {"a": task, "b": task}).values.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    names = check_names(pms, tasks, "overlap_matrix")
    if neurons is not None and (missing := [n for n in names if n not in neurons]):
        raise AnalysisError(f"no skill neurons for {missing}; pass neurons[name] for every task.")
    vals = torch.empty(len(names), len(names), dtype=torch.float64)
    skill = torch.empty_like(vals) if neurons is not None else None
    for i, s in enumerate(names):
        for j, t in enumerate(names):
            o = activation_overlap(pms[s], pms[t], getattr(tasks[t], split), neurons[t] if neurons else None,
                                   metric=metric, batch_size=batch_size)
            vals[i, j] = o.all
            if skill is not None:
                skill[i, j] = o.skill
    return OverlapMatrix(names, names, vals, "activation overlap", skill, metric)


def indicator_correlation(overlaps, transfers) -> float:
    """Spearman correlation between an indicator (activation overlap) and measured transfer over
    the off-diagonal (source != target) pairs. Each argument is a :class:`Matrix`, a square tensor
    or a ``{(source, target): value}`` dict (Wang et al.: 0.53 for all neurons, 0.71 for skill neurons).

    A :class:`Matrix` beside a plain tensor is read in the Matrix's task order.

    >>> t = torch.tensor([[1.0, 0.9, 0.2], [0.8, 1.0, 0.4], [0.3, 0.5, 1.0]])
    >>> indicator_correlation(t, t), indicator_correlation(t, -t)
    (1.0, -1.0)
    >>> indicator_correlation(Matrix(["a", "b", "c"], ["a", "b", "c"], t), t)
    1.0
    """
    a, b = _pairs(overlaps), _pairs(transfers)
    named = next((m for m in (overlaps, transfers) if isinstance(m, Matrix)), None)
    if named is not None:  # index keys (a tensor) -> the named tasks, in the Matrix's order
        a, b = ({(named.rows[k[0]], named.cols[k[1]]) if isinstance(k[0], int) else k: v for k, v in d.items()}
                for d in (a, b))
    if set(a) != set(b):
        differ = sorted(map(str, set(a) ^ set(b)))[:4]
        raise AnalysisError(f"overlaps and transfers cover different pairs ({differ}...); compute both for the "
                            "same tasks.")
    keys = [k for k in a if math.isfinite(a[k]) and math.isfinite(b[k])]
    if len(keys) < 3:
        raise AnalysisError(f"indicator_correlation needs at least 3 (source, target) pairs, got {len(keys)}; "
                            "use 3 or more tasks.")
    return float(spearman(torch.tensor([a[k] for k in keys]), torch.tensor([b[k] for k in keys])))


def _pairs(x) -> dict:
    if isinstance(x, Matrix):
        return x.off_diagonal()
    if isinstance(x, Mapping):
        return {k: float(v) for k, v in x.items()}
    t = torch.as_tensor(x, dtype=torch.float64)
    if t.dim() != 2 or t.shape[0] != t.shape[1]:
        raise AnalysisError(f"expected a square matrix, got shape {list(t.shape)}")
    return {(i, j): float(t[i, j]) for i in range(len(t)) for j in range(len(t)) if i != j}
