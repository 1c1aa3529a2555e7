"""What the neuron views show, read from the model and the probe: chosen neurons' activations over the tokens of a
few texts, an activation score per example of a split, the model's predictions, and from the probe's result each
neuron's colour centre (its train baseline where the probe scored it) and the token to outline there.

Tokens are the tokenizer's pieces; soft-prompt positions are named ``<P0>``, ``<P1>`` ...; ``positions`` picks
which are kept (:data:`POSITIONS`), padding never. Activations come from
:func:`~skill_lens.probing.capture.capture_neurons` (the probe's own hooks) and are returned on the CPU.

>>> from skill_lens.model.tiny import tiny_model
>>> from skill_lens.prompting.prompted_model import PromptedModel
>>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
>>> model = tiny_model()
>>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
>>> [(tokens, acts.shape) for tokens, acts in token_activations(pm, ["good film"], [(1, 5), (0, 3)])]
[(['good', ' film', '<P0>', '<P1>'], torch.Size([4, 2]))]
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor

from skill_lens.data.batching import BATCH_SIZE
from skill_lens.model.layout import neuron_pairs
from skill_lens.model.loading import describe
from skill_lens.probing.capture import capture_neurons
from skill_lens.probing.neurons import NeuronSet

__all__ = ["token_activations", "example_scores", "predictions", "probe_marks", "ranked_pairs", "neuron_labels",
           "neuron_label", "POSITIONS", "SCORES"]

POSITIONS = ("input+prompt", "all", "input", "prompt")
SCORES = {"prompt_mean": "mean over the prompt", "predict": "at the prediction position", "max": "max over tokens"}


# ------------------------------------------------------------------ neurons
def neuron_label(layer: int, index: int, layout=None) -> str:
    """``"L{layer}.N{index}"``; with a model's ``layout`` (``describe(model).layout``) an expert's neuron is
    ``"L{layer}.E{expert}.N{j}"`` (see :mod:`skill_lens.model.anatomy`).

    >>> neuron_label(29, 692)
    'L29.N692'
    """
    return f"L{layer}.N{index}" if layout is None else layout.label(layer, index)


def neuron_labels(pm, pairs: Sequence[tuple[int, int]]) -> list[str]:
    """The model's label of each ``(layer, index)`` (:func:`neuron_label` with its layout)."""
    layout = describe(pm.model).layout
    return [neuron_label(*p, layout=layout) for p in pairs]


def ranked_pairs(neurons: Any, shape: tuple[int, int], layout=None) -> list[tuple[int, int]]:
    """``[(layer, index)]``, at least one, checked against ``shape`` (layers x neurons): a set with scores best
    first (:meth:`NeuronSet.top`), anything else in the order given
    (:func:`~skill_lens.model.layout.neuron_pairs`).

    >>> ranked_pairs(NeuronSet.from_scores(torch.tensor([[0.6, 0.9], [0.8, 0.7]]), top=3), (2, 2))
    [(0, 1), (1, 0), (1, 1)]
    >>> ranked_pairs(["L1.N0", (0, 1)], (2, 2))
    [(1, 0), (0, 1)]
    """
    if isinstance(neurons, NeuronSet) and neurons.scores is not None and len(neurons):
        neurons.check_compatible(*shape)
        return [NeuronSet.parse(label, layout) for label, _ in neurons.top(len(neurons))]
    pairs = neuron_pairs(neurons, *shape, layout=layout)
    if not pairs:
        raise ValueError("no neurons given; pass labels like 'L3.N12', (layer, index) pairs or a NeuronSet")
    return pairs


# ------------------------------------------------------------------ activations
def _token_strings(tok, ids: list[int]) -> list[str]:
    pieces = [tok.decode([i]) for i in ids]
    # word-level tokenizers decode pieces without their separating spaces: put them back
    if len(ids) >= 2 and not any(p[:1].isspace() for p in pieces) and tok.decode(ids[:2]) == f"{pieces[0]} {pieces[1]}":
        pieces = [pieces[0]] + [" " + p for p in pieces[1:]]
    return pieces


def _keep_mask(batch, b: int, positions: str) -> Tensor:
    n = batch.input_ids.shape[1]
    prompt = torch.zeros(n, dtype=torch.bool, device=batch.input_ids.device)
    prompt[batch.prompt_slice] = True
    real = batch.attention_mask[b].bool()
    return {"all": real, "input": batch.input_mask[b], "prompt": prompt & real,
            "input+prompt": (batch.input_mask[b] | prompt) & real}[positions]


def _encoder_only(batch):
    """A capture ``select`` keeping whole activations of the batch's own sequence (not a T5 decoder call)."""
    return lambda act, name: act if act.shape[1] == batch.input_ids.shape[1] else None


def token_activations(pm, texts: Sequence[str], pairs, texts_b: Sequence[str] | None = None,
                      positions: str = "input+prompt", batch_size: int = BATCH_SIZE) -> list[tuple[list[str], Tensor]]:
    """Per text: ``(token strings, activations [S, K])`` of the neurons ``pairs`` at the kept ``positions``."""
    if positions not in POSITIONS:
        raise ValueError(f"positions must be one of {POSITIONS}, got {positions!r}")
    if positions == "prompt" and pm.prompt is None:
        raise ValueError("positions='prompt' needs a soft prompt; this model runs a hard prompt")
    pairs = ranked_pairs(pairs, describe(pm.model).shape, describe(pm.model).layout)
    tok, out = pm.model.tokenizer, []
    for start in range(0, len(texts), batch_size):
        tb = list(texts_b[start:start + batch_size]) if texts_b is not None else None
        batch = pm.encode(list(texts[start:start + batch_size]), tb)
        acts = capture_neurons(pm, batch, pairs, _encoder_only(batch))  # [B, seq, K]
        for b in range(batch.size):
            keep = _keep_mask(batch, b, positions)
            ids = batch.input_ids[b].tolist()
            names, pieces = [], None
            for pos in keep.nonzero()[:, 0].tolist():
                if batch.prompt_slice.start <= pos < batch.prompt_slice.stop:
                    names.append(f"<P{pos - batch.prompt_slice.start}>")
                else:
                    pieces = pieces or dict(zip(range(len(ids)), _token_strings(tok, ids)))
                    names.append(pieces[pos])
            out.append((names, acts[b][keep].cpu()))
    return out


def example_scores(pm, split, pairs, score: str, batch_size: int = BATCH_SIZE) -> Tensor:
    """Per example of ``split`` and neuron, the activation reduced over positions as :data:`SCORES` says:
    ``[n, K]``. ``"prompt_mean"`` falls back to the prediction position for a hard prompt."""
    if score not in SCORES:
        raise ValueError(f"score must be 'prompt_mean', 'predict' or 'max', got {score!r}")
    out = []
    for start in range(0, len(split), batch_size):
        batch = pm.encode_split(split, slice(start, start + batch_size))
        acts = capture_neurons(pm, batch, pairs, _encoder_only(batch))  # [B, seq, K]
        if score == "prompt_mean" and pm.prompt is not None:
            out.append(acts[:, batch.prompt_slice].mean(1))
        elif score in ("prompt_mean", "predict"):
            out.append(acts[torch.arange(batch.size, device=acts.device), batch.predict_pos.to(acts.device)])
        else:  # max over input and prompt tokens
            keep = torch.stack([_keep_mask(batch, b, "input+prompt") for b in range(batch.size)])
            out.append(acts.masked_fill(~keep[..., None], float("-inf")).amax(1))
    return torch.cat(out).cpu()  # collected on the CPU


def predictions(pm, texts: Sequence[str], texts_b: Sequence[str] | None = None,
                batch_size: int = BATCH_SIZE) -> list[int]:
    """The prompted model's predicted label per text."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tb = list(texts_b[start:start + batch_size]) if texts_b is not None else None
            out += pm.label_logits(pm.encode(list(texts[start:start + batch_size]), tb)).argmax(-1).tolist()
    return out


# ------------------------------------------------------------------ the probe's reading
def probe_marks(pm, pairs, result) -> tuple[list[float], list[str], list[str | None], list[str]]:
    """Per neuron: the colour centre, the legend's note, the outlined token and the tab name, from the probe's
    ``result`` (the train baseline at the position the probe scored the neuron) or 0 without one."""
    names = neuron_labels(pm, pairs)
    if result is None:
        note = "white: 0 (pass result=the probe's result to centre each neuron on its baseline)"
        return [0.0] * len(pairs), [note] * len(pairs), [None] * len(pairs), names
    per, base = result.per_position("dev"), result.baseline
    info = describe(pm.model)
    if (base.shape[0], base.shape[-1]) != info.shape:
        raise ValueError(f"the probe result is of {base.shape[0]} layers x {base.shape[-1]} neurons, the model has "
                         f"{info.n_layers} x {info.d_mlp}; pass the result probed on this model")
    per = per if per.dim() == 3 else per[:, None]
    base = base.reshape(base.shape[0], -1, base.shape[-1])
    centers, notes, marks, tabs = [], [], [], []
    for (layer, idx), name in zip(pairs, names):
        p = int(per[layer, :, idx].argmax())
        mark = f"<P{p}>" if pm.prompt is not None and per.shape[1] == pm.prompt_length else None
        where = f"at {mark} (outlined)" if mark else "at the prediction position"
        centers.append(float(base[layer, p, idx]))
        notes.append(f"dev predictivity {float(per[layer, p, idx]):.3f} {where}; white = the train baseline there "
                     f"({centers[-1]:.3g}): the probe reads above it (orange) as one class, below (blue) as the other")
        marks.append(mark)
        tabs.append(f"{name} {float(per[layer, p, idx]):.3f}")
    return centers, notes, marks, tabs
