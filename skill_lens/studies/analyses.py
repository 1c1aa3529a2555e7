"""The papers' analyses as functions returning small result objects (``.to_pandas()``, ``.to_dict()``).

* task specificity -- :func:`specificity_matrix` (Spearman of neuron predictivities across tasks
  and seeds; within- vs cross-type means), :func:`specificity_with_ceiling` (the same against the
  same-task replicability between two halves of the probe data, :func:`halves_task`/:func:`half_scores`,
  or two seeds; also for the upper layers and the top neurons), :func:`cross_task_suppression` (noise
  on task A's skill neurons, accuracy drop on task B);
* prompt transferability -- :func:`transferability` (source prompt on the target task, relative to
  the target's own prompt), its indicator :func:`activation_overlap` / :func:`overlap_matrix` and
  :func:`indicator_correlation`;
* origin -- :func:`origin_table` (tuned vs random prompts vs a hard prompt vs a random model);
* label words -- :func:`label_word_independence`;
* what a neuron reads -- :func:`word_selectivity` (input weights vs embeddings) and
  :func:`top_activating_tokens` (streamed mean activation per input token).

Matrix results index rows by the *source* (the task whose prompt or neurons are used) and
columns by the *target*; ``numpy.asarray(result)`` gives the values, so ``plots.heatmap(result,
result.rows)`` draws them.

>>> import torch
>>> m = specificity_matrix({"a": torch.arange(6.).reshape(2, 3), "b": -torch.arange(6.).reshape(2, 3)})
>>> m.values.tolist()
[[1.0, -1.0], [-1.0, 1.0]]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.probing.capture import capture_hooks, probed_positions
from skill_lens.prompting.evaluation import evaluate, hard_prompt_model, prompted
from skill_lens.intervening.interventions import neuron_mask
from skill_lens.model.anatomy import by_segment, input_weights
from skill_lens.model.loading import describe, random_init_copy
from skill_lens.probing.predictivity import spearman
from skill_lens.probing.probe import probe
from skill_lens.base.progress import progress
from skill_lens.prompting.prompts import PromptedModel, PromptError, SoftPrompt
from skill_lens.prompting.tuning import TuneConfig, tune

__all__ = ["Matrix", "SpearmanMatrix", "TransferMatrix", "OverlapMatrix", "Overlap", "Table", "TokenTable",
           "specificity_matrix", "cross_task_suppression", "transferability", "activation_overlap",
           "overlap_matrix", "indicator_correlation", "origin_table", "label_word_independence",
           "word_selectivity", "top_activating_tokens", "AnalysisError", "Specificity", "specificity_with_ceiling",
           "split_halves", "halves_task", "half_scores", "restrict_scores", "top_union"]


class AnalysisError(ValueError):
    """The inputs of an analysis do not fit together."""


def _plain(x):
    """Tensors, floats (NaN -> None), dataclasses and containers -> JSON-able values."""
    if isinstance(x, Tensor):
        return _plain(x.tolist())
    if isinstance(x, float):
        return None if math.isnan(x) else x
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


class _Result:
    def to_dict(self) -> dict:
        """Every field as plain JSON-able values (tensors as lists, NaN as ``None``)."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass
class Matrix(_Result):
    """A labelled ``[rows, cols]`` matrix (rows: source, columns: target).

    >>> m = Matrix(["a", "b"], ["a", "b"], torch.eye(2), "demo")
    >>> float(m.to_pandas().loc["a", "b"]), m.to_dict()["values"]
    (0.0, [[1.0, 0.0], [0.0, 1.0]])
    """

    rows: list[str]
    cols: list[str]
    values: Float[Tensor, "rows cols"]
    kind: str = ""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.values.double().numpy(), index=list(self.rows), columns=list(self.cols))

    def __array__(self, dtype=None, copy=None):
        return self.values.double().numpy().astype(dtype or "float64")

    def off_diagonal(self) -> dict[tuple[str, str], float]:
        """``{(row, col): value}`` for ``row != col``.

        >>> Matrix(["a", "b"], ["a", "b"], torch.tensor([[1., 2.], [3., 4.]])).off_diagonal()
        {('a', 'b'): 2.0, ('b', 'a'): 3.0}
        """
        return {(r, c): float(self.values[i, j]) for i, r in enumerate(self.rows)
                for j, c in enumerate(self.cols) if r != c}


# ------------------------------------------------------------------------------------------ specificity
@dataclass
class SpearmanMatrix(Matrix):
    """Spearman correlations between tasks' neuron rankings, with type-level means.

    ``values[i, j]`` is the mean over seed pairs; the diagonal is the mean correlation between
    different seeds of a task (1.0 when it has one). ``within_type``/``cross_type`` average the
    off-diagonal entries whose tasks share/do not share a type (``None`` when there are none).
    """

    types: dict[str, str] | None = None
    within_type: float | None = None
    cross_type: float | None = None
    n_seeds: dict[str, int] = field(default_factory=dict)


def specificity_matrix(scores: Mapping[str, Tensor | Sequence[Tensor]],
                       types: Mapping[str, str] | None = None) -> SpearmanMatrix:
    """Spearman rank correlation of per-neuron scores (``ProbeResult.scores()``, ``[L, d_mlp]``).

    ``scores[name]`` is one tensor or a list (one per seed). With ``types`` (``name -> type``) the
    result also holds the mean within-type and cross-type correlation (Wang et al.: skill neurons
    of tasks of one type correlate more).

    >>> a = torch.tensor([[0.9, 0.5, 0.6, 0.7]]); b = torch.tensor([[0.8, 0.55, 0.6, 0.75]])
    >>> m = specificity_matrix({"rt": [a, b], "tw": b, "eth": -a}, {"rt": "s", "tw": "s", "eth": "e"})
    >>> round(m.within_type, 2), round(m.cross_type, 2), m.values[0, 0].item()
    (1.0, -1.0, 1.0)
    """
    if not scores:
        raise AnalysisError("specificity_matrix needs at least one task's scores")
    runs = {n: [torch.as_tensor(s).flatten().double() for s in (v if isinstance(v, (list, tuple)) else [v])]
            for n, v in scores.items()}
    shapes = {n: [tuple(torch.as_tensor(s).shape) for s in (v if isinstance(v, (list, tuple)) else [v])]
              for n, v in scores.items()}
    if len({s for v in shapes.values() for s in v}) != 1:
        raise AnalysisError(f"scores have different shapes {shapes}; compare probes of one model ([n_layers, d_mlp]).")
    if types is not None and (missing := [n for n in runs if n not in types]):
        raise AnalysisError(f"types has no entry for {missing}; give every task a type.")
    names = list(runs)
    vals = torch.empty(len(names), len(names), dtype=torch.float64)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if j < i:
                vals[i, j] = vals[j, i]
                continue
            pairs = (itertools.combinations(runs[a], 2) if a == b else itertools.product(runs[a], runs[b]))
            rhos = [float(spearman(x, y)) for x, y in pairs]
            vals[i, j] = sum(rhos) / len(rhos) if rhos else 1.0
    within, cross = _type_means(names, vals, types)
    return SpearmanMatrix(names, names, vals, "spearman", dict(types) if types else None, within, cross,
                          {n: len(v) for n, v in runs.items()})


def _type_means(names, vals, types) -> tuple[float | None, float | None]:
    if types is None:
        return None, None
    same, diff = [], []
    for i, j in itertools.combinations(range(len(names)), 2):
        (same if types[names[i]] == types[names[j]] else diff).append(float(vals[i, j]))
    return (sum(same) / len(same) if same else None), (sum(diff) / len(diff) if diff else None)


# ------------------------------------------------------------------ specificity against its noise ceiling
def split_halves(split, seed: int = 0):
    """Two disjoint halves of a :class:`~skill_lens.data.tasks.Split`, stratified by label (each label's examples
    shuffled with ``seed`` and dealt alternately), each in the split's order: independent probe data.

    >>> from skill_lens.model.tiny import tiny_task
    >>> a, b = split_halves(tiny_task().dev)
    >>> len(a), len(b), sum(a.labels), set(a.texts) & set(b.texts)
    (16, 16, 8, set())
    """
    import random

    rng = random.Random(f"split_halves:{seed}")  # a str seed: the same in every process
    first, second = [], []
    for y in sorted(set(split.labels)):
        idx = [i for i, label in enumerate(split.labels) if label == y]
        rng.shuffle(idx)
        first += idx[0::2]
        second += idx[1::2]
    if not first or not second:
        raise AnalysisError(f"a split of {len(split)} examples has no two halves; probe on at least 2 examples.")
    return split.subset(sorted(first)), split.subset(sorted(second))


def halves_task(task, split: str = "test", seed: int = 0):
    """``task`` with its ``split`` halved (:func:`split_halves`) into ``dev`` (first half) and ``test`` (second):
    one ``probe(pm, halves_task(task), splits=("dev", "test"))`` measures every neuron's predictivity on two
    independent halves from one train baseline (:func:`half_scores`). The prompt is tuned on the original dev.

    >>> from skill_lens.model.tiny import tiny_task
    >>> t = halves_task(tiny_task())
    >>> len(t.dev), len(t.test), len(t.train)
    (16, 16, 64)
    """
    first, second = split_halves(getattr(task, split), seed)
    return dataclasses.replace(task, dev=first, test=second)


def half_scores(result, aggregate: str = "max") -> tuple[Tensor, Tensor, Tensor]:
    """Per-neuron scores ``[L, d_mlp]`` of a probe on :func:`halves_task`: on each half, and on both together
    (the halves' agreement counts pooled, as one probe of the whole split would give).

    >>> from skill_lens.probing.probe import ProbeResult
    >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.75, 0.5]]]), torch.tensor([[[0.25, 1.0]]]),
    ...                 sizes={"dev": 4, "test": 4})
    >>> [s.tolist() for s in half_scores(r)]
    [[[0.75, 0.5]], [[0.75, 1.0]], [[0.5, 0.75]]]
    """
    from skill_lens.probing.predictivity import aggregate_positions, predictivity

    if result.dev_acc is None or result.test_acc is None or not {"dev", "test"} <= set(result.sizes):
        raise AnalysisError("half_scores needs a probe of both halves: probe(pm, halves_task(task), "
                            "splits=('dev', 'test')).")
    n_a, n_b = result.sizes["dev"], result.sizes["test"]
    both = (result.dev_acc.double() * n_a + result.test_acc.double() * n_b) / (n_a + n_b)
    return (result.scores("dev", aggregate), result.scores("test", aggregate),
            aggregate_positions(predictivity(both.float()), aggregate))


def restrict_scores(scores: Mapping[str, Tensor | Sequence[Tensor]], layers: Sequence[int] | None = None,
                    mask: Tensor | None = None) -> dict[str, list[Tensor]]:
    """Every score tensor ``[L, d_mlp]`` cut to ``layers`` and, with ``mask`` (``[L, d_mlp]``), to its neurons
    (flattened): the input of :func:`specificity_matrix` on part of the model.

    >>> s = {"a": torch.arange(6.0).reshape(3, 2)}
    >>> restrict_scores(s, layers=[1, 2])["a"][0].tolist(), restrict_scores(s, mask=torch.eye(3, 2).bool())["a"][0].tolist()
    ([[2.0, 3.0], [4.0, 5.0]], [0.0, 3.0])
    """
    if mask is not None and layers is not None:
        raise AnalysisError("restrict by layers or by a mask, not both (fold the layers into the mask).")
    out = {}
    for name, v in scores.items():
        cut = []
        for s in (v if isinstance(v, (list, tuple)) else [v]):
            s = torch.as_tensor(s)
            s = s[mask] if mask is not None else s
            cut.append(s[list(layers)] if layers is not None else s)
        out[name] = cut
    return out


def top_union(scores: Mapping[str, Tensor | Sequence[Tensor]], top: float | int = 0.01) -> Tensor:
    """The union over tasks of each task's top ``top`` neurons, by its scores' mean over measurements.

    >>> top_union({"a": torch.tensor([[0.9, 0.1, 0.2]]), "b": [torch.tensor([[0.1, 0.2, 0.9]])] * 2}, 1).tolist()
    [[True, False, True]]
    """
    from skill_lens.probing.predictivity import select_top

    masks = [select_top(torch.stack([torch.as_tensor(s).double() for s in (v if isinstance(v, (list, tuple))
                                                                            else [v])]).mean(0), top)
             for v in scores.values()]
    return torch.stack(masks).any(0)


@dataclass
class Specificity(_Result):
    """Task specificity read against its noise ceiling (:func:`specificity_with_ceiling`): for all neurons, the
    upper half of the layers and the union of the tasks' top neurons, the mean same-task correlation between
    independent measurements (``same``: the ceiling), within-type and cross-type means, and the exact
    permutation p-value of ``within - cross`` over reassignments of the type labels (``type_p``)."""

    matrices: dict[str, SpearmanMatrix]
    same: dict[str, float | None]
    within: dict[str, float | None]
    cross: dict[str, float | None]
    type_p: dict[str, float | None]

    def to_dict(self) -> dict:
        """Every field as plain JSON-able values, the matrices as :meth:`Matrix.to_dict`."""
        return {**super().to_dict(), "matrices": {k: m.to_dict() for k, m in self.matrices.items()}}

    def result_line(self) -> str:
        """``same_task=... within_type=... cross_type=... upper_same=... ... top1_cross=...`` (``nan``: undefined).

        >>> s = Specificity({}, *({v: 0.5 for v in ("all", "upper", "top")} for _ in range(3)), {})
        >>> s.result_line()[:50]
        'same_task=0.500 within_type=0.500 cross_type=0.500'
        """
        f = lambda x: "nan" if x is None else f"{x:.3f}"  # noqa: E731
        keys = {"all": ("same_task", "within_type", "cross_type"), "upper": ("upper_same", "upper_within",
                "upper_cross"), "top": ("top1_same", "top1_within", "top1_cross")}
        return " ".join(f"{k}={f(d[view])}" for view, ks in keys.items()
                        for k, d in zip(ks, (self.same, self.within, self.cross)))


def specificity_with_ceiling(scores: Mapping[str, Sequence[Tensor]], types: Mapping[str, str],
                             top: float | int = 0.01) -> Specificity:
    """:func:`specificity_matrix` of tasks measured at least twice independently (two halves of the probe data,
    or two seeds' prompts; ``scores[name]`` ``[L, d_mlp]`` each), so that the diagonal, the same task's
    correlation with itself across measurements, is the ceiling that within- and cross-type correlations
    are read against. Also restricted to the upper half of the layers and to :func:`top_union` of ``top``.

    >>> g = torch.Generator().manual_seed(0)
    >>> shared = {t: torch.rand(4, 50, generator=g) for t in "se"}
    >>> noisy = lambda x: x + 0.3 * torch.rand(4, 50, generator=g)
    >>> s = specificity_with_ceiling({f"{t}{i}": [noisy(shared[t]), noisy(shared[t])] for t in "se" for i in (1, 2)},
    ...                              {"s1": "s", "s2": "s", "e1": "e", "e2": "e"}, top=0.1)
    >>> s.same["all"] > 0.8, s.within["all"] > 0.8, abs(s.cross["all"]) < 0.2, s.type_p["all"]
    (True, True, True, 0.3333333333333333)
    """
    if few := [n for n, v in scores.items() if not isinstance(v, (list, tuple)) or len(v) < 2]:
        raise AnalysisError(f"{few} need two or more independent measurements (halves or seeds) for a ceiling.")
    L = torch.as_tensor(next(iter(scores.values()))[0]).shape[0]
    views = {"all": scores, "upper": restrict_scores(scores, layers=range(L // 2, L)),
             "top": restrict_scores(scores, mask=top_union(scores, top))}
    matrices = {k: specificity_matrix(v, types) for k, v in views.items()}
    same = {k: float(m.values.diagonal().mean()) for k, m in matrices.items()}
    return Specificity(matrices, same, {k: m.within_type for k, m in matrices.items()},
                       {k: m.cross_type for k, m in matrices.items()},
                       {k: _type_permutation_p(m.rows, m.values, types) for k, m in matrices.items()})


def _type_permutation_p(names, vals, types) -> float | None:
    """The share of distinct reassignments of the type labels to tasks whose ``within - cross`` reaches the
    observed one (exact; the observed labelling counts)."""
    within, cross = _type_means(names, vals, types)
    if within is None or cross is None:
        return None
    labels, hits, total = [types[n] for n in names], 0, 0
    for perm in set(itertools.permutations(labels)):
        w, c = _type_means(names, vals, dict(zip(names, perm)))
        if w is None or c is None:
            continue
        total += 1
        hits += (w - c) >= (within - cross) - 1e-12
    return hits / total

def cross_task_suppression(pms: Mapping[str, PromptedModel], tasks: Mapping, scores: Mapping[str, Tensor],
                           top: float = 0.03, method: str = "gaussian", std: float = 1.0,
                           baselines: Mapping[str, Tensor] | None = None, split: str = "dev", seed: int = 0,
                           batch_size: int = 32) -> "TransferMatrix":
    """Perturb task A's top ``top`` skill neurons (by ``scores[A]``) and measure the accuracy drop
    on task B with B's own prompted model (:func:`skill_lens.intervening.curves.suppression_curve`, cross-task form).

    Perturbation at B's prompt positions (the prediction position for a prompt-less model) by
    ``method`` (``"gaussian"`` noise of ``std``, ``"zero"``, or ``"mean"`` with ``baselines[B]``).
    ``values[a, b] = acc_b(clean) - acc_b(A's neurons perturbed)``; ``accuracy`` holds the perturbed
    accuracies, ``own_accuracy`` the clean ones. Task-specific skill neurons give a dominant diagonal.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> m = cross_task_suppression({"t": pm}, {"t": task}, {"t": torch.rand(2, 64)}, top=0.5, std=5.0)
    >>> m.values.shape, m.kind
    (torch.Size([1, 1]), 'accuracy drop')
    """
    from skill_lens.intervening.curves import suppression_curve

    names = _check_names(pms, tasks, "cross_task_suppression")
    if missing := [n for n in names if n not in scores]:
        raise AnalysisError(f"no neuron scores for {missing}; pass scores[name] (ProbeResult.scores()) for every task.")
    if method == "mean" and (baselines is None or any(n not in baselines for n in names)):
        raise AnalysisError("method 'mean' needs baselines[name] (ProbeResult.baseline) for every task.")
    clean = {b: evaluate(pms[b], getattr(tasks[b], split), batch_size)["accuracy"] for b in names}
    hit = torch.empty(len(names), len(names), dtype=torch.float64)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            curve = suppression_curve(pms[b], getattr(tasks[b], split), scores[a], fractions=[top], method=method,
                                      controls=0, std=std, baseline=baselines[b] if baselines else None,
                                      positions="predict" if pms[b].prompt is None else "prompt", seed=seed,
                                      batch_size=batch_size)
            hit[i, j] = curve.summary()[0]["skill_accuracy"]
    drop = torch.tensor([clean[b] for b in names], dtype=torch.float64)[None, :] - hit
    return TransferMatrix(names, names, drop, "accuracy drop", hit, clean)


# ------------------------------------------------------------------------------------------ transfer
@dataclass
class TransferMatrix(Matrix):
    """``values``: a relative or difference measure; ``accuracy[s, t]``: raw accuracy of source ``s``
    on target ``t``; ``own_accuracy[t]``: the target's own (clean) accuracy."""

    accuracy: Tensor | None = None
    own_accuracy: dict[str, float] = field(default_factory=dict)


def _check_names(pms, tasks, what: str) -> list[str]:
    names = list(pms)
    if not names:
        raise AnalysisError(f"{what} needs at least one task")
    if missing := [n for n in names if n not in tasks]:
        raise AnalysisError(f"no task given for {missing}; pass tasks[name] for every prompt.")
    counts = {n: tasks[n].n_labels for n in names}
    if len(set(counts.values())) > 1:
        raise AnalysisError(f"{what} needs tasks with the same number of labels, got {counts}; "
                            "make binary subtasks first (task.binarize(...), CLI --binary).")
    return names


def _as_list(v) -> list[PromptedModel]:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def transferability(prompts: Mapping[str, PromptedModel | Sequence[PromptedModel]], tasks: Mapping,
                    split: str = "dev", batch_size: int = 32) -> TransferMatrix:
    """Zero-shot prompt transfer: each source prompt on each target's ``split`` with the target's
    verbalizer and template, as accuracy relative to the target's own prompt(s).

    ``prompts[name]`` is the task's ``PromptedModel``, or a list of them (seeds): accuracies are
    averaged over them. ``values[s, t] = mean acc(s's prompts on t) / mean acc(t's prompts on t)``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> transferability({"a": pm, "b": pm}, {"a": task, "b": task}).values.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    names = _check_names(prompts, tasks, "transferability")
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
class Overlap(_Result):
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
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> overlap_matrix({"a": pm, "b": pm}, {"a": task, "b": task}).values.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """
    names = _check_names(pms, tasks, "overlap_matrix")
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


# ------------------------------------------------------------------------------------------ origin
@dataclass
class Table(_Result):
    """Rows of plain values (``list[dict]``), e.g. the origin table."""

    rows: list[dict]
    kind: str = ""

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame(self.rows)


def _summary(scores: Tensor, top_fraction: float) -> tuple[float, float]:
    flat = scores.flatten().double()
    k = max(1, round(top_fraction * flat.numel()))
    return float(flat.max()), float(flat.topk(k).values.mean())


def _prompt_of(tuned_prompt, old: tuple) -> SoftPrompt:
    """The tuned prompt of ``origin_table(model, task, prompt)``, or of the older ``(model, task, length, prompt)``."""
    if isinstance(tuned_prompt, int) and len(old) == 1 and isinstance(old[0], SoftPrompt):
        if old[0].length != tuned_prompt:
            raise PromptError(f"the tuned prompt has length {old[0].length} but random prompts would have "
                              f"{tuned_prompt}; compare prompts of the same length: origin_table(model, task, "
                              "tuned_prompt) takes the length from the prompt.")
        return old[0]
    if old or not isinstance(tuned_prompt, SoftPrompt):
        raise AnalysisError(f"origin_table(model, task, tuned_prompt, *, seeds=..., top_fraction=..., batch_size=...) "
                            f"takes one SoftPrompt (its length is the random prompts'); got "
                            f"{type(tuned_prompt).__name__} and {len(old)} more positional arguments.")
    return tuned_prompt


def origin_table(model, task, tuned_prompt: SoftPrompt, *old, seeds: Sequence[int] = (0,),
                 top_fraction: float = 0.01, batch_size: int = 32) -> Table:
    """Where skill neurons come from: top-1 and top-``top_fraction`` mean predictivity (dev) found with

    * ``tuned prompt`` -- ``tuned_prompt`` (its length ``P`` is the random prompts' too);
    * ``random prompt`` -- untuned ``SoftPrompt.init(model, P, seed, how="normal")``, per seed;
    * ``hard prompt`` -- the task's text template, probed at the prediction position;
    * ``random model`` -- a random prompt on a randomly initialised copy of the architecture, per seed.

    Rows with several seeds report the mean (and ``std``). High predictivity with random prompts and
    the hard prompt but not in the random model says the skill comes from pre-training.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> t = origin_table(model, task, SoftPrompt.init(model, 2), seeds=[0])
    >>> [r["condition"] for r in t.rows]
    ['tuned prompt', 'random prompt', 'hard prompt', 'random model']

    The older call ``origin_table(model, task, P, tuned_prompt)`` still works when ``P`` is the prompt's length.
    """
    tuned_prompt = _prompt_of(tuned_prompt, old)
    prompt_length = tuned_prompt.length
    if not seeds:
        raise AnalysisError("origin_table needs at least one seed for the random conditions")
    run = lambda pm: probe(pm, task, batch_size=batch_size, splits=("dev",)).scores()  # noqa: E731
    conditions = {
        "tuned prompt": [run(prompted(model, task, tuned_prompt))],
        "random prompt": [run(prompted(model, task, SoftPrompt.init(model, prompt_length, s, how="normal")))
                          for s in seeds],
        "hard prompt": [run(hard_prompt_model(model, task))],
        "random model": [],
    }
    for s in seeds:
        rand = random_init_copy(model, seed=s)
        conditions["random model"].append(run(prompted(rand, task, SoftPrompt.init(rand, prompt_length, s, "normal"))))
    pct = f"top{100 * top_fraction:g}%"
    rows = []
    for name, scores in conditions.items():
        vals = torch.tensor([_summary(s, top_fraction) for s in scores], dtype=torch.float64)
        std = vals.std(0) if len(vals) > 1 else torch.zeros(2)
        rows.append({"condition": name, "top1": float(vals[:, 0].mean()), pct: float(vals[:, 1].mean()),
                     "top1_std": float(std[0]), f"{pct}_std": float(std[1]), "n": len(scores)})
    return Table(rows, "origin")


# ------------------------------------------------------------------------------------------ label words
@dataclass
class LabelWordResult(SpearmanMatrix):
    """Spearman between the rankings found with each label-word choice; ``mean_pairwise`` and accuracies."""

    mean_pairwise: float | None = None
    dev_accuracy: dict[str, float] = field(default_factory=dict)


def label_word_independence(model, task, word_sets: Sequence[Sequence[str]], config: TuneConfig | None = None,
                            batch_size: int = 32) -> LabelWordResult:
    """Tune a prompt per label-word choice (``task.with_label_words``), probe each, and correlate the
    neuron rankings (Wang et al.: mean pairwise Spearman 0.87: skill neurons do not depend on the words).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> r = label_word_independence(tiny_model(), tiny_task(), [["bad", "good"], ["awful", "great"]],
    ...                             TuneConfig(prompt_length=2, steps=2, eval_every=2))
    >>> r.rows, -1.0 <= r.mean_pairwise <= 1.0
    (['bad/good', 'awful/great'], True)
    """
    if len(word_sets) < 2:
        raise AnalysisError(f"label_word_independence needs at least two label-word choices, got {len(word_sets)}")
    scores, acc = {}, {}
    for words in word_sets:
        name = "/".join(words)
        if name in scores:
            raise AnalysisError(f"label words {list(words)} are given twice; pass distinct choices.")
        t = task.with_label_words(list(words))
        result = tune(model, t, config)
        scores[name] = probe(prompted(model, t, result.prompt), t, batch_size=batch_size, splits=("dev",)).scores()
        acc[name] = result.dev_accuracy
    m = specificity_matrix(scores)
    off = [float(m.values[i, j]) for i, j in itertools.combinations(range(len(scores)), 2)]
    return LabelWordResult(m.rows, m.cols, m.values, "spearman (label words)", None, None, None, m.n_seeds,
                           sum(off) / len(off), acc)


# ------------------------------------------------------------------------------------------ tokens
@dataclass
class TokenTable(_Result):
    """The ``k`` tokens scoring highest (``top``) and lowest (``bottom``) for one neuron."""

    layer: int
    neuron: int
    measure: str
    top: list[dict]
    bottom: list[dict]

    def to_pandas(self):
        import pandas as pd

        rows = [{"end": end, "rank": r, **d} for end in ("top", "bottom") for r, d in enumerate(getattr(self, end))]
        return pd.DataFrame(rows)


# input projection per family: (parameter-name pattern with {l}, rows are neurons?)
def _input_weight(model, layer: int, projection: str) -> Tensor:
    """``[d_mlp, d_model]``: each neuron's input weight vector (read from the model: model.anatomy)."""
    info = describe(model)
    if not 0 <= layer < info.n_layers:
        raise AnalysisError(f"layer {layer} is not in 0..{info.n_layers - 1} of {info.name}")
    role = {"auto": "auto", "gate": "gate", "up": "in", "fc": "in", "in": "in"}.get(projection)
    if projection == "fc" and info.layers[layer].gated:  # a gated FFN has two input projections
        raise AnalysisError(f"found no 'fc' FFN input projection for layer {layer} of {info.name}: it is gated; "
                            "use 'gate' or 'up'")
    if role is None:
        raise AnalysisError(f"projection is 'auto', 'gate' or 'up' (gated MLPs) or 'fc', not {projection!r}")
    try:
        return input_weights(model, layer, role)
    except ValueError as e:
        raise AnalysisError(f"found no {projection!r} FFN input projection for layer {layer} of {info.name}: {e}")


def word_selectivity(model, layer: int, neuron: int, k: int = 10, projection: str = "auto") -> TokenTable:
    """Vocabulary tokens whose input embeddings have the highest / lowest cosine similarity with the
    neuron's input weight vector (its row of the FFN's first projection).

    ``projection="auto"``: for gated MLPs (Llama, SmolLM2) the *gate* projection, whose SiLU decides
    whether the neuron fires (``"up"`` gives the linear branch); GPT-2 ``c_fc`` (Conv1D, a column),
    RoBERTa ``intermediate.dense``, T5 ``wi`` (``wi_0`` for gated T5). The residual stream is
    normalised before the FFN, so this reads the embedding direction, not its scale.

    >>> from skill_lens.model.tiny import tiny_model, VOCAB
    >>> model = tiny_model()
    >>> w = model.original_model.model.layers[0].mlp.gate_proj.weight
    >>> with torch.no_grad(): w[5] = model.original_model.get_input_embeddings().weight[VOCAB.index("superb")]
    >>> word_selectivity(model, 0, 5, k=1).top[0]["token"]
    'superb'
    """
    info = describe(model)
    if not 0 <= neuron < info.d_mlp:
        raise AnalysisError(f"neuron {neuron} is not in 0..{info.d_mlp - 1} of {info.name}")
    w = _input_weight(model, layer, projection)[neuron]
    emb = model.original_model.get_input_embeddings().weight.detach().float()
    sims = torch.nn.functional.cosine_similarity(emb, w[None, :], dim=1)
    k = min(k, len(sims))
    tok = model.tokenizer

    def rows(idx):
        return [{"token": tok.convert_ids_to_tokens(int(i)), "token_id": int(i), "cosine": float(sims[i])} for i in idx]

    return TokenTable(layer, neuron, f"cosine({projection} weight, input embedding)",
                      rows(sims.topk(k).indices), rows((-sims).topk(k).indices))


def top_activating_tokens(pm: PromptedModel, split, layer: int, neuron: int, k: int = 10, min_count: int = 1,
                          batch_size: int = 32) -> TokenTable:
    """Input tokens with the highest / lowest mean activation of one neuron over ``split``
    (every input-token position, not the prompt; streamed as per-token-id float64 sums and counts).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> t = top_activating_tokens(prompted(model, task, None), task.dev, 1, 3, k=2)
    >>> len(t.top), sorted(t.top[0])
    (2, ['count', 'mean', 'token', 'token_id'])
    """
    info = describe(pm.model)
    if not (0 <= layer < info.n_layers and 0 <= neuron < info.widths[layer]):
        raise AnalysisError(f"neuron ({layer}, {neuron}) is not in {info.n_layers} layers x {info.d_mlp}")
    (seg, local, _), = by_segment(info.layers[layer].segments, torch.tensor([neuron]))
    neuron = int(local)
    if split is None or len(split) == 0:
        raise AnalysisError("the split is empty; pass a split with examples (e.g. task.dev).")
    V = len(pm.model.tokenizer)
    sums, counts = torch.zeros(V, dtype=torch.float64), torch.zeros(V, dtype=torch.long)
    for start in progress(range(0, len(split), batch_size), desc="token activations"):
        batch = pm.encode_split(split, slice(start, start + batch_size))

        def hook(act, hook, batch=batch):
            ids = batch.input_ids[batch.input_mask].cpu()  # float64 sums on the CPU
            vals = act[..., neuron][batch.input_mask].to("cpu", torch.float64)
            sums.index_add_(0, ids, vals)
            counts.index_add_(0, ids, torch.ones_like(ids))

        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=[(seg.hook, hook)])
    seen = (counts >= max(1, min_count)).nonzero()[:, 0]
    if len(seen) == 0:
        raise AnalysisError(f"no input token occurs at least {min_count} times; lower min_count.")
    means = sums[seen] / counts[seen]
    k = min(k, len(seen))
    tok = pm.model.tokenizer

    def rows(order):
        return [{"token": tok.convert_ids_to_tokens(int(seen[i])), "token_id": int(seen[i]),
                 "mean": float(means[i]), "count": int(counts[seen[i]])} for i in order]

    return TokenTable(layer, neuron, "mean activation", rows(means.topk(k).indices), rows((-means).topk(k).indices))
