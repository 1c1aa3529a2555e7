"""Keys and values of causal inputs, kept across tuning steps.

The model is frozen and a causal model's prompt comes *after* the input, so an input's keys and
values never change while the prompt trains. :class:`InputCache` keeps them per example, keyed by
the input's token ids: after the first epoch a tuning step (and a dev evaluation) runs only the
prompt positions, against keys and values it looks up.

Each input is computed alone, without padding, so its keys and values do not depend on which
examples share its batch: a resumed run equals an uninterrupted one. Past ``max_mb`` the cache
stops growing and further inputs are computed every time (correct, only slower). Hooks on the
input positions are not re-run for cached inputs, so :meth:`PromptedModel.label_logits` uses the
cache only when it is given no ``fwd_hooks``; hooks on the prompt positions go in as ``prompt_hooks``
(suppression curves do this, :func:`skill_lens.interventions.per_batch` with ``prompt_only=True``).

>>> from skill_lens.tiny import tiny_model
>>> from skill_lens.prompts import PromptedModel, SoftPrompt, Verbalizer
>>> model = tiny_model("causal")
>>> pm = PromptedModel(model, SoftPrompt.init(model, 2, seed=0), Verbalizer.from_words(model, ["bad", "good"]))
>>> cache, batch = InputCache(), pm.encode(["the movie was good", "bad"])
>>> plain = pm.label_logits(batch)
>>> for _ in range(2):
...     cached = pm.label_logits(batch, cache_input=True, input_cache=cache)
>>> torch.allclose(cached, plain, atol=1e-5), len(cache), (cache.hits, cache.misses)
(True, 2, (2, 2))
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import DynamicCache

__all__ = ["InputCache"]


class InputCache:
    """Per-example input keys/values of a frozen causal model, bounded by ``max_mb``."""

    def __init__(self, max_mb: float = 2048.0):
        self.max_bytes = int(max_mb * 2**20)
        self.bytes = self.hits = self.misses = 0
        self._store: dict[tuple[int, ...], list[tuple[Tensor, Tensor]]] = {}

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return (f"InputCache({len(self)} inputs, {self.bytes / 2**20:.0f} of {self.max_bytes / 2**20:.0f} MB, "
                f"{self.hits} hits, {self.misses} misses)")

    @torch.no_grad()
    def past(self, hf: torch.nn.Module, ids: Int[Tensor, "batch n"], mask: Bool[Tensor, "batch n"],
             positions: Int[Tensor, "batch n"]) -> DynamicCache | None:
        """A left-padded ``DynamicCache`` for the input part of a batch (``mask`` marks real tokens).

        ``None`` when a row has no input token (nothing to cache; the caller runs the batch as usual).
        """
        if not mask.bool().any(1).all():
            return None
        rows = [self._one(hf, ids[i, m], positions[i, m]) for i, m in enumerate(mask.bool())]
        layers = []
        for layer in range(len(rows[0])):
            k0 = rows[0][layer][0]
            keys = k0.new_zeros(len(rows), k0.shape[0], ids.shape[1], k0.shape[2])
            values = torch.zeros_like(keys)
            for i, row in enumerate(rows):
                length = row[layer][0].shape[1]
                if length:
                    keys[i, :, -length:], values[i, :, -length:] = row[layer]
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers)

    def _one(self, hf, ids: Tensor, positions: Tensor) -> list[tuple[Tensor, Tensor]]:
        key = tuple(ids.tolist())
        kv = self._store.get(key)
        if kv is not None:
            self.hits += 1
            return kv
        self.misses += 1
        out = hf.base_model(input_ids=ids[None], position_ids=positions[None], use_cache=True).past_key_values
        kv = [(k[0].clone(), v[0].clone()) for k, v, *_ in out]
        size = sum(2 * k.numel() * k.element_size() for k, _ in kv)
        if self.bytes + size <= self.max_bytes:
            self._store[key] = kv
            self.bytes += size
        return kv
