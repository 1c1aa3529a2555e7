"""Streaming predictivity probe: per-neuron baselines on train, agreement accuracies on dev/test.

For each FFN neuron ``n`` of layer ``l`` at each soft-prompt position ``p`` (Wang et al. 2022):

* ``baseline[l, p, n]`` is the neuron's mean activation over the **train** split;
* ``acc[l, p, n]`` on dev (and test) is the fraction of examples where ``1[a > baseline] == label``
  (strict ``>``; the comparison uses the exact float64 mean);
* predictivity is ``max(acc, 1 - acc)`` and a neuron's score its maximum over positions.

Two passes (train, then each evaluation split); forward hooks add each batch's float64 sums or
counts to the running :class:`~skill_lens.probing.sums.Sums` (:mod:`skill_lens.probing.statistics`
accumulators), so no dataset's activations are ever held.
A hard prompt (``pm.prompt is None``) probes the prediction position; T5 decoder hooks the decoder's.
``pooling=True`` adds the paper's baselines: mean-/max-pooled activations over the input tokens,
thresholded at their train means (shape ``[n_layers, 1, d_mlp]``). See :func:`probe`.

A mixture-of-experts layer is probed like any other (its neurons are every expert's, then the shared
expert's: :mod:`skill_lens.model.anatomy`; an expert not routed at a position has activation 0 there), and
the probe also counts how often the router sends each class to each expert (``ProbeResult.routing``).

The statistics are sums, so the same :func:`probe` shards the data over a ``torch.distributed``
process group and all-reduces the sums (:mod:`skill_lens.data.distributed`), and checkpoints them
(:class:`skill_lens.store.checkpoint.Checkpoint`, identity :func:`probe_fingerprint` plus the shard) to
resume after a kill.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from skill_lens.base.options import Options, option
from skill_lens.base.progress import progress
from skill_lens.data.batching import BATCH_SIZE, length_batches
from skill_lens.data.distributed import batch_range, rank_world
from skill_lens.model.anatomy import EXPERTS_HOOK, ROUTING_HOOK, Segment
from skill_lens.model.loading import describe, placement_of
from skill_lens.model.memory import Budget, halved_start, halving
from skill_lens.probing.capture import CaptureError, probe_hooks, probed_positions
from skill_lens.probing.null import null_maxima
from skill_lens.probing.result import ProbeError, ProbeResult
from skill_lens.probing.statistics import permuted_labels
from skill_lens.probing.sums import Sums
from skill_lens.prompting.evaluation import prompted
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.prompts import SoftPrompt
from skill_lens.store.checkpoint import Checkpoint

__all__ = ["ProbeOptions", "probe", "probe_fingerprint", "permutation_labels", "probe_random_prompt"]


@dataclass
class ProbeOptions(Options):
    """What the probe reads and how, validated when made; the flags of ``skill-lens probe``.

    >>> ProbeOptions(batch_size=8, splits=["dev"]).splits
    ('dev',)
    >>> ProbeOptions(permutations=-1)
    Traceback (most recent call last):
    ...
    skill_lens.probing.result.ProbeError: permutations (--permutations) must be a whole number of at least 0, got -1.
    """

    error = ProbeError

    batch_size: int = option(BATCH_SIZE, "examples per forward pass")
    pooling: bool = option(False, "also the mean-/max-pooling baselines of the paper")
    permutations: int = option(0, "also a permutation null: K label permutations per split give a family-wise 5% "
                                  "threshold", metavar="K")
    permutation_seed: int = option(0, "seed of the label permutations")
    splits: tuple[str, ...] = option(("dev", "test"), "the evaluation splits probed (train gives the baselines; an "
                                                      "empty test split is skipped)", flag=None)
    hook_names: tuple[str, ...] | None = option(None, "the hooks probed (default: every FFN's activation)", flag=None)
    checkpoint_every: int = option(20, "batches between checkpoints", flag=None)

    def __post_init__(self):
        self.check_int("batch_size", 1)
        self.check_int("checkpoint_every", 1)
        self.check_int("permutations", 0)
        self.check_int("permutation_seed")
        self.check_bool("pooling")
        self.splits = tuple(self.splits)
        if set(self.splits) - {"dev", "test"}:
            raise ProbeError(f"unknown split(s) in {list(self.splits)}; probe 'dev' and/or 'test' (train gives the "
                             "baselines).")
        if self.hook_names is not None:
            self.hook_names = tuple(self.hook_names)


def probe(pm, task, options: ProbeOptions | None = None, *, checkpoint: str | Path | None = None,
          on_result: Callable[[ProbeResult], None] | None = None, input_cache: InputCache | None = None,
          **overrides) -> ProbeResult:
    """Probe every FFN neuron of ``pm.model`` on ``task`` (see the module docstring) as ``options`` say (a
    :class:`ProbeOptions`; its fields, e.g. ``batch_size``, ``splits``, ``pooling``, may also be passed as
    keywords, over ``options``).

    Each split runs in length-sorted batches (:func:`~skill_lens.data.batching.length_batches`). With an
    ``input_cache`` (:mod:`skill_lens.prompting.input_cache`) on a causal model with a soft prompt, the inputs'
    keys/values come from it (computed into it first if it lacks them) and only the prompt positions
    run: pass the cache tuning filled and the probe computes no input again (activations agree with a
    full forward to float rounding, about 1e-6). Pooling needs the input positions, so it runs
    without the cache.

    Under a ``torch.distributed`` process group (``torchrun``, see ``docs/cluster.md``) each rank
    probes its run of every split's length-sorted batches (:func:`~skill_lens.data.distributed.batch_range`)
    and the sums are added across ranks: train first, so dev and test are thresholded at the global
    baseline. Every rank returns the same result, equal to one process's bit for bit.

    A batch that runs out of memory (CUDA's error, or over the model's ``memory_budget``) makes the probe
    start again at half the batch size (:func:`~skill_lens.model.memory.halving`; under ``torchrun`` an
    error naming ``--batch-size`` instead): the result, whose ``meta["batch_size"]`` says which, is that of
    a probe started at that size, and a kill afterwards resumes there.

    With ``checkpoint`` (a directory, e.g. the run's), each rank saves its sums and position to
    ``probe_checkpoint.RANKofWORLD.safetensors`` there every ``checkpoint_every`` batches, and the
    same call resumes from it after a kill, to the uninterrupted result. ``on_result(result)`` runs
    on rank 0 once every split is done, *before* the checkpoints are removed: save the result there.
    ``probe`` itself writes no result file.

    ``permutations=K > 0`` adds a family-wise null: each evaluation split is also scored against
    ``K`` fixed permutations of its labels (:func:`permutation_labels`; the same whatever the batch
    size, sharding or resume), from the same activations, and the result keeps each permutation's
    best predictivity (``null_max_dev [K]``, per layer ``null_layer_max_dev [K, L]``; test likewise).
    See :meth:`ProbeResult.fwer_threshold`. The counts are ``[K, 1, P, d_mlp]`` per layer on the
    activations' device, in the smallest integer type that holds the split's size (``K L P d_mlp`` bytes
    for a split of up to 255 examples: ~74 MB for K=200, 30 layers, P=8, d_mlp=1536), one split at a
    time: a finished split keeps only its maxima.

    >>> import tempfile; from pathlib import Path
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> model, task = tiny_model("seq2seq"), tiny_task()
    >>> r = probe(hard_prompt_model(model, task), task, splits=("dev",), pooling=True)
    >>> r.dev_acc.shape, r.test_acc, r.max_pool_dev_acc.shape
    (torch.Size([2, 1, 64]), None, torch.Size([2, 64]))
    >>> d = Path(tempfile.mkdtemp())
    >>> save = lambda r: r.save(d / "p.safetensors")
    >>> r = probe(hard_prompt_model(model, task), task, batch_size=16, checkpoint=d, on_result=save)
    >>> sorted(p.name for p in d.iterdir())  # the checkpoint is gone once on_result has run
    ['p.safetensors', 'p.safetensors.json']
    """
    opts = ProbeOptions.build(options, **overrides)
    info = describe(pm.model)
    names, decoder, splits = _check_probe(info, task, opts)
    opts = dataclasses.replace(opts, splits=splits)
    rank, world = rank_world()
    at = functools.partial(_probe_at, pm, task, opts, decoder=decoder, checkpoint=checkpoint, input_cache=input_cache)
    if world > 1:  # every rank must run the same batches: no rank can halve alone
        try:
            out, ckpt, size = at(opts.batch_size)
        except torch.OutOfMemoryError as e:
            raise ProbeError(f"rank {rank} ran out of memory at batch size {opts.batch_size} ({e}); under torchrun "
                             "every rank runs the same batch size: rerun with a smaller --batch-size") from e
    else:
        ckpt_at = functools.partial(_checkpoint_at, pm, task, opts, checkpoint)
        start = opts.batch_size if checkpoint is None else halved_start(ckpt_at, opts.batch_size)
        out, ckpt, size = halving(at, start, "probe", before_retry=lambda b: checkpoint and ckpt_at(b).remove())
    result = _result(pm, task, info, {k: v.cpu() for k, v in out.items()}, names, ["train", *splits], world)
    result.meta["batch_size"] = size
    if opts.permutations:
        result.meta.update(permutations=opts.permutations, permutation_seed=opts.permutation_seed)
    if rank == 0 and on_result is not None:
        on_result(result)
    if world > 1:
        dist.barrier()  # rank 0 has handled the result before any rank forgets its progress
    if ckpt is not None:
        ckpt.remove()
    return result


def _probe_at(pm, task, opts: ProbeOptions, batch_size: int, *, decoder: bool, checkpoint, input_cache,
              ) -> tuple[dict, Checkpoint | None, int]:
    """The probe's tensors at ``batch_size`` (resuming this batch size's checkpoint), the checkpoint, the size
    (``opts.batch_size`` is the size asked for: larger once out of memory)."""
    info = describe(pm.model)
    names, _ = probe_hooks(info, opts.hook_names)
    kinds = ["prompt", *(("mean_pool", "max_pool") if opts.pooling else ())]
    P = 1 if decoder or pm.prompt is None else pm.prompt_length
    segs = _segments(info, names)  # every hook a layer's neurons come from (an MoE layer: experts, shared)
    shapes = {k: [(1, P if k == "prompt" else 1, seg.width) for _, seg in segs] for k in kinds}
    routers = [(i, seg.hook.replace(EXPERTS_HOOK, ROUTING_HOOK), seg.experts) for i, seg in segs if seg.experts]
    if routers:  # [routed & label 0 | routed & label 1] per expert, train only
        shapes["routing"] = [(1, P, 2 * e) for _, _, e in routers]
    passes = ["train", *opts.splits]
    sums = Sums(passes, shapes, [i for i, _ in segs], null=opts.permutations,
                 sizes={p: len(getattr(task, p)) for p in passes})
    ckpt = None if checkpoint is None else _checkpoint_at(pm, task, opts, checkpoint, batch_size)
    reading = _Reading(pm, [seg.hook for _, seg in segs], decoder, kinds, input_cache,
                       [(h, e) for _, h, e in routers], Budget(placement_of(pm.model).memory_budget))
    out = _probe_passes(task, sums, reading, batch_size, ckpt, opts.checkpoint_every, opts.permutation_seed)
    if routers:
        out["routing"] = _routing(sums.total("train", "routing"), routers, task.train.labels, len(names))
    return out, ckpt, batch_size


def _checkpoint_at(pm, task, opts: ProbeOptions, checkpoint, batch_size: int) -> Checkpoint:
    """This rank's checkpoint of a probe at ``batch_size``; one that ran out of memory at ``opts.batch_size``
    records it (``halved_from``), so that the same command resumes it at the smaller size after a kill."""
    rank, world = rank_world()
    identity = {**probe_fingerprint(pm, task, opts, batch_size=batch_size), "shard": f"{rank}/{world}"}
    if batch_size != opts.batch_size:
        identity["halved_from"] = opts.batch_size
    return Checkpoint(Path(checkpoint) / f"probe_checkpoint.{rank}of{world}.safetensors", identity, "probe")


def probe_fingerprint(pm, task, options: ProbeOptions | None = None, **overrides) -> dict:
    """What a probe checkpoint belongs to: model, task, prompt tensor hash, batch size, hooks, options
    (``permutations`` and ``permutation_seed`` only when ``permutations > 0``, so older ones still match).

    :func:`probe` adds the shard (``"rank/world"``) to it as the identity of each rank's checkpoint.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> fp = probe_fingerprint(hard_prompt_model(tiny_model(), tiny_task()), tiny_task(), batch_size=8)
    >>> fp["model"], fp["batch_size"], fp["prompt"][:5]
    ('tiny-causal', 8, 'hard:')
    """
    opts = ProbeOptions.build(options, **overrides)
    info = describe(pm.model)
    names, _ = probe_hooks(info, opts.hook_names)
    if pm.prompt is None:
        prompt = "hard:" + hashlib.sha256(pm.template.encode()).hexdigest()
    else:
        data = pm.prompt.embedding.detach().float().cpu().contiguous().numpy().tobytes()
        prompt = hashlib.sha256(data).hexdigest()
    fp = {"model": info.name, "task": task.fingerprint(), "prompt": prompt, "batch_size": opts.batch_size,
          "batching": "length-sorted", "hook_names": list(names), "pooling": opts.pooling, "splits": list(opts.splits),
          "max_length": pm.max_length}
    if not opts.permutations:
        return fp
    return {**fp, "permutations": opts.permutations, "permutation_seed": opts.permutation_seed}


def permutation_labels(labels: Sequence[int], split: str, permutations: int, seed: int = 0) -> Tensor:
    """The probe's ``K`` label permutations of a whole evaluation split ``split`` (its name), ``[n, K]`` bool.

    Column ``k`` depends only on ``(seed, split, k)`` and the labels, never on batching or sharding.

    >>> y = permutation_labels([0, 1, 1, 0], "dev", 2, seed=3)
    >>> y.shape, torch.equal(y, permutation_labels([0, 1, 1, 0], "dev", 2, seed=3))
    (torch.Size([4, 2]), True)
    """
    digest = hashlib.sha256(f"{seed}:{split}".encode()).digest()
    return permuted_labels(torch.as_tensor(list(labels)), permutations, int.from_bytes(digest[:7], "little"))


def _segments(info, names: Sequence[str]) -> list[tuple[int, Segment]]:
    """``(position in names, segment)`` of every hook the layers of ``names`` read their neurons from."""
    out = [(i, seg) for i, name in enumerate(names) for seg in info.segments(name)]
    widths = {sum(seg.width for j, seg in out if j == i) for i in range(len(names))}
    if len(widths) > 1:
        raise ProbeError(f"the probed layers have different FFN widths ({sorted(widths)}): a probe's tensors are "
                         "[n_layers, P, d_mlp]; probe layers of one width with hook_names=[...].")
    return out


def _routing(total: list, routers: list, labels, n_layers: int) -> Tensor:
    """``[L, 2, E]``: per label, the fraction of its train examples routed to each expert (mean over positions)."""
    y = torch.as_tensor(list(labels))
    share = torch.stack([(y == c).double().mean() for c in (0, 1)]).clamp(min=1e-12)  # P(label = c)
    width = max(e for _, _, e in routers)
    out = torch.zeros(n_layers, 2, width, dtype=torch.float64)
    for acc, (i, _, e) in zip(total, routers):
        joint = acc.mean()[0].cpu().mean(0).view(2, e)  # P(routed, label = c), mean over positions
        out[i, :, :e] = joint / share[:, None]
    return out.float()


def _check_probe(info, task, opts: ProbeOptions) -> tuple[list, bool, tuple]:
    """Hook names, whether they are the decoder's, and the splits to probe (an empty test is skipped)."""
    try:
        names, decoder = probe_hooks(info, opts.hook_names)
    except CaptureError as e:  # the probe's caller asked for these hooks: a probe error
        raise ProbeError(str(e)) from None
    if opts.pooling and decoder:
        raise ProbeError("pooling averages over input tokens, which decoder hooks do not see; probe encoder hooks.")
    _check_binary(task.train, "train", need_both=False)
    splits = tuple(s for s in opts.splits if s == "dev" or len(getattr(task, s)) > 0)
    for s in splits:
        _check_binary(getattr(task, s), s, need_both=(s == "dev"))
    return names, decoder, splits


def _check_binary(split, name: str, need_both: bool) -> None:
    if split is None or not (labels := set(split.labels)):
        raise ProbeError(f"the {name} split is empty; choose a larger --{name}-size.")
    if not labels <= {0, 1}:
        raise ProbeError(f"the {name} split has labels {sorted(labels)}; skill neurons need a binary task. "
                         "Make binary subtasks with task.binarize(...) (CLI: --binary).")
    if need_both and len(labels) < 2:
        raise ProbeError(f"the {name} split has only label {labels.pop()}; predictivity needs both classes. "
                         f"Choose a larger --{name}-size.")


def _probe_passes(task, sums: Sums, reading: _Reading, batch_size: int, ckpt: Checkpoint | None, every: int,
                  permutation_seed: int = 0) -> dict:
    """Run (or resume) each pass on this rank's batches, reduce it on the CPU, and return the result's tensors."""
    rank, world = rank_world()
    position = sums.resume(ckpt)
    resumed_at = sums.passes.index(position["pass"])
    base, out = {}, {}
    for n, p in enumerate(sums.passes):
        if p in sums.done:  # finished before a kill: its result is in the checkpoint
            out.update(sums.done[p])
            continue
        split, accs = getattr(task, p), sums.local[p]
        batches = length_batches(reading.pm, split, batch_size)
        mine = [batches[b] for b in batch_range(len(batches), rank, world)]  # the batches one process runs
        start = len(mine) if n < resumed_at else position["batch"] if n == resumed_at else 0
        labels = torch.as_tensor(split.labels)
        if p == "train":
            feed = lambda k, i, a, y: accs[k][i].add(a)  # noqa: E731
        else:
            feed = functools.partial(_feed_eval, accs, base)
            if sums.null_shapes is not None:  # [real label, K permuted labels] of every example
                labels = torch.cat([labels.bool()[:, None], permutation_labels(
                    split.labels, p, sums.null_shapes[0][0], permutation_seed)], 1)

        def done(b: int) -> None:  # batches [0, b) of this pass are in the sums
            if ckpt is not None and ((b - start) % every == 0 or b == len(mine)):
                sums.save(ckpt, {"pass": p, "batch": b})

        _stream(split, mine, reading if p == "train" else reading._replace(routers=[]),  # routing: train only
                feed=feed, desc="baseline" if p == "train" else p, start=start, done=done, labels=labels)
        total = {k: sums.total(p, k) for k in sums.local[p] if k != "routing"}
        if p == "train":
            base = {k: [m.mean() for m in total[k]] for k in total}  # float64 [1, P, width] per hook, its device
            out["baseline"] = sums.join([b.cpu() for b in base["prompt"]]).float()
        else:
            out.update(result := _eval_out(p, total, [k for k in sums.shapes if k not in ("prompt", "routing")], sums))
            sums.finish(p, result)
        del total  # else this pass's counts stay alive through the next pass: two splits' nulls at once
    return out


def _feed_eval(accs: dict, base: dict, k: str, i: int, a: Tensor, y: Tensor) -> None:
    """Add a batch of layer ``i``: ``y`` is ``[B]`` labels, or ``[B, 1 + K]`` real then permuted labels."""
    if y.dim() == 2:
        if k == "prompt":
            accs["null"][i].add(a, y[:, 1:], base[k][i])
        y = y[:, 0]
    accs[k][i].add(a, y, base[k][i])


def _eval_out(p: str, total: dict, pool_kinds: list[str], sums: Sums) -> dict:
    """An evaluation pass's accuracies (float32) and, with a null, its permutation maxima."""
    out = {f"{p}_acc": sums.join([a.accuracy().cpu() for a in total["prompt"]]).float()}  # hooks on any device
    for k in pool_kinds:
        out[f"{k}_{p}_acc"] = sums.join([a.accuracy().cpu() for a in total[k]])[:, 0].float()
    if "null" in total:
        per_hook = torch.cat([null_maxima(a.agree, a.n)[1].cpu() for a in total["null"]], 1)  # [K, hooks]
        layer_max = torch.stack([per_hook[:, [j for j, l in enumerate(sums.layers) if l == layer]].amax(1)
                                 for layer in sorted(set(sums.layers))], 1)  # [K, L]
        out[f"null_layer_max_{p}"], out[f"null_max_{p}"] = layer_max, layer_max.amax(1)
    return out


def _result(pm, task, info, out: dict, names: list[str], passes: list[str], world: int) -> ProbeResult:
    sizes = {s: len(getattr(task, s)) for s in passes}
    prompt = pm.prompt.meta if pm.prompt is not None else {"prompt": "hard", "template": pm.template}
    meta = {**info.as_meta(), "task": task.name, "task_fingerprint": task.fingerprint(),
            "prompt_length": pm.prompt_length, "prompt_source": {k: v for k, v in prompt.items() if k != "model"},
            "world_size": world}
    return ProbeResult(**{"dev_acc": None, **out}, sizes=sizes, hook_names=tuple(names), meta=meta)


class _Reading(NamedTuple):
    """What every pass reads: the prompted model, the hooks (and whether they are the decoder's), the kinds of
    statistics, the input cache the inputs may come from, the MoE routers ``(hook, n_experts)`` (fed on train
    only) and the memory budget (checked while the last layer's activations are alive)."""

    pm: object
    names: list[str]
    decoder: bool
    kinds: list[str]
    input_cache: InputCache | None
    routers: list
    budget: Budget | None


def _stream(split, batches, reading: _Reading, feed, desc, start: int = 0, done=None,
            labels: Tensor | None = None) -> None:
    """Run ``batches`` of ``split`` (this rank's run of its length-sorted batches) from batch ``start``; hooks
    call ``feed(kind, layer, acts [B 1 P N], labels)`` and keep nothing; ``done(b)`` runs once batches
    ``[0, b)`` are fed. ``labels`` (one row per example of the split) replaces ``split.labels``. With
    ``reading.input_cache``, where ``pm`` can use it
    (:meth:`~skill_lens.prompting.prompted_model.PromptedModel.cache_inputs`; not with pooling, which reads the
    input positions), the inputs come from it and only the prompt positions run (the hooks are built for
    those). ``reading.routers`` also feed ``("routing", j, [B 1 P 2E], labels)``."""
    pm, names, budget = reading.pm, reading.names, reading.budget
    all_labels = torch.as_tensor(split.labels) if labels is None else labels
    now = {}  # the labels of the batch that runs, for its hooks
    check = [(names[-1], lambda act, hook: budget.check())] if budget else []

    def recorders(part):  # built for the part of the batch that runs: all of it, or its prompt positions
        return [*_capture_hooks(reading, part, now["y"], feed, reading.routers), *check]

    probed = pm.with_hooks(recorders, prompt_only=reading.kinds == ["prompt"])
    mine = None if rank_world()[1] == 1 else [i for b in batches for i in b]  # a rank's inputs alone
    cache = probed.cache_inputs(split, reading.input_cache, examples=mine) if start < len(batches) else None
    for b in progress(range(start, len(batches)), desc=f"probe {desc}", initial=start, total=len(batches)):
        batch, now["y"] = pm.encode_split(split, batches[b]), all_labels[batches[b]]
        if budget:
            budget.start()
        with torch.no_grad():
            probed.label_logits(batch, input_cache=cache)
        if done is not None:
            done(b + 1)


def _capture_hooks(reading: _Reading, batch, labels, feed, routers=()) -> list:
    """One forward hook per name, feeding the probed positions (and pooled values) of its activations; one per
    router, feeding whether each probed position is routed to each expert, split by label."""
    hard, names, decoder, kinds = reading.pm.prompt is None, reading.names, reading.decoder, reading.kinds

    def route(weights: Tensor, hook, j: int) -> None:
        routed = (probed_positions(weights, batch, decoder, hard) > 0).double()  # [B, P, E]
        y = (labels if labels.dim() == 1 else labels[:, 0]).to(routed.device).view(-1, 1, 1).double()
        feed("routing", j, torch.cat([routed * (1 - y), routed * y], -1).unsqueeze(1), labels)

    def capture(act: Tensor, hook, i: int) -> None:
        sel = probed_positions(act, batch, decoder, hard)
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

    return [*((h, lambda a, hook, i=i: capture(a, hook, i)) for i, h in enumerate(names)),
            *((h, lambda a, hook, j=j: route(a, hook, j)) for j, (h, _) in enumerate(routers))]


def probe_random_prompt(model, task, P: int = 8, seed: int = 0, how: str = "normal", **kwargs) -> ProbeResult:
    """Probe with an untuned random prompt (the "skill neurons come from pre-training" control).
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> probe_random_prompt(tiny_model(), tiny_task(), P=2, splits=("dev",)).dev_acc.shape
    torch.Size([2, 2, 64])
    """
    return probe(prompted(model, task, SoftPrompt.init(model, P, seed=seed, how=how)), task, **kwargs)
