"""Soft-prompt tuning on a frozen model, and the one training loop every tuning method shares.

Only the prompt is trained (AdamW with linear warmup, gradient clipping on the
prompt alone); the model is in eval mode with ``requires_grad=False``, so its
weights are bitwise unchanged. :func:`train` is the loop itself, for any trainable
tensors (prompt tuning here, BitFit and adapters in :mod:`skill_lens.prompting.peft_methods`):
batches are a pure function of ``(seed, step)`` (:func:`batch_indices`) and every
``eval_every`` steps the full training state is checkpointed atomically
(:class:`~skill_lens.store.checkpoint.Checkpoint`), so a killed run resumes to the same
result as one never interrupted. Every setting is checked when a :class:`TuneConfig`
is made (:class:`ConfigError`), and every text of every split against the model's
context before the first step. Evaluation lives in :mod:`skill_lens.prompting.evaluation`.

>>> from skill_lens.model.tiny import tiny_model, tiny_task
>>> model, task = tiny_model("causal"), tiny_task()
>>> result = tune(model, task, TuneConfig(prompt_length=4, steps=20, batch_size=8, eval_every=10, lr=0.1))
>>> result.prompt.embedding.shape, 0.0 <= result.dev_accuracy <= 1.0
(torch.Size([4, 32]), True)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from skill_lens.store.artifacts import load_tensors
from skill_lens.store.checkpoint import Checkpoint
from skill_lens.prompting.evaluation import (check_labels, check_lengths, check_split, evaluate, prompted)
from skill_lens.prompting.input_cache import InputCache
from skill_lens.model.loading import describe
from skill_lens.base.progress import progress
from skill_lens.prompting.prompts import PromptError, SoftPrompt

__all__ = ["RESOURCE_FIELDS", "TuneConfig", "TuneResult", "ConfigError", "TrainState", "tune", "train", "batch_indices",
           "learning_rate", "with_defaults", "tuning_checkpoint", "check_texts_fit", "SCHEDULES"]


SCHEDULES = ("constant", "linear")
INITS = ("vocab", "normal")
CHECKPOINT_FILE = "checkpoint.safetensors"  # in a run directory (``run_dir=``)
RESOURCE_FIELDS = ("input_cache_mb",)  # how much memory a run may use, not what it computes
FLAGS = {"prompt_length": "--prompt-length", "steps": "--steps", "batch_size": "--batch-size", "lr": "--lr",
         "eval_every": "--eval-every", "patience": "--patience", "max_length": "--max-length"}


class ConfigError(PromptError):
    """A tuning setting is out of range; the message names the field (and its CLI flag), the value and the fix.

    A :class:`~skill_lens.prompting.prompts.PromptError` (hence a ``ValueError``), as the same problems were before
    they were checked up front.
    """


@dataclass
class TuneConfig:
    """Hyper-parameters of prompt tuning (defaults sized for a 2-core CPU and SmolLM2), checked when made.

    >>> TuneConfig(batch_size=0)
    Traceback (most recent call last):
    ...
    skill_lens.prompting.tuning.ConfigError: batch_size (--batch-size) must be a whole number of at least 1, got 0.
    """

    prompt_length: int = 8
    steps: int = 150
    batch_size: int = 16
    lr: float = 0.03
    warmup_steps: int = 10
    schedule: str = "constant"  # after warmup: "constant", or "linear" decay towards 0 over the remaining steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    eval_every: int = 25
    patience: int | None = None  # evaluations without improvement before stopping early
    seed: int = 0
    init: str = "vocab"
    cache_input: bool = True  # causal models: input keys/values without autograd
    input_cache_mb: float = 4096.0  # ... and kept per input across steps and dev evaluations (0: off)
    eval_batch_size: int = 32
    max_length: int | None = None  # truncate inputs to this many tokens (default: error if too long)

    def __post_init__(self):
        for name in ("prompt_length", "steps", "batch_size", "eval_every", "eval_batch_size"):
            _check_int(name, getattr(self, name), 1)
        for name in ("patience", "max_length"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 1, " (or None: no limit)")
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_int("seed", self.seed, None)
        _check_number("lr", self.lr, lambda x: math.isfinite(x) and x > 0, "a finite number above 0")
        _check_number("weight_decay", self.weight_decay, lambda x: math.isfinite(x) and x >= 0,
                      "a finite number of at least 0")
        _check_number("max_grad_norm", self.max_grad_norm, lambda x: x > 0, "a number above 0 (inf: no clipping)")
        _check_number("input_cache_mb", self.input_cache_mb, lambda x: x >= 0, "a number of megabytes, at least 0 "
                      "(0: no input cache)")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not a learning-rate schedule; use one of "
                              f"{', '.join(SCHEDULES)}.")
        if self.init not in INITS:
            raise ConfigError(f"init {self.init!r} is not a prompt initialisation; use one of {', '.join(INITS)}.")
        if not isinstance(self.cache_input, bool):
            raise ConfigError(f"cache_input must be True or False, got {self.cache_input!r}.")


def _field(name: str) -> str:
    return f"{name} ({FLAGS[name]})" if name in FLAGS else name


def _check_int(name: str, value, low: int | None, extra: str = "") -> None:
    whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not whole or low is not None and value < low:
        wanted = "a whole number" + (f" of at least {low}" if low is not None else "")
        raise ConfigError(f"{_field(name)} must be {wanted}{extra}, got {value!r}.")


def _check_number(name: str, value, ok: Callable[[float], bool], wanted: str) -> None:
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not ok(float(value)):
        raise ConfigError(f"{_field(name)} must be {wanted}, got {value!r}.")


@dataclass
class TuneResult:
    prompt: SoftPrompt
    dev_accuracy: float
    best_step: int
    history: list[dict] = field(default_factory=list)


@dataclass
class TrainState:
    """Where a :func:`train` run is: steps done, best dev accuracy and its step, the tensors then, history."""

    step: int = 0
    best_step: int = -1
    best_dev: float = -1.0
    bad_evals: int = 0  # evaluations since the last improvement
    history: list[dict] = field(default_factory=list)
    best: list[Tensor] = field(default_factory=list, repr=False)  # the trained tensors at the best evaluation

    def as_json(self) -> dict:
        """The state a checkpoint saves: a few numbers, whatever the step (the history goes to its log)."""
        return {"step": self.step, "best_step": self.best_step, "best_dev": self.best_dev,
                "bad_evals": self.bad_evals}


def batch_indices(seed: int, step: int, n: int, batch_size: int) -> list[int]:
    """The training examples of step ``step`` (0-based): a seeded permutation per epoch, cut into batches.

    A pure function of its arguments, so a resumed run sees the batches an uninterrupted one would.

    >>> batch_indices(0, 0, 10, 4) == batch_indices(0, 0, 10, 4), len(batch_indices(0, 2, 10, 4))
    (True, 2)
    >>> sorted(batch_indices(3, 0, 6, 3) + batch_indices(3, 1, 6, 3))
    [0, 1, 2, 3, 4, 5]
    """
    per_epoch = math.ceil(n / batch_size)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + step // per_epoch))
    return order[(step % per_epoch) * batch_size :][:batch_size].tolist()


def train(params: Sequence[Tensor], step_loss: Callable[[list[int]], Tensor], evaluate_dev: Callable[[], float],
          n_train: int, config: TuneConfig, checkpoint: Checkpoint | None = None, desc: str = "tune") -> TrainState:
    """Train ``params`` to minimise ``step_loss(batch_indices)``; keep the tensors with the best ``evaluate_dev()``.

    The loop of every tuning method: batches of ``config.batch_size`` of ``n_train`` examples
    (:func:`batch_indices`), AdamW, :func:`learning_rate` (warmup, then ``config.schedule``),
    gradients clipped to ``config.max_grad_norm`` on ``params`` alone, a dev evaluation every
    ``config.eval_every`` steps and at the end, early stop after ``config.patience`` evaluations
    without improvement. With ``checkpoint`` the state is saved at every evaluation and a saved one is
    resumed. ``params`` keep the last step's values; the best ones are ``state.best`` (same order).

    >>> w = torch.zeros(1, requires_grad=True)
    >>> cfg = TuneConfig(steps=20, batch_size=2, eval_every=5, lr=0.5, warmup_steps=0)
    >>> s = train([w], lambda idx: (w - 3.0).pow(2).sum(), lambda: -abs(w.item() - 3.0), 4, cfg)
    >>> s.step, [h["step"] for h in s.history if "dev_accuracy" in h], abs(s.best[0].item() - 3.0) < 0.5
    (20, [5, 10, 15, 20], True)
    """
    params = list(params)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    state = TrainState(best=[p.detach().clone() for p in params])
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        _restore(*saved, params, opt, state)
        state.history = saved[1].get("history") or checkpoint.records(tied=True)  # older checkpoints: in the state
    bar = progress(total=config.steps, initial=state.step, desc=desc)
    while state.step < config.steps and not (config.patience is not None and state.bad_evals >= config.patience):
        step = state.step
        loss = step_loss(batch_indices(config.seed, step, n_train, config.batch_size))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        for g in opt.param_groups:
            g["lr"] = learning_rate(config, step)
        opt.step()
        state.step = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{state.best_dev:.3f}")
        state.history.append({"step": step + 1, "loss": loss.item()})
        if state.step % config.eval_every == 0 or state.step == config.steps:
            dev = evaluate_dev()
            state.history[-1]["dev_accuracy"] = dev
            if dev > state.best_dev:
                state.best_dev, state.best_step, state.bad_evals = dev, state.step, 0
                state.best = [p.detach().clone() for p in params]
            else:
                state.bad_evals += 1
        if checkpoint is not None:  # the loss curve: appended, never rewritten; the state saved is its size
            checkpoint.append(state.history[-1], sync=False)
            if "dev_accuracy" in state.history[-1]:
                checkpoint.save(_saved_tensors(params, opt, state), state.as_json())
    bar.close()
    return state


def _saved_tensors(params: list[Tensor], opt, state: TrainState) -> dict[str, Tensor]:
    tensors = {}
    for i, (p, best) in enumerate(zip(params, state.best)):
        tensors |= {f"param.{i}": p.data, f"best.{i}": best}
        if opt.state[p]:
            s = opt.state[p]
            tensors |= {f"exp_avg.{i}": s["exp_avg"], f"exp_avg_sq.{i}": s["exp_avg_sq"],
                        f"opt_step.{i}": torch.as_tensor(s["step"]).reshape(1).float()}
    return tensors


def _restore(tensors: dict[str, Tensor], saved: dict, params: list[Tensor], opt, state: TrainState) -> None:
    for i, p in enumerate(params):
        p.data.copy_(tensors[f"param.{i}"])
        if f"exp_avg.{i}" in tensors:  # moments beside their parameter; AdamW keeps a non-capturable step on the CPU
            opt.state[p] = {"step": tensors[f"opt_step.{i}"].reshape(()), "exp_avg": tensors[f"exp_avg.{i}"].to(p),
                            "exp_avg_sq": tensors[f"exp_avg_sq.{i}"].to(p)}
    state.best = [tensors[f"best.{i}"].to(p, copy=True) for i, p in enumerate(params)]
    for key, value in saved.items():
        setattr(state, key, value)


def tuning_checkpoint(path, model, task, config: TuneConfig, **identity) -> Checkpoint:
    """The :class:`~skill_lens.store.checkpoint.Checkpoint` of tuning on ``model`` and ``task`` with ``config``.

    Its identity is the model's name, the task's fingerprint, the config and ``identity``. A checkpoint
    whose config predates a field resumes when the field is at its default (:func:`with_defaults`).

    >>> import tempfile
    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> ck = tuning_checkpoint(tempfile.mkdtemp() + "/c.safetensors", tiny_model(), tiny_task(), TuneConfig())
    >>> sorted(ck.identity), ck.identity["config"]["steps"]
    (['config', 'model', 'task'], 150)
    """
    config = dataclasses.asdict(config)
    identity = {"model": describe(model).name, "task": task.fingerprint(), "config": config, **identity}
    if Path(path).exists():
        _upgrade_legacy(path)
        old = load_tensors(path)[1].get("identity")
        old = old.get("config") if isinstance(old, dict) else None
        if isinstance(old, dict) and old != config and with_defaults(old) == config:
            identity["config"] = old  # recorded before a field existed: it ran with that field's default
    return Checkpoint(path, identity, "tuning")


def _upgrade_legacy(path) -> None:
    """Rewrite a prompt-tuning checkpoint of the format before :class:`Checkpoint` (same content) in its format."""
    tensors, meta = load_tensors(path)
    if "identity" in meta or not {"model", "task", "config", "state"} <= meta.keys() or "prompt" not in tensors:
        return
    names = {"prompt": "param.0", "best": "best.0", "exp_avg": "exp_avg.0", "exp_avg_sq": "exp_avg_sq.0",
             "opt_step": "opt_step.0"}
    identity = {key: meta[key] for key in ("model", "task", "config")}
    Checkpoint(path, identity, "tuning").save({names[k]: v for k, v in tensors.items() if k in names}, meta["state"])


def check_texts_fit(pm, task) -> None:
    """Every text of every split of ``task`` fits ``pm``'s context (or ``pm.max_length`` truncates it).

    Tokenizes only (:func:`skill_lens.prompting.evaluation.check_lengths`); called before any training step.

    >>> from skill_lens.model.tiny import tiny_model, tiny_task
    >>> check_texts_fit(prompted(tiny_model(), tiny_task(), None), tiny_task())
    """
    for name, split in task.splits().items():
        check_lengths(pm, split, name)


def tune(model, task, config: TuneConfig | None = None, *, checkpoint: str | Path | None = None,
         prompt: SoftPrompt | None = None, run_dir: str | Path | None = None,
         input_cache: InputCache | None = None) -> TuneResult:
    """Train a soft prompt for ``task``; return the prompt with the best dev accuracy.

    With ``checkpoint`` (a file path), progress is saved there at every dev evaluation and an
    interrupted run with the same model, task and config resumes where it stopped; the caller
    deletes it once the result is saved. ``run_dir`` (deprecated) means
    ``checkpoint=run_dir/checkpoint.safetensors``. ``prompt`` starts from a given prompt instead of
    a fresh one (e.g. re-tuning after pruning). Every split is checked before the first step.

    A causal model's inputs are computed once, in length-sorted batches, before the first step
    (:meth:`InputCache.fill <skill_lens.prompting.input_cache.InputCache.fill>`); pass your own ``input_cache`` to
    keep them for later passes over the same splits (the probe, suppression curves), as
    :func:`skill_lens.workflow.steps.demo` does. Without one, a cache of ``config.input_cache_mb`` is made.
    """
    cfg = config or TuneConfig()
    if run_dir is not None:
        warnings.warn("tune(run_dir=D) is deprecated; pass checkpoint=D/checkpoint.safetensors",
                      DeprecationWarning, stacklevel=2)
        checkpoint = checkpoint or Path(run_dir) / CHECKPOINT_FILE
    check_split(task.train, "train", need_two_classes=True)
    check_split(task.dev, "dev")
    info = describe(model)
    prompt = prompt or SoftPrompt.init(model, cfg.prompt_length, seed=cfg.seed, how=cfg.init)
    pm = prompted(model, task, prompt, cfg.max_length)
    for split in task.splits().values():
        check_labels(pm, split)
    check_texts_fit(pm, task)
    ckpt = tuning_checkpoint(checkpoint, model, task, cfg) if checkpoint is not None else None

    cache = None  # a causal model's input keys/values (skill_lens.prompting.input_cache)
    if cfg.cache_input and info.family == "causal":
        cache = input_cache if input_cache is not None else \
            InputCache(cfg.input_cache_mb) if cfg.input_cache_mb else None
    if cache is not None:
        cache.fill(pm, task.train)  # what does not fit is computed per step (correct, slower)
    inputs = cache if cache is not None else cfg.cache_input  # how label_logits runs the input part
    train_split, labels = task.train, torch.as_tensor(task.train.labels)

    def step_loss(idx: list[int]) -> Tensor:
        logits = pm.label_logits(pm.encode_split(train_split, idx), input_cache=inputs)
        return torch.nn.functional.cross_entropy(logits.float(), labels[idx].to(logits.device))

    def dev_accuracy() -> float:
        return evaluate(pm, task.dev, cfg.eval_batch_size, input_cache=cache)["accuracy"]

    state = train([prompt.embedding], step_loss, dev_accuracy, len(train_split), cfg, ckpt)
    final = SoftPrompt(state.best[0], meta={**info.as_meta(), "task": task.name, "seed": cfg.seed,
                                            "prompt_init": cfg.init, "best_step": state.best_step})
    return TuneResult(final, state.best_dev, state.best_step, state.history)


def learning_rate(cfg: TuneConfig, step: int) -> float:
    """The learning rate of step ``step`` (0-based): linear warmup, then constant or linear decay.

    >>> cfg = TuneConfig(lr=1.0, steps=10, warmup_steps=2, schedule="linear")
    >>> [round(learning_rate(cfg, s), 3) for s in (0, 1, 2, 9)]
    [0.5, 1.0, 1.0, 0.125]
    """
    warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
    if cfg.schedule == "constant" or step < cfg.warmup_steps:
        return cfg.lr * warm
    return cfg.lr * (cfg.steps - step) / max(1, cfg.steps - cfg.warmup_steps)


def with_defaults(config: dict) -> dict:
    """A recorded ``TuneConfig`` dict with the fields it predates at their defaults (what it ran with).

    >>> with_defaults({"steps": 5})["schedule"], with_defaults({"steps": 5})["steps"]
    ('constant', 5)
    """
    return {**dataclasses.asdict(TuneConfig()), **config}
