"""A prompted model: a frozen model with a soft prompt and its label words, and the one owner of its forward pass.

:class:`PromptedModel` holds a frozen model, a :class:`~skill_lens.prompting.prompts.SoftPrompt` and a
:class:`~skill_lens.prompting.prompts.Verbalizer`. It lays out batches (:meth:`PromptedModel.encode`) as
:mod:`skill_lens.prompting.batches` says for each family: causal decoders take the prompt *after* the input
(left-padded batches), MLMs after ``<mask>``, seq2seq models before the input; in every layout the prompt
occupies the same positions in every row of a batch (``Batch.prompt_slice``).

Every forward pass of skill_lens (tuning steps, evaluation, the probe, suppression curves, patching,
calibration, robustness) is :meth:`PromptedModel.label_logits`, and it alone decides how the pass runs:

1. **Which hooks.** The prompt's (on ``embed.hook_out``), then those added to the model with
   :meth:`PromptedModel.with_hooks` in the order they were added (BitFit and adapters, an intervention
   every forward applies, the probe's recorders), then the call's ``fwd_hooks``. ``with_hooks`` (every
   forward of a model) and ``fwd_hooks`` (one call) are the one way to add hooks;
   :meth:`PromptedModel.hooks` lists a batch's for TransformerLens's own ``model.hooks(...)``.
2. **Plain or bridged.** With no hook but the prompt's and nothing hooked on the bridge, the plain
   Hugging Face model runs (:func:`~skill_lens.model.fast_path.plain_model`), the prompt written into
   its input embeddings: the bridge's numbers bit for bit, without its overhead. Otherwise the bridge
   runs, with every hook.
3. **The input apart.** On a causal model with a soft prompt, ``input_cache=True`` runs the input
   positions once without autograd, then only the prompt positions with them (the same numbers to float
   rounding, far less backward work); an :class:`~skill_lens.prompting.input_cache.InputCache` also
   keeps each input's keys and values for the next pass over it. Only hooks added with
   ``prompt_only=True`` leave the input alone: they are built for the prompt part, and any other hook
   makes the batch run whole. :meth:`PromptedModel.cache_inputs` is the same decision for a split.

>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("causal")
>>> pm = PromptedModel(model, SoftPrompt.init(model, 4, seed=0), Verbalizer.from_words(model, ["bad", "good"]))
>>> batch = pm.encode(["the movie was good", "bad"])
>>> batch.input_ids.shape, batch.prompt_slice
(torch.Size([2, 8]), slice(4, 8, None))
>>> pm.label_logits(batch).shape
torch.Size([2, 2])
>>> whole, apart = pm.label_logits(batch), pm.label_logits(batch, input_cache=True)
>>> torch.allclose(whole, apart, atol=1e-5)
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.base.display import card
from skill_lens.model.fast_path import plain_model
from skill_lens.model.loading import describe, model_device
from skill_lens.prompting.batches import Batch, checked_max_length, encode_batch, prepends_bos, prompt_part
from skill_lens.model.placement import execution_device, materialized
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.prompts import Hook, PromptError, SoftPrompt, Verbalizer

__all__ = ["PromptedModel", "HooksLike"]

HooksLike = Union[Sequence[Hook], Callable[["Batch"], Sequence[Hook]]]  # pairs, or make(batch) -> pairs


class PromptedModel:
    """A frozen model, a soft prompt and a verbalizer: encode texts, get label logits, add hooks
    (see the module docstring).

    ``prompt=None`` runs the bare template, which is how hard (text) prompts are evaluated.
    Causal inputs start with BOS only where the tokenizer adds one itself (Llama does; GPT-2
    and SmolLM2 do not: :func:`~skill_lens.prompting.batches.prepends_bos`); ``prepend_bos`` overrides that.
    """

    def __init__(
        self,
        model: TransformerBridge,
        prompt: SoftPrompt | None,
        verbalizer: Verbalizer,
        template: str = "{text}",
        pair_template: str = "{text}\n{text_b}",
        max_length: int | None = None,
        prepend_bos: bool | None = None,
    ):
        self.model, self.prompt, self.verbalizer = model, prompt, verbalizer
        self.info = describe(model)
        if prompt is not None:
            prompt.to(model_device(model))  # in place: a tuned or loaded prompt trains and runs beside the model
        self.template, self.pair_template = template, pair_template
        if prompt is not None and prompt.d_model != self.info.d_model:
            raise PromptError(
                f"prompt width {prompt.d_model} does not match {self.info.name}'s d_model {self.info.d_model}"
            )
        self.max_length = checked_max_length(max_length)
        self.prepend_bos = prepends_bos(model) if prepend_bos is None else prepend_bos
        self._added: tuple[_Added, ...] = ()  # hooks of with_hooks

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else self.prompt.length

    # ---------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> Batch:
        """Tokenize and lay out a batch for this family (:func:`~skill_lens.prompting.batches.encode_batch`)."""
        return encode_batch(self, texts, texts_b)

    def encode_split(self, split, idx: slice | Sequence[int]) -> Batch:
        """:meth:`encode` the examples ``idx`` (a slice or indices) of ``split`` (its texts and, for pairs, ``texts_b``).

        >>> from skill_lens.model.tiny import tiny_model, tiny_task
        >>> task = tiny_task()
        >>> pm = PromptedModel(tiny_model(), SoftPrompt.init(tiny_model(), 2), Verbalizer.from_words(tiny_model(), ["bad", "good"]))
        >>> pm.encode_split(task.dev, slice(0, 4)).size, pm.encode_split(task.dev, [5, 1]).size
        (4, 2)
        """
        pick = (lambda xs: xs[idx]) if isinstance(idx, slice) else (lambda xs: [xs[i] for i in idx])
        return self.encode(pick(split.texts), pick(split.texts_b) if split.texts_b is not None else None)

    # ---------------------------------------------------------------- hooks
    def with_hooks(self, hooks: HooksLike, prompt_only: bool = False) -> "PromptedModel":
        """This model with ``hooks`` added to every forward: ``(hook_name, fn)`` pairs, or a function
        ``make(batch)`` that builds them for each batch that runs (hooks at role positions such as
        ``positions="prompt"`` need the batch; see :mod:`skill_lens.intervening.interventions`). Use it
        wherever a ``PromptedModel`` goes (``evaluate``, ``probe``, ``suppression_curve``...).

        ``prompt_only=True`` promises that the hooks act on prompt positions only: a forward that runs
        the input apart (``input_cache``, see the module docstring) then builds them for the prompt part
        alone and may take the input from the cache. Without it they may act anywhere, and every
        forward runs its batch whole. The returned model shares this one's model, prompt and verbalizer.

        >>> from skill_lens.model.tiny import tiny_model
        >>> model = tiny_model()
        >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
        >>> zero = ("blocks.1.mlp.hook_post", lambda act, hook: act * 0)
        >>> ablated = pm.with_hooks([zero])
        >>> batch = pm.encode(["good film"])
        >>> torch.equal(ablated.label_logits(batch), pm.label_logits(batch, fwd_hooks=[zero]))
        True
        >>> [name for name, _ in ablated.hooks(batch)], pm.hooks(batch)[0][0]
        (['embed.hook_out', 'blocks.1.mlp.hook_post'], 'embed.hook_out')
        """
        make = hooks if callable(hooks) else _fixed(list(hooks))
        other = copy.copy(self)
        other._added = (*self._added, _Added(make, prompt_only))
        return other

    def hooks(self, batch: Batch) -> list[Hook]:
        """Every hook a forward of ``batch`` runs besides its ``fwd_hooks``: the prompt's (none for a hard
        prompt), then those of :meth:`with_hooks`; for ``model.hooks(fwd_hooks=...)``, ``run_with_cache``..."""
        return [*self._prompt_hook(batch.input_ids.shape[1], batch.prompt_slice), *self._added_hooks(batch)]

    def _added_hooks(self, batch: Batch) -> list[Hook]:
        return [hook for added in self._added for hook in added.make(batch)]

    def _prompt_hook(self, seq_len: int, prompt_slice: slice | None) -> list[Hook]:
        return [] if self.prompt is None or prompt_slice is None else [self.prompt.hook(seq_len, prompt_slice)]

    # ---------------------------------------------------------------- running
    def label_logits(self, batch: Batch, fwd_hooks: Sequence[Hook] = (),
                     input_cache: InputCache | bool | None = False) -> Float[Tensor, "batch n_labels"]:
        """Verbalizer logits at the prediction position: the forward pass, run as the module docstring says.

        ``fwd_hooks`` are added to this call only (after the model's own). ``input_cache=True`` (a causal
        model with a soft prompt) runs the input apart, without autograd (``False`` or ``None``: not); an
        :class:`~skill_lens.prompting.input_cache.InputCache` also keeps (and reuses) the input's keys and
        values. Both are ignored where they do not apply: another family, a hard prompt, or a hook
        that may act on the input (any ``fwd_hooks``, hooks added without ``prompt_only``).
        """
        if self._runs_input_apart(fwd_hooks, input_cache):
            return self._label_logits_after_input(batch, input_cache)
        return self._head(self._hidden(batch, [*self._added_hooks(batch), *fwd_hooks]))

    def _runs_input_apart(self, fwd_hooks: Sequence[Hook], input_cache: InputCache | bool | None) -> bool:
        """Asked to, on a causal model with a soft prompt, and no hook may act on the input."""
        return (input_cache is not None and input_cache is not False and self.info.family == "causal"
                and self.prompt is not None and not fwd_hooks and all(a.prompt_only for a in self._added))

    def cache_inputs(self, split, input_cache: InputCache | None, examples=None) -> InputCache | None:
        """``input_cache``, once it holds every input of ``split`` (computed into it now, see
        :meth:`~skill_lens.prompting.input_cache.InputCache.fill`), when this model's forwards read their
        inputs from a cache; ``None`` (nothing computed) when they do not (another family, a hard prompt,
        hooks that may act on the input) or the split does not fit. Pass it on as ``label_logits(...,
        input_cache=...)``. ``examples`` (indices into the split): only the inputs a rank of a
        ``torch.distributed`` job runs (:meth:`~skill_lens.prompting.input_cache.InputCache.fill`).

        >>> from skill_lens.model.tiny import tiny_model, tiny_task
        >>> model, dev = tiny_model("causal"), tiny_task().dev
        >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
        >>> cache = InputCache()
        >>> pm.cache_inputs(dev, cache) is cache, len(cache) > 0
        (True, True)
        >>> pm.with_hooks([("blocks.0.mlp.hook_post", lambda act, hook: act)]).cache_inputs(dev, cache) is None
        True
        """
        if input_cache is None or not self._runs_input_apart((), True):
            return None
        return input_cache if input_cache.fill(self, split, examples=examples) else None

    def run_input(self, input_ids: Int[Tensor, "batch n"], **kwargs):
        """The base model (no LM head) on input tokens alone: no prompt, no hook of this model; ``kwargs``
        go to the Hugging Face model (``attention_mask``, ``position_ids``, ``use_cache``...). How an
        input's keys and values are computed, here and in
        :class:`~skill_lens.prompting.input_cache.InputCache`; the caller decides about autograd.

        >>> from skill_lens.model.tiny import tiny_model
        >>> model = tiny_model("causal")
        >>> pm = PromptedModel(model, None, Verbalizer.from_words(model, ["bad", "good"]))
        >>> len(pm.run_input(torch.tensor([[5, 6, 7]]), use_cache=True).past_key_values)  # one per layer
        2
        """
        return self._run(input_ids, None, [], **kwargs)

    def _hidden(self, batch: Batch, hooks: Sequence[Hook]) -> Tensor:
        """Final hidden state at the prediction position (seq2seq: the first decoder logits)."""
        hf, fam = self.model.original_model, self.info.family
        if fam == "seq2seq":  # one decoder step; its full logits are cheap
            dec = torch.full((batch.size, 1), hf.config.decoder_start_token_id, dtype=torch.long,
                             device=batch.input_ids.device)
            with self.model.hooks(fwd_hooks=[*self._prompt_hook(batch.input_ids.shape[1], batch.prompt_slice),
                                             *hooks]):
                out = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=dec)
            return out.logits[:, 0]
        kwargs = {}
        if fam == "causal":
            kwargs["position_ids"] = _positions(batch.attention_mask)
        out = self._run(batch.input_ids, batch.prompt_slice, hooks, attention_mask=batch.attention_mask, **kwargs)
        return out.last_hidden_state[torch.arange(batch.size, device=batch.predict_pos.device), batch.predict_pos]

    def _run(self, input_ids: Tensor, prompt_slice: slice | None, hooks: Sequence[Hook], **kwargs):
        """The base model (no LM head) on ``input_ids``, the prompt over ``prompt_slice`` (``None``: no prompt),
        with ``hooks``: the plain Hugging Face model when there are none and nothing hooks the bridge
        (the prompt written into the input embeddings), else the bridge."""
        plain = None if hooks else plain_model(self.model)
        if plain is None:
            with self.model.hooks(fwd_hooks=[*self._prompt_hook(input_ids.shape[1], prompt_slice), *hooks]):
                return self.model.original_model.base_model(input_ids=input_ids, **kwargs)
        if self.prompt is None or prompt_slice is None:
            return plain.base_model(input_ids=input_ids, **kwargs)
        embeds = self.prompt.write(plain.get_input_embeddings()(input_ids), prompt_slice)
        return plain.base_model(inputs_embeds=embeds, **kwargs)

    def _label_logits_after_input(self, batch: Batch, input_cache: InputCache | bool) -> Tensor:
        """The input positions without autograd (from ``input_cache`` when it is a cache), then the prompt's."""
        P, n = self.prompt_length, batch.input_ids.shape[1]
        pos = _positions(batch.attention_mask)
        ids, mask, at = batch.input_ids[:, : n - P], batch.attention_mask[:, : n - P], pos[:, : n - P]
        past = None if input_cache is True else input_cache.past(self, ids, mask, at)
        if past is None:
            with torch.no_grad():
                past = self.run_input(ids, use_cache=True, attention_mask=mask, position_ids=at).past_key_values
        part = prompt_part(batch, P)
        out = self._run(part.input_ids, part.prompt_slice, self._added_hooks(part), attention_mask=batch.attention_mask,
                        position_ids=pos[:, n - P :], past_key_values=past, use_cache=True)
        return self._head(out.last_hidden_state[:, -1])

    def _head(self, hidden: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch n_labels"]:
        hf, ids = self.model.original_model, list(self.verbalizer.token_ids)
        if self.info.family == "seq2seq":  # _hidden already returned the decoder's logits
            return hidden[:, ids]
        if self.info.family == "mlm":  # the MLM head has a transform before the decoder
            head = getattr(hf, "lm_head", None) or hf.cls
            return head(hidden.unsqueeze(1))[:, 0, ids]
        out = hf.get_output_embeddings()
        with materialized(out):  # the label words' rows, where the head computes (it may be offloaded)
            bias = out.bias[ids] if getattr(out, "bias", None) is not None else None
            return nn.functional.linear(hidden.to(execution_device(out)), out.weight[ids], bias)

    # ---------------------------------------------------------------- for TransformerLens users and notebooks
    def run_with_cache(self, texts: Sequence[str] | str | Batch, texts_b: Sequence[str] | None = None,
                       names_filter=None) -> tuple[Float[Tensor, "batch n_labels"], "ActivationCache"]:
        """TransformerLens's ``run_with_cache`` on the prompted model: ``(label_logits, cache)``.

        ``texts`` (strings, or a :class:`Batch` from :meth:`encode`) run as every forward of skill_lens does
        (:meth:`label_logits`: the family's layout with the soft prompt in place, left padding for causal
        models, this model's added hooks, the label logits read at the prediction position: ``[batch,
        n_labels]``, the verbalizer's words in order). The cache is TransformerLens's ``ActivationCache`` of
        every hook point, or of those ``names_filter`` picks (a name, a list of names or a predicate, as in
        TransformerLens), over the whole sequence (not the unembedding's: only the label words' rows of it
        run). Encode the texts first to index it by role: ``batch.prompt_slice``, ``batch.predict_pos``,
        ``batch.input_mask``. Runs without autograd.

        >>> from skill_lens.model.tiny import tiny_model
        >>> model = tiny_model()
        >>> pm = PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
        >>> batch = pm.encode(["the film was good", "bad"])
        >>> logits, cache = pm.run_with_cache(batch, names_filter=lambda name: name.endswith("mlp.hook_post"))
        >>> logits.shape, cache["blocks.1.mlp.hook_post"][:, batch.prompt_slice].shape
        (torch.Size([2, 2]), torch.Size([2, 2, 64]))
        >>> torch.allclose(logits, pm.label_logits(batch), atol=1e-5)
        True
        """
        from transformer_lens.ActivationCache import ActivationCache

        texts = [texts] if isinstance(texts, str) else texts
        batch = texts if isinstance(texts, Batch) else self.encode(list(texts), texts_b)
        store, fwd_hooks, _ = self.model.get_caching_hooks(names_filter)
        with torch.no_grad():
            logits = self.label_logits(batch, fwd_hooks=fwd_hooks)
        if names_filter is None:  # every name the bridge answers to, as its own run_with_cache keys them
            store.update({name: store[point.name] for name, point in self.model.hook_dict.items()
                          if name not in store and point.name in store})
        return logits, ActivationCache(store, self.model)

    def __repr__(self) -> str:
        """The model, where the prompt sits, the template and the label words.

        >>> from skill_lens.model.tiny import tiny_model
        >>> model = tiny_model()
        >>> PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"]))
        PromptedModel(model: tiny-causal (causal, 2 layers x 64 FFN neurons); prompt: 2-token soft prompt after the input; template: '{text}'; label words: 'bad', 'good')
        """
        return f"{type(self).__name__}(" + "; ".join(f"{k}: {v}" for k, v in _fields(self)) + ")"

    def _repr_html_(self) -> str:
        return card(type(self).__name__, _fields(self))


@dataclass(frozen=True)
class _Added:
    """Hooks :meth:`PromptedModel.with_hooks` added: built per batch, and whether they spare the input."""

    make: Callable[[Batch], Sequence[Hook]]
    prompt_only: bool


def _fields(pm: PromptedModel) -> list[tuple[str, str]]:
    """What ``repr(pm)`` and its notebook card show: the model, where the prompt sits, the template, the label words."""
    info = pm.info
    where = {"causal": "after the input", "mlm": "after <mask>, before the input", "seq2seq": "before the input"}
    prompt = ("none: the text template alone (a hard prompt)" if pm.prompt is None else
              f"{pm.prompt.length}-token soft prompt {where.get(info.family, '')}".strip())
    fields = [("model", f"{info.name} ({info.family}, {info.n_layers} layers x {info.d_mlp} FFN neurons)"),
              ("prompt", prompt), ("template", repr(pm.template)),
              ("label words", ", ".join(repr(w) for w in pm.verbalizer.words))]
    return fields + ([("added hooks", f"{len(pm._added)} set(s), with_hooks")] if pm._added else [])


def _fixed(pairs: list[Hook]) -> Callable[[Batch], list[Hook]]:
    return lambda batch: pairs


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)
