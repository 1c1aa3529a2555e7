"""Structural FFN pruning: keep the skill neurons, fold every other neuron into the output bias.

A neuron ``n`` of layer ``l`` is one column of the FFN's hidden activation (``blocks.{l}.mlp.hook_post``,
the input of the output projection ``W_out``). Pruning keeps only the chosen neurons' rows of the
input projection(s) and columns of ``W_out``, and replaces each removed neuron by a constant, its
``baseline`` (mean activation over the training split, from :mod:`skill_lens.probing.probe`)::

    W_out @ a = W_out[:, kept] @ a[kept] + W_out[:, removed] @ baseline[removed]
                                            `---------- added to the bias ----------'

so the pruned model computes exactly what the unpruned one computes when every removed neuron's
activation is overwritten by its baseline -- at every position, input tokens included -- with
smaller matrices. Every FFN layout the bridge maps is pruned the same way, read from the model
(:mod:`skill_lens.model.anatomy`; the slicing is :mod:`skill_lens.intervening.ffn_slicing`): plain and
gated MLPs, ``Linear`` or GPT-2 ``Conv1D`` projections, with or without biases (an output projection
without one gets one), fused gate/up matrices (Phi-3), FFNs parallel to attention (GPT-J, NeoX, Falcon,
Phi), and mixtures of experts, which keep the same number of neurons in each expert (the experts are
one tensor; :func:`kept_neurons` pads the others with their best neurons) and fold each expert's
removed neurons into a per-expert output bias. A layout that cannot be pruned (a projection that is
not a ``Linear``, a norm after each expert...) is refused in one line before any work
(:func:`check_prunable`).

Neuron indexing of a pruned model: layer ``l`` of the pruned bridge has ``len(kept[l])`` neurons and
its neuron ``i`` is neuron ``kept[l][i]`` of the original (see :func:`pruning_info`); unpruned layers
keep their width. ``describe(pruned)`` reads each layer's width from the pruned weights
(``describe(pruned).widths``; ``d_mlp`` is the widest), so ``NeuronSet`` masks of the original shape do
not apply to it: map indices back with :meth:`PruningInfo.original_index`. For T5 only the encoder
blocks (``describe(model).hook_names``) are pruned; the decoder is untouched.

>>> import torch
>>> from skill_lens.model.tiny import tiny_model
>>> model = tiny_model("causal")
>>> keep = torch.zeros(2, 64, dtype=torch.bool); keep[:, :8] = True
>>> pruned = prune(model, keep, baseline=torch.zeros(2, 3, 64), layers=[1])
>>> pruning_info(pruned).widths, pruned.original_model.model.layers[1].mlp.down_proj.weight.shape
({0: 64, 1: 8}, torch.Size([32, 8]))
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.store.artifacts import ArtifactError, library_version, load_tensors, read_json, save_tensors, write_json
from skill_lens.intervening.ffn_slicing import build, ffn_keys, hf_state_dict, record, slice_layer
from skill_lens.model.anatomy import NeuronLayout
from skill_lens.store.kinds import LOCK, PRUNED_INFO, PRUNED_PROMPT, PRUNED_WEIGHTS, STAGING
from skill_lens.store.manifest import Folder
from skill_lens.model.loading import bridge_from_hf, describe, model_device, parse_device
from skill_lens.model.record import model_record
from skill_lens.probing.neurons import NeuronSet
from skill_lens.probing.scores import select_top

__all__ = ["PruningError", "PruningInfo", "prune", "pruning_info", "kept_neurons", "save_pruned", "load_pruned",
           "check_pruned_out", "check_prunable", "parameter_count", "top_per_expert"]

WEIGHTS_FILE, INFO_FILE, PROMPT_FILE = PRUNED_WEIGHTS, PRUNED_INFO, PRUNED_PROMPT


class PruningError(ValueError):
    """The neurons, baseline, layers or widths do not fit the model."""


@dataclass
class PruningInfo:
    """What a pruned model kept: ``kept[l]`` are original neuron indices (sorted) of each pruned layer.

    >>> info = PruningInfo("m", 4, {0: [1, 3]}, {0: 2, 1: 4})
    >>> info.original_index(0, 1), info.original_index(1, 2)
    (3, 2)
    """

    base_model: str
    d_mlp: int  # original width of every layer
    kept: dict[int, list[int]]
    widths: dict[int, int]  # width of every layer of the pruned model (unpruned layers: d_mlp)
    position: str | int | None = "mean"  # which prompt position of a [L, P, d_mlp] baseline; None: [L, d_mlp]
    baseline_source: str | None = None
    meta: dict = field(default_factory=dict)

    def original_index(self, layer: int, index: int) -> int:
        """Original neuron index of neuron ``index`` of ``layer`` in the pruned model."""
        return self.kept[layer][index] if layer in self.kept else index

    def as_json(self) -> dict:
        return {**asdict(self), "kept": {str(k): v for k, v in self.kept.items()},
                "widths": {str(k): v for k, v in self.widths.items()}}

    @classmethod
    def from_json(cls, d: dict) -> "PruningInfo":
        return cls(**{**d, "kept": {int(k): v for k, v in d["kept"].items()},
                      "widths": {int(k): v for k, v in d["widths"].items()}})


def pruning_info(model: TransformerBridge) -> PruningInfo | None:
    """The :class:`PruningInfo` of a bridge made by :func:`prune` or :func:`load_pruned` (``None`` otherwise).

    >>> from skill_lens.model.tiny import tiny_model
    >>> pruning_info(tiny_model()) is None
    True
    """
    return model_record(model).pruning


def kept_neurons(keep, layers: Sequence[int], width=None, scores=None,
                 layout: NeuronLayout | None = None) -> dict[int, list[int]]:
    """Original indices kept in each of ``layers``: the mask's neurons, padded by ``scores`` to ``width``.

    ``keep`` is a ``NeuronSet`` or a bool tensor ``[n_layers, d_mlp]``; ``width`` an int for every
    layer, a sequence aligned with ``layers`` or a ``{layer: width}`` dict; padding adds the
    highest-scoring neurons not already kept. With the model's ``layout``, every expert of a
    mixture-of-experts layer keeps as many neurons as the expert keeping most (padded likewise).

    >>> keep = torch.tensor([[True, False, False, False]])
    >>> kept_neurons(keep, [0], width=3, scores=torch.tensor([[0.9, 0.1, 0.8, 0.7]]))
    {0: [0, 2, 3]}
    >>> from skill_lens.model.anatomy import LayerLayout
    >>> kept_neurons(keep, [0], scores=torch.tensor([[0.9, 0.1, 0.8, 0.7]]), layout=NeuronLayout.of([LayerLayout(4, 2, 2)]))
    {0: [0, 2]}
    """
    mask = as_mask(keep)
    L, N = mask.shape
    widths = _widths(width, layers)
    out = {}
    for layer in layers:
        idx = mask[layer].nonzero()[:, 0].tolist()
        if layout is not None and layout.layers[layer].experts:
            idx = _per_expert(idx, layer, layout.layers[layer], scores, (L, N))
        want = widths.get(layer)
        if want is not None:
            if not 0 <= want <= N:
                raise PruningError(f"width {want} for layer {layer} is outside 0..{N} (d_mlp); pass a smaller width.")
            if len(idx) > want:
                raise PruningError(f"layer {layer} keeps {len(idx)} neurons but its width is {want}; pass a width "
                                   f">= {len(idx)} or keep fewer neurons.")
            if len(idx) < want:
                if scores is None:
                    raise PruningError(f"padding layer {layer} to width {want} needs scores; pass scores= "
                                       "(e.g. ProbeResult.scores()).")
                s = torch.as_tensor(scores, dtype=torch.float64)
                if s.shape != (L, N):
                    raise PruningError(f"scores have shape {tuple(s.shape)}, expected {(L, N)}; pass the "
                                       "[n_layers, d_mlp] scores of this model's probe.")
                s = s[layer].clone()
                s[idx] = float("-inf")
                idx = idx + s.topk(want - len(idx)).indices.tolist()
        out[layer] = sorted(idx)
    return out


def _per_expert(idx: list[int], layer: int, lay, scores, shape) -> list[int]:
    """``idx`` with every expert of ``lay`` padded by ``scores`` to the largest expert's count."""
    w = lay.expert_width
    counts = [sum(e * w <= i < (e + 1) * w for i in idx) for e in range(lay.experts)]
    if len(set(counts)) == 1:
        return idx
    if scores is None:
        raise PruningError(f"layer {layer} keeps {counts} neurons in its experts, which must keep as many each (one "
                           "tensor); pass scores= to pad them with their best neurons, or select per expert "
                           "(pruning.top_per_expert).")
    s = torch.as_tensor(scores, dtype=torch.float64)
    if s.shape != shape:
        raise PruningError(f"scores have shape {tuple(s.shape)}, expected {shape}; pass this model's probe scores.")
    out = list(idx)
    for e, c in enumerate(counts):
        row = s[layer, e * w:(e + 1) * w].clone()
        row[[i - e * w for i in idx if e * w <= i < (e + 1) * w]] = float("-inf")
        out += (row.topk(max(counts) - c).indices + e * w).tolist()
    return out


def top_per_expert(scores: Float[Tensor, "layer d_mlp"], top: float | int, layout: NeuronLayout) -> Tensor:
    """The best ``top`` neurons of each layer (``select_top(..., per_layer=True)``); in a mixture-of-experts layer
    of each expert and of the shared expert, so that every expert keeps as many (a count is shared out by width).

    >>> from skill_lens.model.anatomy import LayerLayout
    >>> s = torch.tensor([[0.9, 0.8, 0.1, 0.2, 0.5, 0.4]])
    >>> top_per_expert(s, 0.5, NeuronLayout.of([LayerLayout(6, 2, 2)])).int().tolist()
    [[1, 0, 0, 1, 1, 0]]
    """
    mask = select_top(scores, top, per_layer=True)
    for l, lay in enumerate(layout.layers):
        if not lay.experts:
            continue
        mask[l] = False
        spans = [(e * lay.expert_width, lay.expert_width) for e in range(lay.experts)]
        spans += [(lay.experts * lay.expert_width, lay.shared)] if lay.shared else []
        for start, w in spans:
            k = top if isinstance(top, float) and top <= 1 else max(1, round(top * w / lay.width))
            part = select_top(scores[l:l + 1, start:start + w], k, per_layer=True)[0]
            mask[l, start:start + w] = part
    return mask


def check_prunable(model: TransformerBridge, layers: Sequence[int] | None = None) -> None:
    """Refuse, in one line, a model whose FFN in ``layers`` (default: all) cannot be pruned, naming why.

    >>> from skill_lens.model.tiny import tiny_model
    >>> check_prunable(tiny_model("mixtral"), [0, 1]) is None
    True
    """
    info = describe(model)
    for l in range(info.n_layers) if layers is None else layers:
        why = info.layers[l].unprunable if 0 <= l < info.n_layers else None
        if why:
            raise PruningError(f"layer {l} of {info.name} ({info.layers[l].describe()}) cannot be pruned: {why}.")


def prune(
    model: TransformerBridge,
    keep,
    baseline: Float[Tensor, "layer pos d_mlp"] | Float[Tensor, "layer d_mlp"],
    layers: Sequence[int] | None = None,
    width: int | Sequence[int] | Mapping[int, int] | None = None,
    scores: Float[Tensor, "layer d_mlp"] | None = None,
    position: str | int = "mean",
    baseline_source: str | None = None,
) -> TransformerBridge:
    """A new, smaller bridge whose FFNs in ``layers`` hold only the ``keep`` neurons (see module docstring).

    ``baseline`` is ``[n_layers, P, d_mlp]`` (per prompt position, as :func:`skill_lens.probing.probe.probe`
    gives it; ``position`` picks one position or ``"mean"`` averages them) or ``[n_layers, d_mlp]``.
    ``layers`` defaults to all layers; the others are untouched. ``width`` pads layers with the
    next-best neurons by ``scores``, and so are the experts of a mixture of experts, which keep as many
    neurons each (:func:`kept_neurons`). A layer that cannot be pruned is refused before any work
    (:func:`check_prunable`). The original model is not modified; the new bridge keeps its tokenizer and
    records :func:`pruning_info`.

    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model("gpt2")
    >>> keep = torch.zeros(2, 64, dtype=torch.bool); keep[:, :4] = True
    >>> pruned = prune(model, keep, torch.zeros(2, 64), width=6, scores=torch.rand(2, 64))
    >>> pruning_info(pruned).widths, pruned.original_model.transformer.h[0].mlp.c_fc.weight.shape
    ({0: 6, 1: 6}, torch.Size([32, 6]))
    """
    if pruning_info(model) is not None:
        raise PruningError("this model is already pruned; prune the original model (neuron indices refer to it).")
    info = describe(model)
    mask = as_mask(keep, layout=info.layout)
    if tuple(mask.shape) != info.shape:
        raise PruningError(f"the neuron set has shape {tuple(mask.shape)} but {info.name} has {info.shape} "
                           "(n_layers, d_mlp); select neurons from a probe of this model.")
    layers = list(range(info.n_layers)) if layers is None else sorted({int(l) for l in layers})
    bad = [l for l in layers if not 0 <= l < info.n_layers]
    if bad:
        raise PruningError(f"layers {bad} do not exist in {info.name} (layers 0..{info.n_layers - 1}).")
    check_prunable(model, layers)
    base = _baseline(baseline, info.shape, position)
    kept = kept_neurons(mask, layers, width, scores, info.layout)

    hf = model.original_model
    config = copy.deepcopy(hf.config)
    with torch.device("meta"):  # only for names and layout
        fresh = type(hf)(config)
    state = {k: v for k, v in hf_state_dict(hf).items() if k in fresh.state_dict()}
    layout = {l: record(info.layers[l]) for l in kept}  # how each pruned FFN is laid out: rebuilt from it
    for layer, idx in kept.items():
        slice_layer(state, layout[layer], idx, base[layer])
    widths = {l: len(kept[l]) if l in kept else info.widths[l] for l in range(info.n_layers)}
    position = position if torch.as_tensor(baseline).dim() == 3 else None  # a [L, d_mlp] baseline has no positions
    meta = {"hf_class": type(hf).__name__, "library_version": library_version(),
            "tokenizer_adds_bos": model_record(model).tokenizer_adds_bos,
            "ffn": {str(l): segs for l, segs in layout.items()}}
    info_ = PruningInfo(info.name, info.d_mlp, kept, widths, position, baseline_source, meta=meta)
    return _assemble(type(hf), config, state, info_, model.tokenizer, info.name + "+pruned", model_device(model))


def parameter_count(model: TransformerBridge, ffn_only: bool = False) -> int:
    """Number of parameters of the underlying HF model (shared tensors once), or of its FFNs only.

    >>> from skill_lens.model.tiny import tiny_model
    >>> parameter_count(tiny_model("causal"), ffn_only=True)  # 2 layers x 3 x 32 x 64
    12288
    """
    hf = model.original_model
    seen, total = set(), 0
    keys = ffn_keys(describe(model).layers) if ffn_only else None
    for name, p in hf_state_dict(hf).items():
        if (keys is None or name in keys) and p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def save_pruned(model: TransformerBridge, path, prompt=None) -> Path:
    """Write a pruned model to directory ``path`` (atomically): weights, HF config, tokenizer, ``pruning.json``.

    ``prompt`` (a :class:`~skill_lens.prompting.prompts.SoftPrompt` for the pruned model) is saved beside it as
    ``prompt.safetensors``; ``load_pruned(path, with_prompt=True)`` returns both. The directory loads
    only through :func:`load_pruned`: its layers have their own FFN widths, which no ``transformers``
    config describes (``from_pretrained`` would refuse the weights).

    >>> import tempfile
    >>> from skill_lens.model.tiny import tiny_model
    >>> keep = torch.zeros(2, 64, dtype=torch.bool); keep[:, :8] = True
    >>> d = save_pruned(prune(tiny_model("mlm"), keep, torch.zeros(2, 64)), tempfile.mkdtemp() + "/p")
    >>> sorted(p.name for p in d.iterdir() if not p.name.startswith("."))[:4]
    ['config.json', 'manifest.json', 'model.safetensors', 'model.safetensors.json']
    """
    record = pruning_info(model)
    if record is None:
        raise PruningError("this model is not pruned; prune it with skill_lens.intervening.pruning.prune first.")
    path = check_pruned_out(path)
    hf = model.original_model
    state, seen = {}, set()
    keys = model_record(model).hf_keys  # the HF model's own tensors, not the bridge's additions
    for name, t in hf_state_dict(hf).items():  # tied tensors once; load_pruned re-ties them
        if name in keys and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            state[name] = t
    with Folder(path).writing("prune") as tx:  # committed whole; a user's own files in the folder are kept
        legacy = not tx.folder.has_manifest() and (path / INFO_FILE).exists()
        for rel in tx.folder.manifest() or ([PROMPT_FILE, PROMPT_FILE + ".json"] if legacy else []):
            tx.remove(rel, ours=legacy)  # the old model's files this one does not write again
        save_tensors(_staged(tx, WEIGHTS_FILE), state, {"model": record.base_model + "+pruned"})
        tree = tx.stage_tree("", "pruned")
        hf.config.save_pretrained(tree)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tree)
        write_json(tx.path(INFO_FILE, "pruned"), {**record.as_json(), "name": describe(model).name})
        if prompt is not None:
            prompt.save(_staged(tx, PROMPT_FILE), **describe(model).as_meta())
    return path


def _staged(tx, name: str) -> Path:
    """Stage a safetensors file and its JSON sidecar; return where to write it."""
    tx.path(name + ".json", "pruned")
    return tx.path(name, "pruned")


def check_pruned_out(path) -> Path:
    """``path`` as a place to save a pruned model: new, an empty directory, or a pruned model we wrote.

    Anything else (a file, a run directory, a folder of other files) is refused untouched. Saving replaces
    only the files its manifest lists (what an earlier save wrote): a file the user added is kept.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> check_pruned_out(d / "new") == d / "new"
    True
    >>> _ = (d / "notes.txt").write_text("mine")
    >>> check_pruned_out(d)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    skill_lens.store.artifacts.ArtifactError: ... holds files that are not a pruned model (notes.txt); saving would replace them. Choose a new --out directory.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ArtifactError(f"{path} is a file, not a directory; choose a new --out directory for the pruned model.")
    ours = Folder(path).entry(INFO_FILE) is not None or (path / INFO_FILE).exists()
    names = sorted(p.name for p in path.iterdir() if p.name not in (LOCK, STAGING)) if path.is_dir() else []
    if names and not ours:
        raise ArtifactError(f"{path} holds files that are not a pruned model ({', '.join(names[:3])}"
                            f"{' ...' if len(names) > 3 else ''}); saving would replace them. Choose a new --out "
                            "directory.")
    return path


def load_pruned(path, device: str | None = None, *, with_prompt: bool = False):
    """Rebuild a model saved by :func:`save_pruned`, without the original weights or run.

    Returns the :class:`TransformerBridge`; with ``with_prompt=True`` the pair ``(model, prompt)``, the
    :class:`~skill_lens.prompting.prompts.SoftPrompt` saved with it (``save_pruned(model, path, prompt=...)``),
    checked against the model. Only skill_lens reads the directory: each pruned layer has its own FFN
    width, which ``transformers.AutoModel.from_pretrained`` cannot build. ``device`` as for
    :func:`~skill_lens.model.loading.load_model` (default: CUDA when available, else the CPU); the dtype is the
    saved weights'.

    >>> import tempfile
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> from skill_lens.model.tiny import tiny_model
    >>> model = tiny_model("seq2seq"); keep = torch.zeros(2, 64, dtype=torch.bool); keep[:, :8] = True
    >>> d = save_pruned(prune(model, keep, torch.zeros(2, 64)), tempfile.mkdtemp() + "/p",
    ...                 prompt=SoftPrompt.init(model, 4))
    >>> pruning_info(load_pruned(d)).widths
    {0: 8, 1: 8}
    >>> small, prompt = load_pruned(d, with_prompt=True)
    >>> prompt.length, pruning_info(small).widths
    (4, {0: 8, 1: 8})
    """
    path = Path(path)
    if not (path / INFO_FILE).exists():
        raise ArtifactError(f"{path} is not a pruned model (no {INFO_FILE}); write one with save_pruned.")
    if with_prompt and not (path / PROMPT_FILE).exists():
        raise ArtifactError(f"{path} holds no {PROMPT_FILE}: the model was saved without a prompt; save it with "
                            "save_pruned(model, path, prompt=...) or load it with with_prompt=False.")
    folder = Folder(path)
    with folder.reading():
        for name in [WEIGHTS_FILE, INFO_FILE, "config.json"] + [PROMPT_FILE] * with_prompt:
            folder.verify(name, f"save the pruned model again (save_pruned, or skill-lens prune RUN --out {path})")
        model = _load_model(path, parse_device(device))
    if not with_prompt:
        return model
    from skill_lens.prompting.prompts import SoftPrompt

    return model, SoftPrompt.load(path / PROMPT_FILE, model)


def _load_model(path: Path, device: str) -> TransformerBridge:
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    d = read_json(path / INFO_FILE)
    name = d.pop("name")
    record = PruningInfo.from_json(d)
    config = AutoConfig.from_pretrained(path)
    cls = getattr(transformers, record.meta.get("hf_class", ""), None)
    if cls is None:
        from skill_lens.model.loading import model_class

        cls = model_class(config)
    state, _ = load_tensors(path / WEIGHTS_FILE)
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return _assemble(cls, config, state, record, tokenizer, name, device)


# ----------------------------------------------------------------------------- internals
def as_mask(keep, n_layers: int | None = None, d_mlp: int | None = None,
            layout: NeuronLayout | None = None) -> Bool[Tensor, "layer d_mlp"]:
    """The bool mask ``[n_layers, d_mlp]`` of ``keep``: anything :meth:`NeuronSet.coerce` accepts (a
    ``NeuronSet``, a bool mask; pairs and labels with ``n_layers``, ``d_mlp`` and, for experts, ``layout``),
    else a :class:`PruningError`.

    >>> as_mask(["L1.N0"], 2, 3).tolist()
    [[False, False, False], [True, False, False]]
    """
    try:
        return NeuronSet.coerce(keep, n_layers, d_mlp, layout).mask
    except ValueError as e:
        raise PruningError(f"cannot prune to these neurons: {e}") from e


def _widths(width, layers: Sequence[int]) -> dict[int, int]:
    if width is None:
        return {}
    if isinstance(width, int):
        return {l: width for l in layers}
    if isinstance(width, Mapping):
        return {int(k): int(v) for k, v in width.items()}
    width = list(width)
    if len(width) != len(layers):
        raise PruningError(f"{len(width)} widths for {len(layers)} layers; give one width per pruned layer.")
    return dict(zip(layers, map(int, width)))


def _baseline(baseline, shape: tuple[int, int], position) -> Float[Tensor, "layer d_mlp"]:
    b = torch.as_tensor(baseline).double()
    if b.dim() == 3 and b.shape[0] == shape[0] and b.shape[2] == shape[1]:
        if position == "mean":
            return b.mean(1)
        if isinstance(position, int) and -b.shape[1] <= position < b.shape[1]:
            return b[:, position]
        raise PruningError(f"position must be 'mean' or an int in 0..{b.shape[1] - 1} (the baseline's positions), "
                           f"got {position!r}.")
    if tuple(b.shape) == shape:
        return b
    raise PruningError(f"baseline has shape {tuple(b.shape)}; expected [n_layers, P, d_mlp] or [n_layers, d_mlp] "
                       f"with (n_layers, d_mlp) = {shape}. Use ProbeResult.baseline from a probe of this model.")


def _layouts(info: PruningInfo, cls, config, tokenizer, dtype) -> dict[int, list[dict]]:
    """Each pruned layer's FFN layout (:func:`~skill_lens.intervening.ffn_slicing.record`): as recorded, or, for a
    model saved before layouts were recorded, read from a freshly built unpruned model."""
    if "ffn" in info.meta:
        return {int(l): segs for l, segs in info.meta["ffn"].items()}
    full = describe(bridge_from_hf(build(cls, config, {}, {}, dtype), tokenizer, name="layout", device="cpu"))
    return {l: record(full.layers[l]) for l in info.kept}


def _assemble(cls, config, state: dict, info: PruningInfo, tokenizer, name: str, device: str = "cpu"):
    """Build the shrunk architecture, load ``state`` into it, wrap it in a bridge carrying ``info``."""
    dtype = next(iter(state.values())).dtype
    config.skill_lens_pruning = {"d_mlp": info.d_mlp, "widths": {str(k): v for k, v in info.widths.items()}}
    hf = build(cls, config, _layouts(info, cls, config, tokenizer, dtype), info.kept, dtype)
    hf.tie_weights()
    target = hf.state_dict()
    extra = [k for k in state if k not in target]
    state = {k: v for k, v in state.items() if k in target}
    loaded = {target[k].data_ptr() for k in state}
    missing = {k for k, t in target.items() if k not in state and t.data_ptr() not in loaded}  # tied: loaded
    hf.load_state_dict(state, strict=False)
    if missing or extra:
        raise ArtifactError(f"the weights do not match the {cls.__name__} architecture (missing "
                            f"{sorted(missing)[:3]}, unexpected {extra[:3]}); resave the pruned model.")
    bridge = bridge_from_hf(hf, tokenizer, name=name, device=device,
                            adds_bos=info.meta.get("tokenizer_adds_bos"))  # the saved tokenizer always adds BOS
    kept = model_record(bridge)
    kept.pruning, kept.hf_keys = info, frozenset(target)
    return bridge
