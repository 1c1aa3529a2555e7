"""Streaming predictivity probe: per-neuron baselines on train, agreement accuracies on dev/test.

For each FFN neuron ``n`` of layer ``l`` at each soft-prompt position ``p`` (Wang et al. 2022):

* ``baseline[l, p, n]`` is the neuron's mean activation over the **train** split;
* ``acc[l, p, n]`` on dev (and test) is the fraction of examples where ``1[a > baseline] == label``
  (strict ``>``; the comparison uses the exact float64 mean);
* predictivity is ``max(acc, 1 - acc)`` and a neuron's score its maximum over positions.

Two passes (train, then each evaluation split); forward hooks add each batch's float64 sums or
counts to :mod:`skill_lens.predictivity` accumulators, so no dataset's activations are ever held.
A hard prompt (``pm.prompt is None``) probes the prediction position; T5 decoder hooks the decoder's.
``pooling=True`` adds the paper's baselines: mean-/max-pooled activations over the input tokens,
thresholded at their train means (shape ``[n_layers, 1, d_mlp]``). See :func:`probe`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.artifacts import (ArtifactError, atomic_write, check_meta, library_version, load_tensors, save_tensors,
                                  write_json)
from skill_lens.evaluation import prompted
from skill_lens.models import describe
from skill_lens.predictivity import AgreementAccumulator, MeanAccumulator, aggregate_positions, predictivity
from skill_lens.progress import progress
from skill_lens.prompts import SoftPrompt

__all__ = ["ProbeError", "ProbeResult", "probe", "activations", "probe_random_prompt"]

class ProbeError(ValueError):
    """The task, split or hook names cannot be probed as asked."""


@dataclass
class ProbeResult:
    """Baselines ``[L, P, N]`` and per-split agreement accuracies (float32) of a probe.

    ``P`` is the prompt length (1 for a hard prompt or decoder hooks). Pooling fields are ``[L, N]``.
    """

    baseline: Float[Tensor, "layer pos d_mlp"]
    dev_acc: Float[Tensor, "layer pos d_mlp"] | None
    test_acc: Float[Tensor, "layer pos d_mlp"] | None = None
    mean_pool_dev_acc: Float[Tensor, "layer d_mlp"] | None = None
    max_pool_dev_acc: Float[Tensor, "layer d_mlp"] | None = None
    mean_pool_test_acc: Float[Tensor, "layer d_mlp"] | None = None
    max_pool_test_acc: Float[Tensor, "layer d_mlp"] | None = None
    sizes: dict = field(default_factory=dict)
    hook_names: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)

    def predictivity(self, split: str = "dev") -> Float[Tensor, "layer pos d_mlp"]:
        """``max(acc, 1 - acc)`` on ``split`` (``"dev"``, ``"test"``, ``"mean_pool_dev"``...).

        >>> ProbeResult(torch.zeros(1, 1, 2), torch.tensor([[[0.25, 0.625]]])).predictivity("dev").tolist()
        [[[0.75, 0.625]]]
        """
        if (acc := getattr(self, f"{split}_acc", None)) is None:
            raise ProbeError(f"this probe has no {split!r} accuracies; rerun probe with that split"
                             + (" and pooling=True (--pooling)." if "pool" in split else "."))
        return predictivity(acc)

    def scores(self, aggregate: str = "max", split: str = "dev") -> Float[Tensor, "layer d_mlp"]:
        """Per-neuron score: predictivity aggregated over positions (``"max"`` or ``"mean"``).

        >>> ProbeResult(torch.zeros(1, 2, 1), torch.tensor([[[0.875], [0.5]]])).scores("mean").tolist()
        [[0.6875]]
        """
        pred = self.predictivity(split)
        return pred if pred.dim() == 2 else aggregate_positions(pred, aggregate)

    def save(self, path) -> None:
        """Write ``baseline``, ``dev_acc``, ``test_acc`` (and pooling keys) with a JSON sidecar."""
        tensors = {k: v for k, v in vars(self).items() if isinstance(v, Tensor)}
        save_tensors(path, tensors, {**self.meta, "hook_names": list(self.hook_names), "sizes": self.sizes})

    @classmethod
    def load(cls, path, model=None) -> "ProbeResult":
        """Read a saved probe; with ``model``, check it was made on that model (and its hooks).

        >>> import tempfile, os; from skill_lens.tiny import tiny_model
        >>> p = os.path.join(tempfile.mkdtemp(), "pred.safetensors")
        >>> ProbeResult(torch.zeros(2, 1, 64), torch.ones(2, 1, 64), meta={"model": "tiny-causal"}).save(p)
        >>> ProbeResult.load(p, tiny_model()).dev_acc.shape
        torch.Size([2, 1, 64])
        """
        tensors, meta = load_tensors(path)
        if "baseline" not in tensors:
            raise ArtifactError(f"{path} holds no 'baseline' tensor; is it a predictivity file?")
        if model is not None:
            info = describe(model)
            check_meta(meta, {"model": info.name}, "predictivity file")
            missing = [h for h in meta.get("hook_names", ()) if h not in model.hook_dict]
            if missing or tensors["baseline"].shape[-1] != info.d_mlp:
                raise ArtifactError(f"{path} was probed at hooks/widths {info.name} lacks ({missing}); reprobe.")
        fields = {k: tensors.get(k) for k in cls.__dataclass_fields__ if k.endswith("acc")}
        return cls(tensors["baseline"], **fields, sizes=meta.pop("sizes", {}),
                   hook_names=tuple(meta.pop("hook_names", ())), meta=meta)


def probe(pm, task, batch_size: int = 32, pooling: bool = False, splits: Sequence[str] = ("dev", "test"),
          hook_names: Sequence[str] | None = None) -> ProbeResult:
    """Probe every FFN neuron of ``pm.model`` on ``task`` (see the module docstring).

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> from skill_lens.tuning import hard_prompt_model
    >>> model, task = tiny_model("seq2seq"), tiny_task()
    >>> r = probe(hard_prompt_model(model, task), task, splits=("dev",), pooling=True)
    >>> r.dev_acc.shape, r.test_acc, r.max_pool_dev_acc.shape
    (torch.Size([2, 1, 64]), None, torch.Size([2, 64]))
    """
    info = describe(pm.model)
    names, decoder = _check_hooks(info, hook_names)
    if batch_size < 1:
        raise ProbeError(f"batch size must be at least 1, got {batch_size}")
    if pooling and decoder:
        raise ProbeError("pooling averages over input tokens, which decoder hooks do not see; probe encoder hooks.")
    if set(splits) - {"dev", "test"}:
        raise ProbeError(f"unknown split(s) in {list(splits)}; probe 'dev' and/or 'test' (train gives the baselines).")
    _check_binary(task.train, "train", need_both=False)
    splits = [s for s in splits if s == "dev" or len(getattr(task, s)) > 0]
    for s in splits:
        _check_binary(getattr(task, s), s, need_both=(s == "dev"))
    kinds = ["prompt", *(("mean_pool", "max_pool") if pooling else ())]
    means = {k: [MeanAccumulator() for _ in names] for k in kinds}
    _stream(pm, task.train, batch_size, names, decoder, kinds, lambda k, i, a, y: means[k][i].add(a), "baseline")
    base = {k: torch.cat([m.mean() for m in means[k]]) for k in kinds}  # float64 [L, P, N]
    out = {"baseline": base["prompt"].float()}
    for s in splits:
        agree = {k: [AgreementAccumulator() for _ in names] for k in kinds}
        _stream(pm, getattr(task, s), batch_size, names, decoder, kinds,
                lambda k, i, a, y: agree[k][i].add(a, y, base[k][i : i + 1]), s)
        out[f"{s}_acc"] = torch.cat([a.accuracy() for a in agree["prompt"]]).float()
        for k in kinds[1:]:
            out[f"{k}_{s}_acc"] = torch.cat([a.accuracy() for a in agree[k]])[:, 0].float()
    sizes = {s: len(getattr(task, s)) for s in ("train", *splits)}
    prompt = pm.prompt.meta if pm.prompt is not None else {"prompt": "hard", "template": pm.template}
    meta = {**info.as_meta(), "task": task.name, "task_fingerprint": task.fingerprint(),
            "prompt_length": pm.prompt_length, "prompt_source": {k: v for k, v in prompt.items() if k != "model"}}
    return ProbeResult(**{"dev_acc": None, **out}, sizes=sizes, hook_names=tuple(names), meta=meta)


def _check_hooks(info, hook_names) -> tuple[list[str], bool]:
    names = list(hook_names if hook_names is not None else info.hook_names)
    valid = (*info.hook_names, *info.decoder_hook_names)
    unknown = [h for h in names if h not in valid]
    if unknown or not names:
        raise ProbeError(f"unknown hook name(s) {unknown or names} for {info.name}; valid: {', '.join(valid)}")
    decoder = {h in info.decoder_hook_names for h in names}
    if len(decoder) > 1:
        raise ProbeError("encoder and decoder hooks have different positions; probe them in separate calls.")
    return names, decoder.pop()


def _check_binary(split, name: str, need_both: bool) -> None:
    if split is None or not (labels := set(split.labels)):
        raise ProbeError(f"the {name} split is empty; choose a larger --{name}-size.")
    if not labels <= {0, 1}:
        raise ProbeError(f"the {name} split has labels {sorted(labels)}; skill neurons need a binary task. "
                         "Make binary subtasks with task.binarize(...) (CLI: --binary).")
    if need_both and len(labels) < 2:
        raise ProbeError(f"the {name} split has only label {labels.pop()}; predictivity needs both classes. "
                         f"Choose a larger --{name}-size.")


def _stream(pm, split, batch_size, names, decoder, kinds, feed, desc) -> None:
    """Run ``split`` batch by batch; hooks call ``feed(kind, layer, acts [B 1 P N], labels)`` and keep nothing."""
    hard, all_labels = pm.prompt is None, torch.as_tensor(split.labels)
    for start in progress(range(0, len(split), batch_size), desc=f"probe {desc}"):
        batch, labels = _encode(pm, split, start, batch_size), all_labels[start : start + batch_size]

        def capture(act: Tensor, hook, i: int) -> None:
            sel = _positions(act, batch, decoder, hard)
            if not torch.isfinite(sel).all():
                # names[i], not hook.name: the bridge reports an alias (blocks.0.mlp.out.hook_in)
                raise ProbeError(f"non-finite activations at {names[i]}; check the model's dtype and the prompt.")
            feed("prompt", i, sel.unsqueeze(1), labels)
            if len(kinds) > 1:
                mask = batch.input_mask.unsqueeze(-1)
                pooled = {"mean_pool": (act * mask).sum(1) / mask.sum(1).clamp(min=1),
                          "max_pool": act.masked_fill(~mask, float("-inf")).amax(1).clamp(min=-3.4e38)}
                for k in kinds[1:]:
                    feed(k, i, pooled[k][:, None, None], labels)

        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=[(h, lambda a, hook, i=i: capture(a, hook, i))
                                              for i, h in enumerate(names)])


def _encode(pm, split, start: int, size: int):
    b = split.texts_b[start : start + size] if split.texts_b is not None else None
    return pm.encode(split.texts[start : start + size], b)


def _positions(act: Tensor, batch, decoder: bool, hard: bool) -> Tensor:
    """The probed positions of ``act [B, seq, N]``: the decoder's one, the prediction's, or the prompt's."""
    return act[:, :1] if decoder else act[torch.arange(len(act)), batch.predict_pos, None] if hard \
        else act[:, batch.prompt_slice]


def activations(pm, split, neurons, positions: str = "prompt", batch_size: int = 32, out=None,
                hook_names: Sequence[str] | None = None):
    """Per-example activations of chosen ``neurons`` (``[(layer, index)]`` or a ``NeuronSet``), for plots.

    ``positions="prompt"`` gives a tensor ``[n_examples, n_neurons, P]`` (a hard prompt: ``P=1``, the
    prediction position); ``"all"`` a list of ``(tokens, [seq, n_neurons])`` per example, padding removed.
    With ``out=PATH`` the values are streamed batch by batch into a safetensors file (keys
    ``activations``; for ``"all"`` also ``token_ids`` and ``offsets``) and ``PATH`` is returned.

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 3))
    >>> activations(pm, task.dev, [(1, 5), (0, 7)]).shape
    torch.Size([32, 2, 3])
    """
    info = describe(pm.model)
    names, decoder = _check_hooks(info, hook_names)
    pairs = [tuple(map(int, p)) for p in (neurons.pairs() if hasattr(neurons, "pairs") else neurons)]
    bad = [p for p in pairs if not (0 <= p[0] < len(names) and 0 <= p[1] < info.d_mlp)]
    if bad or not pairs:
        raise ProbeError(f"neurons {bad or pairs} are not in {len(names)} layers x {info.d_mlp}; pass (layer, index).")
    if positions not in ("prompt", "all") or (positions == "all" and decoder):
        raise ProbeError(f"positions must be 'prompt' or 'all' (not for decoder hooks), got {positions!r}")
    if split is None or len(split) == 0:
        raise ProbeError("the split is empty; pass a split with examples (e.g. task.dev).")
    batches = [_encode(pm, split, s, batch_size) for s in range(0, len(split), batch_size)]

    def run(batch) -> Tensor:  # [B, seq or P, n_neurons]
        got, hard = {}, pm.prompt is None
        grab = lambda l: lambda act, hook: got.__setitem__(  # noqa: E731
            l, act if positions == "all" else _positions(act, batch, decoder, hard))
        with torch.no_grad():
            pm.label_logits(batch, fwd_hooks=[(names[l], grab(l)) for l in sorted({l for l, _ in pairs})])
        return torch.stack([got[l][..., i].float() for l, i in pairs], dim=-1)

    def rows(batch, acts):  # per example, padding removed
        return [(batch.input_ids[b][m.bool()], acts[b][m.bool()]) for b, m in enumerate(batch.attention_mask)]

    if out is None:
        if positions == "prompt":
            return torch.cat([run(b).transpose(1, 2) for b in progress(batches, desc="activations")])
        tok = pm.model.tokenizer
        return [(tok.convert_ids_to_tokens(ids.tolist()), a) for b in progress(batches, desc="activations")
                for ids, a in rows(b, run(b))]
    meta = {**info.as_meta(), "neurons": pairs, "positions": positions, "hook_names": names}
    if positions == "prompt":
        specs = {"activations": ([len(split), len(pairs), 1 if pm.prompt is None or decoder else pm.prompt_length],
                                 "F32")}
    else:
        total = sum(int(b.attention_mask.sum()) for b in batches)
        specs = {"activations": ([total, len(pairs)], "F32"), "token_ids": ([total], "I64"),
                 "offsets": ([len(split) + 1], "I64")}
    ids, offsets = [], [0]
    with atomic_write(out, "wb") as f:
        header = _write_header(f, specs, meta)
        for b in progress(batches, desc="activations"):
            acts = run(b)
            if positions == "prompt":
                f.write(acts.transpose(1, 2).contiguous().numpy().tobytes())
            for row_ids, a in rows(b, acts) if positions == "all" else ():
                f.write(a.contiguous().numpy().tobytes())
                ids.append(row_ids), offsets.append(offsets[-1] + len(row_ids))
        if positions == "all":
            f.write(torch.cat(ids).long().numpy().tobytes() + torch.tensor(offsets).long().numpy().tobytes())
    write_json(Path(str(out) + ".json"), header)
    return Path(out)


def _write_header(f, specs: dict, meta: dict) -> dict:
    """Write a safetensors header for tensors whose data will follow in order (``specs``: name -> shape, dtype)."""
    header, start = {}, 0
    for name, (shape, dtype) in specs.items():
        end = start + {"F32": 4, "I64": 8}[dtype] * int(torch.tensor(shape).prod())
        header[name], start = {"dtype": dtype, "shape": list(shape), "data_offsets": [start, end]}, end
    sidecar = {**meta, "library_version": library_version(),
               "tensors": {k: {"shape": v[0], "dtype": v[1]} for k, v in specs.items()}}
    text = json.dumps({"__metadata__": {"skill_lens_meta": json.dumps(sidecar)}, **header}).encode()
    text += b" " * (-len(text) % 8)
    f.write(struct.pack("<Q", len(text)) + text)
    return sidecar


def probe_random_prompt(model, task, P: int = 8, seed: int = 0, how: str = "normal", **kwargs) -> ProbeResult:
    """Probe with an untuned random prompt (the "skill neurons come from pre-training" control).
    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> probe_random_prompt(tiny_model(), tiny_task(), P=2, splits=("dev",)).dev_acc.shape
    torch.Size([2, 2, 64])
    """
    return probe(prompted(model, task, SoftPrompt.init(model, P, seed=seed, how=how)), task, **kwargs)
