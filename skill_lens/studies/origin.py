"""Where skill neurons come from, and whether they depend on the label words.

:func:`origin_table` (tuned vs random prompts vs a hard prompt vs a randomly initialised model: high
predictivity without tuning, but not in the random model, says the skill comes from pre-training) and
:func:`label_word_independence` (prompts tuned with other label words find the same neurons).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

from skill_lens.model.loading import random_init_copy
from skill_lens.probing.probe import probe
from skill_lens.prompting.evaluation import hard_prompt_model, prompted
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.prompting.tuning import TuneConfig, tune
from skill_lens.studies.tables import AnalysisError, SpearmanMatrix, Table
from skill_lens.studies.specificity import specificity_matrix

__all__ = ["origin_table", "LabelWordResult", "label_word_independence"]


def _summary(scores: Tensor, top_fraction: float) -> tuple[float, float]:
    flat = scores.flatten().double()
    k = max(1, round(top_fraction * flat.numel()))
    return float(flat.max()), float(flat.topk(k).values.mean())


def origin_table(model, task, tuned_prompt: SoftPrompt, *, seeds: Sequence[int] = (0,),
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
    """
    if not isinstance(tuned_prompt, SoftPrompt):
        raise AnalysisError(f"origin_table(model, task, tuned_prompt, *, seeds=..., top_fraction=..., batch_size=...) "
                            f"takes a SoftPrompt (its length is the random prompts'); got {type(tuned_prompt).__name__}")
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
