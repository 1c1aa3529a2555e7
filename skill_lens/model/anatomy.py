"""FFN anatomy: what each layer's feed-forward network is, read from the model itself.

The one place the rest of skill_lens asks about FFN structure. Everything here is learned from the
``TransformerBridge``'s component mapping (its MLP component and the ``in``/``gate``/``out``
projections it wraps) and from the weights those hold, never from config field names or a list of
families:

* **widths** per layer: the input size of the output projection (``down_proj``, ``c_proj``, ``fc2``,
  ``wo``...), the neurons ``blocks.{l}.mlp.hook_post`` sees;
* **kind**: a plain MLP, gated (``act(gate(x)) * up(x)``), fused (gate and up in one matrix, as Phi-3's
  ``gate_up_proj``), a mixture of experts (MoE), and whether the FFN runs in parallel to attention;
* **projections**: where each weight lives in the Hugging Face model, its orientation (``Linear``
  ``[out, in]``, GPT-2 ``Conv1D`` ``[in, out]``, expert stacks ``[experts, out, in]`` or transposed),
  its bias; what pruning slices.

**Neurons of a mixture of experts.** A neuron of an MoE layer is ``(layer, expert, index)``: the
``index``-th input of expert ``expert``'s down projection, plus the neurons of the shared expert where
there is one. In a layer's neuron index space the routed experts come first, expert after expert, then
the shared expert: layer ``l`` of ``E`` experts of width ``w`` and a shared expert of width ``s`` has
``E * w + s`` neurons, and neuron ``e * w + j`` is labelled ``L{l}.E{e}.N{j}``, shared neuron ``j`` is
``L{l}.S.N{j}`` (dense layers: ``L{l}.N{j}``). An expert's activation at a position it is not routed to
is 0, and writing to it there changes nothing: the model does not run that expert there. The routing
weight multiplies the expert's output, as in the model, so the activation is the value entering the
down projection in every kind of FFN.

>>> from skill_lens.model.tiny import tiny_model
>>> layer = ffn_layers(tiny_model("causal"))[0]
>>> layer.kind, layer.gated, layer.width, [p.role for p in layer.segments[0].projections]
('mlp', True, 64, ['in', 'gate', 'out'])
>>> NeuronLayout.of([LayerLayout(112, experts=4, expert_width=24)]).label(0, 100)
'L0.S.N4'
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

import torch

__all__ = ["LayerLayout", "NeuronLayout", "Projection", "Segment", "LayerFFN", "AnatomyError", "ffn_layers",
           "ffn_stack", "plain_names", "experts_module", "shared_mlps", "unwrap", "by_segment", "modules_by_name", "input_weights", "EXPERTS_HOOK", "SHARED_HOOK", "ROUTING_HOOK"]

# Hook points skill_lens adds to a mixture-of-experts MLP component (:mod:`skill_lens.model.experts`).
EXPERTS_HOOK, SHARED_HOOK, ROUTING_HOOK = "hook_experts_post", "hook_shared_post", "hook_routing"
_LABEL = re.compile(r"L(\d+)\.(?:(E(\d+)|S)\.)?N(\d+)")


class AnatomyError(ValueError):
    """An FFN skill_lens cannot read (no FFN, or experts stored in a way it does not know)."""


# ----------------------------------------------------------------------------- the neuron index space (pure)
@dataclass(frozen=True)
class LayerLayout:
    """One layer's neuron index space: ``width`` neurons, the first ``experts * expert_width`` of them
    routed experts' (``experts == 0``: a dense FFN), the rest a shared expert's.

    >>> LayerLayout(112, 4, 24).shared, LayerLayout(112, 4, 24).locate(30)
    (16, (1, 6))
    """

    width: int
    experts: int = 0
    expert_width: int = 0

    @property
    def shared(self) -> int:
        return self.width - self.experts * self.expert_width

    def locate(self, index: int) -> tuple[int | str | None, int]:
        """``(expert, index in it)``: ``expert`` is an int, ``"S"`` (shared) or ``None`` (dense)."""
        if not self.experts:
            return None, index
        routed = self.experts * self.expert_width
        return (index // self.expert_width, index % self.expert_width) if index < routed else ("S", index - routed)


@dataclass(frozen=True)
class NeuronLayout:
    """Every layer's :class:`LayerLayout`: how neurons are named, and how labels map back to indices.

    >>> lay = NeuronLayout.of([LayerLayout(8), LayerLayout(112, 4, 24)])
    >>> lay.label(0, 3), lay.label(1, 30), lay.parse("L1.E1.N6"), lay.parse("L1.S.N0"), lay.moe
    ('L0.N3', 'L1.E1.N6', (1, 30), (1, 96), True)
    >>> NeuronLayout.from_json(lay.as_json()) == lay
    True
    """

    layers: tuple[LayerLayout, ...] = ()

    @classmethod
    def of(cls, layers: Sequence[LayerLayout]) -> "NeuronLayout":
        return cls(tuple(layers))

    @property
    def moe(self) -> bool:
        return any(x.experts for x in self.layers)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(x.width for x in self.layers)

    def label(self, layer: int, index: int) -> str:
        """``L{layer}.N{index}``, or ``L{layer}.E{expert}.N{j}`` / ``L{layer}.S.N{j}`` in an MoE layer."""
        expert, j = self.layers[layer].locate(index) if 0 <= layer < len(self.layers) else (None, index)
        return f"L{int(layer)}." + ("" if expert is None else f"{'S' if expert == 'S' else f'E{expert}'}.") + f"N{j}"

    def parse(self, label: str) -> tuple[int, int]:
        """``(layer, index)`` of a label in any of the forms :meth:`label` writes."""
        return parse_label(label, self)

    def as_json(self) -> list[list[int]]:
        return [[x.width, x.experts, x.expert_width] for x in self.layers]

    @classmethod
    def from_json(cls, data) -> "NeuronLayout":
        return cls(tuple(LayerLayout(*map(int, row)) for row in data or ()))


def parse_label(label: str, layout: NeuronLayout | None = None) -> tuple[int, int]:
    """``(layer, index)`` of ``"L3.N12"``; ``"L3.E5.N812"`` and ``"L3.S.N4"`` need the model's ``layout``.

    >>> parse_label("L29.N692")
    (29, 692)
    >>> parse_label("L0.E1.N2")
    Traceback (most recent call last):
    ...
    ValueError: 'L0.E1.N2' names an expert's neuron; pass the model's layout (describe(model).layout) to place it
    """
    m = _LABEL.fullmatch(str(label).strip())
    if m is None:
        raise ValueError(f"{label!r} is not a neuron label; write layer and index like 'L29.N692' (an expert's "
                         "neuron: 'L3.E5.N812', a shared expert's: 'L3.S.N4')")
    layer, j = int(m[1]), int(m[4])
    if m[2] is None:
        return layer, j
    if layout is None or not 0 <= layer < len(layout.layers) or not layout.layers[layer].experts:
        raise ValueError(f"{label!r} names an expert's neuron; pass the model's layout (describe(model).layout) "
                         "to place it" if layout is None else f"{label!r}: layer {layer} has no experts")
    lay = layout.layers[layer]
    if m[3] is None:  # shared
        if j >= lay.shared:
            raise ValueError(f"{label!r}: the shared expert of layer {layer} has {lay.shared} neurons")
        return layer, lay.experts * lay.expert_width + j
    e = int(m[3])
    if e >= lay.experts or j >= lay.expert_width:
        raise ValueError(f"{label!r}: layer {layer} has {lay.experts} experts of {lay.expert_width} neurons")
    return layer, e * lay.expert_width + j


# ----------------------------------------------------------------------------- the FFN read from a bridge
@dataclass(frozen=True)
class Projection:
    """One FFN weight: ``role`` (``in``, ``gate``, ``gate_up`` fused, ``out``), the Hugging Face module
    holding it (plain name) and the parameter, its ``layout`` (``linear`` ``[out, in]``, ``conv1d``
    ``[in, out]``, ``experts`` ``[E, out, in]``, ``experts_t`` ``[E, in, out]``), its bias parameter (or
    ``None``), and for fused gate/up whether the two halves are ``interleaved`` rather than stacked."""

    role: str
    module: str
    param: str = "weight"
    layout: str = "linear"
    bias: str | None = None
    interleaved: bool = False


@dataclass(frozen=True)
class Segment:
    """Neurons of one layer read at one hook: ``start`` in the layer's index space, ``width`` of them;
    ``kind`` ``"mlp"`` (a dense FFN), ``"experts"`` (``experts`` routed experts, one after the other) or
    ``"shared"``; its ``projections``."""

    hook: str
    start: int
    width: int
    kind: str = "mlp"
    experts: int = 0
    projections: tuple[Projection, ...] = ()

    @property
    def expert_width(self) -> int:
        return self.width // self.experts if self.experts else 0


@dataclass(frozen=True)
class LayerFFN:
    """One layer's FFN: ``kind`` (``"mlp"`` or ``"moe"``), ``gated``, ``fused`` (gate and up in one
    matrix), ``parallel`` (runs beside attention on the same input), its ``segments``; ``module`` is the
    Hugging Face module of the whole FFN; ``unprunable`` says why it cannot be pruned (``None``: it can)."""

    layer: int
    kind: str
    gated: bool
    fused: bool
    parallel: bool
    segments: tuple[Segment, ...]
    module: str = ""
    unprunable: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def width(self) -> int:
        return sum(s.width for s in self.segments)

    @property
    def layout(self) -> LayerLayout:
        routed = next((s for s in self.segments if s.kind == "experts"), None)
        return LayerLayout(self.width, routed.experts, routed.expert_width) if routed else LayerLayout(self.width)

    def describe(self) -> str:
        """A few words: ``"gated MLP 1536"``, ``"MoE 4 experts x 24 + shared 40"``...

        >>> from skill_lens.model.tiny import tiny_model
        >>> ffn_layers(tiny_model("gpt2"))[1].describe()
        'MLP 64 (Conv1D)'
        """
        words = [w for w, on in (("parallel", self.parallel), ("fused", self.fused), ("gated", self.gated)) if on]
        if self.kind == "moe":
            lay = self.layout
            body = f"MoE {lay.experts} experts x {lay.expert_width}" + (f" + shared {lay.shared}" if lay.shared else "")
        else:
            body = f"MLP {self.width}"
        conv = any(p.layout == "conv1d" for seg in self.segments for p in seg.projections)
        return " ".join([*words, body]) + (" (Conv1D)" if conv else "")


def by_segment(segments: Sequence[Segment], idx: torch.Tensor) -> list[tuple[Segment, torch.Tensor, torch.Tensor]]:
    """A layer's neuron indices ``idx`` split by the segment (hook) holding them: ``(segment, indices within
    it, which entries of idx)`` for each segment holding any; a dense layer's one segment gets them all.

    >>> segs = (Segment("h.experts", 0, 8, "experts", 2), Segment("h.shared", 8, 3, "shared"))
    >>> [(s.hook, local.tolist(), where.tolist()) for s, local, where in by_segment(segs, torch.tensor([9, 1]))]
    [('h.experts', [1], [False, True]), ('h.shared', [1], [True, False])]
    """
    out = []
    for seg in segments:
        where = (idx >= seg.start) & (idx < seg.start + seg.width)
        if bool(where.any()):
            out.append((seg, idx[where] - seg.start, where))
    return out


def plain_names(hf: torch.nn.Module) -> dict[int, str]:
    """``id(module) -> name`` in ``hf`` without the bridge's ``_original_component`` wrappers (the names a
    state dict of the unbridged model uses); each module under its first name.

    >>> from skill_lens.model.tiny import tiny_model
    >>> hf = tiny_model().original_model
    >>> plain_names(hf)[id(unwrap(hf.model.layers[0].mlp.down_proj))]
    'model.layers.0.mlp.down_proj'
    """
    names: dict[int, str] = {}
    for name, module in hf.named_modules(remove_duplicate=False):
        names.setdefault(id(module), name.replace("._original_component", "").replace("_original_component.", ""))
    return names


def modules_by_name(hf: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Plain name -> module of a (bridged) Hugging Face model: the inverse of :func:`plain_names`.

    >>> from skill_lens.model.tiny import tiny_model
    >>> type(modules_by_name(tiny_model("mixtral").original_model)["model.layers.1.mlp.experts"]).__name__
    'MixtralExperts'
    """
    out: dict[str, torch.nn.Module] = {}
    for name, module in hf.named_modules(remove_duplicate=False):
        plain = name.replace("._original_component", "").replace("_original_component.", "")
        if plain not in out or not isinstance(out[plain], _bridge_types()):
            out[plain] = unwrap(module)
    return out


def _bridge_types() -> tuple[type, ...]:
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    return (GeneralizedComponent,)


def input_weights(model, layer: int, role: str = "auto") -> torch.Tensor:
    """``[width, d_model]`` float32: each neuron's input weight vector in ``layer`` (every segment's, in the
    layer's index space), read through :class:`Projection` whatever its layout. ``role`` is ``"gate"`` (the
    branch whose nonlinearity decides whether a gated neuron fires), ``"in"`` (the linear branch, or an
    ungated FFN's only input), or ``"auto"``: the gate where there is one.

    >>> from skill_lens.model.tiny import tiny_model
    >>> input_weights(tiny_model("qwen2_moe"), 0).shape, input_weights(tiny_model("gpt2"), 1, "in").shape
    (torch.Size([136, 32]), torch.Size([64, 32]))
    """
    ffn = ffn_layers(model)[layer]
    modules = modules_by_name(model.original_model)
    return torch.cat([_rows(seg, modules, role) for seg in ffn.segments])


def _rows(seg: Segment, modules: dict, role: str) -> torch.Tensor:
    by_role = {p.role: p for p in seg.projections}
    gated = "gate" in by_role or ("gate_up" in by_role)
    want = ("gate" if gated else "in") if role == "auto" else role
    if want not in ("gate", "in") or (want == "gate" and not gated):
        raise AnatomyError(f"{seg.hook}: no {role!r} input projection; use 'in'" + (" or 'gate'" if gated else ""))
    p = by_role.get(want) or by_role["gate_up"]
    w = getattr(modules[p.module], p.param).detach().float()
    if p.layout in ("conv1d", "experts_t"):
        w = w.transpose(-1, -2)  # [(E,) out, in]
    if p.role == "gate_up":  # gate rows first (or even rows), then up
        half = w.shape[-2] // 2
        w = (w[..., 0::2, :] if want == "gate" else w[..., 1::2, :]) if p.interleaved else \
            (w[..., :half, :] if want == "gate" else w[..., half:, :])
    return w.reshape(-1, w.shape[-1])


def ffn_stack(model) -> str:
    """The block list whose FFNs skill_lens probes: ``blocks``, or ``encoder_blocks`` for an encoder-decoder.

    >>> from skill_lens.model.tiny import tiny_model
    >>> ffn_stack(tiny_model("seq2seq")), ffn_stack(tiny_model("mlm"))
    ('encoder_blocks', 'blocks')
    """
    return "encoder_blocks" if getattr(model.original_model.config, "is_encoder_decoder", False) else "blocks"


def ffn_layers(model, stack: str | None = None) -> tuple[LayerFFN, ...]:
    """Every layer's :class:`LayerFFN` in ``stack`` (default :func:`ffn_stack`), read from the bridge.

    Raises :class:`AnatomyError` in one line when a layer has no FFN (Mamba, RWKV) or experts stored in a
    way skill_lens cannot read.

    >>> from skill_lens.model.tiny import tiny_model
    >>> [(s.hook, s.width, s.experts) for s in ffn_layers(tiny_model("qwen2_moe"))[1].segments]
    [('blocks.1.mlp.hook_experts_post', 96, 4), ('blocks.1.mlp.hook_shared_post', 40, 0)]
    """
    stack = stack or ffn_stack(model)
    blocks = getattr(model, stack, None)
    if blocks is None or not len(blocks):
        raise AnatomyError(f"{type(model.original_model).__name__} has no '{stack}' in its TransformerBridge; "
                           "skill_lens probes transformer FFN layers.")
    names = plain_names(model.original_model)
    parallel = bool(getattr(model.cfg, "parallel_attn_mlp", False))
    return tuple(_layer(model, names, stack, l, block, parallel) for l, block in enumerate(blocks))


def _layer(model, names, stack, l, block, parallel) -> LayerFFN:
    mlp = getattr(block, "mlp", None)
    prefix = f"{stack}.{l}.mlp"
    if mlp is None or f"{prefix}.hook_post" not in model.hook_dict:
        raise AnatomyError(f"layer {l} of {type(model.original_model).__name__} has no FFN ('{prefix}' with a "
                           "hook_post); skill_lens finds skill neurons in transformer FFNs (Mamba and RWKV have none).")
    experts = experts_module(mlp)
    if experts is None:
        subs = {k: getattr(mlp, k, None) for k in ("in", "gate", "out", "dense_in", "dense_gate", "dense_out")}
        if subs["out"] is None and subs["dense_out"] is not None:  # a dense layer of an interleaved MoE stack
            subs = {"in": subs["dense_in"], "gate": subs["dense_gate"], "out": subs["dense_out"]}
        seg, gated, fused, why = _dense(names, mlp, subs, f"{prefix}.hook_post", 0, "mlp")
        return LayerFFN(l, "mlp", gated, fused, parallel, (seg,), _name(names, mlp), why)
    routed, why = _routed(names, experts, f"{prefix}.{EXPERTS_HOOK}", l, int(model.cfg.d_model))
    segments, start = [routed], routed.width
    for sub in shared_mlps(mlp):
        subs = {k: getattr(sub, k, None) for k in ("in", "gate", "out")}
        seg, _, _, why_shared = _dense(names, sub, subs, f"{prefix}.{SHARED_HOOK}", start, "shared")
        segments.append(seg)
        start += seg.width
        why = why or why_shared
    if len(segments) > 2:
        raise AnatomyError(f"layer {l} has {len(segments) - 1} shared experts; skill_lens reads at most one.")
    return LayerFFN(l, "moe", bool(getattr(experts, "has_gate", True)), False, parallel, tuple(segments),
                    _name(names, mlp), why, extra={"experts_module": names.get(id(experts), "")})


def _name(names: dict[int, str], component) -> str:
    module = getattr(component, "original_component", None) or component
    return names.get(id(module), "")


def _dense(names, mlp, subs, hook, start, kind) -> tuple[Segment, bool, bool, str | None]:
    """A dense FFN's segment from its bridge's projections; whether it is gated, fused, and unprunable."""
    out = unwrap(subs.get("out"))
    if out is None or getattr(out, "weight", None) is None:
        raise AnatomyError(f"{hook}: the bridge maps no output projection with weights for this FFN; skill_lens "
                           "cannot read its width.")
    conv = _is_conv1d(out)
    width = int(out.weight.shape[0] if conv else out.weight.shape[1])
    why, projections = None, []
    fused_attr = getattr(mlp, "fused_attr", None)
    gate = unwrap(subs.get("gate"))
    inside = {id(m) for m in unwrap(mlp).modules()}  # the Hugging Face FFN module's own
    fused = bool(fused_attr) and gate is not None and id(gate) not in inside
    if fused:  # the bridge split a fused gate/up matrix into two modules of its own: slice the real one
        whole = unwrap(getattr(mlp.original_component, fused_attr, None))
        up = unwrap(subs.get("in"))
        interleaved, why = _fused_order(whole, gate, up, width)
        projections.append(Projection("gate_up", names.get(id(whole), ""), bias=_bias(whole), interleaved=interleaved))
    else:
        for role in ("in", "gate"):
            module = unwrap(subs.get(role))
            if module is not None:
                projections.append(_projection(names, role, module))
    projections.append(_projection(names, "out", out))
    why = why or _unprunable(inside, subs, fused, width)
    return Segment(hook, start, width, kind, 0, tuple(projections)), gate is not None, fused, why


def _unprunable(inside: set[int], subs, fused: bool, width: int) -> str | None:
    """Why a dense FFN's projections cannot be sliced (``None``: they can)."""
    from torch import nn

    for role, sub in subs.items():
        module = unwrap(sub)
        if module is None or (fused and role in ("in", "gate")):
            continue
        if not (isinstance(module, nn.Linear) or _is_conv1d(module)):
            return f"its {role} projection is a {type(module).__name__}, not a Linear or Conv1D"
        if id(module) not in inside:
            return f"its {role} projection is not a module of the Hugging Face FFN"
        w = module.weight
        n = w.shape[0] if _is_conv1d(module) == (role == "out") else w.shape[1]
        if int(n) != width:
            return f"its {role} projection {tuple(w.shape)} does not have {width} neurons on the expected axis"
    return None


def _fused_order(whole, gate, up, width) -> tuple[bool, str | None]:
    """Whether a fused gate/up matrix stacks ``[gate; up]`` or interleaves them, read from the bridge's split."""
    from torch import nn

    if not isinstance(whole, nn.Linear) or up is None or tuple(whole.weight.shape[:1]) != (2 * width,):
        return False, "its fused gate/up projection is not a Linear of twice the FFN width"
    w = whole.weight
    if torch.equal(gate.weight, w[:width]) and torch.equal(up.weight, w[width:]):
        return False, None
    if torch.equal(gate.weight, w[0::2]) and torch.equal(up.weight, w[1::2]):
        return True, None
    return False, "the bridge splits its fused gate/up projection in an order skill_lens cannot read"


def _projection(names, role: str, module) -> Projection:
    return Projection(role, names.get(id(module), ""), "weight", "conv1d" if _is_conv1d(module) else "linear",
                      _bias(module))


def _bias(module) -> str | None:
    return "bias" if isinstance(getattr(module, "bias", None), torch.Tensor) else None


def unwrap(sub):
    """The module a bridge component wraps (the component itself when it wraps nothing).

    >>> from skill_lens.model.tiny import tiny_model
    >>> type(unwrap(tiny_model().blocks[0].mlp)).__name__
    'LlamaMLP'
    """
    while sub is not None and getattr(sub, "original_component", None) is not None:
        sub = sub.original_component
    return sub


def _is_conv1d(module) -> bool:
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


_STACKED = ("gate_up_proj", "up_proj", "down_proj")


def experts_module(mlp):
    """The Hugging Face module holding an MoE layer's expert stacks (3-D ``down_proj``), or ``None``.

    >>> from skill_lens.model.tiny import tiny_model
    >>> type(experts_module(tiny_model("olmoe").blocks[0].mlp)).__name__, experts_module(tiny_model().blocks[0].mlp)
    ('OlmoeExperts', None)
    """
    block = unwrap(mlp)
    if block is None:
        return None
    for module in block.modules():
        p = getattr(module, "down_proj", None)
        if isinstance(p, torch.nn.Parameter) and p.dim() == 3:
            return unwrap(module)
    return None


def _routed(names, experts, hook: str, layer: int, d_model: int) -> tuple[Segment, str | None]:
    """The routed experts' segment: ``E`` experts of the width their down projection reads."""
    flags = ("has_gate", "is_transposed", "has_bias")
    if not all(hasattr(experts, f) for f in flags):
        raise AnatomyError(f"layer {layer}: {type(experts).__name__} stores its experts without transformers' "
                           "experts layout flags (has_gate, is_transposed); skill_lens cannot hook its neurons.")
    t = "experts_t" if experts.is_transposed else "experts"
    down = experts.down_proj
    n_experts, a, b = down.shape
    width = int(b if not experts.is_transposed else a)
    if (a if not experts.is_transposed else b) != d_model:
        raise AnatomyError(f"layer {layer}: the experts' down projection {tuple(down.shape)} does not write "
                           f"d_model={d_model}; skill_lens cannot read its neurons.")
    name = names.get(id(experts), "")
    inp = "gate_up_proj" if experts.has_gate else "up_proj"
    bias = experts.has_bias
    projections = (Projection("gate_up" if experts.has_gate else "in", name, inp, t, inp + "_bias" if bias else None,
                              not getattr(experts, "is_concatenated", True)),
                   Projection("out", name, "down_proj", t, "down_proj_bias" if bias else None))
    why = "a norm follows each expert's down projection" if getattr(experts, "has_post_expert_norm", False) else None
    return Segment(hook, 0, int(n_experts) * width, "experts", int(n_experts), projections), why


def shared_mlps(mlp) -> list:
    """The dense MLP bridges inside an MoE component (its shared experts).

    >>> from skill_lens.model.tiny import tiny_model
    >>> [type(m).__name__ for m in shared_mlps(tiny_model("qwen2_moe").blocks[0].mlp)]
    ['GatedMLPBridge']
    """
    from transformer_lens.model_bridge.generalized_components.mlp import MLPBridge

    return [sub for name, sub in mlp.named_children() if isinstance(sub, MLPBridge) and name != "_original_component"]
