"""The neuron index space of a model's FFN layers, and the labels of its neurons; pure, no model needed.

A layer has ``width`` neurons. In a mixture-of-experts layer the routed experts come first, expert after
expert, then the shared expert (:mod:`skill_lens.model.anatomy` says how they are read from the model):
layer ``l`` of ``E`` experts of width ``w`` and a shared expert of width ``s`` has ``E * w + s`` neurons, and
neuron ``e * w + j`` is labelled ``L{l}.E{e}.N{j}``, shared neuron ``j`` is ``L{l}.S.N{j}`` (dense layers:
``L{l}.N{j}``). :func:`neuron_pairs` reads any way of naming neurons (labels, pairs, masks, sets) as
``(layer, index)`` pairs.

>>> NeuronLayout.of([LayerLayout(112, experts=4, expert_width=24)]).label(0, 100)
'L0.S.N4'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["LayerLayout", "NeuronLayout", "parse_label", "neuron_pairs", "neuron_mask_of"]

_LABEL = re.compile(r"L(\d+)\.(?:(E(\d+)|S)\.)?N(\d+)")


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


# ------------------------------------------------------------------ any way of naming neurons, as (layer, index)

def neuron_pairs(neurons, n_layers: int | None = None, d_mlp: int | None = None,
                 layout: NeuronLayout | None = None) -> list[tuple[int, int]]:
    """``[(layer, index)]`` of any way of naming neurons, *in the order given*: labels (an expert's with
    ``layout``), pairs, ``(label, score)`` rows of ``NeuronSet.top``, an int tensor ``[k, 2]``, a bool mask or a
    set (sorted), anything with a ``.pairs()`` method; each checked against ``n_layers`` / ``d_mlp`` when given.

    >>> neuron_pairs(["L1.N5", (0, 2)]), neuron_pairs((1, 2)), neuron_pairs([])
    ([(1, 5), (0, 2)], [(1, 2)], [])
    """
    mask = neuron_mask_of(neurons, n_layers, d_mlp)
    if mask is not None:
        items = mask.nonzero().tolist()
    elif callable(getattr(neurons, "pairs", None)):
        items = neurons.pairs()
    elif isinstance(neurons, Tensor):
        items = neurons.tolist()
    elif isinstance(neurons, str) or (isinstance(neurons, tuple) and len(neurons) == 2
                                      and all(isinstance(x, int) for x in neurons)):
        items = [neurons]
    else:
        items = neurons
    pairs = [_pair(p, neurons, n_layers, d_mlp, layout) for p in _iterate(items, neurons, n_layers, d_mlp)]
    for layer, idx in pairs:
        if layer < 0 or idx < 0 or (n_layers is not None and layer >= n_layers) or \
                (d_mlp is not None and idx >= d_mlp):
            size = " x ".join([*([f"{n_layers} layers"] if n_layers is not None else []),
                               *([f"{d_mlp} neurons"] if d_mlp is not None else [])]) or "any size"
            raise ValueError(f"neuron L{layer}.N{idx} is not in a model with {size}; "
                             "check the layer and index (both count from 0)")
    return pairs


def _accepted(n_layers, d_mlp) -> str:
    here = f" (here {n_layers} layers x {d_mlp} neurons)" if n_layers is not None and d_mlp is not None else ""
    return (f"pass a NeuronSet, a bool tensor [n_layers, d_mlp]{here}, (layer, index) pairs (a list or an int "
            "tensor [k, 2]) or labels like 'L3.N12' (an expert's: 'L3.E5.N812')")


def neuron_mask_of(neurons, n_layers: int | None = None, d_mlp: int | None = None) -> Tensor | None:
    """The bool mask ``[layer, d_mlp]`` of a neuron set (anything holding a ``mask``) or a bool tensor; ``None``
    for pairs and labels (an int tensor ``[k, 2]`` included); a ``ValueError`` for any other tensor.

    >>> neuron_mask_of(torch.eye(2, dtype=torch.bool)).tolist(), neuron_mask_of([(0, 1)])
    ([[True, False], [False, True]], None)
    """
    mask = getattr(neurons, "mask", None)
    if isinstance(mask, Tensor) and not isinstance(neurons, Tensor):
        neurons = mask  # another set type holding a mask
    if hasattr(neurons, "__array__") and not isinstance(neurons, Tensor):
        neurons = torch.as_tensor(neurons)  # numpy
    if not isinstance(neurons, Tensor):
        return None
    if neurons.dtype == torch.bool and neurons.dim() == 2:
        return neurons
    if neurons.is_floating_point() or neurons.is_complex() or neurons.dtype == torch.bool or neurons.dim() != 2 \
            or neurons.shape[1] != 2:
        raise ValueError(f"cannot read neurons from a {neurons.dtype} tensor of shape {list(neurons.shape)}; "
                         + _accepted(n_layers, d_mlp))
    return None  # an int tensor of pairs


def _iterate(items, neurons, n_layers, d_mlp):
    try:
        return list(items)
    except TypeError:
        raise ValueError(f"cannot read neurons from {type(neurons).__name__}; {_accepted(n_layers, d_mlp)}") from None


def _pair(p, neurons, n_layers, d_mlp, layout=None) -> tuple[int, int]:
    if isinstance(p, str):
        return parse_label(p, layout)
    if isinstance(p, tuple) and len(p) in (2, 3) and isinstance(p[0], str):  # (label, score, ...) from a .top(k)
        return parse_label(p[0], layout)
    if isinstance(p, Tensor):
        p = p.tolist()
    ok = isinstance(p, (tuple, list)) and len(p) == 2 and not any(isinstance(x, bool) for x in p)
    try:
        if ok:
            return int(p[0]), int(p[1])
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{p!r} is not a neuron; {_accepted(n_layers, d_mlp)}")
