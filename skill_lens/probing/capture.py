"""Recording activations at named hooks: the one place a forward pass's activations are kept.

:func:`capture_hooks` returns ``(hook_name, fn)`` pairs and the dict they fill, to pass as
``fwd_hooks=`` next to the prompt's and the user's hooks (they run in the order given);
:func:`capture` is the same as a context manager on a model. ``select(act, name)`` keeps only what
is needed (positions, neurons, a reduction); returning ``None`` keeps nothing for that call. Each
hook keeps its last call, under the name it was asked for (the bridge may report an alias), and a
kept value never shares memory with the live activation, so later hooks cannot change it.
:func:`capture_neurons` gives chosen neurons of one batch; :func:`activations` those of a whole split.

Streaming computations (the probe, token statistics) accumulate in their own hooks instead.

>>> import torch
>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model()
>>> with torch.no_grad(), capture(model, ["blocks.1.mlp.hook_post"], select=lambda act, name: act[:, -1]) as acts:
...     _ = model(torch.tensor([[1, 5, 6, 7]]))
>>> acts["blocks.1.mlp.hook_post"].shape
torch.Size([1, 64])
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.store.artifacts import atomic_write, library_version, write_json
from skill_lens.model.loading import describe
from skill_lens.model.layout import neuron_pairs
from skill_lens.base.progress import progress
from skill_lens.prompting.prompts import Hook

__all__ = ["capture", "capture_hooks", "capture_neurons", "activations", "Select", "CaptureError", "probe_hooks",
           "probed_positions"]

class CaptureError(ValueError):
    """The task, split, hook names or neurons cannot be probed (or captured) as asked."""


Select = Callable[[Tensor, str], Optional[Tensor]]
"""``select(act, hook_name)``: the part of ``act`` to keep, or ``None`` to keep nothing from this call."""


def capture_hooks(names: Sequence[str], select: Select | None = None) -> tuple[list[Hook], dict[str, Tensor]]:
    """Hooks recording ``select(act, name)`` (default: all of ``act``) at each of ``names``, and their dict.

    >>> import torch
    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model()
    >>> hooks, acts = capture_hooks(["blocks.0.mlp.hook_post"], select=lambda act, name: act[..., :3])
    >>> user = [("blocks.0.mlp.hook_post", lambda act, hook: act * 0)]  # runs after the capture
    >>> _ = model.run_with_hooks(torch.tensor([[1, 5, 6]]), fwd_hooks=[*hooks, *user])
    >>> acts["blocks.0.mlp.hook_post"].shape, bool(acts["blocks.0.mlp.hook_post"].any())
    (torch.Size([1, 3, 3]), True)
    """
    store: dict[str, Tensor] = {}

    def record(name: str) -> Callable:
        def hook(act: Tensor, hook) -> None:
            value = act if select is None else select(act, name)
            if value is None:
                return
            value = value.detach()
            if value.untyped_storage().data_ptr() == act.untyped_storage().data_ptr():
                value = value.clone()  # a view of the live activation: later hooks may write into it
            store[name] = value
        return hook

    return [(name, record(name)) for name in names], store


@contextlib.contextmanager
def capture(model, names: Sequence[str], select: Select | None = None) -> Iterator[dict[str, Tensor]]:
    """Record ``select(act, name)`` at ``names`` during the block; the hooks are removed on exit, errors included.

    Hooks of the block's own forward calls (``fwd_hooks=``, the prompt's) run after these, so
    activations are recorded as they reach the hook point, before any intervention there.

    >>> import torch
    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model()
    >>> with capture(model, ["blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post"]) as acts:
    ...     _ = model(torch.tensor([[1, 5, 6]]))
    >>> sorted(acts), len(model.hook_dict["blocks.0.mlp.hook_post"].fwd_hooks)
    (['blocks.0.mlp.hook_post', 'blocks.1.mlp.hook_post'], 0)
    """
    hooks, store = capture_hooks(names, select)
    with model.hooks(fwd_hooks=hooks):
        yield store


def capture_neurons(pm, batch, neurons, select: Select | None = None,
                    hook_names: Sequence[str] | None = None) -> Float[Tensor, "batch pos k"]:
    """Activations of ``neurons`` (``[(layer, index)]`` in order, labels, a mask or a ``NeuronSet``) in one run
    of ``batch`` through the prompted model ``pm``: ``select(act, name)`` of each layer, neuron by neuron.

    ``hook_names`` (default: the FFN hooks of ``describe(pm.model)``) gives each layer's hook; a
    mixture-of-experts layer's neurons come from its experts' and its shared expert's hooks.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> batch = pm.encode(["good film", "bad"])
    >>> capture_neurons(pm, batch, ["L1.N5", "L0.N3", "L1.N0"], lambda act, name: act[:, batch.prompt_slice]).shape
    torch.Size([2, 2, 3])
    """
    info = describe(pm.model)
    names = list(hook_names if hook_names is not None else info.hook_names)
    pairs = neuron_pairs(neurons, len(names), layout=info.layout)
    where = [_locate(info.segments(names[layer]), i) for layer, i in pairs]  # (hook, index in it)
    hooks, got = capture_hooks(sorted({hook for hook, _ in where}), select)
    with torch.no_grad():
        pm.label_logits(batch, fwd_hooks=hooks)
    return torch.stack([got[hook][..., i].float() for hook, i in where], dim=-1)


def _locate(segments, index: int) -> tuple[str, int]:
    """The hook holding a layer's neuron ``index``, and its index there."""
    for seg in segments:
        if seg.start <= index < seg.start + seg.width:
            return seg.hook, index - seg.start
    raise CaptureError(f"neuron {index} is beyond the {sum(s.width for s in segments)} neurons of {segments[0].hook}")


def activations(pm, split, neurons, positions: str = "prompt", batch_size: int = 32, out=None,
                hook_names: Sequence[str] | None = None):
    """Per-example activations of chosen ``neurons`` (``[(layer, index)]`` or a ``NeuronSet``), for plots.

    ``positions="prompt"`` gives a tensor ``[n_examples, n_neurons, P]`` (a hard prompt: ``P=1``, the
    prediction position); ``"all"`` a list of ``(tokens, [seq, n_neurons])`` per example, padding removed.
    With ``out=PATH`` the values are streamed batch by batch into a safetensors file (keys
    ``activations``; for ``"all"`` also ``token_ids`` and ``offsets``) and ``PATH`` is returned.
    Problems raise :class:`CaptureError`.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 3))
    >>> activations(pm, task.dev, [(1, 5), (0, 7)]).shape
    torch.Size([32, 2, 3])
    """
    info = describe(pm.model)
    names, decoder = probe_hooks(info, hook_names)
    pairs = neuron_pairs(neurons, layout=info.layout)
    widths = [sum(seg.width for seg in info.segments(name)) for name in names]
    bad = [p for p in pairs if not (0 <= p[0] < len(names) and 0 <= p[1] < widths[p[0]])]
    if bad or not pairs:
        raise CaptureError(f"neurons {bad or pairs} are not in {len(names)} layers x {info.d_mlp}; "
                           "pass (layer, index).")
    if positions not in ("prompt", "all") or (positions == "all" and decoder):
        raise CaptureError(f"positions must be 'prompt' or 'all' (not for decoder hooks), got {positions!r}")
    if split is None or len(split) == 0:
        raise CaptureError("the split is empty; pass a split with examples (e.g. task.dev).")
    batches = [pm.encode_split(split, slice(s, s + batch_size)) for s in range(0, len(split), batch_size)]

    def run(batch) -> Tensor:  # [B, seq or P, n_neurons]
        hard = pm.prompt is None
        keep = None if positions == "all" else lambda act, name: probed_positions(act, batch, decoder, hard)
        return capture_neurons(pm, batch, pairs, keep, names).cpu()  # collected for plots and files on the CPU

    if out is None:
        if positions == "prompt":
            return torch.cat([run(b).transpose(1, 2) for b in progress(batches, desc="activations")])
        tok = pm.model.tokenizer
        return [(tok.convert_ids_to_tokens(ids.tolist()), a) for b in progress(batches, desc="activations")
                for ids, a in _rows(b, run(b))]
    meta = {**info.as_meta(), "neurons": pairs, "positions": positions, "hook_names": names}
    prompt_len = 1 if pm.prompt is None or decoder else pm.prompt_length
    return _write_activations(out, batches, run, positions, meta, len(split), len(pairs), prompt_len)


def _write_activations(out, batches, run, positions: str, meta: dict, n: int, k: int, prompt_len: int) -> Path:
    """Stream ``run(batch)`` of every batch into the safetensors file ``out`` (see :func:`activations`)."""
    if positions == "prompt":
        specs = {"activations": ([n, k, prompt_len], "F32")}
    else:
        total = sum(int(b.attention_mask.sum()) for b in batches)
        specs = {"activations": ([total, k], "F32"), "token_ids": ([total], "I64"), "offsets": ([n + 1], "I64")}
    ids, offsets = [], [0]
    with atomic_write(out, "wb") as f:
        header = _write_header(f, specs, meta)
        for b in progress(batches, desc="activations"):
            acts = run(b)
            if positions == "prompt":
                f.write(acts.transpose(1, 2).contiguous().numpy().tobytes())
            for row_ids, a in _rows(b, acts) if positions == "all" else ():
                f.write(a.contiguous().numpy().tobytes())
                ids.append(row_ids), offsets.append(offsets[-1] + len(row_ids))
        if positions == "all":
            f.write(torch.cat(ids).long().numpy().tobytes() + torch.tensor(offsets).long().numpy().tobytes())
    write_json(Path(str(out) + ".json"), header)
    return Path(out)


def _write_header(f, specs: dict, meta: dict) -> dict:
    """Write a safetensors header for tensors whose data will follow in order (``specs``: name -> shape, dtype)."""
    header, start = {}, 0
    for name, (shape, dtype) in specs.items():
        end = start + {"F32": 4, "I64": 8}[dtype] * int(torch.tensor(shape).prod())
        header[name], start = {"dtype": dtype, "shape": list(shape), "data_offsets": [start, end]}, end
    sidecar = {**meta, "library_version": library_version(),
               "tensors": {k: {"shape": v[0], "dtype": v[1]} for k, v in specs.items()}}
    text = json.dumps({"__metadata__": {"skill_lens_meta": json.dumps(sidecar)}, **header}).encode()
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)) + text)
    return sidecar


def _rows(batch, acts: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per example, ``(token ids, activations)`` with padding removed."""
    ids, mask = batch.input_ids.to(acts.device), batch.attention_mask.to(acts.device)
    return [(ids[b][m.bool()], acts[b][m.bool()]) for b, m in enumerate(mask)]


def probe_hooks(info, hook_names: Sequence[str] | None = None) -> tuple[list[str], bool]:
    """The hooks a probe reads (default: the model's FFN hooks) and whether they are decoder hooks.

    >>> from skill_lens.model.tiny import tiny_model
    >>> probe_hooks(describe(tiny_model()))
    (['blocks.0.mlp.hook_post', 'blocks.1.mlp.hook_post'], False)
    """
    names = list(hook_names if hook_names is not None else info.hook_names)
    valid = (*info.hook_names, *info.decoder_hook_names)
    unknown = [h for h in names if h not in valid]
    if unknown or not names:
        raise CaptureError(f"unknown hook name(s) {unknown or names} for {info.name}; valid: {', '.join(valid)}")
    decoder = {h in info.decoder_hook_names for h in names}
    if len(decoder) > 1:
        raise CaptureError("encoder and decoder hooks have different positions; probe them in separate calls.")
    return names, decoder.pop()


def probed_positions(act: Float[Tensor, "batch seq d"], batch, decoder: bool, hard: bool) -> Tensor:
    """The positions a probe reads of ``act``: the decoder's one, the prediction's (hard prompt), or the prompt's.

    >>> probed_positions(torch.zeros(2, 5, 3), None, decoder=True, hard=False).shape
    torch.Size([2, 1, 3])
    """
    return act[:, :1] if decoder else act[torch.arange(len(act), device=act.device),
                                          batch.predict_pos.to(act.device), None] if hard else act[:, batch.prompt_slice]
