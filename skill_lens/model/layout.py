"""The neuron index space of a model's FFN layers, and the labels of its neurons; pure, no model needed.

A layer has ``width`` neurons. In a mixture-of-experts layer the routed experts come first, expert after
expert, then the shared expert (:mod:`skill_lens.model.anatomy` says how they are read from the model):
layer ``l`` of ``E`` experts of width ``w`` and a shared expert of width ``s`` has ``E * w + s`` neurons, and
neuron ``e * w + j`` is labelled ``L{l}.E{e}.N{j}``, shared neuron ``j`` is ``L{l}.S.N{j}`` (dense layers:
``L{l}.N{j}``).

>>> NeuronLayout.of([LayerLayout(112, experts=4, expert_width=24)]).label(0, 100)
'L0.S.N4'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["LayerLayout", "NeuronLayout", "parse_label"]

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
