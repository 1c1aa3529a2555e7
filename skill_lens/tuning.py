"""Soft-prompt tuning on a frozen model, evaluation, and the hard-prompt reference.

Only the prompt is trained (AdamW with linear warmup, gradient clipping on the
prompt alone); the model is in eval mode with ``requires_grad=False``, so its
weights are bitwise unchanged. Batches are a pure function of ``(seed, step)``
and every ``eval_every`` steps the full training state is checkpointed
atomically, so a killed run resumes to the same result as one never interrupted.

>>> from skill_lens.tiny import tiny_model, tiny_task
>>> model, task = tiny_model("causal"), tiny_task()
>>> result = tune(model, task, TuneConfig(prompt_length=4, steps=20, batch_size=8, eval_every=10, lr=0.1))
>>> result.prompt.embedding.shape, 0.0 <= result.dev_accuracy <= 1.0
(torch.Size([4, 32]), True)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from skill_lens.artifacts import ArtifactError, load_tensors, save_tensors
from skill_lens.kv_cache import InputCache
from skill_lens.models import describe
from skill_lens.progress import progress
from skill_lens.prompts import Hook, PromptedModel, PromptError, SoftPrompt, Verbalizer

__all__ = ["TuneConfig", "TuneResult", "tune", "evaluate", "predict", "check_labels", "score_logits", "prompted",
           "hard_prompt_model"]


SCHEDULES = ("constant", "linear")


@dataclass
class TuneConfig:
    """Hyper-parameters of prompt tuning (defaults sized for a 2-core CPU and SmolLM2)."""

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
    input_cache_mb: float = 2048.0  # ... and kept per input across steps and dev evaluations (0: off)
    eval_batch_size: int = 32
    max_length: int | None = None  # truncate inputs to this many tokens (default: error if too long)


@dataclass
class TuneResult:
    prompt: SoftPrompt
    dev_accuracy: float
    best_step: int
    history: list[dict] = field(default_factory=list)


def prompted(model, task, prompt: SoftPrompt | None, max_length: int | None = None) -> PromptedModel:
    """A :class:`PromptedModel` for ``task`` (its label words as the verbalizer)."""
    return PromptedModel(model, prompt, Verbalizer.from_words(model, task.label_words), max_length=max_length)


def hard_prompt_model(model, task, max_length: int | None = None) -> PromptedModel:
    """The zero-shot reference: the task's text template and the same verbalizer, no soft prompt."""
    return PromptedModel(model, None, Verbalizer.from_words(model, task.label_words), template=task.hard_prompt,
                         pair_template=task.hard_prompt, max_length=max_length)


@torch.no_grad()
def predict(
    pm: PromptedModel, split, batch_size: int = 32, fwd_hooks: Sequence[Hook] = (), desc: str = "eval",
    input_cache: InputCache | None = None,
) -> Float[Tensor, "n n_labels"]:
    """Label logits for every example of ``split``, batch by batch (``input_cache``: see :mod:`skill_lens.kv_cache`)."""
    _check_split(split, "evaluation")
    out = []
    for start in progress(range(0, len(split), batch_size), desc=desc):
        idx = slice(start, start + batch_size)
        texts_b = split.texts_b[idx] if split.texts_b is not None else None
        batch = pm.encode(split.texts[idx], texts_b)
        kept = {} if input_cache is None else {"cache_input": True, "input_cache": input_cache}
        out.append(pm.label_logits(batch, fwd_hooks=fwd_hooks, **kept).float())
    return torch.cat(out)


def evaluate(pm: PromptedModel, split, batch_size: int = 32, fwd_hooks: Sequence[Hook] = (),
             input_cache: InputCache | None = None) -> dict:
    """Accuracy and mean gold-minus-best-other logit difference of ``pm`` on ``split``.

    >>> from skill_lens.tiny import tiny_model, tiny_task
    >>> model, task = tiny_model(), tiny_task()
    >>> sorted(evaluate(hard_prompt_model(model, task), task.dev))
    ['accuracy', 'logit_diff', 'n']
    """
    _check_split(split, "evaluation")
    check_labels(pm, split)
    correct, diff = score_logits(predict(pm, split, batch_size, fwd_hooks, input_cache=input_cache), split.labels)
    return {"accuracy": correct.float().mean().item(), "logit_diff": diff.mean().item(), "n": len(correct)}


def check_labels(pm: PromptedModel, split) -> None:
    """Every label of ``split`` must name one of ``pm``'s label words (before any model runs)."""
    words = pm.verbalizer.words
    bad = next(((i, y) for i, y in enumerate(split.labels) if not 0 <= y < len(words)), None)
    if bad is not None:
        raise PromptError(f"example {bad[0]} has label {bad[1]}, but the verbalizer has {len(words)} label words "
                          f"{list(words)} (labels 0..{len(words) - 1}); check the split's labels and the task's "
                          "label words.")


def score_logits(logits: Float[Tensor, "batch n_labels"], labels) -> tuple[Tensor, Tensor]:
    """Per example: correct or not, and the gold label's logit minus the best other one.

    >>> score_logits(torch.tensor([[0.0, 2.0], [1.0, 0.5]]), [1, 1])
    (tensor([ True, False]), tensor([ 2.0000, -0.5000]))
    """
    if not torch.isfinite(logits).all():
        rows = (~torch.isfinite(logits).all(1)).nonzero()[:, 0].tolist()
        raise PromptError(f"non-finite label logits (NaN or inf) for {len(rows)} of {len(logits)} examples, first "
                          f"example {rows[0]}; no accuracy can be read from them. Likely a hook writing NaN/inf "
                          "(check fwd_hooks and hooks left on the model), a NaN prompt or a float16 overflow.")
    labels = torch.as_tensor(labels)
    gold = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return logits.argmax(1) == labels, gold - other


def tune(model, task, config: TuneConfig | None = None, run_dir: str | Path | None = None,
         prompt: SoftPrompt | None = None) -> TuneResult:
    """Train a soft prompt for ``task``; return the prompt with the best dev accuracy.

    With ``run_dir``, progress is checkpointed to ``run_dir/checkpoint.safetensors`` and an
    interrupted run with the same model, task and config resumes where it stopped.
    ``prompt`` starts from a given prompt instead of a fresh one (e.g. re-tuning after pruning).
    """
    cfg = config or TuneConfig()
    if cfg.schedule not in SCHEDULES:
        raise PromptError(f"unknown learning-rate schedule {cfg.schedule!r}; use one of {', '.join(SCHEDULES)}.")
    _check_split(task.train, "train", need_two_classes=True)
    _check_split(task.dev, "dev")
    info = describe(model)
    prompt = prompt or SoftPrompt.init(model, cfg.prompt_length, seed=cfg.seed, how=cfg.init)
    pm = prompted(model, task, prompt, cfg.max_length)
    pm.encode(task.train.texts[:1], task.train.texts_b[:1] if task.train.texts_b else None)  # fail early
    opt = torch.optim.AdamW([prompt.embedding], lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"step": 0, "best_step": -1, "best_dev": -1.0, "history": [], "bad_evals": 0}
    best = prompt.embedding.detach().clone()
    ckpt = Path(run_dir) / "checkpoint.safetensors" if run_dir is not None else None
    identity = {"model": info.name, "task": task.fingerprint(), "config": dataclasses.asdict(cfg)}
    if ckpt is not None and ckpt.exists():
        best = _restore(ckpt, identity, prompt, opt, state)

    causal_prompt = cfg.cache_input and info.family == "causal"
    cache = InputCache(cfg.input_cache_mb) if causal_prompt and cfg.input_cache_mb > 0 else None
    n, labels = len(task.train), torch.as_tensor(task.train.labels)
    per_epoch = math.ceil(n / cfg.batch_size)
    bar = progress(total=cfg.steps, initial=state["step"], desc="tune")
    while state["step"] < cfg.steps and not _stop_early(cfg, state):
        step = state["step"]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + step // per_epoch))
        idx = order[(step % per_epoch) * cfg.batch_size :][: cfg.batch_size].tolist()
        texts_b = [task.train.texts_b[i] for i in idx] if task.train.texts_b is not None else None
        batch = pm.encode([task.train.texts[i] for i in idx], texts_b)
        logits = pm.label_logits(batch, cache_input=cfg.cache_input, input_cache=cache)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([prompt.embedding], cfg.max_grad_norm)
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step)
        opt.step()
        state["step"] = step + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", dev=f"{state['best_dev']:.3f}")
        state["history"].append({"step": step + 1, "loss": loss.item()})
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            dev = evaluate(pm, task.dev, cfg.eval_batch_size, input_cache=cache)["accuracy"]
            state["history"][-1]["dev_accuracy"] = dev
            if dev > state["best_dev"]:
                state.update(best_dev=dev, best_step=state["step"], bad_evals=0)
                best = prompt.embedding.detach().clone()
            else:
                state["bad_evals"] += 1
            if ckpt is not None:
                _checkpoint(ckpt, identity, prompt, opt, state, best)
    bar.close()
    final = SoftPrompt(best, meta={**info.as_meta(), "task": task.name, "seed": cfg.seed,
                                   "prompt_init": cfg.init, "best_step": state["best_step"]})
    return TuneResult(final, state["best_dev"], state["best_step"], state["history"])


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


def _stop_early(cfg: TuneConfig, state: dict) -> bool:
    return cfg.patience is not None and state["bad_evals"] >= cfg.patience


def _checkpoint(path: Path, identity: dict, prompt: SoftPrompt, opt, state: dict, best: Tensor) -> None:
    opt_state = opt.state[prompt.embedding]
    tensors = {"prompt": prompt.embedding.data, "best": best}
    if opt_state:
        tensors |= {"exp_avg": opt_state["exp_avg"], "exp_avg_sq": opt_state["exp_avg_sq"],
                    "opt_step": torch.as_tensor(opt_state["step"]).reshape(1).float()}
    save_tensors(path, tensors, {**identity, "state": state})


def _restore(path: Path, identity: dict, prompt: SoftPrompt, opt, state: dict) -> Tensor:
    tensors, meta = load_tensors(path)
    if isinstance(meta.get("config"), dict):
        meta["config"] = with_defaults(meta["config"])
    for key, value in identity.items():
        if meta.get(key) != value:
            raise ArtifactError(
                f"{path} is a checkpoint of a different run ({key} differs); use a new run directory "
                "or delete the checkpoint to start over."
            )
    prompt.embedding.data.copy_(tensors["prompt"])
    if "exp_avg" in tensors:
        opt.state[prompt.embedding] = {
            "step": tensors["opt_step"].reshape(()),
            "exp_avg": tensors["exp_avg"].clone(),
            "exp_avg_sq": tensors["exp_avg_sq"].clone(),
        }
    state.update(meta["state"])
    return tensors["best"].clone()


def _check_split(split, name: str, need_two_classes: bool = False) -> None:
    if split is None or len(split) == 0:
        raise PromptError(f"the {name} split is empty; choose a larger --{name}-size or another task.")
    if need_two_classes and len(set(split.labels)) < 2:
        raise PromptError(
            f"the {name} split has only one class ({sorted(set(split.labels))}); a classifier needs at least two. "
            f"Choose a larger --{name}-size or check the labels."
        )
