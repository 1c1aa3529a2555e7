"""Soft prompts and verbalizers: the trainable prompt, and the label words it is read at.

A soft prompt is a trainable ``[P, d_model]`` tensor written over the word embeddings of ``P``
placeholder tokens by a hook on ``embed.hook_out`` (:meth:`SoftPrompt.hook`), so it composes with every
other hook. A verbalizer maps each label to one token of the vocabulary, whose logit is the label's.
Where the placeholders sit in each family's input, and the forward pass that runs them, belong to
:class:`~skill_lens.prompting.prompted_model.PromptedModel`.

>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("causal")
>>> prompt = SoftPrompt.init(model, 4, seed=0)
>>> prompt.length, prompt.d_model, prompt.hook(8, slice(4, 8))[0]
(4, 32, 'embed.hook_out')
>>> Verbalizer.from_words(model, ["bad", "good"]).words
('bad', 'good')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.store.artifacts import ArtifactError, check_meta, load_tensors, save_tensors
from skill_lens.model.loading import describe
from skill_lens.model.placement import materialized

__all__ = ["SoftPrompt", "Verbalizer", "PromptError", "EMBED_HOOK", "Hook"]

EMBED_HOOK = "embed.hook_out"
Hook = tuple[str, Callable]


class PromptError(ValueError):
    """The prompt, verbalizer or input does not fit the model."""


class SoftPrompt(nn.Module):
    """Trainable prompt embeddings ``[P, d_model]``.

    The embedding is a float32 master copy, whatever the model's dtype: a bfloat16 model gets it cast
    in the hook (``write_prompt``), so gradients and AdamW updates accumulate in float32 (bfloat16 keeps
    only 8 bits of mantissa, too few for small learning-rate steps). It lives on the model's device:
    :meth:`init` makes it there, :class:`~skill_lens.prompting.prompted_model.PromptedModel` moves a
    loaded one there, and ``save`` writes it from the CPU.

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


def _embedding_matrix(model: TransformerBridge) -> Tensor:
    embed = model.original_model.get_input_embeddings()
    with materialized(embed):  # an offloaded embedding: the tensor loaded for the block stays valid after it
        return embed.weight.detach()
