"""Slicing an FFN to its kept neurons, for every layout :mod:`skill_lens.model.anatomy` reads.

:mod:`skill_lens.intervening.pruning` decides what to keep; this module does it to the weights, by
each projection's role and layout as the anatomy found them in the model, never by names or shapes
guessed per family:

* input projections (``in``, ``gate``) keep the kept neurons' rows (``Linear`` ``[out, in]``) or columns
  (GPT-2 ``Conv1D`` ``[in, out]``), and their biases' entries;
* a fused gate/up matrix (Phi-3's ``gate_up_proj``) keeps both halves' rows, stacked or interleaved as the
  model stores them;
* the output projection keeps the kept neurons' columns (``Conv1D``: rows); each removed neuron's constant
  times its column is added to the output bias (created when there is none);
* a mixture of experts keeps the same number of neurons in every expert (the experts are one tensor,
  ``[E, out, in]`` or transposed), and each expert's removed neurons fold into a per-expert output bias
  (transformers' ``down_proj_bias``, which the experts add before the routing weight, so the constant
  counts exactly where the expert runs); the shared expert is an FFN of its own.

A layer is described by :func:`record` (JSON, kept in the pruned model's ``pruning.json``), so a saved
pruned model is rebuilt without the original: :func:`resize` gives a freshly built model the pruned
shapes before its weights load.

>>> from skill_lens.model.tiny import tiny_model
>>> from skill_lens.model.loading import describe
>>> [p["role"] for seg in record(describe(tiny_model("phi3")).layers[0]) for p in seg["projections"]]
['gate_up', 'out']
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import torch
from torch import Tensor, nn

from skill_lens.model.anatomy import modules_by_name
from skill_lens.model.experts import mark_pruned

__all__ = ["record", "split", "slice_layer", "resize", "build", "ffn_keys", "hf_state_dict"]


def record(ffn) -> list[dict]:
    """A layer's segments and projections (:class:`~skill_lens.model.anatomy.LayerFFN`) as JSON."""
    return [{"kind": s.kind, "start": s.start, "width": s.width, "experts": s.experts,
             "projections": [dataclasses.asdict(p) for p in s.projections]} for s in ffn.segments]


def split(segments: list[dict], idx) -> list[list[int] | list[list[int]]]:
    """The kept neurons ``idx`` (a layer's indices) per segment, within it; an experts segment's per expert.

    >>> split([{"start": 0, "width": 8, "experts": 2}, {"start": 8, "width": 3, "experts": 0}], [1, 5, 6, 9])
    [[[1], [1, 2]], [1]]
    """
    out = []
    for seg in segments:
        local = [i - seg["start"] for i in idx if seg["start"] <= i < seg["start"] + seg["width"]]
        if seg["experts"]:
            w = seg["width"] // seg["experts"]
            local = [[i - e * w for i in local if e * w <= i < (e + 1) * w] for e in range(seg["experts"])]
        out.append(local)
    return out


def slice_layer(state: dict[str, Tensor], segments: list[dict], idx: list[int], base: Tensor) -> None:
    """Slice one layer's tensors in ``state`` to neurons ``idx``; fold the others' ``base`` [width] into biases.

    An experts segment must keep as many neurons in every expert (pad with scores first: ``pruning.kept_neurons``).

    >>> seg = {"start": 0, "width": 3, "experts": 0, "projections": [
    ...     {"role": "in", "module": "fc1", "param": "weight", "layout": "linear", "bias": "bias", "interleaved": False},
    ...     {"role": "out", "module": "fc2", "param": "weight", "layout": "linear", "bias": None, "interleaved": False}]}
    >>> state = {"fc1.weight": torch.eye(3), "fc1.bias": torch.zeros(3), "fc2.weight": torch.ones(2, 3)}
    >>> slice_layer(state, [seg], [0, 2], torch.tensor([0.0, 5.0, 0.0]))
    >>> state["fc1.weight"].shape, state["fc2.weight"].shape, state["fc2.bias"].tolist()
    (torch.Size([2, 3]), torch.Size([2, 2]), [5.0, 5.0])
    """
    for seg, local in zip(segments, split(segments, idx)):
        part = base[seg["start"]: seg["start"] + seg["width"]].double()
        if seg["experts"]:
            if len({len(x) for x in local}) > 1:
                raise ValueError(f"experts keep {[len(x) for x in local]} neurons; every expert must keep as many")
            _slice_experts(state, seg, torch.tensor(local, dtype=torch.long), part)
        else:
            _slice_dense(state, seg, torch.tensor(local, dtype=torch.long), part)


def _key(p: dict, bias: bool = False) -> str:
    return f"{p['module']}.{p['bias'] if bias else p['param']}"


def _out_bias(p: dict) -> str:
    """The state-dict name of an output projection's bias (the one it will get if it has none)."""
    return _key(p, True) if p["bias"] else f"{p['module']}.{'down_proj_bias' if p['layout'].startswith('experts') else 'bias'}"


def _rows(local: Tensor, width: int, p: dict) -> Tensor:
    """Rows of an input projection to keep: the neurons', or both halves' for a fused gate/up matrix."""
    if p["role"] != "gate_up":
        return local
    if p["interleaved"]:
        return torch.stack([2 * local, 2 * local + 1], -1).flatten(-2)
    return torch.cat([local, width + local], -1)


def _slice_dense(state: dict, seg: dict, local: Tensor, base: Tensor) -> None:
    removed = torch.ones(seg["width"], dtype=torch.bool)
    removed[local] = False
    for p in seg["projections"]:
        w, conv = state[_key(p)], p["layout"] == "conv1d"
        if p["role"] != "out":
            rows = _rows(local, seg["width"], p).to(w.device)
            state[_key(p)] = w[:, rows] if conv else w[rows]
            if p["bias"]:
                state[_key(p, True)] = state[_key(p, True)][rows.to(state[_key(p, True)].device)]
            continue
        rm = removed.to(w.device)
        w_rm = w.double()[rm] if conv else w.double()[:, rm].T  # [n_removed, d_model]
        folded = base.to(w.device)[rm] @ w_rm  # in float64 on the weights' device
        old = state.get(_out_bias(p))
        state[_out_bias(p)] = (folded if old is None else old.double() + folded).to(w.dtype)
        state[_key(p)] = w[local.to(w.device)] if conv else w[:, local.to(w.device)]


def _slice_experts(state: dict, seg: dict, local: Tensor, base: Tensor) -> None:
    """``local [E, k]``: every expert's kept neurons; ``base [E * width]``."""
    n, width = seg["experts"], seg["width"] // seg["experts"]
    keep = torch.zeros(n, width, dtype=torch.bool)
    keep.scatter_(1, local, True)
    removed = (~keep).nonzero()[:, 1].view(n, -1)  # [E, width - k]
    base = base.view(n, width)
    for p in seg["projections"]:
        w, t = state[_key(p)], p["layout"] == "experts_t"
        if p["role"] != "out":
            rows = _rows(local, width, p).to(w.device)  # [E, r] on the projection's output axis
            state[_key(p)] = w.take_along_dim(rows[:, None, :] if t else rows[:, :, None], 2 if t else 1)
            if p["bias"]:
                state[_key(p, True)] = state[_key(p, True)].take_along_dim(rows.to(state[_key(p, True)].device), 1)
            else:  # the output bias below needs transformers' has_bias, which also reads this one: zeros
                state[f"{p['module']}.{p['param']}_bias"] = w.new_zeros(n, rows.shape[1])
            continue
        rm = removed.to(w.device)
        w_rm = w.double().take_along_dim(rm[:, :, None] if t else rm[:, None, :], 1 if t else 2)
        b_rm = base.to(w.device).gather(1, rm)  # [E, n_removed]
        folded = torch.einsum("erd,er->ed", w_rm, b_rm) if t else torch.einsum("edr,er->ed", w_rm, b_rm)
        old = state.get(_out_bias(p))
        state[_out_bias(p)] = (folded if old is None else old.double() + folded).to(w.dtype)
        idx = local.to(w.device)
        state[_key(p)] = w.take_along_dim(idx[:, :, None] if t else idx[:, None, :], 1 if t else 2)


def resize(modules: dict[str, nn.Module], segments: list[dict], idx: list[int], dtype: torch.dtype) -> None:
    """Give a fresh model's FFN (``modules``: plain name -> module) the shapes of keeping ``idx``, with output
    biases; its weights are loaded afterwards.

    >>> m = {"fc1": nn.Linear(4, 3), "fc2": nn.Linear(3, 4, bias=False)}
    >>> seg = {"start": 0, "width": 3, "experts": 0, "projections": [
    ...     {"role": "in", "module": "fc1", "param": "weight", "layout": "linear", "bias": "bias", "interleaved": False},
    ...     {"role": "out", "module": "fc2", "param": "weight", "layout": "linear", "bias": None, "interleaved": False}]}
    >>> resize(m, [seg], [1], torch.float32)
    >>> m["fc1"], m["fc2"].bias.shape
    (Linear(in_features=4, out_features=1, bias=True), torch.Size([4]))
    """
    for seg, local in zip(segments, split(segments, idx)):
        k = len(local[0]) if seg["experts"] else len(local)
        for p in seg["projections"]:
            m = modules[p["module"]]
            _resize(m, p, k, dtype)
            if seg["experts"]:
                m.has_bias = True  # the folded constants are per-expert output biases
                mark_pruned(m)  # run expert by expert (transformers' grouped kernels want aligned widths)
                if hasattr(m, "intermediate_dim"):
                    m.intermediate_dim = k


def _resize(m: nn.Module, p: dict, k: int, dtype: torch.dtype) -> None:
    w = getattr(m, p["param"])
    shape, out = list(w.shape), p["role"] == "out"
    r = 2 * k if p["role"] == "gate_up" else k
    axis = {("linear", False): 0, ("linear", True): 1, ("conv1d", False): 1, ("conv1d", True): 0,
            ("experts", False): 1, ("experts", True): 2, ("experts_t", False): 2, ("experts_t", True): 1}
    shape[axis[p["layout"], out]] = r
    setattr(m, p["param"], _param(shape, dtype))
    experts = p["layout"].startswith("experts")
    if out:
        d = shape[{"linear": 0, "conv1d": 1, "experts": 1, "experts_t": 2}[p["layout"]]]  # d_model
        bias = _out_bias(p).rsplit(".", 1)[1]
        setattr(m, bias, _param([shape[0], d] if experts else [d], dtype))
    elif experts or p["bias"]:
        bias = p["bias"] or f"{p['param']}_bias"
        setattr(m, bias, _param([shape[0], r] if experts else [r], dtype))
    if isinstance(m, nn.Linear):
        m.out_features, m.in_features = m.weight.shape
    elif hasattr(m, "nf") and hasattr(m, "nx"):  # transformers' Conv1D: weight [nx, nf]
        m.nx, m.nf = m.weight.shape


def _param(shape, dtype) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, dtype=dtype), requires_grad=False)


def ffn_keys(layers) -> set[str]:
    """State-dict names of every FFN weight and bias of ``layers`` (:class:`~skill_lens.model.anatomy.LayerFFN`).

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.model.loading import describe
    >>> sorted(ffn_keys(describe(tiny_model("gpt2")).layers[:1]))
    ['transformer.h.0.mlp.c_fc.bias', 'transformer.h.0.mlp.c_fc.weight', 'transformer.h.0.mlp.c_proj.bias', 'transformer.h.0.mlp.c_proj.weight']
    """
    return {k for ffn in layers for seg in record(ffn) for p in seg["projections"]
            for k in (_key(p), *([_key(p, True)] if p["bias"] else ()))}


def build(cls, config, layouts: Mapping[int, list[dict]], kept: Mapping[int, list[int]], dtype) -> nn.Module:
    """A fresh HF model of ``cls`` (weights not initialised): the FFNs of ``layouts`` (:func:`record`) shrunk to
    their ``kept`` neurons, with output biases.

    >>> from skill_lens.model.tiny import tiny_model
    >>> from skill_lens.model.loading import describe
    >>> model = tiny_model("gpt2"); hf = model.original_model
    >>> small = build(type(hf), hf.config, {1: record(describe(model).layers[1])}, {1: [0, 5]}, torch.float32)
    >>> small.transformer.h[1].mlp.c_fc.weight.shape
    torch.Size([32, 2])
    """
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every tensor is loaded afterwards
        make = getattr(cls, "_from_config", None) or cls.from_config  # a concrete class, or an Auto class
        hf = make(config, dtype=dtype)  # float32 buffers (rotary inv_freq) stay float32
        modules = modules_by_name(hf)
        for layer, segments in layouts.items():
            resize(modules, segments, kept[layer], dtype)
    return hf


def hf_state_dict(hf: nn.Module) -> dict[str, Tensor]:
    """The HF state dict of a (bridged) model under plain HF names; the bridge's aliases are dropped.

    >>> from skill_lens.model.tiny import tiny_model
    >>> "model.layers.0.mlp.down_proj.weight" in hf_state_dict(tiny_model().original_model)
    True
    """
    raw = hf.state_dict(keep_vars=True)
    clean = {}
    for k, v in raw.items():
        if "._original_component" in k or "_original_component." in k:
            clean[k.replace("._original_component", "").replace("_original_component.", "")] = v.detach()
    for k, v in raw.items():  # modules the bridge did not wrap
        clean.setdefault(k, v.detach())
    return clean
