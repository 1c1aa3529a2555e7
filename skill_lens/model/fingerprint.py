"""A model's content fingerprint: what every artifact records of the model it was made on.

A name says little (a local directory re-saved with other weights, another model of the same name), so
skill_lens hashes what a model computes with: its weights and its architecture. The hash reads each
tensor in chunks on its own device, and a weight accelerate offloaded to the disk for the moment it is
hashed (:func:`~skill_lens.model.placement.materialized`), so a model placed over GPUs, the CPU and the
disk has the same fingerprint as the same weights on one device (``tests/test_placement.py``). It is
computed once per loaded model and kept in its :class:`~skill_lens.model.record.ModelRecord`.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import torch
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.model.placement import materialized
from skill_lens.model.record import model_record

__all__ = ["fingerprint"]

_HASH_CHUNK = 64 * 2**20  # bytes of a tensor copied to the CPU at a time (none for CPU tensors)


def fingerprint(model: TransformerBridge) -> str:
    """A content hash of ``model``'s weights and architecture (not its name); computed once per load, cached.

    Every artifact records the fingerprint of the model it was made on, so a local directory re-saved
    with other weights, or another model of the same name, is told apart. Weights are hashed in
    state-dict order with their names, dtypes and shapes; the config without its path. Every parameter and
    buffer counts once: a tied or shared tensor (Gemma's embeddings and unembedding) under its first name,
    0-dim tensors (Gemma's scalar buffers) as their one value.

    The fingerprint depends on the dtype (the same checkpoint in bfloat16 holds other numbers) but not
    on the device (weights are hashed on the CPU). A run records the dtype it was tuned in, and its later
    steps load the model in that dtype; asking for another one is refused by the lineage check, naming
    ``--dtype`` (see :meth:`skill_lens.workflow.runs.Run.use_model`).

    >>> from skill_lens.model.tiny import tiny_model
    >>> fingerprint(tiny_model(seed=0)) == fingerprint(tiny_model(seed=0)), len(fingerprint(tiny_model()))
    (True, 16)
    >>> fingerprint(tiny_model(seed=0)) == fingerprint(tiny_model(seed=1))
    False
    """
    cached = model_record(model).fingerprint
    if cached is not None:
        return cached
    hf = model.original_model
    h = hashlib.sha256()
    config = {k: v for k, v in hf.config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, t in _named_tensors(hf):  # each tensor once, in state-dict order
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        _hash_chunks(h, t)  # the same bytes, any rank
    digest = h.hexdigest()[:16]
    model_record(model).fingerprint = digest
    return digest


def _named_tensors(hf: torch.nn.Module):
    """``(name, tensor)`` of every parameter then buffer, each once, as ``named_parameters()``/``named_buffers()``
    give them; a weight accelerate offloaded (on ``meta``) is read from its module for the moment it is hashed."""
    owners = {}
    for module in hf.modules():
        for key, t in (*module._parameters.items(), *module._buffers.items()):
            if t is not None:
                owners.setdefault(id(t), (module, key))
    for name, t in itertools.chain(hf.named_parameters(), hf.named_buffers()):
        if t.device.type != "meta":
            yield name, t.detach()
            continue
        module, key = owners[id(t)]
        with materialized(module):
            yield name, getattr(module, key).detach()


def _hash_chunks(h, t: torch.Tensor) -> None:
    """Feed ``t``'s bytes to ``h`` in chunks, on ``t``'s device (the same digest as hashing it whole)."""
    if not t.numel():
        return
    flat = (t if t.is_contiguous() else t.contiguous()).reshape(-1).view(torch.uint8)
    for start in range(0, flat.numel(), _HASH_CHUNK):
        h.update(flat[start : start + _HASH_CHUNK].cpu().numpy().data)
