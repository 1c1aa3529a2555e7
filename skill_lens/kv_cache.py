"""Keys and values of causal inputs, computed once in batches and kept across passes.

The model is frozen and a causal model's prompt comes *after* the input, so an input's keys and
values never change while the prompt trains, nor between the passes over a split (dev evaluations,
the probe, suppression curves). :class:`InputCache` keeps them per example, keyed by the input's
token ids: a tuning step or an evaluation of a stored input runs only the prompt positions.

:meth:`InputCache.fill` computes a split's inputs in fixed length-sorted batches of ``batch_size``
(:func:`skill_lens.batching.length_batches`): which inputs share a batch depends only on the split,
never on a step's order, so a resumed tuning equals an uninterrupted one bit for bit, and batches
of similar length waste little on padding. Kept keys/values differ from an input computed alone
only by float rounding (about 1e-6). They are stored in the model's dtype: float32 on CPU is what
the rest of the forward computes in, and bfloat16 storage would move the label logits by about
1e-2, enough to flip borderline examples. Past ``max_mb`` the cache stops growing; an input it
does not hold is computed alone each time it comes (correct and deterministic, only slower), and
a split that does not fit is not filled at all: :func:`~skill_lens.evaluation.predict` and the probe
then run it the ordinary way.

Hooks on the input positions are not re-run for stored inputs, so
:meth:`PromptedModel.label_logits` uses the cache only when it is given no ``fwd_hooks``; hooks on
the prompt positions go in as ``prompt_hooks`` (suppression curves and the probe do this). A cache
belongs to one model: using it with another raises.

>>> from skill_lens.tiny import tiny_model, tiny_task
>>> from skill_lens.prompts import PromptedModel, SoftPrompt, Verbalizer
>>> model, dev = tiny_model("causal"), tiny_task().dev
>>> pm = PromptedModel(model, SoftPrompt.init(model, 2, seed=0), Verbalizer.from_words(model, ["bad", "good"]))
>>> cache = InputCache()
>>> cache.fill(pm, dev)  # every dev input is now held
True
>>> batch = pm.encode_split(dev, slice(0, 4))
>>> cached = pm.label_logits(batch, cache_input=True, input_cache=cache)
>>> torch.allclose(cached, pm.label_logits(batch), atol=1e-5), len(cache), (cache.hits, cache.misses)
(True, 32, (4, 0))
"""

from __future__ import annotations

import weakref

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformers import DynamicCache

from skill_lens.batching import length_batches

__all__ = ["InputCache"]

KV = list[tuple[Tensor, Tensor]]  # one input's (keys, values) per layer, each [kv_heads, length, head_dim]


class InputCache:
    """Per-example input keys/values of one frozen causal model, bounded by ``max_mb``.

    ``batch_size`` is the size of :meth:`fill`'s length-sorted batches (part of what the kept numbers
    are, so keep it fixed across a job and its resumption).
    """

    def __init__(self, max_mb: float = 4096.0, batch_size: int = 32):
        if not max_mb >= 0 or batch_size < 1:
            raise ValueError(f"InputCache needs max_mb >= 0 and batch_size >= 1, got {max_mb!r} and {batch_size!r}")
        self.max_bytes, self.batch_size = int(max_mb * 2**20), batch_size
        self.bytes = self.hits = self.misses = 0
        self._store: dict[tuple[int, ...], KV] = {}
        self._model = None
        self._per_token = 0.0  # bytes of one token's keys/values, known once one input is computed

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return (f"InputCache({len(self)} inputs, {self.bytes / 2**20:.0f} of {self.max_bytes / 2**20:.0f} MB, "
                f"{self.hits} hits, {self.misses} misses)")

    @torch.no_grad()
    def fill(self, pm, split) -> bool:
        """Compute and keep the inputs of ``split`` under ``pm`` not kept yet, in :meth:`__init__`'s fixed
        length-sorted batches; ``True`` when the cache then holds every input of the split.

        A split that would not fit in ``max_mb`` is not computed (beyond one batch, to learn the size of a
        token's keys/values): callers then run it the ordinary way. A no-op (``False``) for non-causal
        models and hard prompts, whose passes do not use the cache.
        """
        if pm.info.family != "causal" or pm.prompt is None or len(split) == 0:
            return False
        hf, P = self._bind(pm.model.original_model), pm.prompt_length
        todo = []
        for idx in length_batches(pm, split, self.batch_size):
            batch = pm.encode_split(split, idx)
            n = batch.input_ids.shape[1] - P
            ids, mask = batch.input_ids[:, :n], batch.attention_mask[:, :n]
            keys = [tuple(ids[i, m].tolist()) for i, m in enumerate(mask.bool())]
            if not all(k in self._store or not k for k in keys):
                todo.append((ids, mask, keys))
        need = sum(len(k) for *_, keys in todo for k in set(keys) if k and k not in self._store)
        for ids, mask, keys in todo:
            if self._per_token and self.bytes + need * self._per_token > self.max_bytes:
                return False
            out = hf.base_model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                use_cache=True).past_key_values
            layers, n = [(k, v) for k, v, *_ in out], ids.shape[1]
            for i, key in enumerate(keys):
                if key and key not in self._store:
                    need -= len(key)
                    self._keep(key, [(k[i, :, n - len(key):].clone(), v[i, :, n - len(key):].clone())
                                     for k, v in layers])
        return all(k in self._store for *_, keys in todo for k in keys if k)

    @torch.no_grad()
    def past(self, hf: torch.nn.Module, ids: Int[Tensor, "batch n"], mask: Bool[Tensor, "batch n"],
             positions: Int[Tensor, "batch n"]) -> DynamicCache | None:
        """A left-padded ``DynamicCache`` for the input part of a batch (``mask`` marks real tokens).

        ``None`` when a row has no input token (nothing to cache; the caller runs the batch as usual).
        """
        if not mask.bool().any(1).all():
            return None
        self._bind(hf)
        rows = [self._one(hf, ids[i, m], positions[i, m]) for i, m in enumerate(mask.bool())]
        layers = []
        for layer in range(len(rows[0])):
            k0 = rows[0][layer][0]
            keys = k0.new_zeros(len(rows), k0.shape[0], ids.shape[1], k0.shape[2])
            values = torch.zeros_like(keys)
            for i, row in enumerate(rows):
                length = row[layer][0].shape[1]
                keys[i, :, -length:], values[i, :, -length:] = row[layer]
            layers.append((keys, values))
        return DynamicCache(ddp_cache_data=layers)

    def clear(self) -> None:
        """Forget every kept input (frees the memory; the counters stay)."""
        self._store.clear()
        self.bytes = 0

    def _one(self, hf, ids: Tensor, positions: Tensor) -> KV:
        """A kept input, or one computed alone (kept while there is room)."""
        key = tuple(ids.tolist())
        kv = self._store.get(key)
        if kv is not None:
            self.hits += 1
            return kv
        self.misses += 1
        out = hf.base_model(input_ids=ids[None], position_ids=positions[None], use_cache=True).past_key_values
        kv = [(k[0].clone(), v[0].clone()) for k, v, *_ in out]
        self._keep(key, kv)
        return kv

    def _keep(self, key: tuple[int, ...], kv: KV) -> None:
        size = sum(2 * k.numel() * k.element_size() for k, _ in kv)
        self._per_token = size / max(1, len(key))
        if self.bytes + size <= self.max_bytes:
            self._store[key] = kv
            self.bytes += size

    def _bind(self, hf):
        """The model this cache belongs to: the first one it sees; another one raises."""
        owner = self._model() if self._model is not None else None
        if owner is None:  # new, or its model is gone (and what it kept with it)
            self.clear()
            self._model = weakref.ref(hf)
        elif owner is not hf:
            raise ValueError("this InputCache holds the keys/values of another model; use one InputCache per model "
                             "(a pruned or reloaded model needs a new one).")
        return hf
