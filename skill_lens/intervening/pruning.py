"""Structural FFN pruning: keep the skill neurons, fold every other neuron into the output bias.

A neuron ``n`` of layer ``l`` is one column of the FFN's hidden activation (``blocks.{l}.mlp.hook_post``,
the input of the output projection ``W_out``). Pruning keeps only the chosen neurons' rows of the
input projection(s) and columns of ``W_out``, and replaces each removed neuron by a constant, its
``baseline`` (mean activation over the training split, from :mod:`skill_lens.probing.probe`)::

    W_out @ a = W_out[:, kept] @ a[kept] + W_out[:, removed] @ baseline[removed]
                                            `---------- added to the bias ----------'

so the pruned model computes exactly what the unpruned one computes when every removed neuron's
activation is overwritten by its baseline -- at every position, input tokens included -- with
smaller matrices. Architectures: Llama/SmolLM2 gated MLPs (``gate_proj``, ``up_proj``, ``down_proj``),
GPT-2 ``Conv1D`` (``c_fc``, ``c_proj``, weights stored transposed), BERT/RoBERTa
(``intermediate.dense``, ``output.dense``) and T5 encoder FFNs (``wi`` or ``wi_0``/``wi_1``, ``wo``).
An output projection without a bias (Llama, T5) gets one.

Neuron indexing of a pruned model: layer ``l`` of the pruned bridge has ``len(kept[l])`` neurons and
its neuron ``i`` is neuron ``kept[l][i]`` of the original (see :func:`pruning_info`); unpruned layers
keep their width. ``describe(pruned).d_mlp`` still reads the config's ``intermediate_size``: the
original width, i.e. the neuron index space of the original model, not the width of a pruned
layer. Probing a pruned model therefore sees the kept neurons only, layer by layer, and
``NeuronSet`` masks of the original shape do not apply to it: map indices back with
:meth:`PruningInfo.original_index`. For T5 only the encoder blocks (``describe(model).hook_names``)
are pruned; the decoder is untouched.

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
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.store.artifacts import ArtifactError, library_version, load_tensors, read_json, save_tensors, write_json
from skill_lens.model.loading import bridge_from_hf, describe, model_class, model_device, parse_device
from skill_lens.probing.neurons import as_neuron_set
from skill_lens.prompting.prompts import SoftPrompt

__all__ = ["PruningError", "PruningInfo", "prune", "pruning_info", "kept_neurons", "save_pruned", "load_pruned",
           "check_pruned_out", "parameter_count"]

PRUNING_ATTR, _KEYS_ATTR = "_skill_lens_pruning", "_skill_lens_hf_keys"
WEIGHTS_FILE, INFO_FILE, PROMPT_FILE = "model.safetensors", "pruning.json", "prompt.safetensors"


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
    return model.__dict__.get(PRUNING_ATTR)


def kept_neurons(keep, layers: Sequence[int], width=None, scores=None) -> dict[int, list[int]]:
    """Original indices kept in each of ``layers``: the mask's neurons, padded by ``scores`` to ``width``.

    ``keep`` is a ``NeuronSet`` or a bool tensor ``[n_layers, d_mlp]``; ``width`` an int for every
    layer, a sequence aligned with ``layers`` or a ``{layer: width}`` dict; padding adds the
    highest-scoring neurons not already kept.

    >>> keep = torch.tensor([[True, False, False, False]])
    >>> kept_neurons(keep, [0], width=3, scores=torch.tensor([[0.9, 0.1, 0.8, 0.7]]))
    {0: [0, 2, 3]}
    """
    mask = as_mask(keep)
    L, N = mask.shape
    widths = _widths(width, layers)
    out = {}
    for layer in layers:
        idx = mask[layer].nonzero()[:, 0].tolist()
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
    next-best neurons by ``scores``. The original model is not modified; the new bridge keeps its
    tokenizer and records :func:`pruning_info`.

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
    mask = as_mask(keep)
    if tuple(mask.shape) != info.shape:
        raise PruningError(f"the neuron set has shape {tuple(mask.shape)} but {info.name} has {info.shape} "
                           "(n_layers, d_mlp); select neurons from a probe of this model.")
    layers = list(range(info.n_layers)) if layers is None else sorted({int(l) for l in layers})
    bad = [l for l in layers if not 0 <= l < info.n_layers]
    if bad:
        raise PruningError(f"layers {bad} do not exist in {info.name} (layers 0..{info.n_layers - 1}).")
    base = _baseline(baseline, info.shape, position)
    kept = kept_neurons(mask, layers, width, scores)

    hf = model.original_model
    config = copy.deepcopy(hf.config)
    with torch.device("meta"):  # only for names and layout
        fresh = type(hf)(config)
    state = {k: v for k, v in _clean_state_dict(hf).items() if k in fresh.state_dict()}
    paths = _ffn_paths(fresh)
    for layer, idx in kept.items():
        _prune_state(state, paths[layer], torch.tensor(idx, dtype=torch.long), base[layer])
    widths = {l: len(kept.get(l, range(info.d_mlp))) for l in range(info.n_layers)}
    position = position if torch.as_tensor(baseline).dim() == 3 else None  # a [L, d_mlp] baseline has no positions
    record = PruningInfo(info.name, info.d_mlp, kept, widths, position, baseline_source,
                         meta={"hf_class": type(hf).__name__, "library_version": library_version(),
                               "tokenizer_adds_bos": model.__dict__.get("_skill_lens_tokenizer_adds_bos")})
    return _assemble(type(hf), config, state, record, model.tokenizer, info.name + "+pruned", model_device(model))


def parameter_count(model: TransformerBridge, ffn_only: bool = False) -> int:
    """Number of parameters of the underlying HF model (shared tensors once), or of its FFNs only.

    >>> from skill_lens.model.tiny import tiny_model
    >>> parameter_count(tiny_model("causal"), ffn_only=True)  # 2 layers x 3 x 32 x 64
    12288
    """
    hf = model.original_model
    seen, total = set(), 0
    prefixes = tuple(p for path in _ffn_paths(hf).values() for p in (*path.ins, path.out)) if ffn_only else ("",)
    for name, p in _clean_state_dict(hf).items():
        if name.startswith(prefixes) and p.data_ptr() not in seen:
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
    >>> sorted(p.name for p in d.iterdir())[:3]
    ['config.json', 'model.safetensors', 'model.safetensors.json']
    """
    record = pruning_info(model)
    if record is None:
        raise PruningError("this model is not pruned; prune it with skill_lens.intervening.pruning.prune first.")
    path = check_pruned_out(path)
    hf = model.original_model
    state, seen = {}, set()
    keys = model.__dict__[_KEYS_ATTR]  # the HF model's own tensors, not the bridge's additions
    for name, t in _clean_state_dict(hf).items():  # tied tensors once; load_pruned re-ties them
        if name in keys and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            state[name] = t
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_tensors(tmp / WEIGHTS_FILE, state, {"model": record.base_model + "+pruned"})
        hf.config.save_pretrained(tmp)
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(tmp)
        write_json(tmp / INFO_FILE, {**record.as_json(), "name": describe(model).name})
        if prompt is not None:
            prompt.save(tmp / PROMPT_FILE, **describe(model).as_meta())
        old = path.with_name(path.name + f".old{os.getpid()}")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def check_pruned_out(path) -> Path:
    """``path`` as a place to save a pruned model: new, an empty directory, or a pruned model we wrote.

    Anything else (a file, a run directory, a folder of other files) is refused untouched: saving
    replaces the directory as a whole.

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
    if path.is_dir() and not (path / INFO_FILE).exists() and any(path.iterdir()):
        names = sorted(p.name for p in path.iterdir())
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
    model = _load_model(path, parse_device(device))
    if not with_prompt:
        return model
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
        cls = model_class(config)
    state, _ = load_tensors(path / WEIGHTS_FILE)
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return _assemble(cls, config, state, record, tokenizer, name, device)


# ----------------------------------------------------------------------------- internals
@dataclass(frozen=True)
class _FFN:
    """State-dict names (without ``.weight``) of one FFN: input projections, output projection."""

    ins: tuple[str, ...]
    out: str
    conv1d: bool  # GPT-2 Conv1D: weight [in, out], i.e. transposed


def as_mask(keep, n_layers: int | None = None, d_mlp: int | None = None) -> Bool[Tensor, "layer d_mlp"]:
    """The bool mask ``[n_layers, d_mlp]`` of ``keep``: anything :func:`~skill_lens.probing.neurons.as_neuron_set` accepts (a
    ``NeuronSet``, a bool mask; pairs and labels with ``n_layers`` and ``d_mlp``), else a :class:`PruningError`.

    >>> as_mask(["L1.N0"], 2, 3).tolist()
    [[False, False, False], [True, False, False]]
    """
    try:
        return as_neuron_set(keep, n_layers, d_mlp).mask
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


def _clean_state_dict(hf: nn.Module) -> dict[str, Tensor]:
    """The HF state dict of a (bridged) model under plain HF names; the bridge's aliases are dropped."""
    raw = hf.state_dict(keep_vars=True)
    clean = {}
    for k, v in raw.items():
        if "._original_component" in k or "_original_component." in k:
            clean[k.replace("._original_component", "").replace("_original_component.", "")] = v.detach()
    for k, v in raw.items():  # modules the bridge did not wrap
        clean.setdefault(k, v.detach())
    return clean


def _ffn_paths(hf: nn.Module) -> dict[int, _FFN]:
    """FFN state-dict prefixes of every probed layer (T5: encoder blocks)."""
    base = hf.base_model
    for attr in ("encoder.block", "layers", "h", "encoder.layer"):
        try:
            blocks = base.get_submodule(attr)
        except AttributeError:
            continue
        break
    else:
        raise PruningError(f"cannot find the layers of {type(hf).__name__}; pruning supports Llama, GPT-2, "
                           "BERT/RoBERTa and T5 layouts.")
    prefix = next(n for n, m in hf.named_modules() if m is blocks)
    plain = {n.replace("._original_component", "").replace("_original_component.", "")
             for n, _ in hf.named_modules()}
    layouts = [(("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"), (("mlp.c_fc",), "mlp.c_proj"),
               (("intermediate.dense",), "output.dense"), (("DenseReluDense.wi_0", "DenseReluDense.wi_1"),
               "DenseReluDense.wo"), (("DenseReluDense.wi",), "DenseReluDense.wo")]
    out = {}
    for l, block in enumerate(blocks):
        p = f"{prefix}.{l}."
        if hasattr(block, "layer"):  # T5: the feed-forward sub-layer is the last one
            p += f"layer.{len(block.layer) - 1}."
        for ins, o in layouts:
            if all(p + m in plain for m in (*ins, o)):
                out[l] = _FFN(tuple(p + m for m in ins), p + o, conv1d=o.endswith("c_proj"))
                break
        else:
            raise PruningError(f"layer {l} of {type(hf).__name__} has no known FFN layout; cannot prune it.")
    return out


def _prune_state(state: dict, ffn: _FFN, idx: Tensor, base: Tensor) -> None:
    """Slice one FFN's tensors in ``state`` to neurons ``idx``; fold the others' baselines into the bias."""
    for name in ffn.ins:
        w = state[name + ".weight"]
        state[name + ".weight"] = w[:, idx] if ffn.conv1d else w[idx]
        if name + ".bias" in state:
            state[name + ".bias"] = state[name + ".bias"][idx]
    w = state[ffn.out + ".weight"]
    idx = idx.to(w.device)
    removed = torch.ones(w.shape[0] if ffn.conv1d else w.shape[1], dtype=torch.bool, device=w.device)
    removed[idx] = False
    w_rm = w.double()[removed] if ffn.conv1d else w.double()[:, removed].T  # [n_removed, d_model]
    folded = base.to(w.device)[removed] @ w_rm  # folded in float64 on the weights' device
    bias = state.get(ffn.out + ".bias")
    bias = folded if bias is None else bias.double() + folded
    state[ffn.out + ".weight"] = w[idx] if ffn.conv1d else w[:, idx]
    state[ffn.out + ".bias"] = bias.to(w.dtype)


def _build(cls, config, widths: Mapping[int, int], dtype) -> nn.Module:
    """A fresh HF model of ``cls``; layers in ``widths`` shrunk to that width, with biased output projections."""
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every tensor is loaded afterwards
        build = getattr(cls, "_from_config", None) or cls.from_config  # a concrete class, or an Auto class
        hf = build(config, dtype=dtype)  # float32 buffers (rotary inv_freq) stay float32
        for layer, ffn in _ffn_paths(hf).items():
            if layer not in widths:
                continue
            k = widths[layer]
            for name in ffn.ins:
                old = hf.get_submodule(name)
                new = _conv1d(k, old.weight.shape[0]) if ffn.conv1d else nn.Linear(old.in_features, k,
                                                                                    bias=old.bias is not None)
                hf.set_submodule(name, new.to(dtype))
            old = hf.get_submodule(ffn.out)
            d_model = old.weight.shape[1] if ffn.conv1d else old.out_features
            new = _conv1d(d_model, k) if ffn.conv1d else nn.Linear(k, d_model, bias=True)
            hf.set_submodule(ffn.out, new.to(dtype))
    return hf


def _conv1d(nf: int, nx: int) -> nn.Module:
    from transformers.pytorch_utils import Conv1D

    return Conv1D(nf, nx)


def _assemble(cls, config, state: dict, record: PruningInfo, tokenizer, name: str, device: str = "cpu"):
    """Build the shrunk architecture, load ``state`` into it, wrap it in a bridge carrying ``record``."""
    dtype = next(iter(state.values())).dtype
    pruned_layers = {l: w for l, w in record.widths.items() if l in record.kept}
    config.skill_lens_pruning = {"d_mlp": record.d_mlp, "widths": {str(k): v for k, v in record.widths.items()}}
    hf = _build(cls, config, pruned_layers, dtype)
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
                            adds_bos=record.meta.get("tokenizer_adds_bos"))  # the saved tokenizer always adds BOS
    bridge.__dict__[PRUNING_ATTR] = record
    bridge.__dict__[_KEYS_ATTR] = frozenset(target)
    return bridge
