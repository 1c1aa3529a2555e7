"""Activation patching of chosen FFN neurons between a source and a target input (or prompt).

The source runs once with capture hooks; the target then runs with hooks that write the captured
activations of the chosen neurons over its own, at positions aligned by role:

* ``"prompt"``: both batches have ``P`` prompt positions at ``batch.prompt_slice`` (same prompt length);
* ``"predict"``: the prediction position of each row;
* ``"input"``: the input tokens in order -- only when source and target have the same number;
* ``"all"`` or explicit indices: only when both batches have the same length.

The effect is read on the verbalizer logits: clean target, patched target, source, and the fraction
of the logit difference restored, ``(d(patched) - d(target)) / (d(source) - d(target))`` with
``d(x) = x[a] - x[b]``, ``a`` the source's top label and ``b`` the target's (its runner-up when both
agree, where the fraction is usually ill-defined and reported as NaN when ``|d(source) - d(target)|``
is tiny).

``transformer_lens.patching.generic_activation_patch`` did not fit: it sweeps a grid of
``(layer, pos[, head])`` cells, patching all of a hook's activation at one cell per forward, on token
inputs through ``model.run_with_hooks(tokens)`` and full vocabulary logits, with clean and corrupted
inputs of the same shape. Here one forward patches a neuron *set* across layers, through
``PromptedModel.label_logits`` (the soft-prompt hook, left-padded position ids, T5's single decoder
step), between inputs of different lengths. Its habit of cloning an activation that needs grad
before writing it is kept.

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.evaluation import prompted
>>> from skill_lens.prompting.prompts import SoftPrompt
>>> model, task = tiny_model(), tiny_task()
>>> pm = prompted(model, task, SoftPrompt.init(model, 3))
>>> mask = torch.ones(2, 64, dtype=torch.bool)
>>> r = patch(pm, "the movie was good", "a very bad film", mask)
>>> r.patched.shape, len(r.restored)
(torch.Size([1, 2]), 1)
>>> same = patch(pm, "a very bad film", "a very bad film", mask)  # own activations: nothing changes
>>> torch.equal(same.patched, same.target)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.probing.capture import capture_hooks
from skill_lens.intervening.interventions import InterventionError, Positions, neuron_mask
from skill_lens.model.anatomy import by_segment
from skill_lens.model.loading import describe, model_device
from skill_lens.prompting.prompted_model import Batch
from skill_lens.prompting.prompts import Hook

__all__ = ["PatchResult", "patch", "patch_hooks", "capture"]


@dataclass
class PatchResult:
    """Label logits ``[n, n_labels]`` of the clean target, the patched target and the source, and
    per example the label pair ``(a, b)`` and the restored fraction of ``d = x[a] - x[b]``."""

    target: Float[Tensor, "n n_labels"]
    patched: Float[Tensor, "n n_labels"]
    source: Float[Tensor, "n n_labels"]
    pairs: list[tuple[int, int]]
    restored: list[float]
    label_words: tuple[str, ...] = ()
    n_neurons: int = 0

    def to_dict(self) -> dict:
        """Plain data (JSON-ready)."""
        return {"label_words": list(self.label_words), "n_neurons": self.n_neurons,
                "target": self.target.tolist(), "patched": self.patched.tolist(), "source": self.source.tolist(),
                "pairs": [list(p) for p in self.pairs], "restored": self.restored}

    def table(self) -> str:
        """One block per example: the three logit rows and the restored fraction."""
        words = self.label_words or tuple(str(i) for i in range(self.target.shape[1]))
        lines = []
        for i, ((a, b), frac) in enumerate(zip(self.pairs, self.restored)):
            lines.append(f"example {i}: d = logit[{words[a]}] - logit[{words[b]}]  ({self.n_neurons} neurons patched)")
            for name, x in (("target", self.target), ("patched", self.patched), ("source", self.source)):
                row = "  ".join(f"{w}={v:+.3f}" for w, v in zip(words, x[i].tolist()))
                lines.append(f"  {name:>8}: {row}   d={(x[i, a] - x[i, b]).item():+.3f}")
            lines.append(f"  restored: {'n/a (source and target agree)' if math.isnan(frac) else f'{frac:.3f}'}")
        return "\n".join(lines)


def _encode(pm, texts, texts_b) -> Batch:
    texts = [texts] if isinstance(texts, str) else list(texts)
    texts_b = [texts_b] if isinstance(texts_b, str) else texts_b
    return pm.encode(texts, texts_b)


def _index(batch: Batch, pos: Positions, seq: int) -> list[Tensor]:
    """Per row, the positions of ``pos`` in ``batch`` in order (a LongTensor each)."""
    mask = pos.mask(batch.size, seq, batch)
    return [row.nonzero()[:, 0] for row in mask]


def capture(pm, batch: Batch, neurons, positions="prompt") -> dict[int, list[Tensor]]:
    """Activations of the chosen neurons at ``positions`` of ``batch``: ``{layer: [per row [n_pos, k]]}``.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = hard_prompt_model(model, task); mask = torch.zeros(2, 64, dtype=torch.bool); mask[1, :4] = True
    >>> got = capture(pm, pm.encode(["good film", "bad"]), mask, "predict")
    >>> list(got), got[1][0].shape
    ([1], torch.Size([1, 4]))
    """
    mask, pos = neuron_mask(pm.model, neurons), Positions.of(positions)
    info = describe(pm.model)
    rows = _index(batch, pos, batch.input_ids.shape[1])
    parts = {l: by_segment(info.layers[l].segments, row.nonzero()[:, 0].to(model_device(pm.model)))
             for l, row in enumerate(mask) if row.any()}  # a layer's neurons by hook, in index order
    idx = {seg.hook: local for segs in parts.values() for seg, local, _ in segs}
    hooks, got = capture_hooks(list(idx), select=lambda act, name: act[..., idx[name]])
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=hooks)
    joined = {l: torch.cat([got[seg.hook] for seg, _, _ in segs], -1) for l, segs in parts.items()}
    return {l: [joined[l][r, p] for r, p in enumerate(rows)] for l in parts}


def patch_hooks(pm, source: Batch, target: Batch, neurons, positions="prompt") -> list[Hook]:
    """Hooks that write the source's activations of ``neurons`` into a run of ``target`` (aligned by role).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2)); mask = torch.zeros(2, 64, dtype=torch.bool)
    >>> mask[0, 1] = True
    >>> [n for n, _ in patch_hooks(pm, pm.encode(["good"]), pm.encode(["a bad film"]), mask)]
    ['blocks.0.mlp.hook_post']
    """
    mask, pos = neuron_mask(pm.model, neurons), Positions.of(positions)
    if source.size != target.size:
        raise InterventionError(f"source has {source.size} examples and target {target.size}; pair them one to one.")
    src_seq, tgt_seq = source.input_ids.shape[1], target.input_ids.shape[1]
    if pos.role in ("all", "indices") and src_seq != tgt_seq:
        raise InterventionError(f"positions {pos.role!r} align only inputs of the same length (source {src_seq}, "
                                f"target {tgt_seq} tokens); use 'prompt' or 'predict', which align by role.")
    src_rows, tgt_rows = _index(source, pos, src_seq), _index(target, pos, tgt_seq)
    for i, (s, t) in enumerate(zip(src_rows, tgt_rows)):
        if len(s) != len(t):
            raise InterventionError(f"example {i}: the source has {len(s)} {pos.role} positions and the target "
                                    f"{len(t)}; they align only in equal numbers (use 'prompt' or 'predict').")
    values = capture(pm, source, mask, pos)
    info = describe(pm.model)

    def write(layer: int, local: Tensor, at: Tensor):  # the layer's neurons ``at`` (of its values), ``local`` here
        def hook(act: Tensor, hook) -> Tensor:
            if act.shape[1] != tgt_seq:
                raise InterventionError(f"patch hooks were built for a target of {tgt_seq} tokens, "
                                        f"got {act.shape[1]}; build them for this batch.")
            act = act.clone() if act.requires_grad else act
            for r, p in enumerate(tgt_rows):
                act[r, p[:, None], local] = values[layer][r][:, at.to(values[layer][r].device)].to(act.dtype)
            return act
        return hook

    device = model_device(pm.model)
    return [(seg.hook, write(l, local, at)) for l, row in enumerate(mask) if row.any()
            for seg, local, at in by_segment(info.layers[l].segments, row.nonzero()[:, 0].to(device))]


def patch(pm, source_text: str | Sequence[str], target_text: str | Sequence[str], neurons, positions="prompt",
          source_pm=None, source_text_b=None, target_text_b=None, eps: float = 1e-6) -> PatchResult:
    """Patch ``neurons`` from a source run into a target run; see the module docstring.

    ``source_pm`` runs the source with another prompt (the same model, verbalizer and prompt length),
    e.g. to patch from one task's prompt into another's on the same text.
    """
    src_pm = source_pm or pm
    if src_pm.model is not pm.model or src_pm.verbalizer.token_ids != pm.verbalizer.token_ids:
        raise InterventionError("source and target must share the model and the verbalizer to compare logits.")
    source, target = _encode(src_pm, source_text, source_text_b), _encode(pm, target_text, target_text_b)
    if src_pm.prompt_length != pm.prompt_length and Positions.of(positions).role == "prompt":
        raise InterventionError(f"the source prompt has {src_pm.prompt_length} positions and the target's "
                                f"{pm.prompt_length}; 'prompt' positions align only for equal lengths.")
    hooks = patch_hooks(src_pm, source, target, neurons, positions)  # captures with the source's prompt
    with torch.no_grad():
        src_logits = src_pm.label_logits(source).float().cpu()  # results on the CPU
        tgt_logits = pm.label_logits(target).float().cpu()
        patched = pm.label_logits(target, fwd_hooks=hooks).float().cpu()
    pairs, restored = [], []
    for s, t, p in zip(src_logits, tgt_logits, patched):
        a = int(s.argmax())
        b = int(t.argmax()) if int(t.argmax()) != a else int(t.scatter(0, torch.tensor([a]), -math.inf).argmax())
        d = lambda x: (x[a] - x[b]).item()  # noqa: E731
        denom = d(s) - d(t)
        pairs.append((a, b))
        restored.append((d(p) - d(t)) / denom if abs(denom) > eps else math.nan)
    return PatchResult(tgt_logits, patched, src_logits, pairs, restored, pm.verbalizer.words,
                       int(neuron_mask(pm.model, neurons).sum()))
