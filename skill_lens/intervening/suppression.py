"""Suppression curves: accuracy as the top skill neurons are perturbed, against random neurons.

For each fraction ``f`` the top ``f`` of neurons by score (all neurons, or of each layer with
``per_layer=True``; :func:`skill_lens.probing.scores.select_top`) are perturbed at ``positions`` by
``method`` (``"gaussian"`` noise, ``"zero"`` or ``"mean"`` ablation to the probe's baseline), and so
are ``controls`` random sets with the same count per layer, disjoint from the skill set
(:func:`skill_lens.intervening.interventions.random_like`; overlapping only where the skill set holds more than
half of a layer). The result, a :class:`~skill_lens.intervening.curve.SuppressionCurve`, holds accuracy and
the mean gold-label logit difference (gold minus best other label) per fraction for the skill set and every
draw.

Cross-task form: neurons found on task A, evaluated on task B's split with B's prompted model --
pass ``pm`` and ``task_or_split`` of B and ``scores`` of A (and B's baseline for ``"mean"``).

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> from skill_lens.prompting.evaluation import prompted
>>> from skill_lens.prompting.prompts import SoftPrompt
>>> model, task = tiny_model(), tiny_task()
>>> pm = prompted(model, task, SoftPrompt.init(model, 2))
>>> scores = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
>>> curve = suppression_curve(pm, task, scores, fractions=[0, 0.1], method="zero", controls=2)
>>> curve.to_pandas()[["fraction", "n_neurons", "skill_accuracy", "random_accuracy_mean"]].shape
(2, 4)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.base.options import Options, option, parse_floats
from skill_lens.base.progress import progress
from skill_lens.data.batching import BATCH_SIZE
from skill_lens.data.distributed import rank_world
from skill_lens.intervening.curve import SuppressionCurve
from skill_lens.intervening.interventions import (InterventionError, Positions, gaussian_noise, mean_ablate,
                                                  random_like, zero_ablate)
from skill_lens.model.loading import describe, placement_of
from skill_lens.model.memory import Budget, halved_start, halving
from skill_lens.probing.neurons import NeuronSet, as_neuron_set
from skill_lens.probing.scores import select_top
from skill_lens.prompting.batches import Batch
from skill_lens.prompting.evaluation import check_labels, check_split, evaluate, predict, score_logits
from skill_lens.prompting.input_cache import InputCache
from skill_lens.prompting.prompts import Hook
from skill_lens.store.checkpoint import Checkpoint

__all__ = ["CurveOptions", "suppression_curve", "evaluate_with", "METHODS", "DEFAULT_FRACTIONS"]

METHODS = ("gaussian", "zero", "mean")
DEFAULT_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1)  # of the neurons, when the curve selects by scores


@dataclass
class CurveOptions(Options):
    """How a suppression curve perturbs, validated when made; the flags of ``skill-lens perturb``.

    >>> CurveOptions(method="zero", fractions=[0, 0.1]).fractions
    (0.0, 0.1)
    >>> CurveOptions(controls=-1)
    Traceback (most recent call last):
    ...
    skill_lens.intervening.interventions.InterventionError: controls (--controls) must be a whole number of at least 0, got -1.
    """

    error = InterventionError

    method: str = option("gaussian", "how the neurons are perturbed: Gaussian noise, or zero or mean ablation "
                                     "(to the probe's train baseline)", choices=METHODS)
    fractions: tuple[float, ...] | None = option(
        None, "comma-separated fractions of neurons in [0, 1] (default: " + ",".join(f"{f:g}" for f in DEFAULT_FRACTIONS)
        + "; a given neuron set is perturbed whole)", parse=parse_floats)
    controls: int = option(3, "random neuron sets per fraction")
    per_layer: bool = option(False, "the top fraction of every layer (default: of all)")
    std: float = option(1.0, "standard deviation of the Gaussian noise")
    per: str = option("token", "fresh noise per token or example", choices=("token", "example"))
    split: str = option("dev", "split the accuracy is measured on (of a task)", choices=("dev", "test"))
    positions: Positions | str | tuple[int, ...] = option("prompt", "prompt, input, predict, all, or indices like "
                                                                    "0,1,-1")
    seed: int = option(0, "seed of the noise and of the random sets")
    draws: int = option(1, "Gaussian noise draws per neuron set (the gap's interval covers examples, draws and "
                           "controls)")
    batch_size: int = option(BATCH_SIZE, "examples per forward pass")
    bootstrap: int = option(1000, "bootstrap resamples of the gap's 95% interval", flag=None)
    ci_seed: int = option(0, "seed of the bootstrap", flag=None)

    def __post_init__(self):
        self.check_choice("method", METHODS)
        if self.fractions is not None:
            self.fractions = self.check_fractions("fractions")
        self.check_int("controls", 0)
        self.check_bool("per_layer")
        self.check_number("std", lambda x: math.isfinite(x) and x >= 0, "a finite number of at least 0")
        self.check_choice("per", ("token", "example"))
        self.check_choice("split", ("dev", "test"))
        try:
            self.positions = Positions.of(self.positions)
        except (InterventionError, TypeError, ValueError) as e:
            raise InterventionError(f"{self.label('positions')}: {e}") from None
        for name, low in (("seed", None), ("draws", 1), ("batch_size", 1), ("bootstrap", 1), ("ci_seed", None)):
            self.check_int(name, low)
        if self.draws > 1 and self.method != "gaussian":
            raise InterventionError(f"draws={self.draws} with method {self.method!r}: draws counts noise draws, and "
                                    "only method 'gaussian' draws noise (zero and mean ablation are deterministic); "
                                    "pass draws=1 (--draws 1) or method='gaussian'.")


def evaluate_with(pm, split, make_hooks: Callable[[Batch], Sequence[Hook]], batch_size: int = BATCH_SIZE,
                  input_cache: InputCache | None = None, per_example: bool = False, *, sharded: bool = False,
                  skipped: Callable[[Batch], None] | None = None) -> dict:
    """:func:`skill_lens.prompting.evaluation.evaluate` of ``pm.with_hooks(make_hooks)``: hooks built per batch.

    With ``per_example`` the result also holds ``correct``: each example's correctness (a bool
    tensor ``[n]``), as the bootstrap intervals of
    :meth:`SuppressionCurve.summary <skill_lens.intervening.curve.SuppressionCurve.summary>` need.

    With an ``input_cache`` (causal models), the hooks must act on prompt positions only
    (``prompt_only=True``): they are built for the prompt part of each batch, and inputs seen before run
    only their prompt positions.

    ``sharded`` and ``skipped`` (with ``per_example``): each rank of a ``torch.distributed`` job runs its share of
    the batches, every rank gets every example's result (:func:`~skill_lens.prompting.evaluation.predict`).

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import hard_prompt_model
    >>> model, task = tiny_model(), tiny_task()
    >>> evaluate_with(hard_prompt_model(model, task), task.dev, lambda batch: [])["n"]
    32
    >>> evaluate_with(hard_prompt_model(model, task), task.dev, lambda batch: [], per_example=True)["correct"].shape
    torch.Size([32])
    """
    hooked = pm.with_hooks(make_hooks, prompt_only=input_cache is not None)
    if not per_example:
        return evaluate(hooked, split, batch_size, input_cache=input_cache)
    check_split(split, "evaluation")
    check_labels(hooked, split)
    logits = predict(hooked, split, batch_size, input_cache=input_cache, sharded=sharded, skipped=skipped)
    correct, diff = score_logits(logits, split.labels)
    return {"accuracy": correct.float().mean().item(), "logit_diff": diff.mean().item(), "n": len(correct),
            "correct": correct}


def suppression_curve(pm, task_or_split, scores: Float[Tensor, "layer d_mlp"] | NeuronSet,
                      options: CurveOptions | None = None, *, baseline: Tensor | None = None,
                      checkpoint: str | Path | None = None, input_cache: InputCache | None = None,
                      **overrides) -> SuppressionCurve:
    """Perturb the top ``fractions`` of neurons by ``scores`` and ``controls`` random sets of the same
    size; see the module docstring. ``task_or_split`` is a task (its ``split``) or a split. ``options`` is a
    :class:`CurveOptions` (its fields, e.g. ``fractions``, ``method``, ``controls``, may also be passed as
    keywords, over ``options``); ``baseline``, ``checkpoint`` and ``input_cache`` are keyword-only.

    ``scores`` is either per-neuron scores ``[L, d_mlp]`` (``ProbeResult.scores("dev")``; ``fractions``
    default to 0, 1%, 2%, 5% and 10%, of all neurons or with ``per_layer`` of each layer), or a fixed
    neuron set: a :class:`~skill_lens.probing.neurons.NeuronSet`, a bool mask or labels (a multi-class task's
    merged subtask neurons, a hand-picked set). A set is perturbed whole against ``controls`` random
    sets with its count per layer: the curve has two points, ``0`` (unperturbed) and the set's share of
    all neurons ``len(set) / (L * d_mlp)``, so leave ``fractions`` unset.

    With ``checkpoint`` (a file path, e.g. ``perturb_zero.checkpoint.safetensors``), every finished
    row is saved atomically (:class:`skill_lens.store.checkpoint.Checkpoint`) and a rerun with the same
    arguments resumes after the last one (rows are seeded per set, so the curve is the same); the
    file is removed when the curve is complete. A checkpoint of other arguments is an error.

    With ``positions="prompt"`` on a causal model the split's inputs are computed once
    (:mod:`skill_lens.prompting.input_cache`) and every row runs only the prompt positions; pass ``input_cache``
    (e.g. ``run.input_cache``) to reuse inputs an earlier pass already computed.

    ``method="gaussian"`` adds noise of ``std`` (``per`` token or example); ``"mean"`` needs
    ``baseline`` (``ProbeResult.baseline``, ``[L, P, d_mlp]`` or ``[L, d_mlp]``). Noise is seeded per
    (fraction, set) from ``seed``, so a curve is reproducible.

    ``draws``: with ``method="gaussian"``, each neuron set (the skill set and every control) is evaluated
    with ``draws`` independent noise draws (rows with ``noise_draw`` 0..draws-1; draw 0 is the noise of
    ``draws=1``, so its rows are unchanged). ``"zero"`` and ``"mean"`` are deterministic: ``draws > 1``
    is an error there. The summary's ``gap`` (random mean - skill mean, over controls and draws) gets
    a paired bootstrap 95% interval over examples (``gap_ci_low``, ``gap_ci_high``) from ``bootstrap``
    resamples seeded by ``ci_seed``.

    >>> import tempfile
    >>> from skill_lens.probing.neurons import NeuronSet
    >>> from skill_lens.prompting.prompts import SoftPrompt
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> from skill_lens.prompting.evaluation import prompted
    >>> model, task = tiny_model(), tiny_task()
    >>> pm = prompted(model, task, SoftPrompt.init(model, 2))
    >>> ck = Path(tempfile.mkdtemp()) / "curve.checkpoint.safetensors"
    >>> c = suppression_curve(pm, task, torch.rand(2, 64), fractions=[0, 0.1], method="zero", controls=1, checkpoint=ck)
    >>> len(c.rows), ck.exists()  # skill and random at each fraction; the checkpoint is gone when done
    (4, False)
    >>> chosen = NeuronSet.from_pairs(["L0.N3", "L1.N7", "L1.N9"], 2, 64)
    >>> suppression_curve(pm, task, chosen, method="zero", controls=2).fractions  # 0 and 3 of 128 neurons
    [0.0, 0.0234375]
    >>> c = suppression_curve(pm, task, torch.rand(2, 64), fractions=[0.1], controls=1, std=3.0, draws=2, bootstrap=200)
    >>> [(r["set"], r["noise_draw"]) for r in c.rows]
    [('skill', 0), ('skill', 1), ('random', 0), ('random', 1)]
    """
    opts = CurveOptions.build(options, **overrides)
    info = describe(pm.model)
    scores, fixed = _check_curve(info, scores, opts.method, baseline)
    fractions = _curve_fractions(opts, fixed, info)
    data = getattr(task_or_split, opts.split) if hasattr(task_or_split, opts.split) else task_or_split
    pos = opts.positions
    budget = Budget(placement_of(pm.model).memory_budget)  # checked while the last layer's activations live
    check = [(info.hook_names[-1], lambda act, hook: budget.check())] if budget else []
    make = _perturbation(pm, opts, baseline, check)
    sets = [(f, *s) for i, f in enumerate(fractions)
            for s in _neuron_sets(scores, fixed, f, i, info, opts.per_layer, opts.controls, opts.seed)]
    identity = dict(fractions=fractions, method=opts.method, controls=opts.controls, per_layer=opts.per_layer,
                    std=opts.std, positions=[pos.role, list(pos.indices)], per=opts.per, seed=opts.seed,
                    draws=opts.draws)
    ckpt_at = functools.partial(_checkpoint_at, pm, data, scores if fixed is None else fixed.float(), baseline,
                                checkpoint, identity, opts.batch_size)

    def at(size: int) -> tuple[list[dict], Checkpoint | None, int]:
        ckpt = ckpt_at(size) if checkpoint is not None else None
        budget.start()
        return _curve_rows(pm, data, sets, make, dataclasses.replace(opts, batch_size=size), ckpt, input_cache,
                           check), ckpt, size

    if rank_world()[1] > 1:  # every rank runs the same batch size: no rank can halve alone
        rows, ckpt, size = at(opts.batch_size)
    else:
        start = opts.batch_size if checkpoint is None else halved_start(ckpt_at, opts.batch_size)
        rows, ckpt, size = halving(at, start, "suppression curve",
                                   before_retry=lambda b: checkpoint is not None and ckpt_at(b).remove())
    meta = {"model": info.name, "n_examples": len(data), "controls": opts.controls, "per_layer": opts.per_layer,
            "positions": pos.role if pos.role != "indices" else list(pos.indices), "std": opts.std, "per": opts.per,
            "seed": opts.seed, "selection": "top by scores" if fixed is None else "a given neuron set",
            "draws": opts.draws, "bootstrap": opts.bootstrap, "ci_seed": opts.ci_seed, "batch_size": size}
    if ckpt is not None and rank_world()[0] == 0:
        ckpt.remove()
    return SuppressionCurve(rows, fractions, opts.method, meta)


def _checkpoint_at(pm, data, scores: Tensor, baseline, path, options: dict, asked: int, size: int) -> Checkpoint:
    """The curve's checkpoint at batch ``size`` (recording ``halved_from`` once out of memory at ``asked``)."""
    identity = _fingerprint(pm, data, scores, baseline, **options, batch_size=size)
    if size != asked:
        identity["halved_from"] = asked
    return Checkpoint(path, identity, "suppression curve")


def _curve_rows(pm, data, sets, make, opts: CurveOptions, ckpt, input_cache, check: Sequence[Hook] = ()) -> list[dict]:
    """The curve's rows: each ``(fraction, set, draw, mask)`` of ``sets`` evaluated ``opts.draws`` times (noise
    draw ``k`` seeded apart from draw 0's key), resuming from and saving to ``ckpt`` if given."""
    method, draws, seed, batch_size = opts.method, opts.draws, opts.seed, opts.batch_size
    index = {f: i for i, f in enumerate(dict.fromkeys(f for f, *_ in sets))}  # the fractions, in order
    saved = ckpt.load() if ckpt is not None else None  # rows: appended one by one (older checkpoints: saved)
    done = {_row_key(r): r for r in (saved[1]["rows"] if saved is not None else []) + (ckpt.records() if ckpt else [])}
    # Prompt-position hooks leave a causal input's keys/values alone: compute them once (the prompted
    # model decides where a cache applies; other families run as before).
    cache = (input_cache if input_cache is not None else InputCache()) if opts.positions.role == "prompt" else None
    clean = None
    rows = []
    bar = progress(total=len(sets) * draws, desc=f"suppression ({method})")
    for f, name, draw, mask in sets:
        for k in range(draws):
            bar.update(1)
            if (f, name, draw, k) in done:
                rows.append(done[f, name, draw, k])
                continue
            if not mask.any():  # empty set: the clean model, evaluated once
                clean = clean or evaluate_with(pm, data, lambda b: list(check), batch_size, cache, per_example=True,
                                               sharded=True)
                res = clean
            else:
                key = seed * 7919 + 100 * index[f] + draw + (name == "random") + _NOISE_DRAW_STRIDE * k
                hooks = make(mask, key)
                res = evaluate_with(pm, data, hooks, batch_size, cache, per_example=True, sharded=True,
                                    skipped=_advance(pm, hooks) if method == "gaussian" else None)
            rows.append({"fraction": f, "set": name, "draw": draw, "noise_draw": k, "n_neurons": int(mask.sum()),
                         "accuracy": res["accuracy"], "logit_diff": res["logit_diff"],
                         "correct": "".join("1" if c else "0" for c in res["correct"].tolist())})
            bar.set_postfix_str(f"{f:.0%} {name}{draw if name == 'random' else ''}: acc {res['accuracy']:.3f}")
            if ckpt is not None and rank_world()[0] == 0:  # every rank holds the same rows
                ckpt.append(rows[-1])
    bar.close()
    return rows


def _advance(pm, make_hooks: Callable[[Batch], Sequence[Hook]]) -> Callable[[Batch], None]:
    """For a batch another rank runs: call its hooks on zero activations, so that their noise stream advances
    exactly as a forward of it would have advanced it (each layer's hook draws as many numbers)."""
    d_mlp = describe(pm.model).d_mlp

    def skip(batch: Batch) -> None:
        act = torch.zeros(batch.input_ids.shape[0], batch.input_ids.shape[1], d_mlp)
        for _, fn in make_hooks(batch):
            fn(act, None)

    return skip


_NOISE_DRAW_STRIDE = 104729  # a prime well above any (fraction, control) key offset


def _row_key(row: dict) -> tuple:
    return row["fraction"], row["set"], row["draw"], row.get("noise_draw", 0)


def _check_curve(info, scores, method: str, baseline) -> tuple[Tensor | None, Tensor | None]:
    """``(scores, None)`` for per-neuron scores, ``(None, mask)`` for a neuron set, once the baseline is there
    if the method needs it and the shape is the model's."""
    if method == "mean" and baseline is None:
        raise InterventionError("method 'mean' needs the probe's baseline (ProbeResult.baseline).")
    if callable(getattr(scores, "scores", None)) and hasattr(scores, "baseline"):
        raise InterventionError("suppression_curve takes per-neuron scores or a neuron set, not a probe result; "
                                "pass result.scores('dev') (or a NeuronSet).")
    if isinstance(scores, NeuronSet) or (isinstance(scores, Tensor) and scores.dtype == torch.bool) or \
            isinstance(scores, str) or (isinstance(scores, (list, tuple)) and not _numbers(scores)):
        try:
            return None, as_neuron_set(scores, *info.shape, info.layout).mask
        except ValueError as e:
            raise InterventionError(f"neurons for a suppression curve: {e}") from None
    try:
        scores = torch.as_tensor(scores)
    except (TypeError, ValueError, RuntimeError):
        raise InterventionError(f"suppression_curve takes per-neuron scores [{info.n_layers}, {info.d_mlp}] "
                                f"(ProbeResult.scores('dev')) or a NeuronSet, not a {type(scores).__name__}.") from None
    if tuple(scores.shape) != info.shape:
        raise InterventionError(f"scores are {list(scores.shape)} but {info.name} has {info.n_layers} layers x "
                                f"{info.d_mlp} neurons; use scores probed on this model.")
    if not scores.is_floating_point():
        raise InterventionError(f"scores are a {scores.dtype} tensor; pass float scores (ProbeResult.scores('dev')) "
                                "or a NeuronSet / bool mask to perturb a fixed set.")
    return scores, None


def _numbers(xs) -> bool:
    """Whether a list holds rows of numbers (scores) rather than neuron labels or pairs."""
    first = xs[0] if len(xs) else None
    return isinstance(first, (list, tuple)) and len(first) != 2 or isinstance(first, float)


def _curve_fractions(opts: CurveOptions, fixed: Tensor | None, info) -> list[float]:
    """The curve's points: the fractions asked for (default :data:`DEFAULT_FRACTIONS`), or for a fixed set 0
    and its share of all neurons."""
    if fixed is None:
        return list(DEFAULT_FRACTIONS if opts.fractions is None else opts.fractions)
    if opts.fractions is not None or opts.per_layer:
        raise InterventionError("a neuron set is perturbed whole (the curve's points are 0 and its share of all "
                                "neurons): leave fractions and per_layer unset, or pass scores to select top fractions.")
    return [0.0, int(fixed.sum()) / (info.n_layers * info.d_mlp)]


def _perturbation(pm, opts: CurveOptions, baseline, check: Sequence[Hook] = ()):
    """``make(mask, key)``: the per-batch hook factory perturbing ``mask``'s neurons (noise seeded by ``key``),
    with the ``check`` hooks (a memory budget's) after them."""
    method, std, per, pos = opts.method, opts.std, opts.per, opts.positions

    def make(mask: Tensor, key: int) -> Callable[[Batch], list[Hook]]:
        gen = torch.Generator().manual_seed(key)  # one stream across batches: fresh noise per batch
        if method == "gaussian":
            return lambda b: [*gaussian_noise(pm.model, mask, std, seed=gen, per=per, positions=pos, batch=b), *check]
        if method == "zero":
            return lambda b: [*zero_ablate(pm.model, mask, positions=pos, batch=b), *check]
        return lambda b: [*mean_ablate(pm.model, mask, baseline, positions=pos, batch=b), *check]

    return make


def _neuron_sets(scores: Tensor | None, fixed: Tensor | None, f: float, i: int, info, per_layer: bool,
                 controls: int, seed: int) -> list[tuple[str, int, Tensor]]:
    """``(set, draw, mask)`` of fraction ``f`` (the ``i``-th): the skill set (the top ``f`` by ``scores``, or the
    ``fixed`` set), then ``controls`` random ones."""
    if f == 0:
        skill = torch.zeros(info.shape, dtype=torch.bool)
    else:
        skill = fixed if fixed is not None else select_top(scores, f, per_layer=per_layer)
    sets = [("skill", 0, skill)]
    if controls:
        if f == 0:
            sets += [("random", d, skill) for d in range(controls)]
        else:
            disjoint = bool((2 * skill.sum(1) <= info.d_mlp).all())  # else a layer has too few others
            draws = random_like(skill, seed + 1000 * i, controls, disjoint=disjoint)
            sets += [("random", d, m) for d, m in enumerate(draws)]
    return sets


def _fingerprint(pm, data, scores: Tensor, baseline: Tensor | None, **options) -> dict:
    """What a curve checkpoint belongs to (its identity): model, prompt, examples, scores, baseline, options."""

    def digest(x) -> str:
        if isinstance(x, Tensor):
            x = x.detach().float().cpu().contiguous().numpy().tobytes()
        return hashlib.sha256(x if isinstance(x, bytes) else json.dumps(x, ensure_ascii=False).encode()).hexdigest()

    prompt = pm.template if pm.prompt is None else pm.prompt.embedding
    return {"model": describe(pm.model).name, "prompt": digest(prompt), "scores": digest(scores),
            "baseline": None if baseline is None else digest(torch.as_tensor(baseline)),
            "data": digest([list(data.texts), list(data.labels), list(data.texts_b or [])]),
            "options": json.loads(json.dumps(options))}
