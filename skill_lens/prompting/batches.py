"""How each family lays out a batch's tokens: where the soft prompt sits, where the label is read, padding.

:func:`encode_batch` is :meth:`PromptedModel.encode <skill_lens.prompting.prompted_model.PromptedModel.encode>`:
it formats the texts with the model's template, tokenizes them, truncates them to ``max_length`` and lays
out a :class:`Batch`:

=========  ==================================  ========================
family     token layout                        label logits read at
=========  ==================================  ========================
causal     ``[pad.. , input, prompt]``         last position
mlm        ``[cls, <mask>, prompt, input, sep, pad..]``  the ``<mask>`` slot
seq2seq    ``[prompt, input, </s>, pad..]``    first decoder token
=========  ==================================  ========================

In every layout the prompt occupies the same positions in every row of a batch
(``Batch.prompt_slice``), which keeps probing and interventions simple. Causal decoders take the
prompt *after* the input (left-padded batches), so the prompt's activations can depend on the input,
and the input's keys/values need no gradient. Causal inputs start with BOS only where the tokenizer
adds one itself (:func:`prepends_bos`). A hard (text) prompt on an MLM predicts at a trailing ``<mask>``.

The layouts, row by row (``p`` the prompt, ``x`` the text, ``s`` a special token, ``.`` padding):

>>> from skill_lens.model.tiny import tiny_model
>>> from skill_lens.prompting.prompted_model import PromptedModel
>>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
>>> def roles(batch, row):
...     return "".join("p" if batch.prompt_slice.start <= j < batch.prompt_slice.stop else "x" if batch.input_mask[row, j]
...                    else "s" if batch.attention_mask[row, j] else "." for j in range(batch.input_ids.shape[1]))
>>> for family in ("causal", "mlm", "seq2seq"):
...     model = tiny_model(family)
...     pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
...     batch = encode_batch(pm, ["good", "the film was bad"])
...     print(f"{family:8}", roles(batch, 0), roles(batch, 1), batch.prompt_slice, batch.predict_pos.tolist())
causal   ...xpp xxxxpp slice(4, 6, None) [5, 5]
mlm      ssppxs... ssppxxxxs slice(2, 4, None) [1, 1]
seq2seq  ppxs... ppxxxxs slice(0, 2, None) [0, 0]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.model.loading import model_device
from skill_lens.model.record import model_record
from skill_lens.prompting.prompts import PromptError

__all__ = ["Batch", "encode_batch", "prompt_part", "prepends_bos", "checked_max_length"]


@dataclass
class Batch:
    """Token ids of a batch laid out for one family, with where the prompt and the prediction are."""

    input_ids: Int[Tensor, "batch seq"]
    attention_mask: Int[Tensor, "batch seq"]
    prompt_slice: slice
    predict_pos: Int[Tensor, "batch"]  # position whose output is read (causal: last; mlm: the mask slot)
    input_mask: Bool[Tensor, "batch seq"]  # real input tokens (not prompt, special or pad)

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device) -> "Batch":
        """The same batch with its tensors on ``device`` (:func:`encode_batch` puts it on the model's).

        >>> b = Batch(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2), slice(1, 2), torch.tensor([1]),
        ...           torch.ones(1, 2, dtype=torch.bool))
        >>> b.to("cpu").input_ids.device
        device(type='cpu')
        """
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.prompt_slice,
                     self.predict_pos.to(device), self.input_mask.to(device))


def encode_batch(pm, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> Batch:
    """Tokenize ``texts`` (and, for pairs, ``texts_b``) and lay them out for ``pm``'s family (see the module
    docstring), on ``pm``'s device. ``pm`` is a :class:`~skill_lens.prompting.prompted_model.PromptedModel`:
    its model, prompt length, templates, ``max_length`` and ``prepend_bos`` decide the layout.

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.prompting.prompted_model import PromptedModel
    >>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
    >>> model = tiny_model("causal")
    >>> pm = PromptedModel(model, SoftPrompt.init(model, 3), Verbalizer.from_words(model, ["bad", "good"]))
    >>> batch = encode_batch(pm, ["the movie was good", "bad"])
    >>> batch.input_ids.shape, batch.prompt_slice, batch.input_mask.sum(1).tolist()
    (torch.Size([2, 7]), slice(4, 7, None), [4, 1])
    """
    if len(texts) == 0:
        raise PromptError("cannot encode an empty batch")
    model, info, P = pm.model, pm.info, pm.prompt_length
    tok, fam = model.tokenizer, info.family
    strings = [
        pm.template.format(text=t) if texts_b is None else pm.pair_template.format(text=t, text_b=b)
        for t, b in zip(texts, texts_b if texts_b is not None else texts)
    ]
    if fam == "mlm" and P == 0:  # hard prompt on an MLM: predict at a trailing <mask>
        strings = [s + " " + tok.mask_token for s in strings]
    bodies = [tok.encode(s, add_special_tokens=False) for s in strings]
    bos = [tok.bos_token_id] if fam == "causal" and pm.prepend_bos and tok.bos_token_id is not None else []
    specials = {"causal": len(bos), "mlm": 3, "seq2seq": 1}[fam]
    budget = _text_budget(info, P, specials, pm.max_length, bodies)
    placeholder = next(i for i in (tok.unk_token_id, tok.eos_token_id, 0) if i is not None)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else placeholder
    bodies, ph = [b[:budget] for b in bodies], [placeholder] * P
    device = model_device(model)
    pad = lambda rows, **where: _pad_rows(rows, bodies, pad_id, P, **where).to(device)  # noqa: E731
    if fam == "causal":
        return pad([bos + b + ph for b in bodies], left=True, prompt_start=-P, predict=-1, body_start=len(bos))
    cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
    sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
    if fam == "mlm" and P == 0:  # the trailing <mask> sits at a different place in each row
        return pad([[cls_id] + b + [sep_id] for b in bodies], left=False, prompt_start=0,
                   predict=[len(b) for b in bodies], body_start=1)
    if fam == "mlm":
        rows = [[cls_id, tok.mask_token_id] + ph + b + [sep_id] for b in bodies]
        return pad(rows, left=False, prompt_start=2, predict=1, body_start=2 + P)
    rows = [ph + b + [tok.eos_token_id] for b in bodies]  # seq2seq
    return pad(rows, left=False, prompt_start=0, predict=0, body_start=P)


def prompt_part(batch: Batch, P: int) -> Batch:
    """The ``P``-token prompt of a causal ``batch`` (its last positions) as a batch of its own, read at its last
    position, with the whole batch's attention mask: what the hooks of a forward that runs the input apart see.

    >>> b = Batch(torch.tensor([[0, 5, 6, 1, 1]]), torch.tensor([[0, 1, 1, 1, 1]]), slice(3, 5), torch.tensor([4]),
    ...           torch.tensor([[False, True, True, False, False]]))
    >>> part = prompt_part(b, 2)
    >>> part.input_ids.tolist(), part.prompt_slice, part.predict_pos.tolist(), part.attention_mask.shape
    ([[1, 1]], slice(0, 2, None), [1], torch.Size([1, 5]))
    """
    n = batch.input_ids.shape[1]
    return Batch(batch.input_ids[:, n - P :], batch.attention_mask, slice(0, P),
                 torch.full((batch.size,), P - 1, device=batch.attention_mask.device), batch.input_mask[:, n - P :])


def prepends_bos(model: TransformerBridge) -> bool:
    """Whether ``model``'s causal batches start with BOS when ``PromptedModel(prepend_bos=None)``: where its
    tokenizer adds one itself, following the tokenizer's own convention, not the bridge's ``default_prepend_bos``.

    Llama-style tokenizers add ``<s>`` themselves; GPT-2 and SmolLM2 do not, and SmolLM2's
    BOS is the chat token ``<|im_start|>``, which costs a plain classification prompt about
    15 points of accuracy (0.61 vs 0.77 zero-shot on Rotten Tomatoes). The bridge makes every
    tokenizer add BOS, so :func:`skill_lens.model.loading.bridge_from_hf` records the original habit.

    >>> from skill_lens.model.tiny import tiny_model
    >>> prepends_bos(tiny_model("causal"))  # its word-level tokenizer adds no BOS of its own
    False
    """
    recorded = model_record(model).tokenizer_adds_bos
    if recorded is not None:
        return recorded
    return bool(getattr(model.cfg, "default_prepend_bos", False))


def checked_max_length(max_length: int | None) -> int | None:
    """``max_length`` (the tokens a batch's rows are truncated to fit), once it is ``None`` or positive.

    >>> checked_max_length(None), checked_max_length(128)
    (None, 128)
    >>> checked_max_length(0)
    Traceback (most recent call last):
    ...
    skill_lens.prompting.prompts.PromptError: max_length must be a positive number of tokens, got 0; pass None (no --max-length) to use the model's context.
    """
    if max_length is not None and max_length < 1:
        raise PromptError(f"max_length must be a positive number of tokens, got {max_length}; "
                          "pass None (no --max-length) to use the model's context.")
    return max_length


def _text_budget(info, P: int, specials: int, max_length: int | None, bodies: list[list[int]]) -> int:
    """How many text tokens fit beside a ``P``-token prompt and ``specials`` special tokens; a PromptError
    when none do, or when a text is longer and no ``max_length`` asked to truncate."""
    limit = info.n_ctx if max_length is None else min(info.n_ctx, max_length)
    budget = limit - P - specials
    if budget <= 0:  # no room for a single text token: truncating would silently drop every text
        by_max_length = limit < info.n_ctx
        raise PromptError(
            f"{f'max_length={limit}' if by_max_length else f'the context of {info.name} ({limit})'} leaves "
            f"no room for the text: the {P}-token prompt and {specials} special token(s) take {P + specials}; "
            + (f"use max_length of at least {P + specials + 1}." if by_max_length
               else f"use a prompt of at most {limit - specials - 1} tokens.")
        )
    too_long = [i for i, b in enumerate(bodies) if len(b) > budget]
    if too_long and max_length is None:
        i = too_long[0]
        raise PromptError(
            f"text {i} has {len(bodies[i])} tokens but only {budget} fit in the model's context "
            f"({info.n_ctx}) with a {P}-token prompt; pass max_length (CLI: --max-length) to truncate."
        )
    return budget


def _pad_rows(rows, bodies, pad: int, P: int, *, left: bool, prompt_start: int, predict, body_start: int) -> Batch:
    """The padded :class:`Batch` of token ``rows`` (each holding its text ``bodies[i]`` at ``body_start``)."""
    n = max(len(r) for r in rows)
    ids = torch.full((len(rows), n), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    input_mask = torch.zeros((len(rows), n), dtype=torch.bool)
    for i, (r, b) in enumerate(zip(rows, bodies)):
        off = n - len(r) if left else 0
        ids[i, off : off + len(r)] = torch.tensor(r)
        mask[i, off : off + len(r)] = 1
        input_mask[i, off + body_start : off + body_start + len(b)] = True
    start = n + prompt_start if prompt_start < 0 else prompt_start
    if isinstance(predict, int):
        predict = [predict if predict >= 0 else n + predict] * len(rows)
    return Batch(ids, mask, slice(start, start + P), torch.tensor(predict), input_mask)
