"""Evaluation: a prompted model's label logits, accuracy and logit difference on a split.

Everything here reads a model and never trains it: :func:`predict` (label logits batch by batch),
:func:`evaluate` (accuracy and mean gold-minus-best-other logit difference), its sharded form
:func:`evaluate_distributed` (each rank of a ``torch.distributed`` job evaluates its
:func:`~skill_lens.data.distributed.shard`, the counts are all-reduced), the checks they make before any
model runs (:func:`check_split`, :func:`check_labels`, :func:`check_lengths`), and the factories of
the models they evaluate (:func:`prompted` for a soft prompt, :func:`hard_prompt_model` for the
zero-shot text-template reference).

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> model, task = tiny_model(), tiny_task()
>>> evaluate(hard_prompt_model(model, task), task.dev)["n"]
32
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from skill_lens.data.batching import in_order, length_batches
from skill_lens.prompting.input_cache import InputCache
from skill_lens.base.progress import progress
from skill_lens.prompting.batches import Batch
from skill_lens.prompting.prompted_model import PromptedModel
from skill_lens.prompting.prompts import Hook, PromptError, SoftPrompt, Verbalizer
from skill_lens.base.stats import wilson_interval
from skill_lens.data.distributed import DistributedError, batch_range, rank_world, shard, sum_across_ranks

__all__ = ["prompted", "evaluate", "hard_prompt_model", "predict", "evaluate_distributed", "check_split", "check_labels",
           "check_lengths", "score_logits"]


def prompted(model, task, prompt: SoftPrompt | None, max_length: int | None = None) -> PromptedModel:
    """A :class:`PromptedModel` for ``task`` (its label words as the verbalizer).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model = tiny_model()
    >>> prompted(model, tiny_task(), SoftPrompt.init(model, 3)).prompt_length
    3
    """
    return PromptedModel(model, prompt, Verbalizer.from_words(model, task.label_words), max_length=max_length)


def hard_prompt_model(model, task, max_length: int | None = None) -> PromptedModel:
    """The zero-shot reference: the task's text template and the same verbalizer, no soft prompt.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> hard_prompt_model(tiny_model(), tiny_task()).template
    'review : {text} \\n sentiment :'
    """
    return PromptedModel(model, None, Verbalizer.from_words(model, task.label_words), template=task.hard_prompt,
                         pair_template=task.hard_prompt, max_length=max_length)


def check_split(split, name: str, need_two_classes: bool = False) -> None:
    """``split`` must hold examples (and, with ``need_two_classes``, two labels at least): else a PromptError.

    >>> from skill_lens.data.tasks import Split
    >>> check_split(Split(["a", "b"], [0, 1]), "train", need_two_classes=True)
    >>> check_split(Split(["a"], [1]), "train", need_two_classes=True)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.prompting.prompts.PromptError: the train split has only one class ([1]); ...
    """
    if split is None or len(split) == 0:
        raise PromptError(f"the {name} split is empty; choose a larger --{name}-size or another task.")
    if need_two_classes and len(set(split.labels)) < 2:
        raise PromptError(
            f"the {name} split has only one class ({sorted(set(split.labels))}); a classifier needs at least two. "
            f"Choose a larger --{name}-size or check the labels."
        )


def check_labels(pm: PromptedModel, split) -> None:
    """Every label of ``split`` must name one of ``pm``'s label words (before any model runs).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.data.tasks import Split
    >>> check_labels(hard_prompt_model(tiny_model(), tiny_task()), Split(["a"], [2]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.prompting.prompts.PromptError: example 0 has label 2, but the verbalizer has 2 label words ['bad', 'good'] ...
    """
    words = pm.verbalizer.words
    bad = next(((i, y) for i, y in enumerate(split.labels) if not 0 <= y < len(words)), None)
    if bad is not None:
        raise PromptError(f"example {bad[0]} has label {bad[1]}, but the verbalizer has {len(words)} label words "
                          f"{list(words)} (labels 0..{len(words) - 1}); check the split's labels and the task's "
                          "label words.")


def check_lengths(pm: PromptedModel, split, name: str, chunk: int = 256) -> None:
    """Every text of ``split`` fits ``pm``'s context (or is truncated to ``pm.max_length``): else a PromptError
    naming the split, the example, its token count and the fix. Tokenizes only; no model runs.

    The check is :meth:`PromptedModel.encode`'s own, run on every example once.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.data.tasks import Split
    >>> pm = hard_prompt_model(tiny_model(), tiny_task())
    >>> check_lengths(pm, tiny_task().dev, "dev")
    >>> check_lengths(pm, Split(["good", "good " * 300], [1, 1]), "dev")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.prompting.prompts.PromptError: example 1 of the dev split has 304 tokens (with the template), more than ...
    """
    if len(split) == 0:
        return
    pm.encode([""], None if split.texts_b is None else [""])  # no room for any text: encode's own error
    for start in range(0, len(split), chunk):
        part = split.subset(range(start, min(start + chunk, len(split))))
        try:
            pm.encode(part.texts, part.texts_b)
        except PromptError as error:
            for i in range(len(part)):
                one = part.subset([i])
                try:
                    pm.encode(one.texts, one.texts_b)
                except PromptError:
                    raise _too_long(pm, one, f"example {start + i} of the {name} split", error) from None
            raise


def _too_long(pm: PromptedModel, one, where: str, error: PromptError) -> PromptError:
    b = one.texts_b[0] if one.texts_b is not None else None
    text = pm.template.format(text=one.texts[0]) if b is None else pm.pair_template.format(text=one.texts[0], text_b=b)
    n = len(pm.model.tokenizer.encode(text, add_special_tokens=False))
    return PromptError(f"{where} has {n} tokens (with the template), more than fit in {pm.info.name}'s context "
                       f"({pm.info.n_ctx} tokens) with a {pm.prompt_length}-token prompt; truncate inputs with "
                       "--max-length N (max_length=N), or shorten or drop that text.")


def score_logits(logits: Float[Tensor, "batch n_labels"], labels) -> tuple[Bool[Tensor, "batch"],
                                                                           Float[Tensor, "batch"]]:
    """Per example: correct or not, and the gold label's logit minus the best other one.

    >>> score_logits(torch.tensor([[0.0, 2.0], [1.0, 0.5]]), [1, 1])
    (tensor([ True, False]), tensor([ 2.0000, -0.5000]))
    """
    if not torch.isfinite(logits).all():
        rows = (~torch.isfinite(logits).all(1)).nonzero()[:, 0].tolist()
        raise PromptError(f"non-finite label logits (NaN or inf) for {len(rows)} of {len(logits)} examples, first "
                          f"example {rows[0]}; no accuracy can be read from them. Likely a hook writing NaN/inf "
                          "(check fwd_hooks and hooks left on the model), a NaN prompt or a float16 overflow.")
    labels = torch.as_tensor(labels, device=logits.device)
    gold = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return logits.argmax(1) == labels, gold - other


@torch.no_grad()
def predict(
    pm: PromptedModel, split, batch_size: int = 32, fwd_hooks: Sequence[Hook] = (), desc: str = "eval",
    input_cache: InputCache | None = None, *, sharded: bool = False,
    skipped: Callable[[Batch], None] | None = None,
) -> Float[Tensor, "n n_labels"]:
    """Label logits for every example of ``split``, in the split's order.

    Examples run in length-sorted batches (:func:`skill_lens.data.batching.length_batches`), so a batch
    pads little. With ``input_cache`` (see :mod:`skill_lens.prompting.input_cache`), where ``pm``'s forwards
    can read their inputs from it (:meth:`~skill_lens.prompting.prompted_model.PromptedModel.cache_inputs`),
    the split's inputs are first computed into it and each batch runs only the prompt positions.

    ``sharded=True`` under a ``torch.distributed`` process group: each rank runs a contiguous run of those
    batches (:func:`~skill_lens.data.distributed.batch_range`) and the logits are summed across ranks, so every
    rank returns the whole split's logits, the same bit for bit as one process's. ``skipped(batch)`` is called,
    in order, for each batch before this rank's (a per-batch hook's random stream advances as in one process).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> task = tiny_task()
    >>> predict(hard_prompt_model(tiny_model(), task), task.dev, batch_size=8).shape
    torch.Size([32, 2])
    """
    check_split(split, "evaluation")
    batches = length_batches(pm, split, batch_size)
    rank, world = rank_world() if sharded else (0, 1)
    span = batch_range(len(batches), rank, world)
    mine = batches[span.start : span.stop]
    cache = pm.cache_inputs(split, input_cache, examples=None if world == 1 else [i for b in mine for i in b])
    for idx in batches[: span.start] if skipped is not None else ():
        skipped(pm.encode_split(split, idx))
    out = [pm.label_logits(pm.encode_split(split, idx), fwd_hooks, cache).to("cpu", torch.float32)
           for idx in progress(mine, desc=desc)]  # results on the CPU; None cache: each batch runs whole
    if world == 1:
        return in_order(out, batches)
    full = torch.zeros(len(split), len(pm.verbalizer.token_ids))
    for idx, rows in zip(mine, out):
        full[torch.tensor(idx)] = rows
    return sum_across_ranks(full)  # each row is one rank's, the others' zeros: exact


def evaluate(pm: PromptedModel, split, batch_size: int = 32, fwd_hooks: Sequence[Hook] = (),
             input_cache: InputCache | None = None) -> dict:
    """Accuracy and mean gold-minus-best-other logit difference of ``pm`` on ``split``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> sorted(evaluate(hard_prompt_model(model, task), task.dev))
    ['accuracy', 'accuracy_ci_high', 'accuracy_ci_low', 'logit_diff', 'n']

    ``accuracy_ci_low`` / ``accuracy_ci_high``: the accuracy's Wilson 95% interval
    (:func:`skill_lens.base.stats.wilson_interval`).
    """
    check_split(split, "evaluation")
    check_labels(pm, split)
    correct, diff = score_logits(predict(pm, split, batch_size, fwd_hooks, input_cache=input_cache), split.labels)
    low, high = wilson_interval(int(correct.sum()), len(correct))
    return {"accuracy": correct.float().mean().item(), "logit_diff": diff.mean().item(), "n": len(correct),
            "accuracy_ci_low": low, "accuracy_ci_high": high}


def evaluate_distributed(pm, split, fwd_hooks: Sequence[Hook] = (), batch_size: int = 32) -> dict:
    """:func:`evaluate` over the process group: correct counts and logit-diff sums are summed across ranks.

    Each rank evaluates its :func:`~skill_lens.data.distributed.shard` of ``split``; without a process
    group that is the whole split. Accuracy equals the single-process value exactly; ``logit_diff``
    up to float rounding. For hooks built per batch (suppression curves) pass ``pm.with_hooks(make_hooks)``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> evaluate_distributed(hard_prompt_model(model, task), task.dev)["n"]
    32
    """
    if split is None or len(split) == 0:
        raise DistributedError("the evaluation split is empty; pass a split with examples (e.g. task.dev).")
    rank, world = rank_world()
    part = shard(split, rank, world, batch_size)
    stats = torch.zeros(3, dtype=torch.float64)  # correct, sum of logit differences, n
    check_labels(pm, split)
    if len(part):
        correct, diff = score_logits(predict(pm, part, batch_size, fwd_hooks), part.labels)
        stats += torch.stack([correct.sum().double(), diff.double().sum(),
                              torch.tensor(float(len(part)), dtype=torch.float64)])
    correct, diff, n = sum_across_ranks(stats).tolist()
    return {"accuracy": (torch.tensor(correct, dtype=torch.float32) / int(n)).item(), "logit_diff": diff / n,
            "n": int(n)}
