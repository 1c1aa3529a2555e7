"""``NeuronSet``: a set of FFN neurons of one model, as a boolean mask ``[layer, d_mlp]``.

Neurons are named ``L{layer}.N{index}`` (``"L29.N692"``); in a mixture-of-experts layer
``L{layer}.E{expert}.N{index}`` (``"L3.E5.N812"``) and ``L{layer}.S.N{index}`` for the shared expert, by the
model's :class:`~skill_lens.model.anatomy.NeuronLayout` (``describe(model).layout``), which a set made for
such a model keeps in ``meta["layout"]``. Sets combine with ``| & - ^ ~``, save to safetensors with a JSON
sidecar, and refuse to load for (or to be used with) another shape or model.

>>> ns = NeuronSet.from_pairs([(0, 1), (1, 3), (1, 7)], n_layers=2, d_mlp=8)
>>> ns
NeuronSet(3 neurons of 2x8: L0.N1, L1.N3, L1.N7)
>>> len(ns | NeuronSet.from_pairs(["L0.N2"], 2, 8)), (1, 3) in ns, "L0.N3" in ns
(4, True, False)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from skill_lens.store.artifacts import ArtifactError, check_meta, load_tensors, save_tensors
from skill_lens.model.anatomy import NeuronLayout, parse_label
from skill_lens.probing.scores import select_top

__all__ = ["NeuronSet", "layout_meta"]
_SHOWN = 10  # neurons named in a repr


@dataclass(frozen=True, eq=False)
class NeuronSet:
    """A boolean mask ``[layer, d_mlp]`` (CPU, never changed in place) plus metadata.

    ``meta`` holds provenance (``model``, ``hook_names``, ``task``...); ``scores`` optionally the
    ``[layer, d_mlp]`` scores the set was selected by. Set operations keep the metadata both sides agree on.
    """

    mask: Bool[Tensor, "layer d_mlp"]
    meta: dict[str, Any] = field(default_factory=dict)
    scores: Float[Tensor, "layer d_mlp"] | None = None

    def __post_init__(self):
        if not isinstance(self.mask, Tensor) or self.mask.dim() != 2 or self.mask.dtype != torch.bool:
            raise ValueError("a NeuronSet mask must be a bool tensor [layer, d_mlp]; use NeuronSet.from_mask(...)")
        if self.scores is not None and self.scores.shape != self.mask.shape:
            raise ValueError(f"scores {tuple(self.scores.shape)} do not match the mask {tuple(self.mask.shape)}")

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_mask(cls, mask: Tensor, meta: dict | None = None) -> "NeuronSet":
        """From a ``[layer, d_mlp]`` mask of bools or 0/1 (copied).

        >>> NeuronSet.from_mask(torch.tensor([[0, 1], [1, 0]]))
        NeuronSet(2 neurons of 2x2: L0.N1, L1.N0)
        """
        mask = torch.as_tensor(mask).detach().cpu()
        if mask.dim() != 2:
            raise ValueError(f"a neuron mask must be [layer, d_mlp], got shape {tuple(mask.shape)}")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError("a neuron mask must hold bools or 0/1; threshold scores with from_scores(...) instead")
        return cls(mask.to(torch.bool).clone(), dict(meta or {}))

    @classmethod
    def from_pairs(cls, pairs: Iterable, n_layers: int, d_mlp: int, meta: dict | None = None,
                   layout: NeuronLayout | None = None) -> "NeuronSet":
        """From ``(layer, index)`` pairs, an int tensor ``[k, 2]`` or labels like ``"L3.N12"`` (expert labels
        like ``"L1.E0.N5"`` with the model's ``layout``, which the set then keeps).

        >>> NeuronSet.from_pairs(torch.tensor([[1, 0]]), 2, 4).pairs()
        [(1, 0)]
        >>> from skill_lens.model.anatomy import LayerLayout
        >>> NeuronSet.from_pairs(["L1.E1.N2", "L1.S.N0"], 2, 10, layout=NeuronLayout.of([LayerLayout(10, 2, 4)] * 2))
        NeuronSet(2 neurons of 2x10: L1.E1.N2, L1.S.N0)
        """
        meta = {**(meta or {}), **layout_meta(layout)}
        layout = _layout(meta)
        mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
        for layer, idx in cls.pairs_of(pairs.tolist() if isinstance(pairs, Tensor) else list(pairs), n_layers, d_mlp,
                                       layout):
            mask[layer, idx] = True
        return cls(mask, meta)

    @classmethod
    def coerce(cls, neurons, n_layers: int | None = None, d_mlp: int | None = None,
               layout: NeuronLayout | None = None) -> "NeuronSet":
        """A ``NeuronSet`` from any way of naming neurons, checked against ``n_layers`` x ``d_mlp`` when given.

        Accepts a ``NeuronSet`` (returned as is), a bool mask ``[n_layers, d_mlp]``, ``(layer, index)``
        pairs (a list, or an int tensor ``[k, 2]``) or labels like ``"L3.N12"`` (one or many). Pairs and
        labels need ``n_layers`` and ``d_mlp`` to place them (expert labels also the model's ``layout``);
        anything else is a ``ValueError`` naming what is accepted. This is the one coercion of neuron sets in
        skill_lens.

        >>> NeuronSet.coerce(["L1.N2", (0, 3)], 2, 4)
        NeuronSet(2 neurons of 2x4: L0.N3, L1.N2)
        >>> NeuronSet.coerce(torch.eye(2, dtype=torch.bool)).pairs(), NeuronSet.coerce("L0.N1", 1, 2).pairs()
        ([(0, 0), (1, 1)], [(0, 1)])
        >>> NeuronSet.coerce(torch.ones(2, 4), 2, 4)
        Traceback (most recent call last):
        ...
        ValueError: cannot read neurons from a torch.float32 tensor of shape [2, 4]; pass a NeuronSet, a bool tensor [n_layers, d_mlp] (here 2 layers x 4 neurons), (layer, index) pairs (a list or an int tensor [k, 2]) or labels like 'L3.N12' (an expert's: 'L3.E5.N812')
        """
        mask = _mask_of(neurons, n_layers, d_mlp)
        if mask is None:
            if n_layers is None or d_mlp is None:
                raise ValueError("(layer, index) pairs and labels name no model size; pass n_layers and d_mlp "
                                 "(e.g. describe(model).shape) to make a NeuronSet of them")
            return cls.from_pairs(cls.pairs_of(neurons, layout=layout), n_layers, d_mlp, layout=layout)
        ns = neurons if isinstance(neurons, NeuronSet) else cls(mask.detach().cpu().clone(), layout_meta(layout))
        if n_layers is not None and d_mlp is not None:
            ns.check_compatible(n_layers, d_mlp)
        return ns

    @classmethod
    def pairs_of(cls, neurons, n_layers: int | None = None, d_mlp: int | None = None,
                 layout: NeuronLayout | None = None) -> list[tuple[int, int]]:
        """``[(layer, index)]`` of anything :meth:`coerce` accepts, *in the order given* (a set or mask: sorted;
        anything with a ``.pairs()`` method: its pairs), each checked against ``n_layers`` / ``d_mlp`` when given.

        >>> NeuronSet.pairs_of(["L1.N5", (0, 2)]), NeuronSet.pairs_of((1, 2)), NeuronSet.pairs_of([])
        ([(1, 5), (0, 2)], [(1, 2)], [])
        """
        mask = _mask_of(neurons, n_layers, d_mlp)
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
                raise ValueError(f"neuron {cls.label(layer, idx)} is not in a model with {size}; "
                                 "check the layer and index (both count from 0)")
        return pairs

    @classmethod
    def from_scores(cls, scores: Float[Tensor, "layer d_mlp"], top: float | int, *, per_layer: bool = False,
                    meta: dict | None = None) -> "NeuronSet":
        """The best neurons by ``scores`` (see :func:`skill_lens.probing.scores.select_top`); keeps the scores.

        One rule across skill_lens: ``top`` (a fraction in (0, 1] or a count) is of **all** neurons,
        ranked globally, unless ``per_layer=True`` takes it of every layer. The same default holds for
        ``select_top``, ``suppression_curve``, ``prune``'s selections and ``skill-lens neurons/perturb/patch``.

        >>> s = torch.tensor([[0.9, 0.8], [0.1, 0.7]])
        >>> NeuronSet.from_scores(s, 2)                  # the best 2 of all 4
        NeuronSet(2 neurons of 2x2: L0.N0, L0.N1)
        >>> NeuronSet.from_scores(s, 1, per_layer=True)  # the best 1 of each layer
        NeuronSet(2 neurons of 2x2: L0.N0, L1.N1)
        """
        scores = scores.detach().float().cpu()
        meta = {**(meta or {}), "top": top, "per_layer": per_layer}
        return cls(select_top(scores, top, per_layer=per_layer), meta, scores.clone())

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, meta: dict | None = None) -> "NeuronSet":
        """No neurons.

        >>> NeuronSet.empty(2, 3)
        NeuronSet(0 neurons of 2x3)
        """
        return cls(torch.zeros(n_layers, d_mlp, dtype=torch.bool), dict(meta or {}))

    @classmethod
    def full(cls, n_layers: int, d_mlp: int, meta: dict | None = None) -> "NeuronSet":
        """Every neuron.

        >>> len(NeuronSet.full(2, 3)), len(~NeuronSet.full(2, 3))
        (6, 0)
        """
        return cls(torch.ones(n_layers, d_mlp, dtype=torch.bool), dict(meta or {}))

    # ------------------------------------------------------------------ names

    @staticmethod
    def label(layer: int, index: int) -> str:
        """``"L{layer}.N{index}"``.

        >>> NeuronSet.label(29, 692)
        'L29.N692'
        """
        return f"L{int(layer)}.N{int(index)}"

    @staticmethod
    def parse(label: str, layout: NeuronLayout | None = None) -> tuple[int, int]:
        """``(layer, index)`` of a label (an expert's, ``"L3.E5.N812"``, with the model's ``layout``).

        >>> NeuronSet.parse("L29.N692"), NeuronSet.label(29, 692)
        ((29, 692), 'L29.N692')
        """
        return parse_label(label, layout)

    def name(self, layer: int, index: int) -> str:
        """This set's label of a neuron: ``L{layer}.N{index}``, or its expert's in a mixture-of-experts layer.

        >>> from skill_lens.model.anatomy import LayerLayout
        >>> ns = NeuronSet.empty(1, 10, meta=layout_meta(NeuronLayout.of([LayerLayout(10, 2, 4)])))
        >>> ns.name(0, 5), ns.name(0, 9), NeuronSet.empty(1, 10).name(0, 5)
        ('L0.E1.N1', 'L0.S.N1', 'L0.N5')
        """
        layout = _layout(self.meta)
        return self.label(layer, index) if layout is None else layout.label(layer, index)

    def labels(self) -> list[str]:
        """Every neuron's :meth:`name`, in :meth:`pairs` order.

        >>> NeuronSet.from_pairs([(1, 0), (0, 2)], 2, 4).labels()
        ['L0.N2', 'L1.N0']
        """
        return [self.name(*p) for p in self.pairs()]

    # ------------------------------------------------------------------ views

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def n_layers(self) -> int:
        return self.mask.shape[0]

    @property
    def d_mlp(self) -> int:
        return self.mask.shape[1]

    def __len__(self) -> int:
        return int(self.mask.sum())

    def pairs(self) -> list[tuple[int, int]]:
        """Sorted ``(layer, index)`` pairs.

        >>> NeuronSet.from_pairs(["L1.N0", "L0.N3"], 2, 4).pairs()
        [(0, 3), (1, 0)]
        """
        return [(layer, idx) for layer, idx in self.mask.nonzero().tolist()]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(self.pairs())

    def __contains__(self, neuron) -> bool:
        layer, idx = self.parse(neuron, _layout(self.meta)) if isinstance(neuron, str) else map(int, neuron)
        return 0 <= layer < self.n_layers and 0 <= idx < self.d_mlp and bool(self.mask[layer, idx])

    def per_layer(self) -> dict[int, Tensor]:
        """``{layer: LongTensor of indices}`` for the layers holding at least one neuron.

        >>> NeuronSet.from_pairs([(1, 2), (1, 0)], 3, 4).per_layer()
        {1: tensor([0, 2])}
        """
        return {layer: row.nonzero()[:, 0] for layer, row in enumerate(self.mask) if row.any()}

    def counts_per_layer(self) -> list[int]:
        """Number of neurons in every layer.

        >>> NeuronSet.from_pairs(["L1.N0", "L1.N2"], 3, 4).counts_per_layer(), NeuronSet.full(3, 4).layers()
        ([0, 2, 0], [0, 1, 2])
        """
        return self.mask.sum(1).tolist()

    def layers(self) -> list[int]:
        """The layers holding at least one neuron."""
        return list(self.per_layer())

    def restrict_layers(self, layers: Iterable[int]) -> "NeuronSet":
        """The same set with only the neurons of ``layers`` (a range or list; same shape).

        >>> NeuronSet.full(3, 2).restrict_layers(range(1, 3)).counts_per_layer()
        [0, 2, 2]
        """
        layers = list(layers)
        if bad := [x for x in layers if not 0 <= x < self.n_layers]:
            raise ValueError(f"layers {bad} do not exist in a set of {self.n_layers} layers (0..{self.n_layers - 1})")
        keep = torch.zeros(self.n_layers, 1, dtype=torch.bool)
        keep[layers] = True
        return NeuronSet(self.mask & keep, dict(self.meta), self.scores)

    # ------------------------------------------------------------------ set operations

    def _combine(self, other, op) -> "NeuronSet":
        if not isinstance(other, NeuronSet):
            return NotImplemented
        if other.shape != self.shape:
            raise ValueError(f"cannot combine neuron sets of {self.n_layers}x{self.d_mlp} and "
                             f"{other.n_layers}x{other.d_mlp}; both must come from the same model")
        meta = {k: v for k, v in self.meta.items() if k in other.meta and other.meta[k] == v}
        return NeuronSet(op(self.mask, other.mask), meta)

    def __or__(self, other): return self._combine(other, torch.logical_or)
    def __and__(self, other): return self._combine(other, torch.logical_and)
    def __xor__(self, other): return self._combine(other, torch.logical_xor)
    def __sub__(self, other): return self._combine(other, lambda a, b: a & ~b)

    def __invert__(self) -> "NeuronSet":
        return NeuronSet(~self.mask, dict(self.meta), self.scores)

    def __eq__(self, other) -> bool:
        """Same shape and neurons (metadata is not compared)."""
        if not isinstance(other, NeuronSet):
            return NotImplemented
        return self.shape == other.shape and torch.equal(self.mask, other.mask)

    __hash__ = None  # mutable-looking tensor inside: compare, don't hash

    def __repr__(self) -> str:
        pairs, n = self.pairs(), len(self)
        head = f"{n} neuron{'' if n == 1 else 's'} of {self.n_layers}x{self.d_mlp}"
        if not pairs:
            return f"NeuronSet({head})"
        names = ", ".join(self.name(*p) for p in pairs[:_SHOWN]) + (", ..." if n > _SHOWN else "")
        return f"NeuronSet({head}: {names})"

    # ------------------------------------------------------------------ compatibility and files

    def check_compatible(self, n_layers: int, d_mlp: int) -> None:
        """Raise ``ValueError`` unless the set fits a model of ``n_layers`` x ``d_mlp`` neurons.

        >>> NeuronSet.empty(2, 4).check_compatible(3, 4)
        Traceback (most recent call last):
        ...
        ValueError: this neuron set was made for a model with 2 layers x 4 neurons, but this model has 3 layers x 4 neurons; select neurons on this model (skill-lens probe, then skill-lens neurons)
        """
        if self.shape != (n_layers, d_mlp):
            model = f" ({self.meta['model']})" if "model" in self.meta else ""
            raise ValueError(f"this neuron set was made for a model with {self.n_layers} layers x {self.d_mlp} "
                             f"neurons{model}, but this model has {n_layers} layers x {d_mlp} neurons; "
                             "select neurons on this model (skill-lens probe, then skill-lens neurons)")

    def save(self, path) -> None:
        """Write ``mask`` (and ``scores``) to a safetensors file with a JSON sidecar, atomically.

        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "n.safetensors")
        >>> NeuronSet.from_pairs(["L1.N2"], 2, 4, meta={"model": "m"}).save(p)
        >>> NeuronSet.load(p, expect_shape=(2, 4), expect_model="m")
        NeuronSet(1 neuron of 2x4: L1.N2)
        """
        tensors = {"mask": self.mask}
        if self.scores is not None:
            tensors["scores"] = self.scores
        save_tensors(path, tensors, {**self.meta, "kind": "neuron_set"})

    @classmethod
    def load(cls, path, expect_shape: tuple[int, int] | None = None, expect_model: str | None = None) -> "NeuronSet":
        """Read a saved set; raise ``ArtifactError`` if it is not one, or not for ``expect_shape``/``expect_model``."""
        tensors, meta = load_tensors(path)
        if "mask" not in tensors or tensors["mask"].dim() != 2:
            raise ArtifactError(f"{path} holds no [layer, d_mlp] 'mask'; is it a neuron set (skill-lens neurons)?")
        mask = tensors["mask"]
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ArtifactError(f"{path}: the mask holds values other than 0/1; it is corrupt, rerun skill-lens neurons")
        if expect_shape is not None and tuple(mask.shape) != tuple(expect_shape):
            L, N = expect_shape
            raise ArtifactError(f"{path} is a neuron set for a model with {mask.shape[0]} layers x {mask.shape[1]} "
                                f"neurons, but {L} layers x {N} were expected; select neurons on this model")
        if expect_model is not None:
            check_meta(meta, {"model": expect_model}, "neuron set")
        meta = {k: v for k, v in meta.items() if k not in ("tensors", "kind")}
        return cls(mask.to(torch.bool), meta, tensors.get("scores"))


# ------------------------------------------------------------------ coercion helpers (NeuronSet.coerce, pairs_of)

def layout_meta(layout: NeuronLayout | None) -> dict:
    """``{"layout": ...}`` for a set's ``meta`` when ``layout`` names experts (dense layouts need no record).

    >>> layout_meta(None), layout_meta(NeuronLayout())
    ({}, {})
    """
    return {"layout": layout.as_json()} if layout is not None and layout.moe else {}


def _layout(meta: dict) -> NeuronLayout | None:
    return NeuronLayout.from_json(meta["layout"]) if meta.get("layout") else None


def _accepted(n_layers, d_mlp) -> str:
    here = f" (here {n_layers} layers x {d_mlp} neurons)" if n_layers is not None and d_mlp is not None else ""
    return (f"pass a NeuronSet, a bool tensor [n_layers, d_mlp]{here}, (layer, index) pairs (a list or an int "
            "tensor [k, 2]) or labels like 'L3.N12' (an expert's: 'L3.E5.N812')")


def _mask_of(neurons, n_layers, d_mlp) -> Tensor | None:
    """The bool mask of a set, a mask-holding object or a bool tensor; ``None`` for pairs and labels."""
    if isinstance(neurons, NeuronSet):
        return neurons.mask
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
        return NeuronSet.parse(p, layout)
    if isinstance(p, Tensor):
        p = p.tolist()
    ok = isinstance(p, (tuple, list)) and len(p) == 2 and not any(isinstance(x, bool) for x in p)
    try:
        if ok:
            return int(p[0]), int(p[1])
    except (TypeError, ValueError):
        pass
    raise ValueError(f"{p!r} is not a neuron; {_accepted(n_layers, d_mlp)}")
