"""Task specificity (Wang et al. 2022, section 5): are a task's skill neurons its own?

:func:`specificity_matrix` (Spearman of neuron predictivities across tasks and seeds; within- vs cross-type
means), :func:`specificity_with_ceiling` (the same against the same-task replicability between two halves of
the probe data, :func:`halves_task` / :func:`half_scores`, or two seeds; also for the upper layers and the
top neurons), :func:`cross_task_suppression` (noise on task A's skill neurons, accuracy drop on task B).

>>> import torch
>>> m = specificity_matrix({"a": torch.arange(6.).reshape(2, 3), "b": -torch.arange(6.).reshape(2, 3)})
>>> m.values.tolist()
[[1.0, -1.0], [-1.0, 1.0]]
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
from torch import Tensor

from skill_lens.probing.scores import spearman
from skill_lens.prompting.evaluation import evaluate
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.studies.tables import AnalysisError, Result, SpearmanMatrix, TransferMatrix, check_names

__all__ = ["specificity_matrix", "split_halves", "halves_task", "half_scores", "restrict_scores", "top_union",
           "Specificity", "specificity_with_ceiling", "cross_task_suppression"]


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

    >>> from skill_lens.probing.result import ProbeResult
    >>> r = ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.75, 0.5]]]), torch.tensor([[[0.25, 1.0]]]),
    ...                 sizes={"dev": 4, "test": 4})
    >>> [s.tolist() for s in half_scores(r)]
    [[[0.75, 0.5]], [[0.75, 1.0]], [[0.5, 0.75]]]
    """
    from skill_lens.probing.scores import aggregate_positions, predictivity

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
    from skill_lens.probing.scores import select_top

    masks = [select_top(torch.stack([torch.as_tensor(s).double() for s in (v if isinstance(v, (list, tuple))
                                                                            else [v])]).mean(0), top)
             for v in scores.values()]
    return torch.stack(masks).any(0)


@dataclass
class Specificity(Result):
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
    on task B with B's own prompted model (:func:`skill_lens.intervening.suppression.suppression_curve`, cross-task form).

    Perturbation at B's prompt positions (the prediction position for a prompt-less model) by
    ``method`` (``"gaussian"`` noise of ``std``, ``"zero"``, or ``"mean"`` with ``baselines[B]``).
    ``values[a, b] = acc_b(clean) - acc_b(A's neurons perturbed)``; ``accuracy`` holds the perturbed
    accuracies, ``own_accuracy`` the clean ones. Task-specific skill neurons give a dominant diagonal.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task

    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> m = cross_task_suppression({"t": pm}, {"t": task}, {"t": torch.rand(2, 64)}, top=0.5, std=5.0)
    >>> m.values.shape, m.kind
    (torch.Size([1, 1]), 'accuracy drop')
    """
    from skill_lens.intervening.suppression import suppression_curve

    names = check_names(pms, tasks, "cross_task_suppression")
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
