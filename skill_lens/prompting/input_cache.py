"""Keys and values of causal inputs, computed once in batches and kept across passes.

The model is frozen and a causal model's prompt comes *after* the input, so an input's keys and
values never change while the prompt trains, nor between the passes over a split (dev evaluations,
the probe, suppression curves). :class:`InputCache` keeps them per example, keyed by the input's
token ids: a tuning step or an evaluation of a stored input runs only the prompt positions.

:meth:`InputCache.fill` computes a split's inputs in fixed length-sorted batches of ``batch_size``
(:func:`skill_lens.data.batching.length_batches` of the inputs' lengths): which inputs share a batch depends
only on the split, never on a step's order or the prompt's length, so a resumed tuning equals an
uninterrupted one bit for bit, and batches of similar length waste little on padding. Kept
keys/values differ from an input computed alone only by float rounding (about 1e-6). They are
stored in the model's dtype: float32 on CPU is what the rest of the forward computes in, and bfloat16 storage would move the label logits by about
1e-2, enough to flip borderline examples. Past ``max_mb`` the cache stops growing; an input it
does not hold is computed alone each time it comes (correct and deterministic, only slower), and
a split that does not fit is not filled at all: :func:`~skill_lens.prompting.evaluation.predict` and the probe
then run it the ordinary way.

With a ``directory`` (:meth:`InputCache.persistent`, which every :class:`~skill_lens.workflow.runs.Run` uses), a
split computed whole is also written to disk, and read back bit for bit by the next process that fills
the same split on the same model: ``skill-lens tune`` then ``skill-lens probe`` compute each input once
(:mod:`skill_lens.prompting.input_files`).

Hooks on the input positions are not re-run for stored inputs, so
:meth:`~skill_lens.prompting.prompted_model.PromptedModel.label_logits` uses the cache only when every
hook acts on the prompt positions alone (added with ``with_hooks(..., prompt_only=True)``: suppression
curves and the probe do this); the cache computes its inputs through the prompted model
(:meth:`~skill_lens.prompting.prompted_model.PromptedModel.run_input`). A cache belongs to one model:
using it with another raises.

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.prompted_model import PromptedModel
>>> from skill_lens.prompting.prompts import SoftPrompt, Verbalizer
>>> model, dev = tiny_model("causal"), tiny_task().dev
>>> pm = PromptedModel(model, SoftPrompt.init(model, 2, seed=0), Verbalizer.from_words(model, ["bad", "good"]))
>>> cache = InputCache()
>>> cache.fill(pm, dev)  # every dev input is now held
True
>>> batch = pm.encode_split(dev, slice(0, 4))
>>> cached = pm.label_logits(batch, input_cache=cache)
>>> torch.allclose(cached, pm.label_logits(batch), atol=1e-5), len(cache), (cache.hits, cache.misses)
(True, 32, (4, 0))
"""

from __future__ import annotations

import os
import warnings
import weakref
from pathlib import Path

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from skill_lens.store.artifacts import ArtifactError
from skill_lens.data.batching import length_batches, token_lengths
from skill_lens.store.packaged import cache_dir
from skill_lens.model.placement import layer_devices
from skill_lens.prompting.input_files import DEFAULT_DISK_MB, DISK_ENV, InputFiles, disk_budget_mb

__all__ = ["InputCache"]

KV = Float[Tensor, "layers 2 kv_heads length head_dim"]  # one input's keys (0) and values (1), every layer


class InputCache:
    """Per-example input keys/values of one frozen causal model, bounded by ``max_mb``.

    ``batch_size`` is the size of :meth:`fill`'s length-sorted batches (part of what the kept numbers
    are, so keep it fixed across a job and its resumption).

    With a ``directory``, every split :meth:`fill` computes whole is also written there (one safetensors
    file per model and split, named by the hash of everything its numbers depend on), and a later
    :meth:`fill` of the same split on the same model, in this process or another, reads it instead of
    computing it: ``skill-lens tune`` then ``skill-lens probe`` compute each input once. The directory is
    kept under ``disk_mb`` by removing its least recently used files (only files it names:
    :class:`~skill_lens.prompting.input_files.InputFiles`). :meth:`persistent` makes the cache that runs use.
    """

    def __init__(self, max_mb: float = 4096.0, batch_size: int = 32, directory: str | os.PathLike | None = None,
                 disk_mb: float = DEFAULT_DISK_MB):
        if not max_mb >= 0 or batch_size < 1 or not disk_mb >= 0:
            raise ValueError(f"InputCache needs max_mb >= 0, batch_size >= 1 and disk_mb >= 0, got {max_mb!r}, "
                             f"{batch_size!r} and {disk_mb!r}")
        self.max_bytes, self.batch_size = int(max_mb * 2**20), batch_size
        self.files = InputFiles(directory, disk_mb) if directory is not None and disk_mb > 0 else None
        self.bytes = self.hits = self.misses = self.loaded = 0
        self._store: dict[tuple[int, ...], KV] = {}
        self._model = None
        self._per_token = 0.0  # bytes of one token's keys/values, known once one input is computed

    def __len__(self) -> int:
        return len(self._store)

    @property
    def directory(self) -> Path | None:
        """Where whole splits are kept on disk (``None``: nowhere)."""
        return None if self.files is None else self.files.directory

    @classmethod
    def persistent(cls, max_mb: float = 4096.0) -> "InputCache":
        """The cache a :class:`~skill_lens.workflow.runs.Run` uses: kept on disk in ``<cache>/inputs``
        (:func:`skill_lens.store.packaged.cache_dir`), at most ``$SKILL_LENS_INPUT_DISK_MB`` megabytes (default 8192;
        0 keeps nothing on disk).

        >>> cache = InputCache.persistent()
        >>> cache.directory is None or cache.directory.name == "inputs"
        True
        """
        return cls(max_mb, directory=cache_dir() / "inputs", disk_mb=disk_budget_mb())

    def __repr__(self) -> str:
        return (f"InputCache({len(self)} inputs, {self.bytes / 2**20:.0f} of {self.max_bytes / 2**20:.0f} MB, "
                f"{self.hits} hits, {self.misses} misses, {self.loaded} read from disk)")

    @torch.no_grad()
    def fill(self, pm, split, examples=None) -> bool:
        """Compute and keep the inputs of ``split`` under ``pm`` not kept yet, in :meth:`__init__`'s fixed
        length-sorted batches; ``True`` when the cache then holds every input of the split.

        A split that would not fit in ``max_mb`` is not computed (beyond one batch, to learn the size of a
        token's keys/values), nor one whose batch runs out of memory: callers then run it the ordinary way.
        A no-op (``False``) for non-causal models and hard prompts, whose passes do not use the cache.

        ``examples`` (indices into the split) limits it to the batches holding them, as one rank of a
        ``torch.distributed`` job needs: the same batches, so the same numbers, as a fill of the whole split
        (which alone is written to disk, once every input of it is held).

        >>> import tempfile
        >>> from skill_lens.model.tiny import tiny_model, tiny_task
        >>> from skill_lens.prompting.evaluation import prompted
        >>> from skill_lens.prompting.prompts import SoftPrompt
        >>> model, task = tiny_model("causal"), tiny_task()
        >>> pm = prompted(model, task, SoftPrompt.init(model, 2, seed=0))
        >>> small = InputCache(max_mb=0.001, batch_size=64, directory=tempfile.mkdtemp())
        >>> small.fill(pm, task.dev), len(list(small.directory.iterdir()))  # does not fit: nothing kept on disk
        (False, 0)
        """
        if pm.info.family != "causal" or pm.prompt is None or len(split) == 0:
            return False
        run = self._runner(pm)  # binds the cache to pm's model first: what it then reads from disk is kept for it
        batches = self._batches(pm, split, examples)
        held = lambda: all(self._holds(b[2]) for b in batches)  # noqa: E731
        if held():
            return True
        whole = batches if examples is None else self._batches(pm, split)
        path, identity = self.files.locate(pm, whole, self.batch_size) if self.files is not None else (None, None)
        readable = path is not None and self._read(path, identity)
        if readable and held():
            return True
        try:
            if not self._compute(run, [b for b in batches if not self._holds(b[2])]):
                return False
        except torch.OutOfMemoryError:  # a batch of inputs does not fit: the caller runs the split whole
            return False
        if path is not None and not readable and examples is None and held():  # absent or damaged: (re)write it
            try:
                self.files.write(path, identity, {k: self._store[k] for *_, keys in batches for k in keys if k})
            except (OSError, ArtifactError) as e:  # a full or read-only disk costs speed, never the job
                warnings.warn(f"could not keep the input keys/values in {self.directory} ({e}); they will be "
                              f"computed again next time. Free disk space, or set ${DISK_ENV}=0.", stacklevel=2)
        return held()

    def _batches(self, pm, split, examples=None) -> list:
        """``(ids, mask, keys)`` of the split's fixed input batches (those holding ``examples``, if given)."""
        P, want = pm.prompt_length, None if examples is None else {int(i) for i in examples}
        inputs = token_lengths(pm, split) - P  # batches of the inputs alone: the same for every prompt length
        out = []
        for idx in length_batches(pm, split, self.batch_size, lengths=inputs):
            if want is not None and not want.intersection(idx):
                continue
            batch = pm.encode_split(split, idx)
            n = batch.input_ids.shape[1] - P
            ids, mask = batch.input_ids[:, :n], batch.attention_mask[:, :n]
            out.append((ids, mask, [tuple(ids[i, m].tolist()) for i, m in enumerate(mask.bool())]))
        return out

    def _compute(self, run, todo: list) -> bool:
        """Compute and keep the inputs of batches ``todo``; ``False`` once they would not fit in ``max_mb`` (or
        the model's keys and values cannot be kept)."""
        need = sum(len(k) for *_, keys in todo for k in set(keys) if k and k not in self._store)
        for ids, mask, keys in todo:
            if self._per_token and self.bytes + need * self._per_token > self.max_bytes:
                return False
            out = run(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                      use_cache=True).past_key_values
            if _row(out, 0, 0) is None:
                return False
            n = ids.shape[1]
            for i, key in enumerate(keys):
                if key and key not in self._store:
                    need -= len(key)
                    self._keep(key, _row(out, i, n - len(key)))
        return True

    def _holds(self, keys: list[tuple[int, ...]]) -> bool:
        return all(k in self._store or not k for k in keys)

    def _read(self, path: Path, identity: dict) -> bool:
        """Keep the inputs of the split file ``path``; ``False`` if it cannot be used (see
        :meth:`~skill_lens.prompting.input_files.InputFiles.read`; too big for ``max_mb``: computing them would
        not fit either)."""
        inputs = self.files.read(path, identity, room=self.max_bytes - self.bytes)
        for key, kv in inputs or ():
            if key not in self._store and self._keep(key, kv):
                self.loaded += 1
        return inputs is not None

    @torch.no_grad()
    def past(self, pm, ids: Int[Tensor, "batch n"], mask: Bool[Tensor, "batch n"],
             positions: Int[Tensor, "batch n"]) -> DynamicCache | None:
        """A left-padded ``DynamicCache`` for the input part of a batch (``mask`` marks real tokens) of the
        prompted model ``pm``; inputs not held yet are computed alone (and kept while there is room).

        ``None`` when a row has no input token (nothing to cache; the caller runs the batch as usual).
        """
        if not mask.bool().any(1).all():
            return None
        run = self._runner(pm)
        rows = [self._one(run, ids[i, m], positions[i, m]) for i, m in enumerate(mask.bool())]
        if any(row is None for row in rows):
            return None
        n = ids.shape[1]
        kv = rows[0].new_empty(rows[0].shape[0], 2, len(rows), rows[0].shape[2], n, rows[0].shape[4])
        for i, row in enumerate(rows):  # one copy per row, every layer at once; padding (masked) is zeros
            kv[:, :, i, :, n - row.shape[3]:] = row
            kv[:, :, i, :, : n - row.shape[3]] = 0
        # DynamicCache would copy data it is made from (it concatenates onto an empty tensor): make it empty,
        # then hand each layer its keys and values.
        cache = DynamicCache(ddp_cache_data=[(k[..., :0, :], v[..., :0, :]) for k, v in kv])
        placed = len(set(layer_devices(pm.model))) > 1  # layers on several devices: each layer's keys where it runs
        for layer, (k, v) in zip(cache.layers, kv):
            layer.keys, layer.values = k, v
            if placed and type(layer) is DynamicLayer:
                layer.__class__ = _PlacedLayer
        return cache

    def clear(self) -> None:
        """Forget every kept input (frees the memory; the counters stay)."""
        self._store.clear()
        self.bytes = 0

    def _one(self, run, ids: Tensor, positions: Tensor) -> KV | None:
        """A kept input, or one computed alone (kept while there is room); ``None`` if it cannot be kept."""
        key = tuple(ids.tolist())
        kv = self._store.get(key)
        if kv is not None:
            self.hits += 1
            return kv
        self.misses += 1
        out = run(input_ids=ids[None], position_ids=positions[None], use_cache=True).past_key_values
        kv = _row(out, 0, 0)
        if kv is not None:
            self._keep(key, kv)
        return kv

    def _keep(self, key: tuple[int, ...], kv: KV) -> bool:
        size = kv.numel() * kv.element_size()
        self._per_token = size / max(1, len(key))
        if self.bytes + size > self.max_bytes:
            return False
        self._store[key] = kv
        self.bytes += size
        return True

    def _runner(self, pm):
        """What computes inputs for this cache: the prompted model's input pass
        (:meth:`~skill_lens.prompting.prompted_model.PromptedModel.run_input`), once ``pm``'s model is this cache's."""
        self._bind(pm.model.original_model)
        return pm.run_input

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


def _row(past, i: int, start: int) -> KV | None:
    """Row ``i`` of a forward's ``past_key_values`` from position ``start`` on, as one tensor (one copy); ``None``
    when keys and values differ in shape (DeepSeek's latent attention), which this cache does not keep."""
    if len({tuple(t.shape[1:]) for k, v, *_ in past for t in (k, v)}) > 1:
        return None
    rows = [t[i, :, start:] for k, v, *_ in past for t in (k, v)]  # on the first layer's device (a device map
    return torch.stack([r.to(rows[0].device) for r in rows]).unflatten(0, (-1, 2))  # may spread them)


class _PlacedLayer(DynamicLayer):
    """A cache layer whose stored keys/values move to the device its attention runs on, at its first update
    (a device map may put layers on several GPUs; stored inputs are kept on the first one's)."""

    def update(self, key_states, value_states, *args, **kwargs):
        if self.keys is not None and self.keys.device != key_states.device:
            self.keys, self.values = self.keys.to(key_states.device), self.values.to(key_states.device)
        return super().update(key_states, value_states, *args, **kwargs)
