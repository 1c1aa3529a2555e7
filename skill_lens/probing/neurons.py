"""``NeuronSet``: a set of FFN neurons of one model, as a boolean mask ``[layer, d_mlp]``.

Neurons are named ``L{layer}.N{index}`` (``"L29.N692"``); in a mixture-of-experts layer
``L{layer}.E{expert}.N{index}`` (``"L3.E5.N812"``) and ``L{layer}.S.N{index}`` for the shared expert, by the
model's :class:`~skill_lens.model.layout.NeuronLayout` (``describe(model).layout``), which a set made for
such a model keeps in ``meta["layout"]``. Sets combine with ``| & - ^ ~``, save to safetensors with a JSON
sidecar, and refuse to load for (or to be used with) another shape or model. A set selected by scores keeps
them: :meth:`NeuronSet.top` lists its best neurons in rank order.

One rule across skill_lens: ``top`` (a fraction in (0, 1] or a count) is of **all** neurons, ranked globally,
unless ``per_layer=True`` takes it of every layer; the same holds for :meth:`NeuronSet.from_scores`,
:func:`~skill_lens.probing.scores.select_top`, ``suppression_curve``, ``prune``'s selections and
``skill-lens neurons/perturb/patch``.

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

from skill_lens.base.display import card, table
from skill_lens.store.artifacts import ArtifactError, check_meta, load_tensors, save_tensors
from skill_lens.model.layout import NeuronLayout, neuron_mask_of, neuron_pairs, parse_label
from skill_lens.probing.scores import best, select_top

__all__ = ["NeuronSet", "as_neuron_set", "check_top", "layout_meta"]
_SHOWN = 10  # neurons named in a repr
_SHOWN_RANKED = 5  # best neurons named in the repr of a set with scores
_NO_SCORES = ("this neuron set has no scores to rank by (it was made from a mask, pairs or labels); select it with "
              "NeuronSet.from_scores(result.scores('dev'), top=...) or read it from a run (run.neurons())")


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
        >>> from skill_lens.model.layout import LayerLayout
        >>> NeuronSet.from_pairs(["L1.E1.N2", "L1.S.N0"], 2, 10, layout=NeuronLayout.of([LayerLayout(10, 2, 4)] * 2))
        NeuronSet(2 neurons of 2x10: L1.E1.N2, L1.S.N0)
        """
        meta = {**(meta or {}), **layout_meta(layout)}
        layout = _layout(meta)
        mask = torch.zeros(n_layers, d_mlp, dtype=torch.bool)
        for layer, idx in neuron_pairs(pairs.tolist() if isinstance(pairs, Tensor) else list(pairs), n_layers, d_mlp,
                                       layout):
            mask[layer, idx] = True
        return cls(mask, meta)

    @classmethod
    def from_scores(cls, scores: Float[Tensor, "layer d_mlp"], top: float | int, *, per_layer: bool = False,
                    meta: dict | None = None) -> "NeuronSet":
        """The best ``top`` neurons by ``scores`` (of all, or of each layer: see the module docstring); keeps the scores.

        >>> s = torch.tensor([[0.9, 0.8], [0.1, 0.7]])
        >>> NeuronSet.from_scores(s, 2)                  # the best 2 of all 4
        NeuronSet(2 neurons of 2x2, best first: L0.N0 0.900, L0.N1 0.800)
        >>> NeuronSet.from_scores(s, 1, per_layer=True)  # the best 1 of each layer
        NeuronSet(2 neurons of 2x2, best first: L0.N0 0.900, L1.N1 0.700)
        """
        scores = scores.detach().float().cpu()
        meta = {**(meta or {}), "top": top, "per_layer": per_layer}
        return cls(select_top(scores, top, per_layer=per_layer), meta, scores.clone())

    @classmethod
    def empty(cls, n_layers: int, d_mlp: int, meta: dict | None = None) -> "NeuronSet":
        """No neurons (:meth:`full`: every neuron).

        >>> NeuronSet.empty(2, 3), len(NeuronSet.full(2, 3)), len(~NeuronSet.full(2, 3))
        (NeuronSet(0 neurons of 2x3), 6, 0)
        """
        return cls(torch.zeros(n_layers, d_mlp, dtype=torch.bool), dict(meta or {}))

    @classmethod
    def full(cls, n_layers: int, d_mlp: int, meta: dict | None = None) -> "NeuronSet":
        """Every neuron (see :meth:`empty`)."""
        return cls(torch.ones(n_layers, d_mlp, dtype=torch.bool), dict(meta or {}))

    @staticmethod
    def label(layer: int, index: int) -> str:
        """``"L{layer}.N{index}"`` (a dense layer's label; :meth:`name` is this set's, :meth:`parse` the inverse)."""
        return f"L{int(layer)}.N{int(index)}"

    @staticmethod
    def parse(label: str, layout: NeuronLayout | None = None) -> tuple[int, int]:
        """``(layer, index)`` of a label (an expert's, ``"L3.E5.N812"``, with the model's ``layout``).

        >>> NeuronSet.label(29, 692), NeuronSet.parse("L29.N692")
        ('L29.N692', (29, 692))
        """
        return parse_label(label, layout)

    def name(self, layer: int, index: int) -> str:
        """This set's label of a neuron: ``L{layer}.N{index}``, or its expert's in a mixture-of-experts layer.

        >>> from skill_lens.model.layout import LayerLayout
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
        layer, idx = parse_label(neuron, _layout(self.meta)) if isinstance(neuron, str) else map(int, neuron)
        return 0 <= layer < self.n_layers and 0 <= idx < self.d_mlp and bool(self.mask[layer, idx])

    def per_layer(self) -> dict[int, Tensor]:
        """``{layer: LongTensor of indices}`` for the layers holding at least one neuron (:meth:`layers`).

        >>> ns = NeuronSet.from_pairs([(1, 2), (1, 0)], 3, 4)
        >>> ns.per_layer(), ns.counts_per_layer(), ns.layers()
        ({1: tensor([0, 2])}, [0, 2, 0], [1])
        """
        return {layer: row.nonzero()[:, 0] for layer, row in enumerate(self.mask) if row.any()}

    def counts_per_layer(self) -> list[int]:
        """Number of neurons in every layer (see :meth:`per_layer`)."""
        return self.mask.sum(1).tolist()

    def layers(self) -> list[int]:
        """The layers holding at least one neuron."""
        return list(self.per_layer())

    def top(self, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` best neurons of the set by its ``scores``, best first (ties in layer order): ``[(label, score)]``;
        every function taking neurons accepts this list (``neuron_activations_view(pm, texts, skill.top(4))``).

        >>> s = NeuronSet.from_scores(torch.tensor([[0.6, 0.9], [0.8, 0.7]]), top=3)
        >>> s.top(2), s.pairs()            # rank order vs layer order
        ([('L0.N1', 0.9), ('L1.N0', 0.8)], [(0, 1), (1, 0), (1, 1)])
        >>> NeuronSet.from_pairs(s.top(2), 2, 2).pairs()
        [(0, 1), (1, 0)]
        """
        if self.scores is None:
            raise ValueError(_NO_SCORES)
        return [(label, score) for label, score, _ in best(self.scores, k, within=self.mask, label=self.name)]

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
        """The size and the first neurons: the best with their scores when the set has scores, else in layer order.

        >>> NeuronSet.from_scores(torch.tensor([[0.6, 0.9], [0.8, 0.7]]), top=3)
        NeuronSet(3 neurons of 2x2, best first: L0.N1 0.900, L1.N0 0.800, L1.N1 0.700)
        """
        return _text(self)

    def _repr_html_(self) -> str:
        return _card(self)

    def check_compatible(self, n_layers: int, d_mlp: int) -> None:
        """Raise ``ValueError`` (naming both sizes and the fix) unless the set fits ``n_layers`` x ``d_mlp`` neurons."""
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
        return cls(*_read(path, expect_shape, expect_model))


def _text(ns: NeuronSet) -> str:
    """:meth:`NeuronSet.__repr__`."""
    n = len(ns)
    head = f"{n} neuron{'' if n == 1 else 's'} of {ns.n_layers}x{ns.d_mlp}"
    if not n:
        return f"NeuronSet({head})"
    if ns.scores is not None:
        names = ", ".join(f"{label} {score:.3f}" for label, score in ns.top(_SHOWN_RANKED))
        return f"NeuronSet({head}, best first: {names}{', ...' if n > _SHOWN_RANKED else ''})"
    names = ", ".join(ns.name(*p) for p in ns.pairs()[:_SHOWN]) + (", ..." if n > _SHOWN else "")
    return f"NeuronSet({head}: {names})"


def _card(ns: NeuronSet) -> str:
    """In a notebook: the size, how it was selected, neurons per layer and the best ones with their scores."""
    n, total = len(ns), ns.n_layers * ns.d_mlp
    fields = [("neurons", f"{n:,} of {total:,} ({ns.n_layers} layers x {ns.d_mlp}; {n / total:.1%})")]
    if "top" in ns.meta:
        of = "of each layer" if ns.meta.get("per_layer") else "of all neurons"
        fields.append(("selected", f"top {ns.meta['top']} {of} by {ns.meta.get('scored_on', 'score')}"))
    counts = ns.counts_per_layer()
    busy = sorted(range(ns.n_layers), key=lambda l: (-counts[l], l))[:3]
    fields.append(("most per layer", ", ".join(f"L{l}: {counts[l]}" for l in busy if counts[l]) or "none"))
    ranked = table([[i + 1, label, score] for i, (label, score) in enumerate(ns.top(_SHOWN_RANKED))],
                   ["rank", "neuron", "score"]) if ns.scores is not None and n else ""
    return card("NeuronSet", fields, ranked)


def _read(path, expect_shape, expect_model) -> tuple[Tensor, dict, Tensor | None]:
    """The mask, metadata and scores of a saved set, checked (:meth:`NeuronSet.load`)."""
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
    return mask.to(torch.bool), meta, tensors.get("scores")


def check_top(top: float, flag: str = "--top") -> float | int:
    """How many neurons a selection takes: ``top`` is a fraction in (0, 1) or a whole number of neurons; returns
    it as a fraction or an int (else a ``ValueError`` naming ``flag``).

    >>> check_top(0.02), check_top(5.0)
    (0.02, 5)
    >>> check_top(1.5)
    Traceback (most recent call last):
    ...
    ValueError: --top must be a fraction in (0, 1) or a whole number of neurons >= 1, got 1.5
    """
    if isinstance(top, bool) or not isinstance(top, (int, float)) or \
            not (0 < top < 1 or (top >= 1 and float(top).is_integer())):
        raise ValueError(f"{flag} must be a fraction in (0, 1) or a whole number of neurons >= 1, got {top}")
    return int(top) if top >= 1 else top


# ------------------------------------------------------------------ coercion: the one place any way of naming neurons becomes a set
# (as pairs: skill_lens.model.layout.neuron_pairs)

def as_neuron_set(neurons, n_layers: int | None = None, d_mlp: int | None = None,
                  layout: NeuronLayout | None = None) -> NeuronSet:
    """A ``NeuronSet`` from any way of naming neurons, checked against ``n_layers`` x ``d_mlp`` when given.

    Accepts a ``NeuronSet`` (returned as is), a bool mask ``[n_layers, d_mlp]``, ``(layer, index)``
    pairs (a list, or an int tensor ``[k, 2]``) or labels like ``"L3.N12"`` (one or many). Pairs and
    labels need ``n_layers`` and ``d_mlp`` to place them (expert labels also the model's ``layout``);
    anything else is a ``ValueError`` naming what is accepted. This is the one coercion of neuron sets in
    skill_lens.

    >>> as_neuron_set(["L1.N2", (0, 3)], 2, 4)
    NeuronSet(2 neurons of 2x4: L0.N3, L1.N2)
    >>> as_neuron_set(torch.eye(2, dtype=torch.bool)).pairs(), as_neuron_set("L0.N1", 1, 2).pairs()
    ([(0, 0), (1, 1)], [(0, 1)])
    >>> as_neuron_set(torch.ones(2, 4), 2, 4)
    Traceback (most recent call last):
    ...
    ValueError: cannot read neurons from a torch.float32 tensor of shape [2, 4]; pass a NeuronSet, a bool tensor [n_layers, d_mlp] (here 2 layers x 4 neurons), (layer, index) pairs (a list or an int tensor [k, 2]) or labels like 'L3.N12' (an expert's: 'L3.E5.N812')
    """
    mask = neuron_mask_of(neurons, n_layers, d_mlp)
    if mask is None:
        if n_layers is None or d_mlp is None:
            raise ValueError("(layer, index) pairs and labels name no model size; pass n_layers and d_mlp "
                             "(e.g. describe(model).shape) to make a NeuronSet of them")
        return NeuronSet.from_pairs(neuron_pairs(neurons, layout=layout), n_layers, d_mlp, layout=layout)
    ns = neurons if isinstance(neurons, NeuronSet) else NeuronSet(mask.detach().cpu().clone(), layout_meta(layout))
    if n_layers is not None and d_mlp is not None:
        ns.check_compatible(n_layers, d_mlp)
    return ns


# ------------------------------------------------------------------ helpers

def layout_meta(layout: NeuronLayout | None) -> dict:
    """``{"layout": ...}`` for a set's ``meta`` when ``layout`` names experts (dense layouts need no record).

    >>> layout_meta(None), layout_meta(NeuronLayout())
    ({}, {})
    """
    return {"layout": layout.as_json()} if layout is not None and layout.moe else {}


def _layout(meta: dict) -> NeuronLayout | None:
    return NeuronLayout.from_json(meta["layout"]) if meta.get("layout") else None
