"""Soft prompts, verbalizers, and how a prompt sits in the input of each model family.

A soft prompt is a trainable ``[P, d_model]`` tensor written over the word
embeddings of ``P`` placeholder tokens by a hook on ``embed.hook_out``, so it
composes with every other hook (when no other hook is on, it is written into the
input embeddings of :func:`~skill_lens.model.fast_path.plain_model` instead: the same
numbers without the bridge's overhead). Where the placeholders go depends on the family:

=========  ==================================  ========================
family     token layout                        label logits read at
=========  ==================================  ========================
causal     ``[pad.. , input, prompt]``         last position
mlm        ``[cls, <mask>, prompt, input, sep, pad..]``  the ``<mask>`` slot
seq2seq    ``[prompt, input, </s>, pad..]``    first decoder token
=========  ==================================  ========================

Causal decoders take the prompt *after* the input (left-padded batches), so the
prompt's activations can depend on the input, and the input's keys/values need
no gradient: :meth:`PromptedModel.label_logits` with ``cache_input=True`` runs the
input once without autograd and only the prompt positions with it.

In every layout the prompt occupies the same positions in every row of a batch
(``Batch.prompt_slice``), which keeps probing and interventions simple.

>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("causal")
>>> pm = PromptedModel(model, SoftPrompt.init(model, 4, seed=0), Verbalizer.from_words(model, ["bad", "good"]))
>>> batch = pm.encode(["the movie was good", "bad"])
>>> batch.input_ids.shape, batch.prompt_slice
(torch.Size([2, 8]), slice(4, 8, None))
>>> pm.label_logits(batch).shape
torch.Size([2, 2])
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.store.artifacts import ArtifactError, check_meta, load_tensors, save_tensors
from skill_lens.model.fast_path import plain_model
from skill_lens.model.loading import describe, model_device
from skill_lens.model.placement import execution_device, materialized

__all__ = ["SoftPrompt", "Verbalizer", "Batch", "PromptedModel", "PromptError", "EMBED_HOOK"]

EMBED_HOOK = "embed.hook_out"
Hook = tuple[str, Callable]


class PromptError(ValueError):
    """The prompt, verbalizer or input does not fit the model."""


class SoftPrompt(nn.Module):
    """Trainable prompt embeddings ``[P, d_model]``.

    The embedding is a float32 master copy, whatever the model's dtype: a bfloat16 model gets it cast
    in the hook (``write_prompt``), so gradients and AdamW updates accumulate in float32 (bfloat16 keeps
    only 8 bits of mantissa, too few for small learning-rate steps). It lives on the model's device:
    :meth:`init` makes it there and :class:`PromptedModel` moves a loaded one there; ``save`` writes it
    from the CPU.

    >>> p = SoftPrompt(torch.zeros(3, 8))
    >>> p.length, p.d_model
    (3, 8)
    """

    def __init__(self, embedding: Float[Tensor, "P d_model"], meta: dict | None = None):
        super().__init__()
        self.embedding = nn.Parameter(embedding.detach().clone().float())
        self.meta = dict(meta or {})

    @property
    def length(self) -> int:
        return self.embedding.shape[0]

    @property
    def d_model(self) -> int:
        return self.embedding.shape[1]

    @classmethod
    def init(cls, model: TransformerBridge, length: int, seed: int = 0, how: str = "vocab") -> "SoftPrompt":
        """A new prompt: ``how="vocab"`` copies the embeddings of random vocabulary tokens
        (the usual initialisation for prompt tuning); ``"normal"`` draws from a Gaussian with
        the embedding matrix's standard deviation (a "random prompt" for the origin analysis)."""
        if length < 1:
            raise PromptError(f"prompt length must be at least 1, got {length}")
        W_E = _embedding_matrix(model)
        g = torch.Generator().manual_seed(seed)  # on the CPU: the same prompt for a seed on every device
        if how == "vocab":
            ids = torch.randint(0, W_E.shape[0], (length,), generator=g)
            emb = W_E[ids.to(W_E.device)].float()
        elif how == "normal":
            W = W_E.float()
            emb = torch.randn(length, W_E.shape[1], generator=g).to(W.device) * W.std() + W.mean()
        else:
            raise PromptError(f"unknown prompt initialisation {how!r}; use 'vocab' or 'normal'")
        return cls(emb, meta={**describe(model).as_meta(), "prompt_init": how, "seed": seed})

    def hook(self, seq_len: int, prompt_slice: slice) -> Hook:
        """``(EMBED_HOOK, fn)`` writing the prompt over ``prompt_slice`` of sequences of length ``seq_len``.

        Calls of the embedding with another length (a T5 decoder sharing the embedding)
        pass through unchanged.
        """

        def write_prompt(act: Tensor, hook) -> Tensor:
            return act if act.shape[1] != seq_len else self.write(act, prompt_slice)

        return (EMBED_HOOK, write_prompt)

    def write(self, embeds: Float[Tensor, "batch seq d"], prompt_slice: slice) -> Float[Tensor, "batch seq d"]:
        """``embeds`` with the prompt over ``prompt_slice`` (what :meth:`hook` does to ``embed.hook_out``).

        >>> p = SoftPrompt(torch.ones(2, 3))
        >>> p.write(torch.zeros(1, 4, 3), slice(1, 3))[0, :, 0].tolist()
        [0.0, 1.0, 1.0, 0.0]
        """
        before, after = embeds[:, : prompt_slice.start], embeds[:, prompt_slice.stop :]
        prompt = self.embedding.to(embeds.device, embeds.dtype).unsqueeze(0).expand(embeds.shape[0], -1, -1)
        return torch.cat([before, prompt, after], dim=1)

    def save(self, path, **meta) -> None:
        """Save as safetensors (key ``prompt``) with a JSON sidecar of ``self.meta | meta``."""
        save_tensors(path, {"prompt": self.embedding.data}, {**self.meta, **meta})

    @classmethod
    def load(cls, path, model: TransformerBridge | None = None) -> "SoftPrompt":
        """Load a prompt; with ``model``, check it was made for that model."""
        tensors, meta = load_tensors(path)
        if "prompt" not in tensors:
            raise ArtifactError(f"{path} holds no 'prompt' tensor; is it a prompt file?")
        prompt = cls(tensors["prompt"], meta)
        if model is not None:
            info = describe(model)
            check_meta(meta, {"model": info.name, "d_model": info.d_model}, "prompt")
            if prompt.d_model != info.d_model:
                raise ArtifactError(
                    f"prompt has width {prompt.d_model} but {info.name} has d_model {info.d_model}; "
                    "tune a prompt for this model."
                )
        return prompt


@dataclass(frozen=True)
class Verbalizer:
    """Label words and their single-token ids, one per label.

    >>> from skill_lens.model.tiny import tiny_model
    >>> Verbalizer.from_words(tiny_model(), ["bad", "good"]).token_ids
    (26, 20)
    """

    words: tuple[str, ...]
    token_ids: tuple[int, ...]

    @classmethod
    def from_words(cls, model: TransformerBridge, words: Sequence[str]) -> "Verbalizer":
        """Map each word to one token, trying ``" word"`` (BPE word start) before ``"word"``.

        Raises :class:`PromptError` naming the word and how it tokenizes when no variant is one token.
        """
        tok = model.tokenizer
        ids = []
        for word in words:
            candidates = [" " + word.strip(), word.strip(), " " + word.strip().lower(), word.strip().lower()]
            for c in candidates:
                piece = tok.encode(c, add_special_tokens=False)
                if len(piece) == 1 and piece[0] != tok.unk_token_id:
                    ids.append(piece[0])
                    break
            else:
                shown = tok.convert_ids_to_tokens(tok.encode(" " + word.strip(), add_special_tokens=False))
                raise PromptError(
                    f"label word {word!r} is not a single token for this tokenizer (it splits into {shown}); "
                    "choose single-token label words, e.g. with --label-words."
                )
        if len(set(ids)) != len(ids):
            raise PromptError(f"label words {list(words)} map to repeated tokens {ids}; use distinct words.")
        return cls(tuple(words), tuple(ids))


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
        """The same batch with its tensors on ``device`` (:meth:`PromptedModel.encode` puts it on the model's).

        >>> b = Batch(torch.ones(1, 2, dtype=torch.long), torch.ones(1, 2), slice(1, 2), torch.tensor([1]),
        ...           torch.ones(1, 2, dtype=torch.bool))
        >>> b.to("cpu").input_ids.device
        device(type='cpu')
        """
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.prompt_slice,
                     self.predict_pos.to(device), self.input_mask.to(device))


class PromptedModel:
    """A frozen model, a soft prompt and a verbalizer: encode texts, get label logits, add hooks.

    ``prompt=None`` runs the bare template, which is how hard (text) prompts are evaluated.
    Causal inputs start with BOS only where the tokenizer adds one itself (Llama does; GPT-2
    and SmolLM2 do not); ``prepend_bos`` overrides that.
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
        if max_length is not None and max_length < 1:
            raise PromptError(f"max_length must be a positive number of tokens, got {max_length}; "
                              "pass None (no --max-length) to use the model's context.")
        self.max_length = max_length
        tok = model.tokenizer
        self._placeholder = next(i for i in (tok.unk_token_id, tok.eos_token_id, 0) if i is not None)
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else self._placeholder
        self.prepend_bos = self._default_prepend_bos() if prepend_bos is None else prepend_bos

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else self.prompt.length

    # ---------------------------------------------------------------- encoding
    def encode(self, texts: Sequence[str], texts_b: Sequence[str] | None = None) -> Batch:
        """Tokenize and lay out a batch for this family (see the module docstring)."""
        if len(texts) == 0:
            raise PromptError("cannot encode an empty batch")
        tok, fam, P = self.model.tokenizer, self.info.family, self.prompt_length
        strings = [
            self.template.format(text=t) if texts_b is None else self.pair_template.format(text=t, text_b=b)
            for t, b in zip(texts, texts_b if texts_b is not None else texts)
        ]
        if fam == "mlm" and P == 0:  # hard prompt on an MLM: predict at a trailing <mask>
            strings = [s + " " + tok.mask_token for s in strings]
        bodies = [tok.encode(s, add_special_tokens=False) for s in strings]
        specials = {"causal": 1 if self._bos() is not None else 0, "mlm": 3, "seq2seq": 1}[fam]
        limit = self.info.n_ctx if self.max_length is None else min(self.info.n_ctx, self.max_length)
        budget = limit - P - specials
        if budget <= 0:  # no room for a single text token: truncating would silently drop every text
            by_max_length = limit < self.info.n_ctx
            raise PromptError(
                f"{f'max_length={limit}' if by_max_length else f'the context of {self.info.name} ({limit})'} leaves "
                f"no room for the text: the {P}-token prompt and {specials} special token(s) take {P + specials}; "
                + (f"use max_length of at least {P + specials + 1}." if by_max_length
                   else f"use a prompt of at most {limit - specials - 1} tokens.")
            )
        too_long = [i for i, b in enumerate(bodies) if len(b) > budget]
        if too_long and self.max_length is None:
            i = too_long[0]
            raise PromptError(
                f"text {i} has {len(bodies[i])} tokens but only {budget} fit in the model's context "
                f"({self.info.n_ctx}) with a {P}-token prompt; pass max_length (CLI: --max-length) to truncate."
            )
        bodies = [b[:budget] for b in bodies]
        ph = [self._placeholder] * P
        if fam == "causal":
            bos = [self._bos()] if self._bos() is not None else []
            rows = [bos + b + ph for b in bodies]
            return self._pad_rows(rows, left=True, prompt_start=-P, predict=-1, body_start=len(bos), bodies=bodies)
        cls_id = tok.cls_token_id if tok.cls_token_id is not None else tok.bos_token_id
        sep_id = tok.sep_token_id if tok.sep_token_id is not None else tok.eos_token_id
        if fam == "mlm" and P == 0:  # the trailing <mask> sits at a different place in each row
            rows = [[cls_id] + b + [sep_id] for b in bodies]
            return self._pad_rows(rows, left=False, prompt_start=0, predict=[len(b) for b in bodies],
                                  body_start=1, bodies=bodies)
        if fam == "mlm":
            rows = [[cls_id, tok.mask_token_id] + ph + b + [sep_id] for b in bodies]
            return self._pad_rows(rows, left=False, prompt_start=2, predict=1, body_start=2 + P, bodies=bodies)
        rows = [ph + b + [tok.eos_token_id] for b in bodies]  # seq2seq
        return self._pad_rows(rows, left=False, prompt_start=0, predict=0, body_start=P, bodies=bodies)

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

    def _default_prepend_bos(self) -> bool:
        """Follow the tokenizer's own convention, not the bridge's ``default_prepend_bos``.

        Llama-style tokenizers add ``<s>`` themselves; GPT-2 and SmolLM2 do not, and SmolLM2's
        BOS is the chat token ``<|im_start|>``, which costs a plain classification prompt about
        15 points of accuracy (0.61 vs 0.77 zero-shot on Rotten Tomatoes). The bridge makes every
        tokenizer add BOS, so :func:`skill_lens.model.loading.bridge_from_hf` records the original habit.
        """
        recorded = self.model.__dict__.get("_skill_lens_tokenizer_adds_bos")
        if recorded is not None:
            return recorded
        return bool(getattr(self.model.cfg, "default_prepend_bos", False))

    def _bos(self) -> int | None:
        return self.model.tokenizer.bos_token_id if self.info.family == "causal" and self.prepend_bos else None

    def _pad_rows(self, rows, left, prompt_start, predict, body_start, bodies) -> Batch:
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), n), dtype=torch.long)
        input_mask = torch.zeros((len(rows), n), dtype=torch.bool)
        for i, (r, b) in enumerate(zip(rows, bodies)):
            off = n - len(r) if left else 0
            ids[i, off : off + len(r)] = torch.tensor(r)
            mask[i, off : off + len(r)] = 1
            input_mask[i, off + body_start : off + body_start + len(b)] = True
        P = self.prompt_length
        start = n + prompt_start if prompt_start < 0 else prompt_start
        if isinstance(predict, int):
            predict = [predict if predict >= 0 else n + predict] * len(rows)
        return Batch(ids, mask, slice(start, start + P), torch.tensor(predict), input_mask).to(model_device(self.model))

    # ---------------------------------------------------------------- running
    def hooks(self, batch: Batch) -> list[Hook]:
        """Every hook a forward of ``batch`` runs: the prompt's (none for a hard prompt) and :meth:`model_hooks`."""
        return [*self._prompt_hook(batch.input_ids.shape[1], batch.prompt_slice), *self.model_hooks()]

    def model_hooks(self) -> list[Hook]:
        """Hooks every forward of this model runs besides the prompt's: none here; a subclass's tuned
        module (:class:`~skill_lens.prompting.peft_methods.HookedPromptedModel`). While there are any, forwards run on
        the bridge and stored input keys/values are not used.

        >>> from skill_lens.model.tiny import tiny_model
        >>> model = tiny_model()
        >>> PromptedModel(model, SoftPrompt.init(model, 2), Verbalizer.from_words(model, ["bad", "good"])).model_hooks()
        []
        """
        return []

    def _prompt_hook(self, seq_len: int, prompt_slice: slice | None) -> list[Hook]:
        return [] if self.prompt is None or prompt_slice is None else [self.prompt.hook(seq_len, prompt_slice)]

    def label_logits(
        self, batch: Batch, fwd_hooks: Sequence[Hook] = (), cache_input: bool = False, input_cache=None,
        prompt_hooks: Callable[[Batch], Sequence[Hook]] | None = None,
    ) -> Float[Tensor, "batch n_labels"]:
        """Verbalizer logits at the prediction position, with the prompt and ``fwd_hooks`` applied.

        ``cache_input=True`` (causal family only) computes the input part without autograd and
        runs only the prompt positions with it: same numbers, far less backward work. An
        :class:`~skill_lens.model.input_cache.InputCache` as ``input_cache`` also keeps the input's keys and
        values for the next time the same input comes (used only without ``fwd_hooks``).

        ``prompt_hooks(b)`` builds hooks that act on the prompt positions only (e.g. interventions
        with ``positions="prompt"``) for the batch ``b`` that runs them: ``batch`` itself, or, when
        the input is cached, its prompt part alone. Unlike ``fwd_hooks`` they leave the input's keys
        and values untouched, so they do not stop ``input_cache`` from being used.
        """
        if cache_input and self.info.family == "causal" and self.prompt is not None:
            held = None if fwd_hooks or self.model_hooks() else input_cache  # stored inputs ran without hooks
            return self._label_logits_cached(batch, fwd_hooks, held, prompt_hooks)
        extra = prompt_hooks(batch) if prompt_hooks is not None else ()
        return self._head(self._hidden(batch, [*fwd_hooks, *extra]))

    def _hidden(self, batch: Batch, hooks: Sequence[Hook]) -> Tensor:
        """Final hidden state at the prediction position (seq2seq: the first decoder logits)."""
        hf, fam = self.model.original_model, self.info.family
        if fam == "seq2seq":  # one decoder step; its full logits are cheap
            dec = torch.full((batch.size, 1), hf.config.decoder_start_token_id, dtype=torch.long,
                             device=batch.input_ids.device)
            with self.model.hooks(fwd_hooks=[*self.hooks(batch), *hooks]):
                out = hf(input_ids=batch.input_ids, attention_mask=batch.attention_mask, decoder_input_ids=dec)
            return out.logits[:, 0]
        kwargs = {}
        if fam == "causal":
            kwargs["position_ids"] = _positions(batch.attention_mask)
        out = self._run(batch.input_ids, batch.prompt_slice, hooks, attention_mask=batch.attention_mask, **kwargs)
        return out.last_hidden_state[torch.arange(batch.size, device=batch.predict_pos.device), batch.predict_pos]

    def _run(self, input_ids: Tensor, prompt_slice: slice | None, hooks: Sequence[Hook], **kwargs):
        """The base model (no LM head) on ``input_ids``, the prompt over ``prompt_slice`` (``None``: no prompt),
        with ``hooks``. When nothing hooks it runs the plain Hugging Face model
        (:func:`~skill_lens.model.fast_path.plain_model`), the prompt written into the input embeddings: the
        same numbers without the bridge's overhead."""
        hooks = [*self.model_hooks(), *hooks]
        plain = None if hooks else plain_model(self.model)
        if plain is None:
            with self.model.hooks(fwd_hooks=[*self._prompt_hook(input_ids.shape[1], prompt_slice), *hooks]):
                return self.model.original_model.base_model(input_ids=input_ids, **kwargs)
        if self.prompt is None or prompt_slice is None:
            return plain.base_model(input_ids=input_ids, **kwargs)
        embeds = self.prompt.write(plain.get_input_embeddings()(input_ids), prompt_slice)
        return plain.base_model(inputs_embeds=embeds, **kwargs)

    def _label_logits_cached(self, batch: Batch, fwd_hooks: Sequence[Hook], input_cache=None,
                             prompt_hooks: Callable[[Batch], Sequence[Hook]] | None = None) -> Tensor:
        P, n = self.prompt_length, batch.input_ids.shape[1]
        pos = _positions(batch.attention_mask)
        past = None
        if input_cache is not None:
            past = input_cache.past(self.model, batch.input_ids[:, : n - P], batch.attention_mask[:, : n - P],
                                    pos[:, : n - P])
        if past is None:
            with torch.no_grad():
                past = self._run(batch.input_ids[:, : n - P], None, fwd_hooks, use_cache=True,
                                 attention_mask=batch.attention_mask[:, : n - P], position_ids=pos[:, : n - P],
                                 ).past_key_values
        prompt_batch = Batch(batch.input_ids[:, n - P :], batch.attention_mask, slice(0, P),
                             torch.full((batch.size,), P - 1, device=pos.device), batch.input_mask[:, n - P :])
        extra = prompt_hooks(prompt_batch) if prompt_hooks is not None else ()
        out = self._run(prompt_batch.input_ids, prompt_batch.prompt_slice, [*fwd_hooks, *extra],
                        attention_mask=batch.attention_mask, position_ids=pos[:, n - P :], past_key_values=past,
                        use_cache=True)
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

    @contextlib.contextmanager
    def prompt_hooks(self, batch: Batch) -> Iterator[None]:
        """Context manager that installs the prompt for ``batch`` on the bridge (for ``run_with_cache`` etc.)."""
        with self.model.hooks(fwd_hooks=self.hooks(batch)):
            yield


def _positions(attention_mask: Tensor) -> Tensor:
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def _embedding_matrix(model: TransformerBridge) -> Tensor:
    embed = model.original_model.get_input_embeddings()
    with materialized(embed):  # an offloaded embedding: the tensor loaded for the block stays valid after it
        return embed.weight.detach()
