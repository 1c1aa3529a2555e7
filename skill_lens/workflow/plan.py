"""A plan before the run: each step's expected peak memory and forward tokens, from the model's config alone.

``plan(model_or_config, sizes, **options)`` reads the architecture from a ``meta``-device copy of the model
(no weights are loaded: the parameter bytes are exact, tied embeddings counted once) and its config, and
adds up, for ``tune``, ``probe`` and ``perturb`` (the suppression curve), what the step holds at its peak:

* **weights**: every parameter and buffer, in the dtype asked for;
* **activations**: one batch's live tensors: its keys/values (a causal model's cache of every layer), the
  layer being computed (the MLP's ``d_mlp``-wide tensors, the attention's), the probe's per-layer float64
  temporaries; for ``tune`` also what backward keeps of the prompt positions;
* **input cache**: the inputs' keys/values kept across passes (:mod:`skill_lens.prompting.input_cache`), at most
  its budget (``input_cache_mb``);
* **statistics**: the probe's float64 sums and int64 counts per neuron and prompt position;
* **null counts**: the permutation null's counts (``K`` per neuron and position, one split at a time, in
  the smallest integer type that holds the split, :func:`~skill_lens.probing.statistics.count_dtype`).

**forward tokens** count every position a forward runs (inputs once when the cache holds them, the prompt
positions on every pass). The figures are checked against measured peaks on tiny models and SmolLM2 (within
20%, ``tests/test_plan.py``, ``benchmarks/scale.py``); they leave out the Python runtime, the tokenizer and
allocator slack, which are a few hundred MB whatever the model.

>>> from skill_lens.model.tiny import tiny_model
>>> p = plan(tiny_model(), {"train": 64, "dev": 32, "test": 32}, tokens=12)
>>> [s.step for s in p.steps], p.steps[1].weights == p.weights
(['tune', 'probe', 'perturb'], True)
>>> p.steps[1].peak > p.weights, p.steps[1].forward_tokens
(True, 2560)
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skill_lens.base.options import Options, option
from skill_lens.data.batching import BATCH_SIZE
from skill_lens.intervening.suppression import DEFAULT_FRACTIONS, CurveOptions
from skill_lens.model.loading import describe, dtype_name, model_class, model_dtype, parse_dtype
from skill_lens.model.placement import parse_max_memory
from skill_lens.model.sources import OFFLINE_MODELS, model_source
from skill_lens.probing.statistics import count_dtype
from skill_lens.prompting.tuning import TuneConfig

__all__ = ["PlanOptions", "plan", "Plan", "StepPlan", "ModelShape", "model_shape", "STEPS"]

STEPS = ("tune", "probe", "perturb")
_GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """What a plan needs to know of an architecture (read from its config and a ``meta`` copy of it)."""

    name: str
    family: str
    n_layers: int
    d_model: int
    d_mlp: int
    kv_dim: int  # keys (or values) per token and layer: key/value heads x head size
    mlp_inputs: int  # d_mlp-wide projections of the input: 2 for a gated MLP (gate, up), 1 otherwise
    weight_bytes: int
    dtype: torch.dtype

    @property
    def itemsize(self) -> int:
        return torch.empty(0, dtype=self.dtype).element_size()


@dataclass
class StepPlan:
    """One step's expected peak memory (bytes, by part) and forward tokens."""

    step: str
    weights: int
    activations: int
    input_cache: int
    statistics: int
    null_counts: int
    forward_tokens: int

    @property
    def peak(self) -> int:
        """Everything at once: the parts are what the step holds at its peak together."""
        return self.weights + self.activations + self.input_cache + self.statistics + self.null_counts


@dataclass
class Plan:
    """The plan of a model on a task's sizes with the steps' options; :meth:`table` prints it."""

    shape: ModelShape
    sizes: dict
    options: dict
    steps: list[StepPlan] = field(default_factory=list)

    @property
    def weights(self) -> int:
        return self.shape.weight_bytes

    def step(self, name: str) -> StepPlan:
        """The plan of step ``name`` (``"tune"``, ``"probe"`` or ``"perturb"``)."""
        return next(s for s in self.steps if s.step == name)

    def fits(self, budget) -> dict[str, bool]:
        """Whether each step's peak fits ``budget`` (bytes, or a size such as ``"24GiB"``).

        >>> from skill_lens.model.tiny import tiny_model
        >>> plan(tiny_model(), {"train": 8, "dev": 8}).fits("1GiB")
        {'tune': True, 'probe': True, 'perturb': True}
        """
        limit = _budget(budget)
        return {s.step: s.peak <= limit for s in self.steps}

    def offload(self, budget) -> dict[str, int | None]:
        """Per step, the bytes of weights to place elsewhere (``--max-memory`` and the CPU or ``--offload-folder``)
        for the rest to fit ``budget``: 0 when it fits, ``None`` when not even the batches fit."""
        limit = _budget(budget)
        return {s.step: max(0, s.peak - limit) if s.peak - limit <= s.weights else None for s in self.steps}

    def table(self, *budgets) -> str:
        """A fixed-width table in GiB, one row per step; per budget (e.g. ``"80GiB"``, the memory of one device), a
        column: whether the step fits in it, or how many GiB of weights must be offloaded for it to.

        >>> from skill_lens.model.tiny import tiny_model
        >>> print(plan(tiny_model(), {"train": 64, "dev": 32}, tokens=12).table("1GiB"))  # doctest: +ELLIPSIS
        tiny-causal: 2 layers x 64 neurons, d_model 32, float32, weights 0.00 GiB; 64/32/0 examples, 12 tokens each
           step  weights  activations  input cache  statistics  null counts  peak GiB  forward tokens  in 1GiB
           tune     0.00         0.00         0.00        0.00         0.00      0.00          ...      yes
        ...
        """
        shape, gib = self.shape, lambda b: f"{b / _GIB:.2f}"  # noqa: E731
        head = (f"{shape.name}: {shape.n_layers} layers x {shape.d_mlp} neurons, d_model {shape.d_model}, "
                f"{dtype_name(shape.dtype)}, weights {gib(shape.weight_bytes)} GiB; "
                f"{self.sizes['train']}/{self.sizes['dev']}/{self.sizes['test']} examples, "
                f"{self.options['tokens']} tokens each")
        cols = ["step", "weights", "activations", "input cache", "statistics", "null counts", "peak GiB",
                "forward tokens"] + [f"in {b}" for b in budgets]
        offs = [self.offload(b) for b in budgets]
        fit = lambda b: "yes" if b == 0 else "no" if b is None else f"offload {gib(b)} GiB"  # noqa: E731
        rows = [[s.step, gib(s.weights), gib(s.activations), gib(s.input_cache), gib(s.statistics),
                 gib(s.null_counts), gib(s.peak), f"{s.forward_tokens:,}"] + [fit(off[s.step]) for off in offs]
                for s in self.steps]
        widths = [max(len(str(r[i])) for r in [cols, *rows]) for i in range(len(cols))]
        line = lambda r: "  ".join(str(v).rjust(w) for v, w in zip(r, widths))  # noqa: E731
        return "\n".join([head, line(cols), *map(line, rows)])

    def __repr__(self) -> str:
        return self.table()

    def to_dict(self) -> dict:
        """Plain data: the shape, sizes, options and every step's parts (bytes) and peak."""
        return {"model": self.shape.name, "dtype": dtype_name(self.shape.dtype), "sizes": self.sizes,
                "options": self.options, "steps": [{**dataclasses.asdict(s), "peak": s.peak} for s in self.steps]}


def _budget(budget) -> int:
    return parse_max_memory({"cpu": budget}, "budget")["cpu"]


@dataclass
class PlanOptions(Options):
    """The settings a plan assumes, validated when made; the flags of ``skill-lens plan``.

    >>> PlanOptions(batch_size=0)
    Traceback (most recent call last):
    ...
    ValueError: batch_size (--batch-size) must be a whole number of at least 1, got 0.
    """

    dtype: str | None = option(None, "float32 (default: the model's, else float32), bfloat16 or float16")
    tokens: int = option(64, "median input tokens per example (template included)")
    prompt_length: int = option(TuneConfig.prompt_length, "soft prompt tokens")
    batch_size: int = option(BATCH_SIZE, "examples per forward pass of the probe and the curve")
    tune_batch_size: int = option(TuneConfig.batch_size, "examples per tuning step")
    steps: int = option(TuneConfig.steps, "tuning steps")
    eval_every: int = option(TuneConfig.eval_every, "tuning steps between dev evaluations", flag=None)
    permutations: int = option(0, "the probe's permutation null (label permutations)")
    pooling: bool = option(False, "the probe also computes the pooled baselines")
    input_cache_mb: float = option(TuneConfig.input_cache_mb, "the input cache's budget (MB)")
    fractions: int = option(len(DEFAULT_FRACTIONS), "fractions of the suppression curve", flag=None)
    controls: int = option(CurveOptions.controls, "random neuron sets per fraction of the curve")
    draws: int = option(1, "Gaussian noise draws per neuron set")

    def __post_init__(self):
        for name in ("tokens", "prompt_length", "batch_size", "tune_batch_size", "steps", "eval_every", "fractions",
                     "controls", "draws"):
            self.check_int(name, 1)
        self.check_int("permutations", 0)
        self.check_bool("pooling")
        self.check_number("input_cache_mb", lambda x: x >= 0, "a number of at least 0")


def plan(model_or_config, sizes=None, options: PlanOptions | None = None, **overrides) -> Plan:
    """Each step's expected peak memory and forward tokens (see the module docstring), without loading weights.

    ``model_or_config``: a loaded bridge, a ``transformers`` config, a ``config.json`` (path or dict), a model
    directory or name. ``sizes``: ``{"train": n, "dev": n, "test": n}`` or a task (default 400/200/200).
    ``options``: a :class:`PlanOptions` (``dtype``, ``tokens``, ``prompt_length``, ``batch_size``, ``steps``,
    ``permutations``, ...), or its fields as keywords.

    >>> from transformers import LlamaConfig
    >>> llama3_8b = LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    ...                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False)
    >>> p = plan(llama3_8b, dtype="bfloat16")
    >>> round(p.weights / 2**30, 1), round(p.step("probe").peak / 2**30, 1)
    (15.0, 18.7)
    """
    opts = dataclasses.asdict(PlanOptions.build(options, **overrides))  # the arithmetic below reads it by key
    shape = model_shape(model_or_config, opts.pop("dtype"))
    sizes = _sizes(sizes)
    out = Plan(shape, sizes, opts)
    out.steps = [_tune(shape, sizes, opts), _probe(shape, sizes, opts), _perturb(shape, sizes, opts)]
    return out


def _sizes(sizes) -> dict:
    if sizes is None:
        return {"train": 400, "dev": 200, "test": 200}
    if hasattr(sizes, "train"):  # a task
        return {s: len(getattr(sizes, s)) for s in ("train", "dev", "test")}
    out = {"train": 0, "dev": 0, "test": 0, **dict(sizes)}
    if set(out) != {"train", "dev", "test"} or any(not isinstance(v, int) or v < 0 for v in out.values()):
        raise ValueError(f"sizes are {{'train': n, 'dev': n, 'test': n}} with whole numbers >= 0, got {sizes!r}")
    return out


# ------------------------------------------------------------------ the architecture
def model_shape(model_or_config, dtype=None) -> ModelShape:
    """The :class:`ModelShape` of a bridge, a config (object, dict or ``config.json``), a model directory or name,
    in ``dtype`` (default: a bridge's own; otherwise float32, as :func:`~skill_lens.model.loading.load_model`).

    >>> from skill_lens.model.tiny import tiny_model
    >>> s = model_shape(tiny_model())
    >>> s.n_layers, s.d_mlp, s.kv_dim, s.mlp_inputs, s.weight_bytes
    (2, 64, 16, 2, 84020)
    """
    if hasattr(model_or_config, "original_model"):  # a loaded bridge: its own weights
        hf = model_or_config.original_model
        dtype = parse_dtype(dtype) if dtype is not None else model_dtype(model_or_config)
        name = describe(model_or_config).name
    else:
        config, name = _config(model_or_config)
        dtype = parse_dtype(dtype)
        with torch.device("meta"):
            hf = model_class(config).from_config(config, dtype=dtype)
    return _shape_of(hf, name, dtype)


def _config(spec):
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(spec, PretrainedConfig):
        return spec, getattr(spec, "_name_or_path", "") or spec.model_type
    if isinstance(spec, dict):
        data = dict(spec)
        return AutoConfig.for_model(data.pop("model_type"), **data), data.get("_name_or_path", "config")
    path = str(spec)
    if path.endswith(".json") and Path(path).is_file():
        data = json.loads(Path(path).read_text())
        return AutoConfig.for_model(data.pop("model_type"), **data), Path(path).stem
    return AutoConfig.from_pretrained(model_source(path)), path if path in OFFLINE_MODELS else \
        os.path.basename(path.rstrip("/")) or path


def _shape_of(hf: torch.nn.Module, name: str, dtype: torch.dtype) -> ModelShape:
    config = hf.config
    seen, weight_bytes = set(), 0
    for t in (*hf.parameters(), *hf.buffers()):
        if id(t) not in seen:  # tied weights once
            seen.add(id(t))
            size = dtype.itemsize if t.is_floating_point() else t.element_size()
            weight_bytes += t.numel() * size
    d_model = int(hf.get_input_embeddings().embedding_dim)
    d_mlp = int(next((getattr(config, a) for a in ("intermediate_size", "d_ff", "n_inner", "ffn_dim")
                      if getattr(config, a, None)), 4 * d_model))
    heads = int(getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
                or getattr(config, "num_heads", 1))
    head_dim = int(getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or d_model // heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    layers = int(getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
                 or getattr(config, "num_layers", 0))
    family = "seq2seq" if getattr(config, "is_encoder_decoder", False) else \
        "mlm" if model_class(config).__name__.endswith("MaskedLM") else "causal"
    return ModelShape(name, family, layers, d_model, d_mlp, kv_heads * head_dim, _mlp_inputs(hf, d_model, d_mlp),
                      weight_bytes, dtype)


def _mlp_inputs(hf: torch.nn.Module, d_model: int, d_mlp: int) -> int:
    """How many d_mlp-wide projections of the input one MLP has: its matrices of shape d_model x d_mlp, less the
    one back (2 for gate and up, 1 for an ungated MLP), read from the first block's modules."""
    mats = 0
    for name, p in hf.named_parameters():
        if p.dim() == 2 and sorted(p.shape) == sorted((d_model, d_mlp)) and ".0." in f".{name}":
            mats += 1
        if mats and ".1." in f".{name}":
            break
    return max(1, mats - 1)


# ------------------------------------------------------------------ the steps
def _kv_token(shape: ModelShape) -> int:
    """Bytes of one token's keys and values over all layers (what the input cache and a causal forward keep)."""
    return shape.n_layers * 2 * shape.kv_dim * shape.itemsize if shape.family == "causal" else 0


def _layer_token(shape: ModelShape) -> int:
    """Bytes one token holds while a layer computes: the MLP's d_mlp-wide tensors (each input projection, its
    activation and the product) and the d_model-wide ones around them (residual, norm, attention)."""
    return ((shape.mlp_inputs + 1) * shape.d_mlp + 6 * shape.d_model + 2 * shape.kv_dim) * shape.itemsize


def _full_batch(shape: ModelShape, B: int, T: int) -> int:
    """One forward of ``B`` sequences of ``T`` tokens: every layer's keys/values (causal) and one layer's tensors."""
    return B * T * (_kv_token(shape) + _layer_token(shape))


def _input_tokens(sizes: dict, splits, opts: dict) -> int:
    return sum(sizes[s] for s in splits) * opts["tokens"]


def _cached(shape: ModelShape, sizes: dict, splits, opts: dict) -> tuple[int, list[str]]:
    """The input cache's bytes and the splits it holds: each split whole, in order, while it fits the budget
    (as :meth:`~skill_lens.prompting.input_cache.InputCache.fill` does); none but a causal model's."""
    held, kept = 0, []
    for s in splits if shape.family == "causal" else ():
        need = sizes[s] * opts["tokens"] * _kv_token(shape)
        if sizes[s] and held + need <= opts["input_cache_mb"] * 2**20:
            held, kept = held + need, [*kept, s]
    return held, kept


def _prompt_batch(shape: ModelShape, B: int, opts: dict, per_token: int = 0, extra: int = 0) -> int:
    """A prompt-only forward of ``B`` cached inputs: their keys/values, assembled and then extended per layer
    (twice), and the larger of the prompt positions' layer tensors and what a hook makes of them
    (``per_token`` bytes per prompt position, plus ``extra`` per layer)."""
    P = opts["prompt_length"]
    return B * 2 * opts["tokens"] * _kv_token(shape) + max(B * P * _layer_token(shape), B * P * per_token + extra)


def _backward_token(shape: ModelShape) -> int:
    """Bytes autograd keeps per prompt position and layer for the prompt's gradient: the MLP's d_mlp-wide
    tensors (each input projection, its activation, the product) and the norms' and attention's inputs."""
    return ((shape.mlp_inputs + 2) * shape.d_mlp + 10 * shape.d_model + 2 * shape.kv_dim) * shape.itemsize


def _tune(shape: ModelShape, sizes: dict, opts: dict) -> StepPlan:
    P, B, cfg = opts["prompt_length"], opts["tune_batch_size"], TuneConfig()
    cache, kept = _cached(shape, sizes, ("train", "dev"), opts)
    backward = B * P * shape.n_layers * _backward_token(shape)  # what autograd keeps of every layer
    step = (_prompt_batch(shape, B, opts) if "train" in kept else _full_batch(shape, B, opts["tokens"] + P))
    # a batch of the fill, of the hard prompt's evaluation, or of a dev evaluation the cache lacks
    whole = _full_batch(shape, cfg.eval_batch_size, opts["tokens"] + (0 if "dev" in kept else P))
    act = max(step + backward, whole)
    per = {s: P if s in kept else opts["tokens"] + P for s in ("train", "dev")}
    evals = opts["steps"] // opts["eval_every"] + 1
    tokens = (opts["steps"] * B * per["train"] + evals * sizes["dev"] * per["dev"] + _input_tokens(sizes, kept, opts)
              + 2 * (sizes["dev"] + sizes["test"]) * (opts["tokens"] + P))  # final and hard-prompt evaluations
    return StepPlan("tune", shape.weight_bytes, act, cache, 0, 0, tokens)


def _probe(shape: ModelShape, sizes: dict, opts: dict) -> StepPlan:
    P, B, K, N, L = opts["prompt_length"], opts["batch_size"], opts["permutations"], shape.d_mlp, shape.n_layers
    splits = [s for s in ("train", "dev", "test") if sizes[s]]
    cache, kept = _cached(shape, sizes, splits, opts) if not opts["pooling"] else (0, [])
    hook = N * (shape.itemsize + 9)  # per position: the activation, then its float64 copy and the comparison
    null = K * P * N * 5 if K else 0  # a batch's counts as float32, then in their type (±1 codes: in hook)
    T = opts["tokens"] + P
    whole = B * T * _kv_token(shape) + max(B * T * _layer_token(shape), B * P * hook + null)
    act = max(_prompt_batch(shape, B, opts, hook, null) if kept else 0, whole if len(kept) < len(splits) else 0,
              _full_batch(shape, 32, opts["tokens"]) if kept else 0)  # the last: a batch of the fill
    stats = L * P * N * 8 * 2 + (L * N * 8 * 4 if opts["pooling"] else 0)  # baseline sums, then agreement counts
    counts = K * L * P * N * count_dtype(max(sizes["dev"], sizes["test"])).itemsize
    tokens = sum(sizes[s] * (P if s in kept else T) for s in splits) + _input_tokens(sizes, kept, opts)
    return StepPlan("probe", shape.weight_bytes, act, cache, stats, counts, tokens)


def _perturb(shape: ModelShape, sizes: dict, opts: dict) -> StepPlan:
    P, B, n = opts["prompt_length"], opts["batch_size"], sizes["dev"]
    cache, _ = _cached(shape, sizes, ("dev",), opts)
    noise = shape.d_mlp * 8  # per position: the noise drawn for a layer's chosen neurons (at most all of them)
    batch = _prompt_batch(shape, B, opts, noise) if cache else _full_batch(shape, B, opts["tokens"] + P)
    rows = 1 + (opts["fractions"] - 1) * (1 + opts["controls"]) * opts["draws"]
    per = P if cache else opts["tokens"] + P
    tokens = rows * n * per + (n * opts["tokens"] if cache else 0)
    fill = _full_batch(shape, 32, opts["tokens"]) if cache else 0
    return StepPlan("perturb", shape.weight_bytes, max(batch, fill), cache, 0, 0, tokens)
